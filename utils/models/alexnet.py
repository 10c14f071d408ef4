"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), the network that won ImageNet 2012 with ReLUs,
dropout, data augmentation and two GPUs. Chapter 07 explains what it changed.

This is the single-tower variant of torchvision (Krizhevsky, 2014, "One weird trick"), with the
same module names, so ``alexnet()`` has torchvision's 61,100,840 parameters and loads its weights.
``small_input=True`` (28-64 px) replaces the 11x11 stride-4 first convolution by a 3x3 stride-1 one,
pools globally and shrinks the hidden layers to ``hidden`` units (default 512).

As a :class:`~utils.models.common.Backbone`: three stages, each ending with its max-pool, at strides
8, 16 and 32 (2, 4 and 8 with ``small_input``) with 64, 192 and 256 channels; ``num_features`` is 256.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = ["AlexNet", "alexnet"]


class AlexNet(Backbone):
    """Five convolutions (three max-pools) and three fully connected layers with dropout (chapter 07)."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        small_input: bool = False,
        hidden: int | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.in_channels = num_classes, in_channels
        if small_input:
            first = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
        else:
            first = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)  # 224 -> 55
        self.features = nn.Sequential(
            first,
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 55 -> 27
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 27 -> 13
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 13 -> 6
        )
        first_stride = 1 if small_input else 4
        self.num_features, self.stage_channels = 256, [64, 192, 256]
        self.stage_strides = [2 * first_stride, 4 * first_stride, 8 * first_stride]
        pooled = 1 if small_input else 6
        hidden = hidden or (512 if small_input else 4096)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    @property
    def stem(self) -> nn.Module:
        return nn.Identity()  # the first stage starts at the input

    @property
    def stages(self) -> list[nn.Module]:
        """``features[0:3]``, ``features[3:6]``, ``features[6:13]``: each ends with a max-pool."""
        return [self.features[0:3], self.features[3:6], self.features[6:13]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, 256, 6, 6) at 224 px."""
        self.check_input(x)
        return self.features(x)

    # forward_head: avgpool to 6x6 (1x1 with small_input), flatten, classifier (Backbone)


@builder
def alexnet(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    **kwargs,
) -> AlexNet:
    """AlexNet as torchvision's at 224 px (keyword arguments: ``hidden``, ``dropout``; chapter 07).
    ``weights="alexnet.imagenet1k_v1"`` loads torchvision's ImageNet weights (see
    :mod:`utils.models.weights`)."""
    return build(
        "alexnet",
        lambda n: AlexNet(n, in_channels=in_channels, small_input=small_input, **kwargs),
        num_classes,
        weights,
    )
