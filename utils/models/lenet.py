"""LeNet-5 (LeCun et al., 1998): two convolution + subsampling stages and three fully connected
layers, the network that read cheques in the 1990s. Chapter 07 starts its tour of architectures here.

The layer sizes are those of the paper (6 and 16 feature maps of 5x5 convolutions, 120, 84 and
``num_classes`` units). The paper's 32x32 inputs are 28x28 digits padded by 2 pixels, so the first
convolution pads by 2 and a 28 px image gives the paper's 5x5x16 features; an adaptive average pool
brings other sizes to 5x5 as well. The defaults keep the paper's tanh and average pooling
("subsampling"); ``activation="relu", pool="max"`` gives the modern variant.

As a :class:`~utils.models.common.Backbone`: two stages (conv, activation, pool) at strides 2 and 4
with 6 and 16 channels; ``num_features`` is 16. The second convolution is unpadded, so a 28 px
image ends at 5x5 rather than 7x7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = ["LeNet5", "lenet5"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet5(Backbone):
    """``conv5x5(6) -> act -> pool -> conv5x5(16) -> act -> pool -> fc(120) -> act -> fc(84) -> act -> fc``.

    61,706 parameters for 28 px grey images and 10 classes. Chapter 07 explains it.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, *, activation: str = "tanh", pool: str = "avg"
    ):
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {', '.join(_POOLS)}, got {pool!r}")
        act, pool_layer = _ACTIVATIONS[activation], _POOLS[pool]
        self.num_classes, self.in_channels = num_classes, in_channels
        self.features = nn.Sequential(
            # (N, 6, 14, 14) at 28 px
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            act(),
            pool_layer(2),
            nn.Conv2d(6, 16, kernel_size=5),
            act(),
            pool_layer(2),  # (N, 16, 5, 5)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((5, 5))  # the identity at 28 px
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            act(),
            nn.Linear(120, 84),
            act(),
            nn.Linear(84, num_classes),
        )
        self.num_features, self.stage_channels, self.stage_strides = 16, [6, 16], [2, 4]

    @property
    def stem(self) -> nn.Module:
        return nn.Identity()  # the first stage starts at the input

    @property
    def stages(self) -> list[nn.Module]:
        """``[features[0:3], features[3:6]]``: convolution, activation, pooling."""
        return [self.features[0:3], self.features[3:6]]

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[-2:]) < 12:
            raise ValueError(
                f"LeNet5 expects images of shape (N, C, H, W) with H, W >= 12, got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W), H and W at least 12 -> (N, 16, H/4 - 2, W/4 - 2)."""
        self.check_input(x)
        return self.features(x)  # (N, 16, 5, 5) at 28 px


@builder
def lenet5(
    num_classes: int = 10, *, weights: str | Weights | None = None, in_channels: int = 1, **kwargs
) -> LeNet5:
    """LeNet-5 for 28 px grey images by default (keyword arguments: ``activation``, ``pool``; chapter 07).
    There are no pretrained weights for it."""
    return build("lenet5", lambda n: LeNet5(n, in_channels, **kwargs), num_classes, weights)
