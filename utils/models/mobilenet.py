"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks. A block *expands* the channels
with a 1x1 convolution, filters each channel separately with a 3x3 *depthwise* convolution, and
*projects* back to few channels with a linear 1x1 convolution (no activation: a ReLU in a
low-dimensional space destroys information); the shortcut joins the thin ends. Chapter 07 builds
the block by hand and counts what depthwise separable convolutions save.

Names follow torchvision (``features.0``..``features.18``, ``classifier``; in a block ``conv``), so
``mobilenet_v2()`` loads torchvision's ``state_dict`` with no missing or unexpected keys and
computes the same outputs. ``small_input=True`` (28-64 px) makes the stem and the first stride-2
stage stride 1 (total stride 8 instead of 32); ``width_mult`` scales every layer's channels.

As a :class:`~utils.models.common.Backbone`: the stem ``features.0`` (stride 2), then five stages,
each starting where the paper's table starts a stride-2 group: ``features[1:2]``, ``[2:4]``,
``[4:7]``, ``[7:14]``, ``[14:19]`` (the last one ends with the 1x1 convolution to 1280 channels), with
16, 24, 32, 96 and 1280 channels at strides 2, 4, 8, 16, 32 (1, 1, 2, 4, 8 with ``small_input``).
``weights="mobilenet_v2.imagenet1k_v1"`` loads torchvision's ImageNet weights, offline from the
embedded copy (see :mod:`utils.models.weights`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, ConvNormAct, build, builder, check_positive, make_divisible

if TYPE_CHECKING:
    from .weights import Weights

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# t (expansion), c (output channels), n (blocks), s (stride of the first block): table 2 of the paper
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """1x1 expand (``expand_ratio`` times, ReLU6) -> 3x3 depthwise (``stride``, ReLU6) -> 1x1 linear
    projection, with ``x +`` when ``stride == 1`` and the channels agree (chapter 07).

    ``conv`` is an ``nn.Sequential``: ``[ConvNormAct expand,] ConvNormAct depthwise, Conv2d, BatchNorm2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        check_positive(in_channels=in_channels, out_channels=out_channels, expand_ratio=expand_ratio)
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            # expand: (N, hidden, H, W)
            layers.append(ConvNormAct(in_channels, hidden, kernel_size=1, activation=nn.ReLU6))
        layers += [
            # depthwise: (N, hidden, H/s, W/s)
            ConvNormAct(hidden, hidden, stride=stride, groups=hidden, activation=nn.ReLU6),
            # linear bottleneck: (N, out, H/s, W/s)
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(Backbone):
    """Stem (3x3 stride 2, 32 channels), 17 inverted residual blocks, a 1x1 convolution to 1280
    channels, global average pooling, dropout and a linear classifier (chapter 07).

    Args:
        width_mult: scales every layer's channels (rounded to multiples of ``round_nearest``).
        small_input: stride 1 in the stem and in the first stride-2 stage (for 28-64 px inputs).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        width_mult: float = 1.0,
        small_input: bool = False,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ):
        super().__init__()
        check_positive(
            num_classes=num_classes,
            in_channels=in_channels,
            width_mult=width_mult,
            round_nearest=round_nearest,
        )
        self.num_classes, self.in_channels = num_classes, in_channels
        channels = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        stride = 1 if small_input else 2
        features: list[nn.Module] = [ConvNormAct(in_channels, channels, stride=stride, activation=nn.ReLU6)]
        self._stage_starts: list[int] = []  # index in features of each stage's first block
        self.stage_channels, self.stage_strides = [], []
        first_downsampling = True
        for t, c, n, s in SETTINGS:
            out = make_divisible(c * width_mult, round_nearest)
            if s == 2 or not self._stage_starts:  # a new stage where the paper's table halves the resolution
                self._stage_starts.append(len(features))
                self.stage_channels.append(out)
                self.stage_strides.append(stride)
            if s == 2 and small_input and first_downsampling:
                s, first_downsampling = 1, False  # keep the resolution of small images a stage longer
            stride *= s
            self.stage_channels[-1], self.stage_strides[-1] = out, stride  # the stage's last group so far
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, expand_ratio=t))
                channels = out
        features.append(ConvNormAct(channels, self.last_channel, kernel_size=1, activation=nn.ReLU6))
        self.stage_channels[-1] = self.num_features = self.last_channel
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():  # as torchvision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def stem(self) -> nn.Module:
        """``features[0]``: 3x3 convolution, stride 2 (1 with ``small_input``)."""
        return self.features[0]

    @property
    def stages(self) -> list[nn.Sequential]:
        """Slices of ``features``; the last one ends with the 1x1 convolution to ``num_features`` channels."""
        ends = self._stage_starts[1:] + [len(self.features)]
        return [self.features[a:b] for a, b in zip(self._stage_starts, ends)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, 1280, H/32, W/32), H/8 with ``small_input``."""
        self.check_input(x)
        return self.features(x)

    # forward_head: global average pool, flatten, classifier (dropout, linear) (Backbone)


@builder
def mobilenet_v2(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width_mult: float = 1.0,
    **kwargs,
) -> MobileNetV2:
    """MobileNetV2: 3,504,872 parameters at 1000 classes and ``width_mult=1``, as torchvision's (chapter 07).

    ``weights="mobilenet_v2.imagenet1k_v1"`` loads torchvision's ImageNet weights, from the course's
    verified offline copy (``"mobilenet_v2.imagenet1k_v2"``: torchvision's download); with another
    ``num_classes`` the pretrained network gets a fresh classifier (chapter 09).
    """
    return build(
        "mobilenet_v2",
        lambda n: MobileNetV2(
            n, in_channels=in_channels, small_input=small_input, width_mult=width_mult, **kwargs
        ),
        num_classes,
        weights,
    )
