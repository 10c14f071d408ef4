"""Receptive fields of a stack of convolution and pooling layers: computed and measured (chapter 06).

The *receptive field* of a unit is the set of input pixels that can change its value. For a stack
of layers, each with kernel size ``k``, stride ``s``, dilation ``d`` and padding ``p``, three
numbers per layer describe it along one axis, with ``k_eff = d (k - 1) + 1`` (the pixels a dilated
kernel spans) and the input itself as layer 0 with ``r = 1``, ``j = 1``, ``start = 0``:

* the **size** ``r_l = r_{l-1} + (k_eff - 1) j_{l-1}``: how many input pixels one unit sees;
* the **jump** ``j_l = j_{l-1} s``: how many input pixels apart two neighbouring units are (the
  effective stride of the layer with respect to the input);
* the **start** ``start_l = start_{l-1} - p j_{l-1}``: the input coordinate of the first pixel seen
  by unit 0 (negative when it lies in the padding).

Unit ``i`` of layer ``l`` then sees input pixels ``start_l + i j_l`` to ``start_l + i j_l + r_l - 1``.
:func:`receptive_field` computes the table; :func:`empirical_receptive_field` measures it with
autograd: the gradient of one output unit with respect to the input is non-zero only inside its
receptive field. Chapter 06 checks one against the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "EmpiricalRF",
    "LayerRF",
    "LayerSpec",
    "empirical_receptive_field",
    "format_table",
    "layer_specs",
    "receptive_field",
]

# Layers that act on each position separately (or not spatially at all): they leave the receptive field alone.
POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.Hardswish,
    nn.ReLU6,
)
SPATIAL = (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


@dataclass(frozen=True)
class LayerSpec:
    """One layer along one axis: kernel size, stride, dilation and padding (chapter 06)."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        for field, minimum in (("kernel", 1), ("stride", 1), ("dilation", 1), ("padding", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"LayerSpec.{field} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"LayerSpec.{field} must be >= {minimum}, got {value}")

    @property
    def span(self) -> int:
        """Pixels covered by the dilated kernel: ``d (k - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1


@dataclass(frozen=True)
class LayerRF:
    """The receptive field after one layer (chapter 06): ``size``, ``jump`` and ``start`` in input pixels.

    ``out_size`` is the layer's output size when the input size was given, else None.
    """

    name: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    size: int
    jump: int
    start: int
    out_size: int | None = None

    def span(self, unit: int) -> tuple[int, int]:
        """First and last input pixel (inclusive) seen by output unit ``unit``; may reach into the padding."""
        first = self.start + unit * self.jump
        return first, first + self.size - 1

    @property
    def center(self) -> float:
        """Input coordinate of the centre of unit 0's receptive field."""
        return self.start + (self.size - 1) / 2


def _component(value: Any, axis: int) -> int:
    """``3 -> 3``, ``(3, 5)`` with axis 1 -> 5."""
    if isinstance(value, (tuple, list)):
        return int(value[axis] if len(value) > 1 else value[0])
    return int(value)


def _module_spec(module: nn.Module, name: str, axis: int) -> LayerSpec:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module.padding, str):
            raise ValueError(
                f"layer {name}: padding={module.padding!r} is not supported; give the padding as ints"
            )
        return LayerSpec(
            _component(module.kernel_size, axis),
            _component(module.stride, axis),
            _component(module.dilation, axis),
            _component(module.padding, axis),
            name,
        )
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return LayerSpec(
            _component(module.kernel_size, axis),
            _component(stride, axis),
            _component(module.dilation, axis),
            _component(module.padding, axis),
            name,
        )
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return LayerSpec(
            _component(module.kernel_size, axis),
            _component(stride, axis),
            1,
            _component(module.padding, axis),
            name,
        )
    raise TypeError(f"layer {name} ({type(module).__name__}) is not a convolution or pooling layer")


def layer_specs(layers: nn.Module | Iterable[Any], axis: int = 0) -> list[LayerSpec]:
    """The spatial layers of a model or a list, in order, as :class:`LayerSpec` along ``axis`` (chapter 06).

    ``layers`` is an ``nn.Module`` (its convolution and pooling layers are taken in the order
    ``modules()`` visits them, which is the order of computation for ``nn.Sequential``; pointwise
    layers such as ReLU, batch norm and dropout are skipped) or a list whose items are
    :class:`LayerSpec`, modules, or tuples ``(kernel, stride, dilation)`` or
    ``(kernel, stride, dilation, padding)``. ``axis`` picks height (0) or width (1) for 2-D layers.
    Other layers (a linear layer, adaptive pooling, upsampling) raise a ``TypeError``: they have no
    fixed receptive-field arithmetic.
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (height) or 1 (width), got {axis!r}")
    if isinstance(layers, nn.Module):
        if isinstance(layers, SPATIAL):
            return [_module_spec(layers, type(layers).__name__, axis)]
        specs = []
        for name, module in layers.named_modules():
            if module is layers or len(list(module.children())) > 0:
                continue  # containers: their children are visited
            if isinstance(module, SPATIAL):
                specs.append(_module_spec(module, f"{name} {type(module).__name__}", axis))
            elif not isinstance(module, POINTWISE):
                raise TypeError(
                    f"layer {name} ({type(module).__name__}) has no fixed receptive-field arithmetic; "
                    "pass the convolution and pooling part of the model (e.g. model.features)"
                )
        return specs
    specs = []
    for i, item in enumerate(layers):
        if isinstance(item, LayerSpec):
            specs.append(item)
        elif isinstance(item, nn.Module):
            specs.extend(layer_specs(item, axis))
        elif isinstance(item, (tuple, list)) and len(item) in (3, 4):
            specs.append(LayerSpec(*(int(v) for v in item), name=f"layer {i + 1}"))
        else:
            raise TypeError(
                f"layers[{i}] must be a LayerSpec, an nn.Module or a tuple (kernel, stride, dilation[, "
                "padding]), "
                f"got {item!r}"
            )
    return specs


def receptive_field(
    layers: nn.Module | Iterable[Any], input_size: int | None = None, axis: int = 0
) -> list[LayerRF]:
    """Receptive field size, jump and start after every layer of a stack (chapter 06).

    ``layers`` is anything :func:`layer_specs` accepts. Returns one :class:`LayerRF` per spatial
    layer; the last one describes the stack's output. With ``input_size`` (pixels along ``axis``)
    each row also has the layer's output size, and a layer whose kernel does not fit raises.

    >>> [row.size for row in receptive_field([(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1)])]
    [3, 5, 6, 10]
    """
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
    ):
        raise ValueError(f"input_size must be a positive int or None, got {input_size!r}")
    size, jump, start, n = 1, 1, 0, input_size  # layer 0: the input pixels themselves
    rows = []
    for spec in layer_specs(layers, axis):
        if n is not None:
            n_out = (n + 2 * spec.padding - spec.span) // spec.stride + 1
            if n_out < 1:
                raise ValueError(
                    f"{spec.name or 'a layer'}: the kernel spans {spec.span} pixels but its padded input has "
                    f"only {n + 2 * spec.padding}"
                )
            n = n_out
        size = size + (spec.span - 1) * jump  # the new kernel reaches (span - 1) previous units further
        start = start - spec.padding * jump  # the padding shifts unit 0 to the left (into the padding)
        jump = jump * spec.stride
        rows.append(
            LayerRF(spec.name, spec.kernel, spec.stride, spec.dilation, spec.padding, size, jump, start, n)
        )
    return rows


def format_table(rows: Sequence[LayerRF]) -> str:
    """The rows of :func:`receptive_field` as a text table, one line per layer (chapter 06)."""
    lines = [f"{'layer':<20}{'k':>3}{'s':>3}{'d':>3}{'p':>3} {'out':>5}{'RF size':>9}{'jump':>6}{'start':>7}"]
    for row in rows:
        out = "" if row.out_size is None else str(row.out_size)
        lines.append(
            f"{row.name[:19]:<20}{row.kernel:>3}{row.stride:>3}{row.dilation:>3}{row.padding:>3} "
            f"{out:>5}{row.size:>9}{row.jump:>6}{row.start:>7}"
        )
    return "\n".join(lines)


@dataclass
class EmpiricalRF:
    """What :func:`empirical_receptive_field` measured (chapter 06).

    ``grad`` (H, W): the absolute gradient of the unit w.r.t. the input, summed over the batch and
    the channels; ``rows`` and ``cols``: first and last input row and column where it is non-zero
    (inclusive; clipped to the image); ``size``: (height, width) of that bounding box; ``unit``:
    the output position (i, j) that was measured.
    """

    grad: torch.Tensor
    rows: tuple[int, int]
    cols: tuple[int, int]
    unit: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1


def empirical_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    unit: Sequence[int] | None = None,
    *,
    batch: int = 8,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> EmpiricalRF:
    """Measure the receptive field of one output unit with autograd (chapter 06).

    Feeds ``batch`` random inputs of shape ``input_shape`` = (C, H, W) (uniform in [0, 1]) through
    ``model``, backpropagates the sum over the batch and the channels of the output at position
    ``unit`` = (i, j) (default: the centre of the output map) and reports where the input gradient
    is non-zero. A pixel outside the receptive field gets exactly zero gradient. Inside it, a single
    input can also give zero (a ReLU that is off, a max-pooling window that another pixel won, the
    gaps of a dilated kernel), which is why several random inputs are used and the bounding box of
    the union is reported. The model's weights are left untouched; it is run in eval mode and its
    previous mode is restored.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *input_shape, generator=generator).to(device).requires_grad_()
    was_training = model.training
    model.eval()
    try:
        out = model(x)  # (B, C_out, H_out, W_out)
        if out.ndim != 4:
            raise ValueError(f"the model must return feature maps (B, C, H, W), got shape {tuple(out.shape)}")
        h_out, w_out = out.shape[2:]
        i, j = (h_out // 2, w_out // 2) if unit is None else (int(unit[0]), int(unit[1]))
        if not (0 <= i < h_out and 0 <= j < w_out):
            raise ValueError(f"unit {(i, j)} lies outside the output map of size {(h_out, w_out)}")
        (grad,) = torch.autograd.grad(out[:, :, i, j].sum(), x)
    finally:
        model.train(was_training)
    grad = grad.detach().abs().sum(dim=(0, 1)).cpu()  # (H, W)
    rows = torch.nonzero(grad.sum(dim=1) > 0).flatten()
    cols = torch.nonzero(grad.sum(dim=0) > 0).flatten()
    if len(rows) == 0:
        raise ValueError(
            f"the gradient of unit {(i, j)} is zero everywhere: no input pixel reaches it "
            "(all ReLUs off?) – try a larger batch or another seed"
        )
    return EmpiricalRF(grad, (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1])), (i, j))
