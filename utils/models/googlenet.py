"""GoogLeNet / Inception-v1 (Szegedy et al., 2015): the Inception module runs 1x1, 3x3 and 5x5
convolutions and a max-pool side by side and concatenates their outputs; 1x1 "bottleneck"
convolutions before the large kernels keep it cheap. Chapter 07 builds the module by hand.

Like torchvision's version, every convolution is followed by batch normalisation (which the 2015
paper predates) and the auxiliary classifiers are left out. Unlike torchvision, whose third branch
uses a 3x3 kernel (a known slip kept for its pretrained weights), the third branch here has the
paper's 5x5 kernel, so the parameter count differs from torchvision's. ``small_input=True``
(28-64 px) replaces the stem (7x7 stride-2 convolution, two max-pools) by one 3x3 convolution.

As a :class:`~utils.models.common.Backbone`: the stem (stride 8, or 1 with ``small_input``), then three
stages, Inception 3a-3b, max-pool + 4a-4e, max-pool + 5a-5b, with 480, 832 and 1024 channels at
strides 8, 16, 32 (1, 2, 4 with ``small_input``); ``num_features`` is 1024.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = ["BasicConv2d", "GoogLeNet", "Inception", "googlenet"]


class BasicConv2d(nn.Sequential):
    """``Conv2d (no bias) -> BatchNorm2d -> ReLU``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels, eps=0.001),
            nn.ReLU(inplace=True),
        )


class Inception(nn.Module):
    """Four parallel branches concatenated along the channels (chapter 07):

    1. a 1x1 convolution (``ch1x1`` channels);
    2. 1x1 (``ch3x3red``) then 3x3 (``ch3x3``);
    3. 1x1 (``ch5x5red``) then 5x5 (``ch5x5``);
    4. 3x3 max-pool (stride 1) then 1x1 (``pool_proj``).

    Every branch keeps H and W, so the output has ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` channels.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ):
        super().__init__()
        check_positive(
            in_channels=in_channels,
            ch1x1=ch1x1,
            ch3x3red=ch3x3red,
            ch3x3=ch3x3,
            ch5x5red=ch5x5red,
            ch5x5=ch5x5,
            pool_proj=pool_proj,
        )
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=5, padding=2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, dim=1)


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): table 1 of the paper
_INCEPTIONS = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(Backbone):
    """Stem, nine Inception modules (3a-b, 4a-e, 5a-b) with max-pools between the groups, global
    average pooling, dropout and a linear classifier (chapter 07)."""

    classifier_name, head_dropout_name = "fc", "dropout"

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        small_input: bool = False,
        dropout: float = 0.4,
    ):
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels)
        self.num_classes, self.in_channels = num_classes, in_channels
        stem_stride = 1 if small_input else 8
        self.num_features, self.stage_channels = 1024, [480, 832, 1024]
        self.stage_strides = [stem_stride, 2 * stem_stride, 4 * stem_stride]
        if small_input:  # (N, C, H, W) -> (N, 192, H, W)
            self.stem = BasicConv2d(in_channels, 192, kernel_size=3, padding=1)
        else:  # (N, C, 224, 224) -> (N, 192, 28, 28)
            self.stem = nn.Sequential(
                BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                BasicConv2d(64, 64, kernel_size=1),
                BasicConv2d(64, 192, kernel_size=3, padding=1),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
            )
        for name, cfg in _INCEPTIONS.items():
            self.add_module(f"inception{name}", Inception(*cfg))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # after 3b: 28 -> 14
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # after 4e: 14 -> 7
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # self.stem is a registered module (the Backbone's stem)

    @property
    def stages(self) -> list[nn.Module]:
        """Inception 3a-3b; max-pool, 4a-4e; max-pool, 5a-5b."""
        groups = [
            ["inception3a", "inception3b"],
            ["maxpool3"] + [f"inception4{c}" for c in "abcde"],
            ["maxpool4", "inception5a", "inception5b"],
        ]
        return [nn.Sequential(*(getattr(self, name) for name in group)) for group in groups]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, 1024, 7, 7) at 224 px."""
        self.check_input(x)
        x = self.stem(x)  # (N, 192, 28, 28) at 224 px
        x = self.inception3b(self.inception3a(x))  # (N, 480, 28, 28)
        x = self.maxpool3(x)  # (N, 480, 14, 14)
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, f"inception{name}")(x)  # (N, 832, 14, 14) after 4e
        x = self.maxpool4(x)  # (N, 832, 7, 7)
        return self.inception5b(self.inception5a(x))  # (N, 1024, 7, 7)

    # forward_head: avgpool, flatten, dropout, fc (Backbone)


@builder
def googlenet(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> GoogLeNet:
    """GoogLeNet with batch norm and without auxiliary classifiers (keyword argument: ``dropout``;
    chapter 07). Its 5x5 branches differ from torchvision's, so torchvision's weights do not fit it."""
    return build(
        "googlenet",
        lambda n: GoogLeNet(n, in_channels=in_channels, small_input=small_input, **kwargs),
        num_classes,
        weights,
    )
