"""From-scratch implementations that the chapters build by hand, kept here to be reused.

* :mod:`utils.scratch.engine`: a scalar autograd engine (:class:`~utils.scratch.engine.Value`)
  and a drawing of its computational graph (chapter 01);
* :mod:`utils.scratch.layers`: vectorized forward and backward passes of linear, ReLU and
  softmax cross-entropy layers, gradient checking, and :class:`~utils.scratch.layers.MLPScratch`,
  an MLP trained without autograd (chapter 01);
* :mod:`utils.scratch.activations`: activation functions and their derivatives (chapter 02);
* :mod:`utils.scratch.losses`: regression and classification losses (chapter 03);
* :mod:`utils.scratch.init` and :mod:`utils.scratch.norm`: initializers, batch normalization and
  its relatives, dropout (chapter 05);
* :mod:`utils.scratch.conv`: convolution with loops and im2col, pooling, transposed convolution
  (chapter 06).

Import a module by name, e.g. ``from utils.scratch import conv``.
"""

from __future__ import annotations

from . import engine, layers
from .engine import Value, draw_graph, trace
from .layers import (
    MLPScratch,
    grad_check,
    linear_backward,
    linear_forward,
    numerical_gradient,
    rel_error,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)

__all__ = [
    "MLPScratch",
    "Value",
    "draw_graph",
    "engine",
    "grad_check",
    "layers",
    "linear_backward",
    "linear_forward",
    "numerical_gradient",
    "rel_error",
    "relu_backward",
    "relu_forward",
    "softmax_cross_entropy",
    "trace",
]
