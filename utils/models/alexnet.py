"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), the network that won ImageNet 2012 with ReLUs,
dropout, data augmentation and two GPUs. Chapter 07 explains what it changed.

This is the single-tower variant of torchvision (Krizhevsky, 2014, "One weird trick"), with the
same module names, so ``alexnet()`` has torchvision's 61,100,840 parameters and loads its weights.
``small_input=True`` (28-64 px) replaces the 11x11 stride-4 first convolution by a 3x3 stride-1 one,
pools globally and shrinks the hidden layers to ``hidden`` units (default 512).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import check_positive

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    """Five convolutions (three max-pools) and three fully connected layers with dropout (chapter 07)."""

    def __init__(self, num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False,
                 hidden: int | None = None, dropout: float = 0.5):
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if small_input:
            first = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
        else:
            first = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)  # 224 -> 55
        self.features = nn.Sequential(
            first, nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),  # 55 -> 27
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),  # 27 -> 13
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),  # 13 -> 6
        )
        pooled = 1 if small_input else 6
        hidden = hidden or (512 if small_input else 4096)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * pooled * pooled, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> logits (N, num_classes)."""
        if x.ndim != 4:
            raise ValueError(f"AlexNet expects images of shape (N, C, H, W), got {tuple(x.shape)}")
        x = self.avgpool(self.features(x))  # (N, 256, 6, 6) or (N, 256, 1, 1)
        return self.classifier(torch.flatten(x, 1))


def alexnet(num_classes: int = 1000, *, in_channels: int = 3, small_input: bool = False, **kwargs) -> AlexNet:
    """AlexNet as torchvision's at 224 px (keyword arguments: ``hidden``, ``dropout``; chapter 07)."""
    return AlexNet(num_classes, in_channels=in_channels, small_input=small_input, **kwargs)
