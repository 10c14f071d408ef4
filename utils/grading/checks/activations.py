"""Chapter 02 (assignment ``02_activations``): backward passes of activations the lesson plots or
describes but does not write, checked against PyTorch's autograd.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch`` / ``torch.nn.functional`` and autograd, computed in the grading process. One point per
question. Every function must return tensors of the right shapes and dtype and leave its inputs
unchanged.

* q1 (new) ``gelu_tanh(x)`` and ``gelu_tanh_grad(x)``, the tanh approximation of GELU (the lesson
  gives its formula and plots it) and its derivative, against ``F.gelu(x, approximate="tanh")`` and
  autograd; inputs include ``|x|`` up to ``1e4`` and exact zeros. The exact GELU is off by up to
  5e-4 and fails. Tolerance: float32 ``1e-5 + 1e-5 * |expected|``, float64 ``1e-10 + 1e-8 * |expected|``.
* q2 (new) ``prelu(x, weight)`` and ``prelu_backward(dout, x, weight) -> (dx, dweight)`` with one
  slope per channel (dim 1) or one shared slope, against ``F.prelu`` and autograd; inputs (N, C),
  (N, C, L) and (N, C, H, W) with exact zeros (where the derivative is the slope, as in PyTorch),
  slopes above 1 and below 0. Tolerance: float32 ``1e-5 + 1e-5 * |expected|``, float64
  ``1e-10 + 1e-8 * |expected|``.
* q3 (new) ``swish(x, beta)`` = x sigmoid(beta x) and ``swish_backward(dout, x, beta) -> (dx, dbeta)``
  with a learnable slope ``beta`` (a 0-dim tensor), against autograd; beta 1 (SiLU), 0, 10 and
  negative; ``|beta x|`` up to ``1e4``, where exp(-beta x) / (1 + exp(-beta x))^2 is NaN. Tolerance as q2.
* q4 (new) ``softmax_t(z, T, dim)`` = softmax(z / T) and ``softmax_t_backward(dout, z, T, dim) ->
  (dz, dT)`` with a temperature ``T`` (a 0-dim tensor), against autograd; any ``dim`` of 1-D to 3-D
  inputs, T from 0.1 to 10, logits in the thousands. Tolerance as q2 (float32 ``1e-5``).
* r1-r6 (review, half a point each): a tanh chain, GELU(-1), a softmax Jacobian entry, He's standard
  deviation, a tempered softmax, which activations can die.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the ready-made activations each
question reproduces (in their ``torch.*``, ``F.*`` and ``Tensor`` forms), autograd, and the course's
own modules (``utils.scratch.activations``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Case, Question
from ..forbid import AUTOGRAD, COURSE
from ..review import Review

ASSIGNMENT = "02_activations"
TITLE = "Activation functions and their backward passes"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-10, "rtol": 1e-8}}
EXTREMES = [1e4, -1e4, 1e3, -1e3, 100.0, -100.0, 50.0, -50.0, 20.0, -20.0, 10.0, -10.0, 0.0]


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=dtype)  # shape () gives a 0-dim tensor


def _extremes(g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The extreme values in a random order, with a few ordinary ones mixed in: (len(EXTREMES) + 5,)."""
    x = torch.cat([torch.tensor(EXTREMES, dtype=dtype), _randn(g, 5, dtype=dtype)])
    return x[torch.randperm(len(x), generator=g)]


def _with_zeros(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    x = _randn(g, *shape, dtype=dtype) * 2
    mask = torch.rand(*shape, generator=g) < 0.2
    mask.view(-1)[0] = True  # at least one exact zero
    return x.masked_fill(mask, 0.0)


# --------------------------------------------------------------------------- q1 GELU, tanh approximation


def gelu_tanh_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("x = 3 * randn, shape (5, 4)", _randn(g, 5, 4) * 3),
        ("1-D with exact zeros, float64", _with_zeros(g, 11, dtype=F64)),
        ("x uniform in [-6, 6], shape (40,)", torch.rand(40, generator=g) * 12 - 6),
        ("|x| up to 1e4, float32", _extremes(g, F32)),
        ("|x| up to 1e4, float64", _extremes(g, F64)),
        ("3-D (2, 3, 4), float64", _randn(g, 2, 3, 4, dtype=F64) * 2),
    ]
    forward, backward = [], []
    for label, x in inputs:
        xr = x.clone().requires_grad_()
        y = F.gelu(xr, approximate="tanh")
        y.backward(torch.ones_like(y))  # elementwise: the gradient of the sum is f'(x)
        forward.append(
            Case(
                f"gelu_tanh, {label}",
                "gelu_tanh",
                {"x": x},
                y.detach(),
                **TOL[x.dtype],
                hint="x/2 (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3): the approximation, not the "
                "exact x Phi(x) (5e-4 apart); keep the dtype of x",
                unchanged=("x",),
            )
        )
        backward.append(
            Case(
                f"gelu_tanh_grad, {label}",
                "gelu_tanh_grad",
                {"x": x},
                xr.grad,
                **TOL[x.dtype],
                hint="a product of x/2 and (1 + tanh(u)), and u is a function of x: product rule, then chain "
                "rule through tanh (tanh' = 1 - tanh^2) and through u (a polynomial); where tanh(u) is "
                "+-1 the second term must be 0, not inf * 0",
                unchanged=("x",),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q2 PReLU, per-channel slopes


def prelu_cases(g: torch.Generator) -> list[Case]:
    def slopes(c: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.rand(c, generator=g, dtype=dtype) * 0.5

    inputs = [  # (label, x, weight)
        ("x (N, C) = (6, 3), one slope per channel", _with_zeros(g, 6, 3), slopes(3, F32)),
        (
            "x (N, C, H, W) = (4, 3, 5, 5), one slope per channel, float64",
            _with_zeros(g, 4, 3, 5, 5, dtype=F64),
            slopes(3, F64),
        ),
        (
            "x (N, C, L) = (3, 4, 7), slopes -0.5, 0, 1.5 and 0.25",
            _with_zeros(g, 3, 4, 7),
            torch.tensor([-0.5, 0.0, 1.5, 0.25]),
        ),
        (
            "a shared slope, weight (1,), x (5, 2, 3, 3), float64",
            _with_zeros(g, 5, 2, 3, 3, dtype=F64),
            slopes(1, F64),
        ),
        ("N = 1, x (1, 6, 2, 2)", _with_zeros(g, 1, 6, 2, 2), slopes(6, F32)),
    ]
    forward, backward = [], []
    for label, x, weight in inputs:
        dout = _randn(g, *x.shape, dtype=x.dtype)
        xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
        y = F.prelu(xr, wr)
        y.backward(dout)
        forward.append(
            Case(
                f"prelu, {label}",
                "prelu",
                {"x": x, "weight": weight},
                y.detach(),
                **TOL[x.dtype],
                hint="x where x > 0, slope * x elsewhere; the slopes belong to dimension 1 (channels): "
                "reshape weight to (C, 1, 1, ...) so that it broadcasts over the batch and the "
                "positions (a single slope broadcasts as it is)",
                unchanged=("x", "weight"),
            )
        )
        backward.append(
            Case(
                f"prelu_backward, {label}",
                "prelu_backward",
                {"dout": dout, "x": x, "weight": weight},
                (xr.grad, wr.grad),
                **TOL[x.dtype],
                hint="dx: dout times the local slope (the channel's slope also at x == 0, as PyTorch tests "
                "x > 0); dweight: a slope was used at every position of its channel in every example, and "
                "where x <= 0 the output changes by x per unit of slope: add dout * x over all of them; "
                "dweight has the shape of weight",
                unchanged=("dout", "x", "weight"),
                outputs=("dx", "dweight"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q3 Swish with a learnable slope


def swish_cases(g: torch.Generator) -> list[Case]:
    inputs = [  # (label, x, beta)
        ("beta = 1 (SiLU), x (5, 4)", _randn(g, 5, 4) * 3, 1.0),
        ("beta = 1.7, 4-D (2, 3, 4, 4), float64", _randn(g, 2, 3, 4, 4, dtype=F64) * 2, 1.7),
        ("beta = 0 (x / 2)", _randn(g, 12) * 2, 0.0),
        ("beta = 10 (close to ReLU), float64", _randn(g, 6, 3, dtype=F64), 10.0),
        ("beta = -0.8", _randn(g, 9) * 2, -0.8),
        ("|x| up to 1e4, beta = 1, float32", _extremes(g, F32), 1.0),
        ("|x| up to 1e4, beta = 0.5, float64", _extremes(g, F64), 0.5),
    ]
    forward, backward = [], []
    for label, x, b in inputs:
        beta = torch.tensor(b, dtype=x.dtype)
        dout = _randn(g, *x.shape, dtype=x.dtype)
        xr, br = x.clone().requires_grad_(), beta.clone().requires_grad_()
        y = xr * torch.sigmoid(br * xr)
        y.backward(dout)
        forward.append(
            Case(
                f"swish, {label}",
                "swish",
                {"x": x, "beta": beta},
                y.detach(),
                **TOL[x.dtype],
                hint="x * sigmoid(beta * x), with a sigmoid that never takes exp of a large positive number "
                "(chapter 02); keep the dtype of x",
                unchanged=("x", "beta"),
            )
        )
        backward.append(
            Case(
                f"swish_backward, {label}",
                "swish_backward",
                {"dout": dout, "x": x, "beta": beta},
                (xr.grad, br.grad),
                **TOL[x.dtype],
                hint="x appears twice, as the factor and inside the sigmoid (product rule); beta only inside "
                "the sigmoid, and one beta serves every entry, so dbeta is a sum over all of them, a 0-dim "
                "tensor; write sigmoid' as s (1 - s) from a stable s: exp(-z) / (1 + exp(-z))^2 is inf / inf "
                "for z = -1e4",
                unchanged=("dout", "x", "beta"),
                outputs=("dx", "dbeta"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q4 softmax with a temperature


def softmax_t_cases(g: torch.Generator) -> list[Case]:
    inputs = [  # (label, z, T, dim)
        ("(N, C) = (4, 5), T = 1, dim=1", _randn(g, 4, 5) * 2, 1.0, 1),
        ("T = 0.1 (sharp), dim=-1, float64", _randn(g, 3, 6, dtype=F64), 0.1, -1),
        ("T = 10 (flat), dim=0 of a (5, 3) tensor", _randn(g, 5, 3) * 3, 10.0, 0),
        ("3-D (2, 4, 3), dim=1, T = 2.5, float64", _randn(g, 2, 4, 3, dtype=F64), 2.5, 1),
        ("1-D, 7 logits, T = 0.7", _randn(g, 7), 0.7, 0),
        (
            "logits in the thousands (1000 * randn), T = 0.5, float64",
            _randn(g, 4, 5, dtype=F64) * 1000,
            0.5,
            1,
        ),
        ("logits around +3000 (randn + 3000), T = 2", _randn(g, 3, 4) + 3000, 2.0, -1),
    ]
    forward, backward = [], []
    for label, z, t, dim in inputs:
        temperature = torch.tensor(t, dtype=z.dtype)
        dout = _randn(g, *z.shape, dtype=z.dtype)
        zr, tr = z.clone().requires_grad_(), temperature.clone().requires_grad_()
        p = torch.softmax(zr / tr, dim=dim)
        p.backward(dout)
        tol = dict(TOL[z.dtype])
        if z.dtype == F32 and z.abs().max() > 500:
            tol = {"atol": 1e-4, "rtol": 1e-4}  # float32 logits near 3000 are 2.4e-4 apart
        forward.append(
            Case(
                f"softmax_t, {label}",
                "softmax_t",
                {"z": z, "T": temperature, "dim": dim},
                p.detach(),
                **tol,
                hint="softmax of z / T along dim, with the largest entry along dim subtracted before exp "
                "(keepdim=True) so that nothing overflows",
                unchanged=("z", "T"),
            )
        )
        backward.append(
            Case(
                f"softmax_t_backward, {label}",
                "softmax_t_backward",
                {"dout": dout, "z": z, "T": temperature, "dim": dim},
                (zr.grad, tr.grad),
                **tol,
                hint="first the gradient at u = z / T, the softmax's backward pass of the chapter (one dot "
                "product of dout with p along dim, never the Jacobian); then u depends on z through "
                "1/T and on T through -z/T^2, and T was used by every entry: dT sums over all of them "
                "(a 0-dim tensor)",
                unchanged=("dout", "z", "T"),
                outputs=("dz", "dT"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Ten tanh units at z = 2",
        3.11e-12,
        atol=0.0,
        rtol=0.02,
        points=0.5,
        explain="tanh'(2) = 1 - tanh(2)^2 = 1 - 0.9640^2 = 0.0707, and ten of them multiply: 0.0707^10 = "
        "3.1e-12 (the derivative is 1 - tanh^2, not 1 - tanh, and factors along a chain multiply, they do "
        "not add).",
    ),
    Review(
        "r2",
        "GELU(-1)",
        -0.1587,
        atol=0.002,
        rtol=0.0,
        points=0.5,
        explain="GELU(x) = x Phi(x) with Phi the standard normal CDF: Phi(-1) = 0.1587, so GELU(-1) = "
        "-0.1587 (not -1 * Phi(1) = -0.841, and not -0.5, which is x/2).",
    ),
    Review(
        "r3",
        "An entry of the softmax Jacobian",
        -0.14,
        atol=0.002,
        rtol=0.0,
        points=0.5,
        explain="dp_i/dz_j = p_i (delta_ij - p_j); off the diagonal it is -p_i p_j = -0.7 * 0.2 = -0.14 (the "
        "diagonal formula p_i (1 - p_j) gives 0.56; raising one logit lowers every other probability).",
    ),
    Review(
        "r4",
        "He initialisation's standard deviation",
        0.0625,
        atol=0.0005,
        rtol=0.0,
        points=0.5,
        explain="He initialisation draws W ~ N(0, 2 / fan_in): the *variance* is 2 / 512 = 0.0039, the "
        "standard deviation its square root, sqrt(2 / 512) = 0.0625 (1 / sqrt(512) = 0.044 is "
        "Glorot's / LeCun's choice without the factor 2 for ReLU).",
    ),
    Review(
        "r5",
        "A softmax at temperature 0.5",
        0.9820,
        atol=0.002,
        rtol=0.0,
        points=0.5,
        explain="softmax(z / T) with T = 0.5 doubles the logits: (4, 0), so p_0 = e^4 / (e^4 + 1) = "
        "sigmoid(4) = 0.982 (multiplying by T instead gives sigmoid(1) = 0.731).",
    ),
    Review(
        "r6",
        "Which units die",
        {"a"},
        choices="abcd",
        points=0.5,
        explain="Only ReLU's derivative is exactly 0 for every negative input (a). Leaky ReLU keeps its "
        "slope 0.01 (b), ELU's derivative e^z is at least e^-3 = 0.05 on [-3, -1] (c), and GELU's, "
        "Phi(z) + z phi(z), is small but not zero there (d): those units still receive a gradient "
        "and can recover.",
    ),
]

WHY = "chapter 02's exercise asks for the backward passes written by hand with basic tensor operations"

QUESTIONS = [
    Question(
        "q1",
        "GELU, tanh approximation: value and derivative",
        ("gelu_tanh", "gelu_tanh_grad"),
        gelu_tanh_cases,
        forbid=("torch.nn.functional.gelu", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q2",
        "PReLU with per-channel slopes: forward and backward",
        ("prelu", "prelu_backward"),
        prelu_cases,
        forbid=("torch.nn.functional.prelu", "torch.nn.PReLU", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q3",
        "Swish with a learnable slope: forward and backward",
        ("swish", "swish_backward"),
        swish_cases,
        forbid=(
            "torch.sigmoid",
            "torch.special.expit",
            "torch.nn.functional.silu",
            "torch.nn.functional.logsigmoid",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    Question(
        "q4",
        "Softmax with a temperature: forward and backward",
        ("softmax_t", "softmax_t_backward"),
        softmax_t_cases,
        forbid=(
            "torch.softmax",
            "torch.special.softmax",
            "torch.log_softmax",
            "torch.special.log_softmax",
            "torch.logsumexp",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    *REVIEW,
]
