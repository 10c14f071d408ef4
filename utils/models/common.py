"""Small pieces the model families share: a conv-norm-activation stack and channel rounding.

Chapter 07 uses them in MobileNetV2 and EfficientNet. :class:`ConvNormAct` is an ``nn.Sequential``
(children ``0`` conv, ``1`` batch norm, ``2`` activation), so its parameters have the same names as
torchvision's ``Conv2dNormActivation`` and torchvision's weights load into the course's models.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ConvNormAct", "check_positive", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never more than 10% below ``value``.

    MobileNet and EfficientNet scale their widths by a float multiplier and round the result with
    this rule (chapter 07), so that channel counts suit the hardware (multiples of 8).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # do not round down by more than 10%
        rounded += divisor
    return rounded


def check_positive(**values: int | float) -> None:
    """Raise a ``ValueError`` naming the first argument that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


class ConvNormAct(nn.Sequential):
    """``Conv2d (no bias) -> BatchNorm2d [-> activation]`` with 'same' padding for odd kernels (chapter 07).

    ``groups=in_channels`` makes the convolution depthwise. ``activation=None`` leaves the
    activation out (the linear projection of an inverted residual block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: Callable[..., nn.Module] | None = nn.ReLU):
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
