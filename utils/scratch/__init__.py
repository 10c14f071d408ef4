"""From-scratch implementations that the chapters build by hand, kept here to be reused.

* :mod:`utils.scratch.engine`: a scalar autograd engine (:class:`~utils.scratch.engine.Value`)
  and a drawing of its computational graph (chapter 01);
* :mod:`utils.scratch.layers`: vectorized forward and backward passes of linear, ReLU and
  softmax cross-entropy layers, gradient checking, and :class:`~utils.scratch.layers.MLPScratch`,
  an MLP trained without autograd (chapter 01).
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
