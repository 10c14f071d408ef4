"""Residual networks (He et al., 2016): basic and bottleneck blocks, ResNet-18/34/50/101/152, the
pre-activation variant, CIFAR-style ResNets and their plain (no shortcut) twins.

Chapter 07 builds the residual block by hand and runs the degradation experiment with
:func:`resnet_cifar` (``residual=False`` gives the plain network of the same depth).

The module names follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``, and in each
block ``conv1``, ``bn1``, ``conv2``, ``bn2`` [, ``conv3``, ``bn3``], ``downsample.0/1``), so
``resnet18()`` loads ``torchvision.models.resnet18().state_dict()`` with no missing or unexpected
keys and computes the same outputs. Like torchvision's, ResNet-50 is "v1.5": a bottleneck block
downsamples in its 3x3 convolution, not in its first 1x1.

Small inputs (28-64 px): ``small_input=True`` replaces the 7x7 stride-2 stem and its max-pool by
one 3x3 stride-1 convolution, so a 32 px image reaches ``layer4`` at 4x4 instead of 1x1; ``width``
sets the channels of the stem and of ``layer1`` (64 in the paper; each stage doubles it)::

    model = resnet18(num_classes=10, in_channels=1, small_input=True, width=16)  # 28 px grey images

As a :class:`~utils.models.common.Backbone`: the stem (``conv1``, ``bn1``, ``relu``, ``maxpool``:
stride 4, or 1 with ``small_input``), then the stages ``layer1``..``layer4`` at strides 4, 8, 16, 32
(1, 2, 4, 8 with ``small_input``) with ``width * 2**i * expansion`` channels; ``num_features`` is
the last of them (512 for ResNet-18, 2048 for ResNet-50). The builders take ``weights=`` (e.g.
``"resnet50.imagenet1k_v2"``: torchvision's ImageNet weights, see :mod:`utils.models.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import Backbone, build, builder, check_positive

if TYPE_CHECKING:
    from .weights import Weights

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "preact_resnet18",
    "preact_resnet34",
    "preact_resnet50",
    "resnet101",
    "resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet_cifar",
]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a batch norm follows it; chapter 07)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias: mixes channels, or projects a shortcut (chapter 07)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity when the shapes agree; when ``stride != 1`` or the channel count
    changes it is a projection, ``downsample = Sequential(conv1x1(stride), BatchNorm2d)`` (option B
    of the paper). With ``residual=False`` there is no shortcut at all: the block of a *plain*
    network, used in chapter 07's degradation experiment. ``out_channels`` is ``planes *
    expansion`` with ``expansion = 1``.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True):
        super().__init__()
        check_positive(in_channels=in_channels, planes=planes, stride=stride)
        out_channels = planes * self.expansion
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.residual = residual
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (N, C_out, H/s, W/s)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)  # (N, C_out, H/s, W/s)
            out += identity  # in place, as torchvision: one tensor less to allocate
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm at the end of the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand by 4), plus a shortcut (ResNet-50 and deeper).

    ``planes`` is the width of the 3x3 convolution; the block outputs ``4 * planes`` channels.
    The projection shortcut and ``residual=False`` work as in :class:`BasicBlock`.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True):
        super().__init__()
        check_positive(in_channels=in_channels, planes=planes, stride=stride)
        out_channels = planes * self.expansion
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # "v1.5": the stride sits in the 3x3 convolution
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, 4 * planes, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, 4 planes, H/s, W/s)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)
            out += identity
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016, "Identity mappings"): BN and ReLU come *before*
    each convolution and nothing follows the addition, so the shortcut path is a pure identity:
    ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``.

    A projection shortcut (``downsample.0``, a 1x1 convolution) is applied to the pre-activated input
    when the shape changes.
    """

    expansion = 1
    preact = True

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True):
        super().__init__()
        check_positive(in_channels=in_channels, planes=planes, stride=stride)
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride))
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))  # (N, C_in, H, W), pre-activated (not in place: x is the shortcut)
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)  # (N, planes, H/s, W/s)
        out = self.conv2(self.relu(self.bn2(out)))  # (N, C_out, H/s, W/s)
        return out + identity if self.residual else out

    @property
    def last_bn(self) -> None:
        return None


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: ``x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``."""

    expansion = 4
    preact = True

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, residual: bool = True):
        super().__init__()
        check_positive(in_channels=in_channels, planes=planes, stride=stride)
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride))
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity if self.residual else out

    @property
    def last_bn(self) -> None:
        return None


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]


class ResNet(Backbone):
    """A stem, then one stage per entry of ``layers`` (``layer1``, ``layer2``, ...), global average
    pooling and a linear classifier ``fc``. Chapter 07 explains each part.

    Args:
        block: :class:`BasicBlock`, :class:`Bottleneck` or a pre-activation block.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18; one to four stages. Stage
            ``i`` has ``width * 2**i`` planes, and every stage after the first halves the resolution.
        num_classes: outputs of ``fc`` (logits).
        in_channels: channels of the input images (3 for RGB, 1 for grey).
        small_input: a 3x3 stride-1 stem without max-pool (for 28-64 px inputs) instead of the 7x7
            stride-2 convolution and 3x3 stride-2 max-pool (224 px ImageNet images).
        width: channels of the stem and planes of the first stage (64 in the paper).
        residual: ``False`` removes every shortcut (a plain network of the same depth).
        zero_init_residual: start the last batch norm of each residual branch at zero, so every block
            begins as the identity (Goyal et al., 2017).
        dropout: dropout probability before ``fc`` (0: none, as in the paper).

    With pre-activation blocks a final ``bn_final`` + ReLU normalises the output of the last stage
    (:meth:`finalize`).
    """

    classifier_name, head_dropout_name = "fc", "dropout"

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        small_input: bool = False,
        width: int = 64,
        residual: bool = True,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if not 1 <= len(layers) <= 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must hold 1 to 4 positive block counts (one per stage), got {layers}")
        check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.block, self.layers, self.small_input, self.width = block, layers, small_input, width
        self.preact = getattr(block, "preact", False)
        self.num_classes, self.in_channels = num_classes, in_channels

        # stem: (N, in_channels, H, W) -> (N, width, H/4, W/4), or (N, width, H, W) with small_input
        if small_input:
            self.conv1 = conv3x3(in_channels, width)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        channels, stride = width, 1 if small_input else 4
        self.stage_channels, self.stage_strides = [], []
        for i, n_blocks in enumerate(layers):
            stage, channels = self._make_layer(
                block, channels, width * 2**i, n_blocks, stride=1 if i == 0 else 2, residual=residual
            )
            self.add_module(f"layer{i + 1}", stage)
            stride *= 1 if i == 0 else 2
            self.stage_channels.append(channels)
            self.stage_strides.append(stride)
        self.num_features = channels
        self.bn_final = nn.BatchNorm2d(channels) if self.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_layer(
        block: Block, in_channels: int, planes: int, blocks: int, stride: int, residual: bool
    ) -> tuple[nn.Sequential, int]:
        """One stage: the first block changes resolution and channels, the others keep them."""
        stage = [block(in_channels, planes, stride, residual=residual)]
        channels = planes * block.expansion
        stage += [block(channels, planes, 1, residual=residual) for _ in range(1, blocks)]
        return nn.Sequential(*stage), channels

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():  # as torchvision: He initialisation for convolutions, BN starts as identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if getattr(m, "last_bn", None) is not None:
                    nn.init.zeros_(m.last_bn.weight)

    @property
    def stem(self) -> nn.Sequential:
        """``conv1, bn1, relu, maxpool`` (the max-pool is the identity with ``small_input``)."""
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)

    @property
    def stages(self) -> list[nn.Sequential]:
        """``[layer1, layer2, ...]``."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.layers))]

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn_final(x))`` with pre-activation blocks, else ``x``."""
        return x if self.bn_final is None else self.relu(self.bn_final(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> the feature map of the last stage (N, num_features, h, w)."""
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, width, H/4, W/4) or (N, width, H, W)
        for stage in self.stages:
            x = stage(x)  # channels x2, resolution /2 per stage after the first
        return self.finalize(x)

    # forward_head: avgpool, flatten, dropout, fc (Backbone)


def _resnet(
    arch: str, block: Block, layers: Sequence[int], num_classes: int, weights: str | Weights | None, **kwargs
) -> ResNet:
    return build(arch, lambda n: ResNet(block, layers, n, **kwargs), num_classes, weights)


@builder
def resnet18(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """ResNet-18 (basic blocks, 2-2-2-2): 11,689,512 parameters at 1000 classes, as torchvision's.

    Keyword arguments as :class:`ResNet` (``small_input``, ``width``, ``residual``,
    ``zero_init_residual``, ``dropout``). Chapter 07 explains it; chapter 08 fine-tunes it.
    """
    return _resnet(
        "resnet18",
        BasicBlock,
        (2, 2, 2, 2),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def resnet34(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """ResNet-34 (basic blocks, 3-4-6-3): 21,797,672 parameters at 1000 classes (chapter 07)."""
    return _resnet(
        "resnet34",
        BasicBlock,
        (3, 4, 6, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def resnet50(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """ResNet-50 (bottleneck blocks, 3-4-6-3): 25,557,032 parameters at 1000 classes (chapter 07)."""
    return _resnet(
        "resnet50",
        Bottleneck,
        (3, 4, 6, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def resnet101(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """ResNet-101 (bottleneck blocks, 3-4-23-3), as torchvision's (chapter 07)."""
    return _resnet(
        "resnet101",
        Bottleneck,
        (3, 4, 23, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def resnet152(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """ResNet-152 (bottleneck blocks, 3-8-36-3), as torchvision's (chapter 07)."""
    return _resnet(
        "resnet152",
        Bottleneck,
        (3, 8, 36, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def preact_resnet18(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """Pre-activation ResNet-18 (He et al., 2016, "Identity mappings in deep residual networks";
    chapter 07)."""
    return _resnet(
        "preact_resnet18",
        PreActBasicBlock,
        (2, 2, 2, 2),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def preact_resnet34(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """Pre-activation ResNet-34 (chapter 07)."""
    return _resnet(
        "preact_resnet34",
        PreActBasicBlock,
        (3, 4, 6, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


@builder
def preact_resnet50(
    num_classes: int = 1000,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    small_input: bool = False,
    width: int = 64,
    **kwargs,
) -> ResNet:
    """Pre-activation ResNet-50 with bottleneck blocks (chapter 07)."""
    return _resnet(
        "preact_resnet50",
        PreActBottleneck,
        (3, 4, 6, 3),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=small_input,
        width=width,
        **kwargs,
    )


def resnet_cifar(
    depth: int = 20,
    num_classes: int = 10,
    *,
    weights: str | Weights | None = None,
    in_channels: int = 3,
    width: int = 16,
    residual: bool = True,
    **kwargs,
) -> ResNet:
    """The CIFAR ResNets of He et al. (2016, section 4.2): ``depth = 6n + 2`` layers, three stages of
    ``n`` basic blocks with ``width``, ``2 width`` and ``4 width`` channels (16, 32, 64 in the paper),
    a 3x3 stem, no max-pool. ``residual=False`` gives the plain network of the same depth.

    Chapter 07 trains ``resnet_cifar(depth, residual=False)`` against ``resnet_cifar(depth)`` to show
    the degradation problem. Depth 20 has 0.27M parameters at width 16.

    Unlike the other builders, whose only positional argument is ``num_classes``, this one takes the
    depth first (it chooses the architecture, as ``efficientnet(variant)`` does). There are no
    pretrained weights for it.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6
    return _resnet(
        "resnet_cifar",
        BasicBlock,
        (n, n, n),
        num_classes,
        weights,
        in_channels=in_channels,
        small_input=True,
        width=width,
        residual=residual,
        **kwargs,
    )
