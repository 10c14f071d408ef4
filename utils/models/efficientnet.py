"""EfficientNet (Tan and Le, 2019): MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and SiLU) and *compound scaling*: one coefficient ``phi`` scales depth by
``alpha**phi``, width by ``beta**phi`` and resolution by ``gamma**phi`` together, with
``alpha * beta**2 * gamma**2 ~ 2`` so that each step of ``phi`` about doubles the FLOPs. Chapter 07
explains it.

Names follow torchvision (``features``, ``block``, ``classifier``), so ``efficientnet_b0()`` has
torchvision's 5,288,548 parameters and loads its ``state_dict``. ``small_input=True`` (28-64 px)
makes the stem and the first stride-2 stage stride 1, as for MobileNetV2.

As a :class:`~utils.models.common.Backbone`: the stem ``features.0`` (stride 2), then five stages
that group the paper's seven by resolution, ``features[1:2]``, ``[2:3]``, ``[3:4]``, ``[4:6]``,
``[6:9]`` (the last one ends with the 1x1 convolution to ``num_features`` = 1280 channels for B0), at
strides 2, 4, 8, 16, 32 (1, 1, 2, 4, 8 with ``small_input``). The builders take ``weights=`` (e.g.
``"efficientnet_b0.imagenet1k_v1"``: torchvision's ImageNet weights, see :mod:`utils.models.weights`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, ConvNormAct, build, builder, check_positive, make_divisible
from .squeeze_excitation import SqueezeExcitation

if TYPE_CHECKING:
    from .weights import Weights

__all__ = [
    "EfficientNet",
    "MBConv",
    "compound_scaling",
    "efficientnet",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "stochastic_depth",
]

# expansion, kernel, stride, in channels, out channels, layers: table 1 of the paper (B0)
STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

# (width multiplier, depth multiplier, resolution, dropout) of the released models, as in torchvision
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
}


def compound_scaling(
    phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15, base_resolution: int = 224
) -> dict[str, float]:
    """Depth, width and resolution multipliers for the compound coefficient ``phi`` (equation 3 of the paper).

    Returns ``{"depth": alpha**phi, "width": beta**phi, "resolution": round(base_resolution *
    gamma**phi), "flops": (alpha * beta**2 * gamma**2)**phi}`` (the FLOPs factor is about ``2**phi``).
    The released B1-B7 round these numbers by hand (:data:`VARIANTS`). Chapter 07 tabulates them.
    """
    if phi < 0:
        raise ValueError(f"phi must be >= 0, got {phi}")
    return {
        "depth": alpha**phi,
        "width": beta**phi,
        "resolution": round(base_resolution * gamma**phi),
        "flops": (alpha * beta**2 * gamma**2) ** phi,
    }


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop the whole residual branch of each sample with probability ``p`` while training, and scale
    the survivors by ``1 / (1 - p)`` (Huang et al., 2016); the identity in eval mode."""
    if not training or p == 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    keep.bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (chapter 07):
    ``[1x1 expand, SiLU] -> kxk depthwise (stride), SiLU -> SE -> 1x1 linear projection`` (+ input when
    shapes agree).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: float,
        stochastic_depth_prob: float = 0.0,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = make_divisible(in_channels * expand_ratio, 8)
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(ConvNormAct(in_channels, hidden, kernel_size=1, activation=nn.SiLU))  # expand
        layers += [
            ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, activation=nn.SiLU),  # depthwise
            SqueezeExcitation(
                hidden, squeeze_channels=max(1, in_channels // 4), activation=partial(nn.SiLU, inplace=True)
            ),
            ConvNormAct(hidden, out_channels, kernel_size=1, activation=None),  # linear projection
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth_prob = stochastic_depth_prob
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = stochastic_depth(out, self.stochastic_depth_prob, self.training) + x
        return out


class EfficientNet(Backbone):
    """Stem (3x3 stride 2, SiLU), seven stages of MBConv blocks, 1x1 convolution to ``4 * 320 * width``
    channels, global pooling, dropout and ``classifier`` (chapter 07).

    Args:
        width_mult, depth_mult: the compound-scaling multipliers (channels are rounded to multiples of 8,
            layer counts rounded up).
        dropout: before the classifier.
        stochastic_depth_prob: drop probability of the last block, growing linearly from 0 at the first.
        small_input: stride 1 in the stem and in the first stride-2 stage (28-64 px inputs).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2,
        small_input: bool = False,
    ):
        super().__init__()
        check_positive(
            width_mult=width_mult, depth_mult=depth_mult, num_classes=num_classes, in_channels=in_channels
        )
        self.num_classes, self.in_channels = num_classes, in_channels

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        stages = [
            (t, k, s, ch(cin), ch(cout), int(math.ceil(n * depth_mult))) for t, k, s, cin, cout, n in STAGES
        ]
        self._stage_starts: list[int] = []  # index in features where a backbone stage starts
        self.stage_channels, self.stage_strides = [], []
        for i, (_, _, s, _, cout, _) in enumerate(stages):  # group the paper's stages by resolution
            if s == 2 or i == 0:
                self._stage_starts.append(i + 1)
                self.stage_channels.append(cout)
                self.stage_strides.append(0)
            self.stage_channels[-1] = cout
        if small_input:
            first = next(i for i, st in enumerate(stages) if st[2] == 2)
            stages[first] = stages[first][:2] + (1,) + stages[first][3:]
        stride = 1 if small_input else 2
        for j, start in enumerate(self._stage_starts):
            stride *= stages[start - 1][2]
            self.stage_strides[j] = stride
        total_blocks, block_id = sum(st[5] for st in stages), 0
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, stages[0][3], 3, stride=1 if small_input else 2, activation=nn.SiLU)
        ]
        for t, k, s, cin, cout, n in stages:
            stage = []
            for i in range(n):
                p = stochastic_depth_prob * block_id / total_blocks
                stage.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, t, p))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        self.num_features = self.stage_channels[-1] = 4 * stages[-1][4]
        layers.append(ConvNormAct(stages[-1][4], self.num_features, kernel_size=1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True), nn.Linear(self.num_features, num_classes)
        )
        for m in self.modules():  # as torchvision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @property
    def stem(self) -> nn.Module:
        """``features[0]``: 3x3 convolution, stride 2 (1 with ``small_input``), SiLU."""
        return self.features[0]

    @property
    def stages(self) -> list[nn.Sequential]:
        """Slices of ``features``; the last one ends with the 1x1 convolution to ``num_features`` channels."""
        ends = self._stage_starts[1:] + [len(self.features)]
        return [self.features[a:b] for a, b in zip(self._stage_starts, ends)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, num_features, H/32, W/32), H/8 with ``small_input``."""
        self.check_input(x)
        return self.features(x)

    # forward_head: avgpool, flatten, classifier (dropout, linear) (Backbone)


def efficientnet(
    variant: str = "b0", num_classes: int = 1000, *, weights: str | Weights | None = None, **kwargs
) -> EfficientNet:
    """EfficientNet-B0..B3 with torchvision's multipliers and dropout (:data:`VARIANTS`; chapter 07).
    Keyword arguments go to :class:`EfficientNet`; ``weights`` as the builders'."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    width, depth, _, dropout = VARIANTS[variant]
    kwargs.setdefault("dropout", dropout)
    return build(
        f"efficientnet_{variant}", lambda n: EfficientNet(width, depth, n, **kwargs), num_classes, weights
    )


@builder
def efficientnet_b0(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> EfficientNet:
    """EfficientNet-B0 (224 px): 5,288,548 parameters at 1000 classes, as torchvision's (chapter 07)."""
    return efficientnet(
        "b0", num_classes, weights=weights, in_channels=in_channels, small_input=small_input, **kwargs
    )


@builder
def efficientnet_b1(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> EfficientNet:
    """EfficientNet-B1 (depth x1.1, 240 px; chapter 07)."""
    return efficientnet(
        "b1", num_classes, weights=weights, in_channels=in_channels, small_input=small_input, **kwargs
    )


@builder
def efficientnet_b2(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> EfficientNet:
    """EfficientNet-B2 (width x1.1, depth x1.2, 260 px; chapter 07)."""
    return efficientnet(
        "b2", num_classes, weights=weights, in_channels=in_channels, small_input=small_input, **kwargs
    )


@builder
def efficientnet_b3(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> EfficientNet:
    """EfficientNet-B3 (width x1.2, depth x1.4, 300 px; chapter 07)."""
    return efficientnet(
        "b3", num_classes, weights=weights, in_channels=in_channels, small_input=small_input, **kwargs
    )
