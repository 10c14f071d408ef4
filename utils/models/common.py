"""What the model families share: the backbone contract, the builders' calling convention, a
conv-norm-activation stack and channel rounding.

:class:`Backbone` is the contract every classification family follows (chapter 07 introduces it;
transfer learning, detection and segmentation build on it): ``forward_features`` / ``forward_head``,
``stem`` and ``stages`` (the feature maps at each stride, read by :func:`feature_maps`),
``stage_channels``, ``stage_strides``, ``num_features`` and ``reset_classifier``.

:class:`ConvNormAct` is an ``nn.Sequential`` (children ``0`` conv, ``1`` batch norm, ``2``
activation), so its parameters have the same names as torchvision's ``Conv2dNormActivation`` and
torchvision's weights load into MobileNetV2 and EfficientNet.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["Backbone", "ConvNormAct", "build", "builder", "check_positive", "feature_maps", "make_divisible"]


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

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[..., nn.Module] | None = nn.ReLU,
    ):
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride


# --------------------------------------------------------------------------------------------
# The backbone contract
# --------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """Base class of the classification families: one network, seen as a backbone and a head.

    ``forward(x) == forward_head(forward_features(x))``, where

    * ``forward_features(x)``: images (N, C, H, W) -> the features of the last stage,
      (N, num_features, h, w) for the CNNs (the ViT returns its tokens, see its docstring);
    * ``forward_head(features)``: global pooling (the ViT takes its class token), then the
      classifier -> logits (N, num_classes); ``pre_logits=True`` stops at the pooled (N, num_features).

    The features are ``finalize(stages[-1](... stages[0](stem(x))))``: :attr:`stem`, then
    :attr:`stages`, an ordered list of modules whose outputs are the feature maps at growing
    strides (what a feature pyramid or a U-Net encoder reads; :func:`feature_maps` returns them),
    then :meth:`finalize` (a last normalisation where the family has one). Stage ``i`` outputs
    ``stage_channels[i]`` channels at ``stage_strides[i]``, the product of the strides before its
    output: about ``H / stage_strides[i]`` pixels (unpadded layers, as in LeNet and AlexNet, lose
    a few border pixels). ``stem`` and ``stages`` are views over the registered modules, built on
    each access, so that parameter names stay torchvision's; register hooks on the modules they
    hold, not on the views.

    ``reset_classifier(n)`` puts a new ``Linear(num_features, n)`` on the pooled features (``0``:
    no classifier, ``forward`` returns the pooled (N, num_features) embedding). Transfer learning
    (chapter 09) starts from it. ``pretrained_weights`` is the :class:`~utils.models.weights.Weights`
    the model was built with (``None`` for a random initialisation).

    A family sets ``num_classes``, ``in_channels``, ``num_features``, ``stage_channels`` and
    ``stage_strides`` in its constructor, names its classifier attribute in ``classifier_name``
    (and a dropout before it in ``head_dropout_name``), and defines ``stem`` (a module, or a
    property returning one; ``nn.Identity()`` where the first stage starts at the input),
    ``stages`` and ``forward_features``; it may override :meth:`finalize`, :meth:`pool` and
    :meth:`check_input`.
    """

    classifier_name: str = "classifier"
    head_dropout_name: str | None = None
    pretrained_weights: Any = None
    num_classes: int
    in_channels: int
    num_features: int
    stage_channels: list[int]
    stage_strides: list[int]

    @property
    def stages(self) -> list[nn.Module]:
        """The stages in order: applied in turn after :attr:`stem`, each gives one feature map."""
        raise NotImplementedError(f"{type(self).__name__} does not define its stages")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> features of the last stage (N, num_features, h, w)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward_features")

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last stage in :meth:`forward_features` (the identity unless a family
        overrides it)."""
        return x

    def as_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output as an (N, C, h, w) map (the identity for CNNs; the ViT reshapes its tokens)."""
        return x

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, num_features, h, w) -> the embedding (N, num_features), by global average
        pooling (the ViT takes its class token)."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)

    def forward_head(self, features: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Features from :meth:`forward_features` -> logits (N, num_classes); with ``pre_logits=True``
        the embedding (N, num_features) of :meth:`pool`, what ``forward`` returns after
        ``reset_classifier(0)``."""
        if pre_logits:
            return self.pool(features)
        grid = getattr(self, "avgpool", None)  # VGG, AlexNet, LeNet: a grid for their fully connected layers
        x = self.pool(features) if grid is None else torch.flatten(grid(features), 1)
        if self.head_dropout_name is not None:
            x = getattr(self, self.head_dropout_name)(x)
        return getattr(self, self.classifier_name)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> logits (N, num_classes), or embeddings (N, num_features) after
        ``reset_classifier(0)``."""
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` unless ``x`` is a batch of images with the model's channel count."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} expects images of shape (N, C, H, W), got {shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} was built for {self.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )

    def get_classifier(self) -> nn.Module:
        """The classifier module (``fc``, ``classifier`` or ``head``, as torchvision names it)."""
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised ``Linear(num_features, num_classes)`` on
        the pooled features; ``num_classes=0`` removes it (``forward`` then returns the pooled
        (N, num_features) embedding). A dropout before the classifier is kept.

        VGG, AlexNet and LeNet lose their hidden fully connected layers as well (their pooled
        features feed the new linear layer directly); to keep them, replace only
        ``model.classifier[-1]``. Chapter 09 fine-tunes a pretrained network this way.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}")
        head = self.get_classifier()
        new: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        new = new.to(_device_of(head, self))
        if (
            isinstance(head, nn.Sequential)
            and len(head)
            and isinstance(head[-1], (nn.Linear, nn.Identity))
            and all(isinstance(m, nn.Dropout) for m in head[:-1])
        ):
            head[-1] = new  # Dropout, Linear (MobileNetV2, EfficientNet): the dropout stays
        else:
            setattr(self, self.classifier_name, new)
        pool = getattr(self, "avgpool", None)
        if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size not in (1, (1, 1)):
            self.avgpool = nn.AdaptiveAvgPool2d(1)  # VGG, AlexNet, LeNet pooled to a grid for their MLP
        self.num_classes = num_classes


def _device_of(*modules: nn.Module) -> torch.device:
    for module in modules:
        for tensor in module.parameters():
            return tensor.device
    return torch.device("cpu")


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of a :class:`Backbone`: a list of (N, stage_channels[i], h_i, w_i)
    maps with ``h_i`` about ``H / stage_strides[i]`` (for feature pyramids and U-Net encoders,
    chapters 11 and 12). ``model.finalize(...)`` of the last map is ``model.forward_features(x)``
    for the CNNs."""
    missing = [a for a in ("stem", "stages", "check_input", "as_feature_map") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"feature_maps needs a model with the backbone contract of utils.models "
            f"(missing: {', '.join(missing)}), got {type(model).__name__}"
        )
    model.check_input(x)
    maps = []
    x = model.stem(x)
    for stage in model.stages:
        x = stage(x)
        maps.append(model.as_feature_map(x))
    return maps


# --------------------------------------------------------------------------------------------
# Builders: num_classes first, everything else by keyword, optional pretrained weights
# --------------------------------------------------------------------------------------------

_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])


def builder(fn: _Builder) -> _Builder:
    """Decorate a builder whose only positional argument is ``num_classes``: any other positional
    argument raises a ``TypeError`` that says how to call it, instead of building a wrong model."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> nn.Module:
        if len(args) > 1:
            raise TypeError(
                f"{fn.__name__}() takes num_classes as its only positional argument, got "
                f"{len(args)} positional arguments {args!r}; pass the others by keyword, e.g. "
                f"{fn.__name__}(10, in_channels=1)"
            )
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def build(arch: str, make: Callable[[int], nn.Module], num_classes: int, weights: Any = None) -> nn.Module:
    """``make(num_classes)``, or with ``weights`` (a name such as ``"resnet18.imagenet1k_v1"``, a
    :class:`~utils.models.weights.Weights` or torchvision's weights enum): build the network for
    the weights' categories, load them (offline where a verified copy is reachable, see
    :mod:`utils.models.weights`) and, if ``num_classes`` differs, put a fresh classifier of
    ``num_classes`` outputs on the pretrained backbone (chapter 09)."""
    if weights is None:
        return make(num_classes)
    from .weights import get_weights, load_weights_into  # lazy: weights.py imports the families

    w = get_weights(weights)
    if w.arch != arch:
        raise ValueError(
            f"{w.name!r} are weights for {w.arch}, not for {arch}: build {w.arch}(weights=...) "
            f"or pick one of utils.models.list_weights({arch!r})"
        )
    model = make(len(w.categories))
    load_weights_into(model, w)
    if num_classes != len(w.categories):
        model.reset_classifier(num_classes)
    return model
