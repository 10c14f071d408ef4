"""Chapter 05 (assignment ``05_init_norm_reg``): He initialization, batch normalization forward and
backward, and inverted dropout, checked against PyTorch. One point per question.

Deterministic answers (q2, q3, and the deterministic cases of q4) are compared with references
from ``torch.nn.functional`` and autograd computed in float64 in the grading process. Random answers
(q1, q4) are checked through statistics: a harness fills a large tensor, or the same tensor many
times, in the learner's process and returns the raw values, and the statistic is computed in the
grading process (so patching ``Tensor.var`` or ``torch.equal`` in the notebook changes nothing).
Each statistical tolerance is at least
7 standard deviations of that statistic for a correct solution, so a correct solution fails a case
with probability below 1e-11 (below 1e-9 over the whole assignment), while the typical mistakes
are off by 10% or more: fan_in and fan_out swapped, Xavier's 2 / (fan_in + fan_out) instead of
He's 2 / fan, a missing factor 2, a uniform instead of a normal distribution, a missing
1 / (1 - p) scaling, one mask shared by several values.

* q1 ``he_init_(weight, fan_mode)``: fill ``weight`` (out, in) or (out, in, kh, kw) in place with
  N(0, 2 / fan). About 10^6 values per case (a small weight is refilled many times): the standard
  deviation within ``rtol = 5e-3`` (7 sd: 1 / sqrt(2n) = 7.1e-4), the mean within 7 sd of the
  sample mean, the kurtosis (3 for a normal distribution, 1.8 for a uniform one) within 0.05
  (10 sd: sqrt(24 / n) = 4.9e-3). The weight starts as NaN, so a function that returns a new
  tensor instead of filling the given one fails; one case passes an ``nn.Parameter`` (filling it
  needs ``torch.no_grad()``).
* q2 ``batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)``
  for x (N, C, H, W) returns ``(out, running_mean, running_var, cache)`` with
  ``cache = (x_hat, gamma, inv_std)``: x_hat (N, C, H, W) the standardized input, gamma (C,),
  inv_std = 1 / sqrt(var + eps) (C,), where var is the batch's biased variance in training mode
  and the running variance in evaluation mode. The running statistics are returned as new tensors
  (the arguments must be unchanged). Cases: training and evaluation mode, N = 1 with spatial
  extent, H = W = 1 with N = 2 (the unbiased factor n / (n - 1) = 2), non-default momentum and eps,
  float64, and inputs with a large mean (mean 64, standard deviation 1) where E[x^2] - E[x]^2
  loses the variance in float32. Tolerances: float32 ``1e-5 + 1e-5 * |expected|``, the large-mean
  case ``1e-4 + 1e-4 * |expected|``, float64 ``1e-9 + 1e-7 * |expected|``.
* q3 ``batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)`` for the training-mode forward
  pass, the cache built by the grader as above; compared with autograd through
  ``torch.nn.functional.batch_norm``. float64 ``1e-9 + 1e-7 * |expected|``, float32
  ``1e-5 + 1e-4 * |expected|``.
* q4 ``dropout(x, p, training)``, inverted dropout: the fraction of zeros of 10^6 ones (7 sd of a
  binomial fraction), the kept values exactly ``x / (1 - p)`` (``rtol = 1e-6``; float64 ``1e-12``),
  the mean of 10^6 ones (7 sd), the spread of the zero fraction over the 1,000 rows of a
  (1000, 1000) input (``rtol = 0.2``, 9 sd: a mask shared across rows or columns fails), a fresh
  mask at every call, evaluation mode and p = 0 returning x, p = 1 returning zeros without NaN;
  x must be unchanged.

Forbidden while the answers run (:mod:`utils.grading.forbid`): ``torch.nn.init`` (q1), batch norm of
``torch.nn`` (q2, q3), autograd (q3), ``F.dropout`` and ``nn.Dropout`` (q4), the course's own modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import Case, Code, Question
from ..forbid import AUTOGRAD, COURSE

ASSIGNMENT = "05_init_norm_reg"
TITLE = "Initialization, batch normalization and dropout"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-9, "rtol": 1e-7}}
SAMPLES = 1_000_000  # values per statistical case (about)
SIGMAS = 7.0  # statistical tolerances are at least this many standard deviations


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _rand(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1 He initialization

# Fill a NaN tensor of `shape` `draws` times and return the pooled values (flat): the raw draws come
# back, and every statistic of them is computed here, in the grading process (see _std, _mean, _kurtosis).
_FILL = (
    "torch.cat([(lambda w: (fn(w, fan_mode), w.detach().reshape(-1).clone())[1])("
    "torch.full(shape, float('nan'))) for _ in range(draws)])"
)
_FILL_PARAM = (
    "torch.cat([(lambda w: (fn(w, fan_mode), w.detach().reshape(-1).clone())[1])("
    "nn.Parameter(torch.full(shape, float('nan')))) for _ in range(draws)])"
)
HE_VALUES = Code(f"lambda fn, shape, fan_mode, draws: {_FILL}")
HE_VALUES_PARAM = Code(f"lambda fn, shape, fan_mode, draws: {_FILL_PARAM}")


def _std(values: torch.Tensor) -> torch.Tensor:
    return values.double().std()


def _mean(values: torch.Tensor) -> torch.Tensor:
    return values.double().mean()


def _kurtosis(values: torch.Tensor) -> torch.Tensor:
    v = values.double()
    centred = v - v.mean()
    return (centred**4).mean() / (centred**2).mean() ** 2


HE_HINT = (
    "fill the given weight in place (the check reads the tensor it passed, which starts as NaN), under "
    "torch.no_grad(), with N(0, std^2), e.g. weight.normal_(0, std); std = sqrt(2 / fan), fan_in = "
    "weight.shape[1] * k and fan_out = weight.shape[0] * k, with k the product of the kernel sizes weight.shape[2:] "
    "(1 for a Linear weight)"
)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def he_cases(g: torch.Generator) -> list[Case]:
    del g  # the harness draws in the learner's process; nothing here is random
    cases = []
    std_shapes = [  # (shape, fan_mode, label)
        ((64, 256), "fan_in", "Linear weight (out=64, in=256), fan_in"),
        ((256, 64), "fan_out", "Linear weight (out=256, in=64), fan_out"),
        ((32, 16, 3, 3), "fan_in", "Conv2d weight (32, 16, 3, 3), fan_in"),
        ((16, 32, 5, 5), "fan_out", "Conv2d weight (16, 32, 5, 5), fan_out"),
    ]
    for shape, mode, label in std_shapes:
        fan_in, fan_out = _fans(shape)
        draws = math.ceil(SAMPLES / math.prod(shape))
        std = math.sqrt(2.0 / (fan_in if mode == "fan_in" else fan_out))
        cases.append(
            Case(
                f"std over {draws} fills of a {label} (fan_in={fan_in}, fan_out={fan_out})",
                "he_init_",
                {"shape": shape, "fan_mode": mode, "draws": draws},
                torch.tensor(std, dtype=F64),
                rtol=5e-3,
                hint=HE_HINT,
                harness=HE_VALUES,
                measure=_std,
            )
        )
    shape = (24, 8, 3, 3)
    fan_in, _ = _fans(shape)
    draws = math.ceil(SAMPLES / math.prod(shape))
    cases.append(
        Case(
            f"std over {draws} fills of an nn.Parameter (24, 8, 3, 3) that requires grad, fan_in",
            "he_init_",
            {"shape": shape, "fan_mode": "fan_in", "draws": draws},
            torch.tensor(math.sqrt(2.0 / fan_in), dtype=F64),
            rtol=5e-3,
            harness=HE_VALUES_PARAM,
            measure=_std,
            hint="a Parameter that requires grad cannot be changed in place while autograd records: wrap the fill in "
            "`with torch.no_grad():` (as torch.nn.init does); " + HE_HINT,
        )
    )
    shape, mode = (128, 64), "fan_in"
    draws = math.ceil(SAMPLES / math.prod(shape))
    n = draws * math.prod(shape)
    std = math.sqrt(2.0 / 64)
    cases.append(
        Case(
            f"mean over {draws} fills of a (128, 64) weight",
            "he_init_",
            {"shape": shape, "fan_mode": mode, "draws": draws},
            torch.tensor(0.0, dtype=F64),
            atol=SIGMAS * std / math.sqrt(n),
            harness=HE_VALUES,
            measure=_mean,
            hint="the weights must have mean 0: draw from N(0, std^2), not from [0, ...)",
        )
    )
    cases.append(
        Case(
            f"kurtosis over {draws} fills of a (128, 64) weight (3 for a normal distribution)",
            "he_init_",
            {"shape": shape, "fan_mode": mode, "draws": draws},
            torch.tensor(3.0, dtype=F64),
            atol=0.05,
            harness=HE_VALUES,
            measure=_kurtosis,
            hint="He initialization here is the *normal* one, N(0, 2 / fan) (weight.normal_ or torch.randn); a uniform "
            "distribution with the same variance has kurtosis 1.8, a truncated normal less than 3",
        )
    )
    return cases


# --------------------------------------------------------------------------- q2 / q3 batch normalization


def _bn_inputs(
    g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, *, scale: float = 1.0, offset: float = 0.0
) -> dict[str, torch.Tensor]:
    c = shape[1]
    return {
        "x": _randn(g, *shape, dtype=dtype) * scale + offset,
        "gamma": _rand(g, c, dtype=dtype) + 0.5,
        "beta": _randn(g, c, dtype=dtype),
        "running_mean": _randn(g, c, dtype=dtype) * 0.5,
        "running_var": _rand(g, c, dtype=dtype) + 0.5,
    }


def _bn_reference(inputs: dict[str, torch.Tensor], momentum: float, eps: float, training: bool):
    """(out, running_mean, running_var, (x_hat, gamma, inv_std)) in float64, via F.batch_norm."""
    x, gamma, beta = (inputs[k].double() for k in ("x", "gamma", "beta"))
    rm, rv = inputs["running_mean"].double().clone(), inputs["running_var"].double().clone()
    dims = [0, *range(2, x.dim())]
    if training:
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
    else:
        mean, var = rm.clone(), rv.clone()
    out = F.batch_norm(
        x, rm, rv, gamma, beta, training, momentum, eps
    )  # updates rm, rv in place when training
    inv_std = 1.0 / torch.sqrt(var + eps)
    x_hat = (x - mean.reshape(1, -1, 1, 1)) * inv_std.reshape(1, -1, 1, 1)
    return out, rm, rv, (x_hat, gamma, inv_std)


def _cast(value, dtype: torch.dtype):
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value.to(dtype)


BN_FORWARD = [  # (shape, dtype, momentum, eps, training, scale, offset, label, tolerance)
    ((8, 4, 5, 5), F32, 0.1, 1e-5, True, 1.0, 0.0, "training, x (8, 4, 5, 5)", TOL[F32]),
    (
        (2, 3, 1, 1),
        F32,
        0.1,
        1e-5,
        True,
        2.0,
        1.0,
        "training, x (2, 3, 1, 1): n = 2 values per channel",
        TOL[F32],
    ),
    ((1, 5, 4, 4), F32, 0.1, 1e-5, True, 1.0, 0.5, "training, a batch of one image (1, 5, 4, 4)", TOL[F32]),
    (
        (4, 6, 3, 7),
        F64,
        0.3,
        1e-3,
        True,
        0.1,
        0.0,
        "training, float64, momentum 0.3, eps 1e-3, variance ~0.01",
        TOL[F64],
    ),
    (
        (16, 4, 6, 6),
        F32,
        0.1,
        1e-5,
        True,
        1.0,
        64.0,
        "training, inputs with a large mean (64 + randn)",
        {"atol": 1e-4, "rtol": 1e-4},
    ),
    ((8, 4, 5, 5), F32, 0.1, 1e-5, False, 2.0, 1.0, "evaluation mode, x (8, 4, 5, 5)", TOL[F32]),
    (
        (1, 3, 1, 1),
        F64,
        0.1,
        1e-5,
        False,
        1.0,
        0.0,
        "evaluation mode, a single example (1, 3, 1, 1), float64",
        TOL[F64],
    ),
]

BN_FORWARD_HINT = (
    "training: mean and *biased* variance of each channel over (N, H, W) (x.var(dim=(0, 2, 3), unbiased=False)), "
    "x_hat = (x - mean) / sqrt(var + eps), out = gamma * x_hat + beta (reshape (C,) to (1, C, 1, 1)); new "
    "running_mean = (1 - momentum) * running_mean + momentum * mean and running_var the same with the *unbiased* "
    "variance var * n / (n - 1), n = N * H * W; evaluation: use running_mean and running_var instead, and return "
    "them unchanged; cache = (x_hat, gamma, inv_std) with inv_std = 1 / sqrt(var + eps); return new tensors, do not "
    "modify the arguments in place"
)


def bn_forward_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, dtype, momentum, eps, training, scale, offset, label, tol in BN_FORWARD:
        inputs = _bn_inputs(g, shape, dtype, scale=scale, offset=offset)
        out, rm, rv, cache = _bn_reference(inputs, momentum, eps, training)
        hint = BN_FORWARD_HINT
        if offset > 10:
            hint = (
                "compute the variance as the mean of (x - mean)^2 (or x.var(..., unbiased=False)), not as "
                "E[x^2] - E[x]^2, which cancels catastrophically in float32 when the mean is large; " + hint
            )
        cases.append(
            Case(
                label,
                "batchnorm_forward",
                {**inputs, "momentum": momentum, "eps": eps, "training": training},
                _cast((out, rm, rv, cache), dtype),
                **tol,
                hint=hint,
                unchanged=("x", "gamma", "beta", "running_mean", "running_var"),
                outputs=("out", "running_mean", "running_var", "cache (x_hat, gamma, inv_std)"),
            )
        )
    return cases


BN_BACKWARD = [  # (shape, dtype, label)
    ((8, 4, 5, 5), F64, "dout (8, 4, 5, 5), float64"),
    ((2, 3, 1, 1), F64, "dout (2, 3, 1, 1): two values per channel, float64"),
    ((1, 5, 4, 4), F64, "a batch of one image (1, 5, 4, 4), float64"),
    ((16, 8, 3, 3), F32, "dout (16, 8, 3, 3), float32"),
]
BN_BACKWARD_TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: TOL[F64]}


def bn_backward_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, dtype, label in BN_BACKWARD:
        inputs = _bn_inputs(g, shape, F64, scale=1.5, offset=0.3)
        x = inputs["x"].clone().requires_grad_()
        gamma = inputs["gamma"].clone().requires_grad_()
        beta = inputs["beta"].clone().requires_grad_()
        dout = _randn(g, *shape, dtype=F64)
        out = F.batch_norm(x, None, None, gamma, beta, True, 0.1, 1e-5)
        out.backward(dout)
        _, _, _, cache = _bn_reference(inputs, 0.1, 1e-5, True)
        cases.append(
            Case(
                label,
                "batchnorm_backward",
                {"dout": dout.to(dtype), "cache": _cast(cache, dtype)},
                _cast((x.grad, gamma.grad, beta.grad), dtype),
                **BN_BACKWARD_TOL[dtype],
                hint="with sums over (N, H, W) and m = N * H * W: dbeta = sum(dout), dgamma = sum(dout * x_hat), "
                "dx = gamma * inv_std / m * (m * dout - dbeta - x_hat * dgamma) (reshape (C,) to (1, C, 1, 1)); "
                "the batch mean and variance depend on every x, so dx is not just gamma * inv_std * dout",
                unchanged=("dout",),
                outputs=("dx", "dgamma", "dbeta"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 dropout

# The harnesses return the raw outputs of dropout; the statistics of them are computed here.
DROP_ONES = Code("lambda fn, n, p: fn(torch.ones(n), p, True)")
DROP_OUT = Code("lambda fn, x, p: fn(x, p, True)")
DROP_GRID = Code("lambda fn, rows, cols, p: fn(torch.ones(rows, cols), p, True)")
DROP_TWICE = Code("lambda fn, x, p: (fn(x, p, True), fn(x, p, True))")


def _zero_fraction(out: torch.Tensor) -> torch.Tensor:
    return (out == 0).double().mean()


def _row_spread(out: torch.Tensor) -> torch.Tensor:
    return (out == 0).double().mean(dim=1).std()


def _same_masks(outs: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return bool(torch.equal(outs[0] == 0, outs[1] == 0))


def _kept(x: torch.Tensor, p: float):
    """The output with the dropped values replaced by the expected kept value x / (1 - p)."""
    return lambda out: torch.where(out == 0, x / (1 - p), out)


DROP_HINT = (
    "training: keep each value independently with probability 1 - p (a fresh mask of x's shape at every call, "
    "e.g. torch.rand_like(x) >= p) and divide the kept values by 1 - p; evaluation (training=False): return x; "
    "do not modify x in place"
)


def dropout_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for p in (0.3, 0.75):
        cases.append(
            Case(
                f"fraction of zeros in dropout(torch.ones({SAMPLES}), p={p}, training=True)",
                "dropout",
                {"n": SAMPLES, "p": p},
                torch.tensor(p, dtype=F64),
                atol=SIGMAS * math.sqrt(p * (1 - p) / SAMPLES),
                hint=DROP_HINT,
                harness=DROP_ONES,
                measure=_zero_fraction,
            )
        )
    p = 0.3
    x = _randn(g, 64, 128)
    cases.append(
        Case(
            "kept values equal x / (1 - p), p = 0.3, x (64, 128)",
            "dropout",
            {"x": x, "p": p},
            x / (1 - p),
            rtol=1e-6,
            hint="inverted dropout scales what it keeps by 1 / (1 - p), so that the expected output equals x; "
            + DROP_HINT,
            harness=DROP_OUT,
            measure=_kept(x, p),
            unchanged=("x",),
        )
    )
    x64 = _randn(g, 4, 8, 16, dtype=F64)
    cases.append(
        Case(
            "kept values equal x / (1 - p), p = 0.25, float64 x (4, 8, 16)",
            "dropout",
            {"x": x64, "p": 0.25},
            x64 / 0.75,
            atol=0.0,
            rtol=1e-12,
            hint="keep the dtype and shape of x; " + DROP_HINT,
            harness=DROP_OUT,
            measure=_kept(x64, 0.25),
            unchanged=("x",),
        )
    )
    p = 0.5
    cases.append(
        Case(
            f"mean of dropout(torch.ones({SAMPLES}), p={p}, training=True)",
            "dropout",
            {"n": SAMPLES, "p": p},
            torch.tensor(1.0, dtype=F64),
            atol=SIGMAS * math.sqrt(p / (1 - p) / SAMPLES),
            hint="the expected output must equal the input: scale the kept values by 1 / (1 - p); "
            + DROP_HINT,
            harness=DROP_ONES,
            measure=_mean,
        )
    )
    rows, cols, p = 1000, 1000, 0.2
    cases.append(
        Case(
            "independent values: spread of the zero fraction over the rows of a (1000, 1000) input, p = 0.2",
            "dropout",
            {"rows": rows, "cols": cols, "p": p},
            torch.tensor(math.sqrt(p * (1 - p) / cols), dtype=F64),
            rtol=0.2,
            hint="draw one coin per value (a mask with the shape of x), not one per row or per column; "
            + DROP_HINT,
            harness=DROP_GRID,
            measure=_row_spread,
        )
    )
    x = _randn(g, 32, 128)
    cases.append(
        Case(
            "a fresh mask at every call (two calls must differ)",
            "dropout",
            {"x": x, "p": 0.5},
            False,
            hint="do not seed the generator inside dropout: every forward pass must drop a different random subset",
            harness=DROP_TWICE,
            measure=_same_masks,
        )
    )
    x = _randn(g, 8, 16)
    cases.append(
        Case(
            "evaluation mode (training=False) returns x",
            "dropout",
            {"x": x, "p": 0.5, "training": False},
            x.clone(),
            hint="in evaluation mode inverted dropout is the identity: no mask and no scaling",
            unchanged=("x",),
        )
    )
    x = _randn(g, 8, 16)
    cases.append(
        Case(
            "p = 0 in training mode returns x",
            "dropout",
            {"x": x, "p": 0.0, "training": True},
            x.clone(),
            hint="with p = 0 nothing is dropped and the scale 1 / (1 - p) is 1",
            unchanged=("x",),
        )
    )
    x = _randn(g, 8, 16)
    cases.append(
        Case(
            "p = 1 in training mode returns zeros",
            "dropout",
            {"x": x, "p": 1.0, "training": True},
            torch.zeros_like(x),
            hint="p = 1 drops everything: return zeros without dividing by 1 - p = 0 (0 / 0 is NaN)",
            unchanged=("x",),
        )
    )
    return cases


BATCH_NORM = ("torch.nn.functional.batch_norm", "torch.nn.BatchNorm2d", "torch.nn.functional.instance_norm")

QUESTIONS = [
    Question(
        "q1",
        "He initialization (statistics)",
        ("he_init_",),
        he_cases,
        forbid=("torch.nn.init", *COURSE),
        why="q1 asks for the initialization itself, without torch.nn.init",
    ),
    Question(
        "q2",
        "Batch normalization: forward, running statistics",
        ("batchnorm_forward",),
        bn_forward_cases,
        forbid=(*BATCH_NORM, *COURSE),
        why="q2 asks for batch normalization written with tensor operations",
    ),
    Question(
        "q3",
        "Batch normalization: backward",
        ("batchnorm_backward",),
        bn_backward_cases,
        forbid=(*BATCH_NORM, *AUTOGRAD, *COURSE),
        why="q3 asks for the gradient derived by hand, without autograd",
    ),
    Question(
        "q4",
        "Inverted dropout (statistics)",
        ("dropout",),
        dropout_cases,
        forbid=("torch.nn.functional.dropout", "torch.nn.Dropout", *COURSE),
        why="q4 asks for dropout written with a random mask",
    ),
]
