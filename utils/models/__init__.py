"""Models of the course: plain ``nn.Module`` classes with explicit constructor arguments, one file
per family.

Builders are named and defaulted as torchvision's: ``resnet18()`` is the 1000-class network for
224 px ImageNet images, with torchvision's parameter count and parameter names, so torchvision's
pretrained ``state_dict`` loads into it. A builder's only positional argument is ``num_classes``;
everything else is a keyword: ``weights`` (pretrained weights, below), ``in_channels``,
``small_input=True`` to adapt a network to 28-64 px images (a 3x3 stride-1 stem instead of the
ImageNet stem), ``width`` / ``width_mult`` to make it narrow. (:func:`resnet_cifar` and
``efficientnet(variant)`` take the depth or variant first.) Chapter 07 explains every family:

* :class:`~utils.models.mlp.MLP`: a multilayer perceptron (chapter 01).
* :mod:`~utils.models.lenet`: :func:`lenet5`.
* :mod:`~utils.models.alexnet`: :func:`alexnet`.
* :mod:`~utils.models.vgg`: :func:`vgg11`, :func:`vgg13`, :func:`vgg16`, :func:`vgg19` (and ``_bn``).
* :mod:`~utils.models.googlenet`: :class:`Inception`, :func:`googlenet`.
* :mod:`~utils.models.resnet`: :class:`BasicBlock`, :class:`Bottleneck`, pre-activation blocks,
  :func:`resnet18` / 34 / 50 / 101 / 152, :func:`preact_resnet18` / 34 / 50, :func:`resnet_cifar`
  (CIFAR-style ResNets and, with ``residual=False``, plain networks).
* :mod:`~utils.models.densenet`: :func:`densenet121` / 161 / 169 / 201, :func:`densenet_small`.
* :mod:`~utils.models.mobilenet`: :class:`InvertedResidual`, :func:`mobilenet_v2`.
* :mod:`~utils.models.squeeze_excitation`: :class:`SqueezeExcitation`, :func:`se_resnet18`,
  :func:`se_resnet50`.
* :mod:`~utils.models.efficientnet`: :class:`MBConv`, :func:`efficientnet_b0` .. b3,
  :func:`compound_scaling`.
* :mod:`~utils.models.vit`: :class:`PatchEmbedding`, :class:`VisionTransformer`, :func:`vit_b_16`,
  :func:`vit_tiny`.

Every classification family is a :class:`~utils.models.common.Backbone`: ``forward_features``,
``forward_head``, ``stages``, ``stage_channels``, ``stage_strides``, ``num_features`` and
``reset_classifier(num_classes)``; :func:`feature_maps` returns the output of every stage (for
feature pyramids and U-Nets).

Pretrained weights (:mod:`~utils.models.weights`): ``mobilenet_v2(weights="mobilenet_v2.imagenet1k_v1")``
or ``load_pretrained("mobilenet_v2.imagenet1k_v1")``; :func:`get_weights` gives the categories and
``transforms()``, :func:`list_weights` every name. Only MobileNetV2's are embedded (verified offline);
the others are torchvision's downloads, used from torch hub's cache or downloaded when asked.

Small models that have no torchvision counterpart default to small data: :func:`lenet5`,
:func:`vit_tiny` and :func:`densenet_small` to the course's 28 px grey data sets (10 classes, 1
channel), :func:`resnet_cifar` to CIFAR-10 (10 classes, 3 channels). For example, a small ResNet for
the animal silhouettes is ``resnet18(num_classes=10, in_channels=1, small_input=True, width=16)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .alexnet import AlexNet, alexnet
from .common import Backbone, feature_maps
from .densenet import DenseNet, densenet121, densenet161, densenet169, densenet201, densenet_small
from .efficientnet import (
    EfficientNet,
    MBConv,
    compound_scaling,
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
)
from .googlenet import GoogLeNet, Inception, googlenet
from .lenet import LeNet5, lenet5
from .mlp import MLP
from .mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from .resnet import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResNet,
    preact_resnet18,
    preact_resnet34,
    preact_resnet50,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_cifar,
)
from .squeeze_excitation import SqueezeExcitation, se_resnet18, se_resnet50
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from .vit import PatchEmbedding, VisionTransformer, vit_b_16, vit_tiny

# Imported on first use, so that `python -m utils.models.weights install` runs the module only once.
_FROM_WEIGHTS = ("Preprocess", "Weights", "get_weights", "list_weights", "load_pretrained")


def __getattr__(name: str) -> Any:
    if name in _FROM_WEIGHTS or name == "weights":
        weights = importlib.import_module(f"{__name__}.weights")
        return weights if name == "weights" else getattr(weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AlexNet",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "DenseNet",
    "EfficientNet",
    "GoogLeNet",
    "Inception",
    "InvertedResidual",
    "LeNet5",
    "MBConv",
    "MLP",
    "MobileNetV2",
    "PatchEmbedding",
    "PreActBasicBlock",
    "PreActBottleneck",
    "Preprocess",
    "ResNet",
    "SqueezeExcitation",
    "VGG",
    "VisionTransformer",
    "Weights",
    "alexnet",
    "compound_scaling",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_small",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "feature_maps",
    "get_weights",
    "googlenet",
    "lenet5",
    "list_weights",
    "load_pretrained",
    "mobilenet_v2",
    "preact_resnet18",
    "preact_resnet34",
    "preact_resnet50",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_cifar",
    "se_resnet18",
    "se_resnet50",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vit_b_16",
    "vit_tiny",
]
