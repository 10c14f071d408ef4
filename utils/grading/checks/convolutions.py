"""Chapter 06 (assignment ``06_convolutions``): convolution, max pooling and their arithmetic.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch.nn.functional`` (``conv2d``, ``max_pool2d`` and its autograd gradient, ``conv1d`` for the
sizes and receptive fields), computed in the grading process. One point per question.

* q1 ``conv2d_forward(x, w, b, stride, padding)`` with x (N, C_in, H, W), w (C_out, C_in, kh, kw),
  b (C_out,) or None: against ``F.conv2d``; single and several channels, strides that do not divide
  the input evenly, padding, 1x1 and non-square kernels, non-square inputs, a kernel as large as the
  padded input, no bias; float32 and float64. Tolerance: float32 ``1e-4 + 1e-4 * |expected|``,
  float64 ``1e-9 + 1e-7 * |expected|``.
* q2 ``maxpool2d_forward(x, k, stride)`` and ``maxpool2d_backward(dout, x, k, stride)``: against
  ``F.max_pool2d`` and its autograd gradient; windows side by side and overlapping (stride <
  kernel), sizes that do not divide, all-negative inputs, and ties (integer-valued inputs: the
  gradient goes to the first maximum of the window in row-major order, as in PyTorch). The
  forward pass must match exactly; the backward pass to ``1e-6`` (float32) or ``1e-12`` (float64)
  absolute plus the same relative (overlapping windows add gradients in any order).
* q3 ``conv_output_size(n, k, stride, padding, dilation)``: the length of ``F.conv1d``'s output
  for input length ``n``; exact. Includes strides that do not divide, dilation, a kernel as large
  as the padded input, 1x1 kernels and stride larger than the kernel.
* q4 ``receptive_field(layers)`` for a list of ``(kernel, stride, dilation)``: the receptive field
  size of one output unit of the stack, measured as the extent of the non-zero gradient of that
  unit with respect to the input of a stack of ``F.conv1d`` layers with all-one kernels; exact.
  Includes the empty stack (a pixel sees itself: 1), 1x1 kernels, pooling-like layers (k = s) and
  random stacks with strides and dilations.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the convolutions and pooling of
``torch.nn.functional`` and ``torch.nn`` (``F.conv2d``, ``F.unfold`` and ``x.unfold``, ``F.max_pool2d``),
autograd (q2's backward, q4), ``utils.receptive_field`` (q3, q4) and the course's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Case, Question
from ..forbid import AUTOGRAD, COURSE

ASSIGNMENT = "06_convolutions"
TITLE = "Convolutions by hand"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-4, "rtol": 1e-4}, F64: {"atol": 1e-9, "rtol": 1e-7}}
POOL_TOL = {F32: {"atol": 1e-6, "rtol": 1e-6}, F64: {"atol": 1e-12, "rtol": 1e-12}}


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1 convolution

CONV_CONFIGS = [  # (label, N, C_in, H, W, C_out, kh, kw, stride, padding, bias, dtype)
    ("one channel, 3x3 kernel, no padding", 1, 1, 6, 6, 1, 3, 3, 1, 0, True, F32),
    ("3 input and 4 output channels, padding 1", 2, 3, 7, 7, 4, 3, 3, 1, 1, True, F32),
    ("stride 2 that does not divide evenly (H=W=8, k=3)", 2, 2, 8, 8, 3, 3, 3, 2, 0, True, F64),
    ("stride 2 and padding 2, 5x5 kernel", 1, 2, 9, 9, 2, 5, 5, 2, 2, True, F32),
    ("1x1 kernel (a per-pixel linear map of the channels)", 2, 4, 5, 5, 3, 1, 1, 1, 0, True, F64),
    ("non-square input (5x8) and kernel (2x3), stride 3", 1, 2, 5, 8, 3, 2, 3, 3, 1, True, F32),
    ("kernel as large as the padded input (1x1 output)", 2, 3, 4, 4, 2, 6, 6, 1, 1, True, F64),
    ("no bias (b is None)", 2, 2, 6, 5, 3, 3, 3, 1, 1, False, F32),
]


def conv_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, n, c_in, h, w, c_out, kh, kw, stride, padding, has_bias, dtype in CONV_CONFIGS:
        x = _randn(g, n, c_in, h, w, dtype=dtype)
        weight = _randn(g, c_out, c_in, kh, kw, dtype=dtype)
        bias = _randn(g, c_out, dtype=dtype) if has_bias else None
        expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
        cases.append(
            Case(
                f"{label}: x {tuple(x.shape)}, w {tuple(weight.shape)}, stride={stride}, padding={padding}, {str(dtype)[6:]}",
                "conv2d_forward",
                {"x": x, "w": weight, "b": bias, "stride": stride, "padding": padding},
                expected,
                **TOL[dtype],
                hint="pad x with zeros first (padding rows/columns on every side); the output size is "
                "(H + 2p - kh) // s + 1; out[n, o, i, j] = sum over c, u, v of w[o, c, u, v] * x_pad[n, c, i*s + u, j*s + v], "
                "plus b[o] when b is not None; no kernel flip (PyTorch computes a cross-correlation); keep the dtype of x",
                unchanged=("x", "w", "b"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 max pooling

POOL_CONFIGS = [  # (label, shape, k, stride, kind, dtype)
    ("2x2 windows side by side (k=2, stride=2)", (2, 3, 6, 6), 2, 2, "randn", F32),
    ("overlapping windows (k=3, stride=1)", (1, 2, 6, 7), 3, 1, "randn", F64),
    ("overlapping windows (k=3, stride=2)", (2, 2, 7, 7), 3, 2, "randn", F32),
    ("sizes that do not divide (7x9, k=2, stride=2)", (1, 2, 7, 9), 2, 2, "randn", F64),
    ("all values negative", (2, 1, 6, 6), 2, 2, "negative", F32),
    ("ties (integer values), k=2, stride=2", (2, 2, 6, 6), 2, 2, "ties", F64),
    ("ties with overlapping windows (k=3, stride=1)", (1, 2, 6, 6), 3, 1, "ties", F32),
    ("one window covering the whole image (k=4 on 4x4)", (3, 2, 4, 4), 4, 4, "randn", F32),
]


def _pool_input(g: torch.Generator, shape: tuple[int, ...], kind: str, dtype: torch.dtype) -> torch.Tensor:
    if kind == "ties":
        return torch.randint(0, 3, shape, generator=g).to(dtype)  # many equal values in every window
    x = _randn(g, *shape, dtype=dtype)
    return -x.abs() - 0.5 if kind == "negative" else x


def pool_cases(g: torch.Generator) -> list[Case]:
    forward, backward = [], []
    for label, shape, k, stride, kind, dtype in POOL_CONFIGS:
        x = _pool_input(g, shape, kind, dtype)
        xr = x.clone().requires_grad_()
        out = F.max_pool2d(xr, k, stride)
        dout = _randn(g, *out.shape, dtype=dtype)
        out.backward(dout)
        name = f"{label}: x {tuple(shape)}, {str(dtype)[6:]}"
        forward.append(
            Case(
                f"forward, {name}",
                "maxpool2d_forward",
                {"x": x, "k": k, "stride": stride},
                out.detach(),
                hint="output size (H - k) // stride + 1; each output is the max of its k x k window "
                "x[n, c, i*stride : i*stride + k, j*stride : j*stride + k]; start from the window's values "
                "(not from 0, the inputs can all be negative); keep the dtype of x",
                unchanged=("x",),
            )
        )
        backward.append(
            Case(
                f"backward, {name}",
                "maxpool2d_backward",
                {"dout": dout, "x": x, "k": k, "stride": stride},
                xr.grad,
                **POOL_TOL[dtype],
                hint="dx has the shape of x and is 0 except at the position of each window's maximum, which receives that "
                "output's dout; when windows overlap, ADD (+=) the gradients of every window a pixel wins; when several "
                "values tie, only the FIRST maximum in row-major order gets the gradient (argmax of the flattened window), "
                "as in PyTorch",
                unchanged=("dout", "x"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q3 output size

SIZE_CONFIGS = [  # (label, n, k, stride, padding, dilation)
    ("3x3 kernel, no padding", 28, 3, 1, 0, 1),
    ("'same' padding (k=3, p=1)", 28, 3, 1, 1, 1),
    ("stride 2 that divides", 32, 2, 2, 0, 1),
    ("stride 2 that does not divide", 28, 3, 2, 0, 1),
    ("stride 3, padding 1, does not divide", 17, 5, 3, 1, 1),
    ("dilation 2 (the kernel spans 5 pixels)", 20, 3, 1, 0, 2),
    ("dilation 3 with padding 3", 15, 3, 1, 3, 3),
    ("dilation and stride together", 33, 3, 2, 1, 4),
    ("1x1 kernel with stride 2", 7, 1, 2, 0, 1),
    ("stride larger than the kernel", 10, 2, 4, 0, 1),
    ("kernel as large as the padded input (output 1)", 5, 7, 1, 1, 1),
    ("large input (ImageNet stem: n=224, k=7, s=2, p=3)", 224, 7, 2, 3, 1),
]


def _conv1d_length(n: int, k: int, stride: int, padding: int, dilation: int) -> int:
    x = torch.zeros(1, 1, n)
    w = torch.zeros(1, 1, k)
    return int(F.conv1d(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1])


def size_cases(g: torch.Generator) -> list[Case]:
    configs = list(SIZE_CONFIGS)
    for i in range(3):  # random configurations where the kernel fits
        k = int(torch.randint(1, 8, (1,), generator=g))
        dilation = int(torch.randint(1, 4, (1,), generator=g))
        stride = int(torch.randint(1, 5, (1,), generator=g))
        padding = int(torch.randint(0, 4, (1,), generator=g))
        n = dilation * (k - 1) + 1 + int(torch.randint(0, 40, (1,), generator=g))
        configs.append((f"random configuration {i + 1}", n, k, stride, padding, dilation))
    cases = []
    for label, n, k, stride, padding, dilation in configs:
        cases.append(
            Case(
                f"{label}: n={n}, k={k}, stride={stride}, padding={padding}, dilation={dilation}",
                "conv_output_size",
                {"n": n, "k": k, "stride": stride, "padding": padding, "dilation": dilation},
                _conv1d_length(n, k, stride, padding, dilation),
                hint="a dilated kernel spans d (k - 1) + 1 pixels; it fits into the padded input n + 2p at "
                "floor((n + 2p - d (k - 1) - 1) / s) + 1 positions; use integer division // and return an int",
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 receptive field

RF_STACKS = [  # (label, layers)
    ("no layers: a pixel sees itself", []),
    ("one 3x3 convolution", [(3, 1, 1)]),
    ("three 3x3 convolutions (as one 7x7)", [(3, 1, 1)] * 3),
    ("1x1 convolutions do not grow it", [(1, 1, 1), (3, 1, 1), (1, 1, 1)]),
    ("conv, 2x2 pooling (k=2, s=2), conv", [(3, 1, 1), (2, 2, 1), (3, 1, 1)]),
    ("strided convolutions", [(3, 2, 1), (3, 2, 1), (3, 2, 1)]),
    ("dilations 1, 2, 4, 8 (context aggregation)", [(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)]),
    ("VGG-like: (conv, conv, pool) x 3", [(3, 1, 1), (3, 1, 1), (2, 2, 1)] * 3),
    ("ResNet-like stem: 7x7 stride 2, 3x3 pool stride 2, 3x3 conv", [(7, 2, 1), (3, 2, 1), (3, 1, 1)]),
]


def _empirical_rf(layers: list[tuple[int, int, int]]) -> int:
    """Extent of the non-zero input gradient of output unit 0 of a stack of all-ones conv1d layers.

    Without padding, unit 0 sees input pixels 0 to r - 1 whenever the stack has any output at all,
    so the input only has to be long enough for that (doubled until it is).
    """
    length = 16
    while True:
        x = torch.ones(1, 1, length, dtype=F64, requires_grad=True)
        out = x
        for k, s, d in layers:
            if out.shape[-1] < d * (k - 1) + 1:
                break
            out = F.conv1d(out, torch.ones(1, 1, k, dtype=F64), stride=s, dilation=d)
        else:
            break
        length *= 2
    out[0, 0, 0].backward()
    support = torch.nonzero(x.grad[0, 0]).flatten()
    return int(support[-1] - support[0] + 1)


def rf_cases(g: torch.Generator) -> list[Case]:
    stacks = list(RF_STACKS)
    for i in range(3):  # random stacks of 2 to 5 layers
        n_layers = int(torch.randint(2, 6, (1,), generator=g))
        layers = [
            (
                int(torch.randint(1, 6, (1,), generator=g)),
                int(torch.randint(1, 3, (1,), generator=g)),
                int(torch.randint(1, 4, (1,), generator=g)),
            )
            for _ in range(n_layers)
        ]
        stacks.append((f"random stack {i + 1}", layers))
    cases = []
    for label, layers in stacks:
        cases.append(
            Case(
                f"{label}: layers={layers}",
                "receptive_field",
                {"layers": list(layers)},
                _empirical_rf(layers),
                hint="start with r = 1 and jump j = 1 (the input pixels); for each (k, s, d): r += d (k - 1) j, then j *= s "
                "(the jump is the product of the strides BEFORE the layer, so update r before j); return an int",
                unchanged=("layers",),
            )
        )
    return cases


CONV = (
    "torch.nn.functional.conv2d",
    "torch.nn.functional.conv1d",
    "torch.nn.functional.unfold",
    "torch.convolution",
    "torch.nn.Conv2d",
)
WHY = "chapter 06's exercise asks for the operations written with indexing, slicing and matrix products"

QUESTIONS = [
    Question(
        "q1",
        "2-D convolution forward (matches F.conv2d)",
        ("conv2d_forward",),
        conv_cases,
        forbid=(*CONV, *COURSE),
        why=WHY,
    ),
    Question(
        "q2",
        "Max pooling: forward and backward",
        ("maxpool2d_forward", "maxpool2d_backward"),
        pool_cases,
        forbid=(
            "torch.nn.functional.max_pool2d",
            "torch.nn.MaxPool2d",
            "torch.nn.functional.unfold",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    Question(
        "q3",
        "Output size of a convolution",
        ("conv_output_size",),
        size_cases,
        forbid=(*CONV, "utils.receptive_field", *COURSE),
        why="q3 asks for the formula, not a convolution run",
    ),
    Question(
        "q4",
        "Receptive field of a stack of layers",
        ("receptive_field",),
        rf_cases,
        forbid=(*CONV, *AUTOGRAD, "utils.receptive_field", *COURSE),
        why="q4 asks for the recurrence, not a measurement",
    ),
]
