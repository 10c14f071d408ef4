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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import check_positive

__all__ = ["CONFIGS", "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg16", "vgg16_bn", "vgg19"]

# Output channels of each 3x3 convolution at width 64; "M" is a 2x2 max-pool (table 1 of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG from a configuration list (chapter 07).

    Args:
        config: a key of :data:`CONFIGS` or a list of channel counts (at width 64) and ``"M"``.
        num_classes, in_channels: outputs of the classifier; channels of the input images.
        batch_norm: a ``BatchNorm2d`` after every convolution (the ``_bn`` variants).
        small_input: drop the last max-pool and pool globally (28-64 px inputs), see the module docstring.
        width: channels of the first convolution; all others scale with it (``c * width / 64``).
        hidden: units of the hidden linear layers (4096 at 224 px; defaults to ``8 * width`` with ``small_input``).
        dropout: dropout probability in the classifier.
    """

    def __init__(self, config: str | Sequence[int | str] = "vgg16", num_classes: int = 1000, *, in_channels: int = 3,
                 batch_norm: bool = False, small_input: bool = False, width: int = 64, hidden: int | None = None,
                 dropout: float = 0.5):
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"config must be one of {', '.join(CONFIGS)} or a list of channels and 'M', got {config!r}")
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

        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # halves H and W
                continue
            out = max(1, v * width // 64)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))  # keeps H and W
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
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
            nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> logits (N, num_classes)."""
        if x.ndim != 4:
            raise ValueError(f"VGG expects images of shape (N, C, H, W), got {tuple(x.shape)}")
        x = self.features(x)  # (N, 8 width, H/32, W/32), or H/16 with small_input
        x = torch.flatten(self.avgpool(x), 1)  # (N, 8 width * 7 * 7) or (N, 8 width)
        return self.classifier(x)


def vgg11(num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False, width: int = 64,
          batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters at 224 px and 1000 classes, as torchvision's (chapter 07)."""
    return VGG("vgg11", num_classes, in_channels=in_channels, small_input=small_input, width=width, batch_norm=batch_norm, **kwargs)


def vgg11_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """VGG-11 with batch normalisation (torchvision's ``vgg11_bn``; chapter 07)."""
    return vgg11(num_classes, batch_norm=True, **kwargs)


def vgg13(num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False, width: int = 64,
          batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-13 (configuration B; chapter 07)."""
    return VGG("vgg13", num_classes, in_channels=in_channels, small_input=small_input, width=width, batch_norm=batch_norm, **kwargs)


def vgg16(num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False, width: int = 64,
          batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters at 224 px and 1000 classes, as torchvision's (chapter 07)."""
    return VGG("vgg16", num_classes, in_channels=in_channels, small_input=small_input, width=width, batch_norm=batch_norm, **kwargs)


def vgg16_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """VGG-16 with batch normalisation (torchvision's ``vgg16_bn``; chapter 07)."""
    return vgg16(num_classes, batch_norm=True, **kwargs)


def vgg19(num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False, width: int = 64,
          batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-19 (configuration E; chapter 07)."""
    return VGG("vgg19", num_classes, in_channels=in_channels, small_input=small_input, width=width, batch_norm=batch_norm, **kwargs)
