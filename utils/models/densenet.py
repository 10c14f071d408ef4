"""DenseNet (Huang et al., 2017): inside a dense block every layer receives the concatenation of
the feature maps of *all* the layers before it and adds ``growth_rate`` new channels; transition
layers (1x1 convolution, 2x2 average pool) halve the channels and the resolution between blocks.
Chapter 07 builds a dense block by hand.

Names follow torchvision (``features.conv0``, ``features.denseblock1.denselayer1.norm1``, ...,
``features.norm5``, ``classifier``), so ``densenet121()`` loads torchvision's ``state_dict`` with
no missing or unexpected keys and computes the same outputs. :func:`densenet_small` is a
DenseNet-BC for 28-64 px images (3x3 stem, three blocks).

As a :class:`~utils.models.common.Backbone`: the stem (``conv0``, ``norm0``, ``relu0``, ``pool0``: stride
4, or 1 with ``small_input``), then one stage per dense block (the transition before it, then the
block), at strides 4, 8, 16, 32 (1, 2, 4 for :func:`densenet_small`); the features end with ``norm5``
and a ReLU (:meth:`DenseNet.finalize`). ``num_features`` is 1024 for DenseNet-121.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = [
    "DenseBlock",
    "DenseLayer",
    "DenseNet",
    "Transition",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_small",
]


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (to ``bn_size * growth_rate`` channels, the "bottleneck") then BN-ReLU-conv3x3
    (to ``growth_rate`` channels). Input: the list of all earlier feature maps (chapter 07)."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: tensors (N, C_i, H, W) with sum C_i = in_channels -> (N, growth_rate, H, W)."""
        x = torch.cat(features, dim=1)  # (N, in_channels, H, W): every earlier layer's output
        x = self.conv1(self.relu1(self.norm1(x)))  # (N, bn_size * growth, H, W)
        x = self.conv2(self.relu2(self.norm2(x)))  # (N, growth, H, W)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers (``denselayer1``, ...); outputs ``in_channels + num_layers * growth_rate``
    channels."""

    def __init__(
        self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0
    ):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(
                in_channels + i * growth_rate, growth_rate, bn_size, drop_rate
            )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C + num_layers * growth_rate, H, W)."""
        features = [x]
        for layer in self.values():
            features.append(layer(features))  # each layer sees all the maps so far
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (``in -> out`` channels) and a 2x2 average pool (halves H and W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            OrderedDict(
                [
                    ("norm", nn.BatchNorm2d(in_channels)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)),
                    ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
                ]
            )
        )


class DenseNet(Backbone):
    """DenseNet-BC: stem, dense blocks with transitions (compression 1/2), final BN, global pool,
    ``classifier`` (chapter 07).

    Args:
        growth_rate: channels each dense layer adds (32 for DenseNet-121, 12 in the CIFAR models).
        block_config: dense layers per block, e.g. ``(6, 12, 24, 16)``.
        num_init_features: channels of the stem (``2 * growth_rate`` in the paper).
        bn_size: the bottleneck is ``bn_size * growth_rate`` channels wide.
        drop_rate: dropout after each dense layer.
        small_input: a 3x3 stride-1 stem without max-pool (28-64 px) instead of 7x7 stride 2 + max-pool.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        small_input: bool = False,
    ):
        super().__init__()
        check_positive(
            growth_rate=growth_rate,
            num_init_features=num_init_features,
            bn_size=bn_size,
            num_classes=num_classes,
            in_channels=in_channels,
        )
        block_config = tuple(int(n) for n in block_config)
        if not block_config or any(n < 1 for n in block_config):
            raise ValueError(
                f"block_config must be a non-empty sequence of positive layer counts, got {block_config}"
            )
        self.num_classes, self.in_channels = num_classes, in_channels
        if small_input:
            stem = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=3, padding=1, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
            ]
        else:
            stem = [
                (
                    "conv0",
                    nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False),
                ),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        self._stem_length = len(stem)
        self.features = nn.Sequential(OrderedDict(stem))
        channels, stride = num_init_features, 1 if small_input else 4
        self.stage_channels, self.stage_strides = [], []
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            self.stage_channels.append(channels)
            self.stage_strides.append(stride)
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
                stride *= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():  # as torchvision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def stem(self) -> nn.Sequential:
        """``features.conv0, norm0, relu0[, pool0]``."""
        return self.features[: self._stem_length]

    @property
    def stages(self) -> list[nn.Sequential]:
        """``denseblock1``, then ``transition1, denseblock2``, ...: each stage ends with a dense block."""
        body = list(self.features.children())[self._stem_length : -1]  # without norm5
        return [nn.Sequential(*body[max(0, i - 1) : i + 1]) for i in range(0, len(body), 2)]

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(norm5(x))``: DenseNet's layers are pre-activated, so the last block's output is
        normalised here."""
        return F.relu(self.features.norm5(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, num_features, H/32, W/32), or H/4 for :func:`densenet_small`."""
        self.check_input(x)
        return F.relu(self.features(x))  # features ends with norm5

    # forward_head: global average pool, flatten, classifier (Backbone)


def _densenet(
    arch: str,
    growth_rate: int,
    block_config: Sequence[int],
    num_init_features: int,
    num_classes: int,
    weights: str | Weights | None,
    **kwargs,
) -> DenseNet:
    def make(n: int) -> DenseNet:
        return DenseNet(growth_rate, block_config, num_init_features, num_classes=n, **kwargs)

    return build(arch, make, num_classes, weights)


@builder
def densenet121(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> DenseNet:
    """DenseNet-121 (growth 32, blocks 6-12-24-16): 7,978,856 parameters at 1000 classes, as torchvision's
    (chapter 07). ``weights="densenet121.imagenet1k_v1"`` loads torchvision's ImageNet weights."""
    return _densenet(
        "densenet121",
        32,
        (6, 12, 24, 16),
        64,
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        **kwargs,
    )


@builder
def densenet161(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> DenseNet:
    """DenseNet-161 (growth 48, blocks 6-12-36-24, 96 stem channels), as torchvision's (chapter 07)."""
    return _densenet(
        "densenet161",
        48,
        (6, 12, 36, 24),
        96,
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        **kwargs,
    )


@builder
def densenet169(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> DenseNet:
    """DenseNet-169 (growth 32, blocks 6-12-32-32), as torchvision's (chapter 07)."""
    return _densenet(
        "densenet169",
        32,
        (6, 12, 32, 32),
        64,
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        **kwargs,
    )


@builder
def densenet201(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> DenseNet:
    """DenseNet-201 (growth 32, blocks 6-12-48-32), as torchvision's (chapter 07)."""
    return _densenet(
        "densenet201",
        32,
        (6, 12, 48, 32),
        64,
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        **kwargs,
    )


@builder
def densenet_small(
    num_classes: int = 10,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 1,
    small_input: bool = True,
    growth_rate: int = 12,
    block_config: Sequence[int] = (6, 6, 6),
    **kwargs,
) -> DenseNet:
    """A small DenseNet-BC for 28-64 px images: growth 12, three blocks of 6 layers, a 3x3 stem with
    ``2 * growth_rate`` channels (0.18M parameters at 10 classes). Defaults suit the course's 28 px grey
    data sets (10 classes, 1 channel). Chapter 07 uses it. No pretrained weights.
    """
    kwargs.setdefault("num_init_features", 2 * growth_rate)

    def make(n: int) -> DenseNet:
        return DenseNet(
            growth_rate,
            block_config,
            num_classes=n,
            in_channels=in_channels,
            small_input=small_input,
            **kwargs,
        )

    return build("densenet_small", make, num_classes, weights)
