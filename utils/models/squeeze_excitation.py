"""Squeeze-and-excitation (Hu, Shen and Sun, 2018): a block learns one weight in (0, 1) per channel
from the globally pooled feature map and rescales the channels with it, so the network can stress
the channels that matter for the image at hand. Chapter 07 builds it by hand (and its exercise asks
for it).

:class:`SqueezeExcitation` has the parameter names of ``torchvision.ops.SqueezeExcitation``
(``fc1``, ``fc2``: 1x1 convolutions, which on a 1x1 map are linear layers), so EfficientNet can use
it with torchvision's weights. :func:`se_resnet18` and :func:`se_resnet50` put it on the residual
branch of every ResNet block, before the addition, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import build, builder, check_positive
from .resnet import BasicBlock, Bottleneck, ResNet

if TYPE_CHECKING:
    from .weights import Weights

__all__ = ["SEBasicBlock", "SEBottleneck", "SqueezeExcitation", "se_resnet18", "se_resnet50"]


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with one weight per channel (chapter 07).

    Args:
        channels: channels of the input (and the output).
        reduction: the hidden layer has ``channels // reduction`` units (at least 1); 16 in the paper.
        squeeze_channels: the hidden size directly (overrides ``reduction``; EfficientNet uses it).
        activation, scale_activation: the non-linearities (ReLU and sigmoid in the paper; SiLU in
            EfficientNet).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        squeeze_channels: int | None = None,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        check_positive(channels=channels, reduction=reduction)
        squeeze_channels = squeeze_channels if squeeze_channels is not None else max(1, channels // reduction)
        check_positive(squeeze_channels=squeeze_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, kernel_size=1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, kernel_size=1)
        self.activation = activation()
        self.scale_activation = scale_activation()
        self.channels, self.squeeze_channels = channels, squeeze_channels

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel weights: (N, C, H, W) -> (N, C, 1, 1) in (0, 1)."""
        s = self.avgpool(x)  # squeeze: (N, C, 1, 1), one number per channel
        s = self.activation(self.fc1(s))  # (N, C / r, 1, 1)
        return self.scale_activation(self.fc2(s))  # excitation: (N, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W), each channel multiplied by its weight."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SqueezeExcitation expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        return x * self.scale(x)


class SEBasicBlock(BasicBlock):
    """A :class:`~utils.models.resnet.BasicBlock` whose residual branch is rescaled by
    squeeze-and-excitation (``se``)."""

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True, reduction: int = 16
    ):
        super().__init__(in_channels, planes, stride, residual=residual)
        self.se = SqueezeExcitation(self.out_channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))  # recalibrate the channels of the branch
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class SEBottleneck(Bottleneck):
    """A :class:`~utils.models.resnet.Bottleneck` with squeeze-and-excitation (``se``) before the
    addition."""

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True, reduction: int = 16
    ):
        super().__init__(in_channels, planes, stride, residual=residual)
        self.se = SqueezeExcitation(self.out_channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


@builder
def se_resnet18(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """SE-ResNet-18: ResNet-18 with squeeze-and-excitation (reduction 16) in every block (chapter 07).
    A :class:`~utils.models.resnet.ResNet`, with its backbone contract; no pretrained weights."""
    return build(
        "se_resnet18",
        lambda n: ResNet(
            SEBasicBlock,
            (2, 2, 2, 2),
            n,
            in_channels=in_channels,
            small_input=small_input,
            width=width,
            **kwargs,
        ),
        num_classes,
        weights,
    )


@builder
def se_resnet50(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """SE-ResNet-50 (reduction 16): about 28.1M parameters at 1000 classes (chapter 07); no pretrained
    weights."""
    return build(
        "se_resnet50",
        lambda n: ResNet(
            SEBottleneck,
            (3, 4, 6, 3),
            n,
            in_channels=in_channels,
            small_input=small_input,
            width=width,
            **kwargs,
        ),
        num_classes,
        weights,
    )
