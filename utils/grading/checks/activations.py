"""Chapter 02 (assignment ``02_activations``): activation functions, stable, checked against PyTorch.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch`` / ``torch.nn.functional`` and autograd, computed in the grading process. One point per
question. Every function must return a tensor of the input's shape and dtype and leave its input
unchanged.

* q1 ``sigmoid(x)`` and ``sigmoid_grad(x)`` (the derivative, elementwise), against ``torch.sigmoid``
  and its autograd gradient; inputs include ``|x|`` up to ``1e4`` in float32 and float64, where
  ``exp(x) / (1 + exp(x))`` or ``exp(-x) / (1 + exp(-x))**2`` give NaN.
  Tolerance: float32 ``1e-6 + 1e-5 * |expected|``, float64 ``1e-12 + 1e-9 * |expected|``.
* q2 ``gelu(x)`` (exact, ``x * Phi(x)`` through ``erf``) and ``gelu_grad(x)``, against
  ``F.gelu(x)`` (``approximate="none"``) and autograd; the tanh approximation is off by up to 5e-4
  and fails. Inputs include ``|x|`` up to ``1e4``.
  Tolerance: float32 ``1e-5 + 1e-5 * |expected|``, float64 ``1e-10 + 1e-8 * |expected|``.
* q3 ``leaky_relu(x, alpha)`` and ``leaky_relu_grad(x, alpha)``, against ``F.leaky_relu`` and
  autograd for alpha in {0.01, 0.2, 0, 0.5}; inputs contain exact zeros, where PyTorch's derivative
  is ``alpha`` (it tests ``x > 0``). Tolerance: float32 ``1e-7 + 1e-6 * |expected|``, float64
  ``1e-15 + 1e-12 * |expected|`` (the values are exact in a correct answer).
* q4 ``log_softmax(z, dim)`` along any ``dim`` of 1-D, 2-D and 3-D tensors, against
  ``torch.log_softmax``; logits in the hundreds (float32) and thousands (float64, including
  ``randn + 3000`` and ``randn - 3000``), all-equal logits and a single class.
  Tolerance: float32 ``1e-4 + 1e-5 * |expected|``, float64 ``1e-9 + 1e-9 * |expected|``.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the ready-made activations each
question reproduces (in their ``torch.*``, ``F.*`` and ``Tensor`` forms), autograd for the
derivatives, and the course's own modules (``utils.scratch.activations``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Case, Question
from ..forbid import AUTOGRAD, COURSE

ASSIGNMENT = "02_activations"
TITLE = "Activation functions, stable and checked"

F32, F64 = torch.float32, torch.float64
EXTREMES = [1e4, -1e4, 1e3, -1e3, 100.0, -100.0, 50.0, -50.0, 20.0, -20.0, 10.0, -10.0, 0.0]


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=dtype)  # shape () gives a 0-dim tensor


def _extremes(g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The extreme values in a random order, with a few ordinary ones mixed in: (len(EXTREMES) + 5,)."""
    x = torch.cat([torch.tensor(EXTREMES, dtype=dtype), _randn(g, 5, dtype=dtype)])
    return x[torch.randperm(len(x), generator=g)]


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference output and its elementwise derivative f'(x), by autograd."""
    xr = x.clone().requires_grad_()
    y = fn(xr)
    y.backward(torch.ones_like(y))  # elementwise: d(sum f(x)) / dx_i = f'(x_i)
    return y.detach(), xr.grad


def _elementwise_cases(g, inputs, reference, names, tol, hints) -> list[Case]:
    """Forward cases first, then derivative cases, for a question on an elementwise function."""
    forward, backward = [], []
    fn_name, grad_name = names
    for label, x, extra in inputs:
        y, d = _value_and_grad(lambda t: reference(t, *extra.values()), x)
        args = {"x": x, **extra}
        forward.append(
            Case(f"{fn_name}, {label}", fn_name, args, y, **tol[x.dtype], hint=hints[0], unchanged=("x",))
        )
        backward.append(
            Case(
                f"{grad_name}, {label}",
                grad_name,
                dict(args),
                d,
                **tol[x.dtype],
                hint=hints[1],
                unchanged=("x",),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q1 sigmoid

SIGMOID_TOL = {F32: {"atol": 1e-6, "rtol": 1e-5}, F64: {"atol": 1e-12, "rtol": 1e-9}}


def sigmoid_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("x = 3 * randn, shape (6, 5)", _randn(g, 6, 5) * 3, {}),
        ("1-D, float64", _randn(g, 9, dtype=F64) * 3, {}),
        ("|x| up to 1e4, float32", _extremes(g, F32), {}),
        ("|x| up to 1e4, float64", _extremes(g, F64), {}),
        ("3-D (2, 3, 4), x = 30 * randn", _randn(g, 2, 3, 4) * 30, {}),
        ("a single value (0-dim tensor)", _randn(g, dtype=F64) * 2, {}),
    ]
    hints = (
        "sigmoid(x) = 1 / (1 + exp(-x)); never take exp of a large positive number: with e = exp(-|x|), "
        "use 1 / (1 + e) where x >= 0 and e / (1 + e) where x < 0 (torch.where); exp(x) / (1 + exp(x)) is "
        "inf / inf = NaN for x = 1e4; keep the dtype of x",
        "sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x)): reuse your stable sigmoid; exp(-x) / (1 + exp(-x))**2 is "
        "inf / inf = NaN for x = -1e4",
    )
    return _elementwise_cases(
        g, inputs, lambda t: torch.sigmoid(t), ("sigmoid", "sigmoid_grad"), SIGMOID_TOL, hints
    )


# --------------------------------------------------------------------------- q2 GELU

GELU_TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-10, "rtol": 1e-8}}


def gelu_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("x = 3 * randn, shape (5, 4)", _randn(g, 5, 4) * 3, {}),
        ("1-D, float64", _randn(g, 11, dtype=F64) * 3, {}),
        ("x uniform in [-6, 6], shape (40,)", torch.rand(40, generator=g) * 12 - 6, {}),
        ("|x| up to 1e4, float32", _extremes(g, F32), {}),
        ("|x| up to 1e4, float64", _extremes(g, F64), {}),
        ("3-D (2, 3, 4)", _randn(g, 2, 3, 4) * 2, {}),
    ]
    hints = (
        "exact GELU is x * Phi(x) with Phi(x) = 0.5 * (1 + torch.erf(x / math.sqrt(2))), the standard normal "
        "CDF; not the tanh approximation, which is off by up to 5e-4; keep the dtype of x",
        "d/dx [x Phi(x)] = Phi(x) + x * phi(x), with phi(x) = exp(-x**2 / 2) / sqrt(2 pi) the standard normal "
        "density (product rule: do not forget the x * phi(x) term)",
    )
    return _elementwise_cases(g, inputs, lambda t: F.gelu(t), ("gelu", "gelu_grad"), GELU_TOL, hints)


# --------------------------------------------------------------------------- q3 Leaky ReLU

LEAKY_TOL = {F32: {"atol": 1e-7, "rtol": 1e-6}, F64: {"atol": 1e-15, "rtol": 1e-12}}


def _with_zeros(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    x = _randn(g, *shape, dtype=dtype) * 2
    mask = torch.rand(*shape, generator=g) < 0.25
    mask.view(-1)[0] = True  # at least one exact zero
    return x.masked_fill(mask, 0.0)


def leaky_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("alpha = 0.01, x with exact zeros, shape (5, 4)", _with_zeros(g, 5, 4), {"alpha": 0.01}),
        ("alpha = 0.2, 1-D with zeros, float64", _with_zeros(g, 12, dtype=F64), {"alpha": 0.2}),
        ("alpha = 0 (plain ReLU), with zeros", _with_zeros(g, 3, 7), {"alpha": 0.0}),
        (
            "alpha = 0.5, 3-D (2, 3, 4) with zeros, float64",
            _with_zeros(g, 2, 3, 4, dtype=F64),
            {"alpha": 0.5},
        ),
        ("alpha = 0.1, |x| up to 1e4", _extremes(g, F32), {"alpha": 0.1}),
    ]
    hints = (
        "x where x > 0, alpha * x elsewhere (torch.where(x > 0, x, alpha * x)); alpha is a Python float; "
        "do not change x in place; keep the dtype of x",
        "the derivative is 1 where x > 0 and alpha elsewhere, also at x == 0 (PyTorch tests x > 0); return a "
        "tensor with the dtype of x: torch.where with two Python numbers gives float32, so build the values "
        "with torch.ones_like(x) and torch.full_like(x, alpha)",
    )
    return _elementwise_cases(
        g,
        inputs,
        lambda t, alpha: F.leaky_relu(t, alpha),
        ("leaky_relu", "leaky_relu_grad"),
        LEAKY_TOL,
        hints,
    )


# --------------------------------------------------------------------------- q4 log-softmax

LOG_SOFTMAX_TOL = {F32: {"atol": 1e-4, "rtol": 1e-5}, F64: {"atol": 1e-9, "rtol": 1e-9}}


def log_softmax_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("(N, C) = (4, 5), dim=1", _randn(g, 4, 5), 1),
        ("dim=0 of a (4, 5) tensor", _randn(g, 4, 5), 0),
        ("3-D (2, 3, 4), dim=-1, float64", _randn(g, 2, 3, 4, dtype=F64), -1),
        ("3-D (2, 3, 4), dim=1, float64", _randn(g, 2, 3, 4, dtype=F64), 1),
        ("1-D vector of 7 logits, dim=0", _randn(g, 7) * 2, 0),
        ("all logits equal (every value is -log C)", torch.full((3, 6), 2.5), 1),
        ("a single class, shape (3, 1), dim=1 (every value is 0)", _randn(g, 3, 1), 1),
        ("logits in the hundreds (100 * randn), float32", _randn(g, 5, 6) * 100, 1),
        ("logits in the thousands (1000 * randn), float64", _randn(g, 6, 5, dtype=F64) * 1000, 1),
        ("logits around +3000 (randn + 3000), float64", _randn(g, 4, 5, dtype=F64) + 3000, -1),
        ("logits around -3000 (randn - 3000), dim=0, float64", _randn(g, 5, 3, dtype=F64) - 3000, 0),
    ]
    cases = []
    for label, z, dim in inputs:
        cases.append(
            Case(
                label,
                "log_softmax",
                {"z": z, "dim": dim},
                torch.log_softmax(z, dim),
                **LOG_SOFTMAX_TOL[z.dtype],
                hint="subtract the maximum along dim first (m = z.amax(dim=dim, keepdim=True)), then "
                "log_softmax = (z - m) - log(sum(exp(z - m), dim, keepdim=True)); reduce along the dim you are "
                "given, not always the last one, and keep the dtype of z",
                unchanged=("z",),
            )
        )
    return cases


WHY = "chapter 02's exercise asks for the activations written with basic tensor operations"

QUESTIONS = [
    Question(
        "q1",
        "Stable sigmoid and its derivative",
        ("sigmoid", "sigmoid_grad"),
        sigmoid_cases,
        forbid=("torch.sigmoid", "torch.special.expit", "torch.nn.functional.logsigmoid", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q2",
        "Exact GELU and its derivative",
        ("gelu", "gelu_grad"),
        gelu_cases,
        forbid=("torch.nn.functional.gelu", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q3",
        "Leaky ReLU and its derivative",
        ("leaky_relu", "leaky_relu_grad"),
        leaky_cases,
        forbid=(
            "torch.nn.functional.leaky_relu",
            "torch._C._nn.leaky_relu",
            "torch.nn.functional.rrelu",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    Question(
        "q4",
        "Stable log-softmax along any dimension",
        ("log_softmax",),
        log_softmax_cases,
        forbid=(
            "torch.log_softmax",
            "torch.special.log_softmax",
            "torch.logsumexp",
            "torch.special.logsumexp",
            "torch.softmax",
            *COURSE,
        ),
        why=WHY,
    ),
]
