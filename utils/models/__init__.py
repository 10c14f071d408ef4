"""Models of the course: plain ``nn.Module`` classes with explicit constructor arguments, one file
per family.

* :class:`~utils.models.mlp.MLP`: a multilayer perceptron (chapter 01).
"""

from __future__ import annotations

from .mlp import MLP

__all__ = ["MLP"]
