"""VGG (Simonyan and Zisserman, 2015): stacks of 3x3 convolutions and 2x2 max-pools, then three
fully connected layers. Chapter 07 explains why two 3x3 convolutions beat one 5x5.

Names follow torchvision (``features``, ``avgpool``, ``classifier``), so ``vgg16()`` loads
``torchvision.models.vgg16().state_dict()`` with no missing or unexpected keys and computes the
same outputs; ``batch_norm=True`` gives the ``vgg16_bn`` layout.

Small inputs (28-64 px): ``small_input=True`` drops the last max-pool (four halvings instead of
five, so 28 px images end at 1x1 and 64 px at 4x4), pools globally to 1x1 and uses a head of
two small linear layers; ``width`` sets the channels of the first block (64 in the paper, each
later block doubles them up to ``8 * width``)::

    model = vgg11(num_classes=10, in_channels=1, small_input=True, width=16, batch_norm=True)

As a :class:`~utils.models.common.Backbone`: one stage per block of convolutions, each ending with
its max-pool (strides 2, 4, 8, 16, 32; the last block of ``small_input`` has no pool and stays at
16); ``num_features`` is the channel count of the last block (512 at width 64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = [
    "CONFIGS",
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# Output channels of each 3x3 convolution at width 64; "M" is a 2x2 max-pool (table 1 of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(Backbone):
    """VGG from a configuration list (chapter 07).

    Args:
        config: a key of :data:`CONFIGS` or a list of channel counts (at width 64) and ``"M"``.
        num_classes, in_channels: outputs of the classifier; channels of the input images.
        batch_norm: a ``BatchNorm2d`` after every convolution (the ``_bn`` variants).
        small_input: drop the last max-pool and pool globally (28-64 px inputs), see the module docstring.
        width: channels of the first convolution; all others scale with it (``c * width / 64``).
        hidden: units of the hidden linear layers (4096 at 224 px; defaults to ``8 * width`` with
            ``small_input``).
        dropout: dropout probability in the classifier.
    """

    def __init__(
        self,
        config: str | Sequence[int | str] = "vgg16",
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        batch_norm: bool = False,
        small_input: bool = False,
        width: int = 64,
        hidden: int | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(
                    f"config must be one of {', '.join(CONFIGS)} or a list of channels and 'M', "
                    f"got {config!r}"
                )
            config = CONFIGS[config]
        config = list(config)
        if not config or any(not (v == "M" or (isinstance(v, int) and v > 0)) for v in config):
            raise ValueError(f"config must be a non-empty list of positive ints and 'M', got {config}")
        check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if small_input and config[-1] == "M":
            config = config[:-1]  # four halvings: 28 px -> 1 px, 64 px -> 4 px
        self.small_input = small_input
        self.num_classes, self.in_channels = num_classes, in_channels

        layers: list[nn.Module] = []
        channels, stride = in_channels, 1
        self._stage_ends: list[int] = []  # a stage ends after each max-pool (and at the end)
        self.stage_channels, self.stage_strides = [], []
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # halves H and W
                stride *= 2
                self._stage_ends.append(len(layers))
                self.stage_channels.append(channels)
                self.stage_strides.append(stride)
                continue
            out = max(1, v * width // 64)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))  # keeps H and W
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        if not self._stage_ends or self._stage_ends[-1] != len(layers):  # convolutions after the last pool
            self._stage_ends.append(len(layers))
            self.stage_channels.append(channels)
            self.stage_strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.num_features = channels

        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            hidden = hidden or 8 * width
            flat = channels
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            hidden = hidden or 4096
            flat = channels * 7 * 7
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # as torchvision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def stem(self) -> nn.Module:
        return nn.Identity()  # the first stage starts at the input

    @property
    def stages(self) -> list[nn.Module]:
        """Slices of ``features``: the convolutions of one block and the max-pool that ends it."""
        starts = [0] + self._stage_ends[:-1]
        return [self.features[a:b] for a, b in zip(starts, self._stage_ends)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, 8 width, H/32, W/32), or H/16 with ``small_input``."""
        self.check_input(x)
        return self.features(x)

    # forward_head: avgpool to 7x7 (1x1 with small_input), flatten, classifier (Backbone)


def _vgg(config: str, num_classes: int, weights: str | Weights | None, batch_norm: bool, **kwargs) -> VGG:
    arch = f"{config}_bn" if batch_norm else config
    return build(arch, lambda n: VGG(config, n, batch_norm=batch_norm, **kwargs), num_classes, weights)


@builder
def vgg11(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    batch_norm: bool = False,
    **kwargs,
) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters at 224 px and 1000 classes, as torchvision's
    (chapter 07). Keyword arguments as :class:`VGG`; ``weights="vgg11.imagenet1k_v1"`` loads
    torchvision's ImageNet weights (``"vgg11_bn.imagenet1k_v1"`` with ``batch_norm=True``)."""
    return _vgg(
        "vgg11",
        num_classes,
        weights,
        batch_norm,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def vgg11_bn(num_classes: int = 1000, *, weights: str | Weights | None = None, **kwargs) -> VGG:
    """VGG-11 with batch normalisation (torchvision's ``vgg11_bn``; chapter 07)."""
    return vgg11(num_classes, weights=weights, batch_norm=True, **kwargs)


@builder
def vgg13(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    batch_norm: bool = False,
    **kwargs,
) -> VGG:
    """VGG-13 (configuration B; chapter 07)."""
    return _vgg(
        "vgg13",
        num_classes,
        weights,
        batch_norm,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def vgg13_bn(num_classes: int = 1000, *, weights: str | Weights | None = None, **kwargs) -> VGG:
    """VGG-13 with batch normalisation (torchvision's ``vgg13_bn``; chapter 07)."""
    return vgg13(num_classes, weights=weights, batch_norm=True, **kwargs)


@builder
def vgg16(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    batch_norm: bool = False,
    **kwargs,
) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters at 224 px and 1000 classes, as torchvision's
    (chapter 07)."""
    return _vgg(
        "vgg16",
        num_classes,
        weights,
        batch_norm,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def vgg16_bn(num_classes: int = 1000, *, weights: str | Weights | None = None, **kwargs) -> VGG:
    """VGG-16 with batch normalisation (torchvision's ``vgg16_bn``; chapter 07)."""
    return vgg16(num_classes, weights=weights, batch_norm=True, **kwargs)


@builder
def vgg19(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    batch_norm: bool = False,
    **kwargs,
) -> VGG:
    """VGG-19 (configuration E; chapter 07)."""
    return _vgg(
        "vgg19",
        num_classes,
        weights,
        batch_norm,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def vgg19_bn(num_classes: int = 1000, *, weights: str | Weights | None = None, **kwargs) -> VGG:
    """VGG-19 with batch normalisation (torchvision's ``vgg19_bn``; chapter 07)."""
    return vgg19(num_classes, weights=weights, batch_norm=True, **kwargs)
