"""Counting a model's parameters and floating-point operations (FLOPs).

Chapter 07 compares architectures by these two numbers. FLOPs are counted with PyTorch's own
:class:`torch.utils.flop_counter.FlopCounterMode`, which records the matrix products and
convolutions of one forward pass (including attention); element-wise operations (activations,
normalisation, additions, pooling) are not counted, as in most papers, where they are a few percent
at most. One multiply-accumulate (MAC) counts as **2 FLOPs**; papers often quote MACs ("1.8 GFLOPs"
for ResNet-18 is 1.8 G multiply-accumulates, 3.6 GFLOPs here).

The count can run on the ``meta`` device, where tensors have shapes but no data: build the model
under ``with torch.device("meta"):`` and VGG-16's 15.5 G multiply-accumulates are counted in
milliseconds without allocating its 138 M parameters::

    with torch.device("meta"):
        model = utils.models.vgg16()
    count_flops(model, (1, 3, 224, 224))  # 30.9e9
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["conv_params", "count_flops", "count_parameters", "flops_by_module", "format_count", "summarize"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (each shared parameter counted once).

    ``trainable_only=True`` counts only those with ``requires_grad``. Buffers (batch-norm running
    statistics) are not parameters. Chapter 07 asks for this function in its exercise.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_params(
    in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, groups: int = 1
) -> int:
    """Parameters of ``nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, groups=groups)``:
    ``out * (in / groups) * k * k`` weights plus ``out`` biases (chapter 07)."""
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("kernel_size", kernel_size),
        ("groups", groups),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups "
            f"({groups})"
        )
    return out_channels * (in_channels // groups) * kernel_size * kernel_size + (out_channels if bias else 0)


def _inputs(model: nn.Module, inputs: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs
    shape = tuple(int(s) for s in inputs)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(
            f"inputs must be a tensor or an input shape such as (1, 3, 224, 224), got {inputs!r}"
        )
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    return torch.zeros(shape, device=device)


def _counter(model: nn.Module, inputs: torch.Tensor | Sequence[int]) -> FlopCounterMode:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _inputs(model, inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: nn.Module, inputs: torch.Tensor | Sequence[int] = (1, 3, 224, 224)) -> int:
    """FLOPs of one forward pass of ``model`` in eval mode on ``inputs`` (a tensor, or a shape filled
    with zeros on the model's device), counted by ``torch.utils.flop_counter``; 1 MAC = 2 FLOPs.
    Divide by the batch size for FLOPs per image. Chapter 07 tabulates them."""
    return int(_counter(model, inputs).get_total_flops())


def flops_by_module(
    model: nn.Module, inputs: torch.Tensor | Sequence[int] = (1, 3, 224, 224), depth: int = 1
) -> dict[str, int]:
    """FLOPs per submodule down to ``depth`` levels below the model (``{"layer1": ..., "fc": ...}``;
    chapter 07 uses it to see where a network spends its compute)."""
    counts = _counter(model, inputs).get_flop_counts()
    root = type(model).__name__
    out: dict[str, int] = {}
    for name, per_op in counts.items():
        if not name.startswith(root + ".") or name.count(".") > depth:
            continue
        out[name[len(root) + 1 :]] = int(sum(per_op.values()))
    return out


def format_count(n: float, unit: str = "") -> str:
    """``11689512 -> '11.69M'``, ``3.6e9 -> '3.60G'`` (chapter 07's tables)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def summarize(
    models: Mapping[str, nn.Module], inputs: torch.Tensor | Sequence[int] = (1, 3, 224, 224)
) -> list[dict[str, Any]]:
    """One row per model: ``{"model": name, "params": int, "flops": int}`` for one forward pass on
    ``inputs`` (chapter 07's table of architectures; build the models on the meta device to make it
    instant)."""
    return [
        {"model": name, "params": count_parameters(m), "flops": count_flops(m, inputs)}
        for name, m in models.items()
    ]
