"""Chapter 01 (assignment ``01_backprop``): backpropagation by hand, checked against torch.autograd.

Every case draws fresh random inputs from the generator it is given; the expected values come from
torch and autograd in float64 (float32 where the case says so), computed in the grading process.
None of the four functions is printed in the lesson: q1 and q4 are new operations, q2 and q3 harder
variants of the lesson's layers.

* q1 (new) the scalar engine ``Scalar`` of the notebook (the chapter's ``Value`` with ``+``, ``*``,
  ``-`` and ``backward``) extended with ``sigmoid()``, division (``a / b``, ``a / 2``, ``2 / a``) and
  powers (``a ** b`` with a ``Scalar`` exponent, ``2 ** a``). A harness builds an expression from
  ``Scalar`` leaves, calls ``backward()`` and returns the output and the leaves' gradients; the
  reference is the same expression on float64 tensors with autograd. Cases: a leaf used twice
  (``a / a``), numbers on either side, inputs of +-800 to the sigmoid (``math.exp(800)`` raises
  ``OverflowError``), a neuron with a squared error. Tolerance ``1e-9 + 1e-7 * |expected|``.
* q2 (variant) ``tanh_layer(x, W, b)`` = tanh(x W + b) for ``x`` with any number of leading
  dimensions ((D,), (N, D), (N, T, D), (B, H, W, D)), and ``tanh_layer_backward(dout, x, W, out) ->
  (dx, dW, db)`` from the layer's output ``out``; saturated units, float32 and float64.
  Tolerance: float32 ``1e-5 + 1e-4 * |expected|``, float64 ``1e-10 + 1e-8 * |expected|``.
* q3 (variant) ``weighted_softmax_cross_entropy(logits, y, weight, ignore_index) -> (loss, dlogits)``,
  the loss of ``F.cross_entropy(logits, y, weight=weight, ignore_index=ignore_index)`` (a weighted
  mean; ignored samples count nowhere) and its gradient; ``weight`` None or (C,), ignored labels,
  logits in the thousands. Tolerance as q2, float32 logits in the thousands ``5e-4 + 1e-5 * |expected|``.
* q4 (new) ``l2_normalize(x, eps)`` = ``F.normalize(x, dim=-1, eps=eps)`` and
  ``l2_normalize_backward(dout, x, eps) -> dx``; rows of zeros and rows shorter than ``eps``, D = 1,
  2-D and 3-D inputs. Tolerance as q2.
* r1-r6 (review, half a point each): paths that add up, a parameter count, a softmax gradient, a bias
  gradient, the vanishing factor of sigmoid layers, a gradient check in float32.

Forbidden while the answers run (:mod:`utils.grading.forbid`): autograd, the function of
``torch.nn.functional`` each question reproduces (and its ``torch.*`` and ``Tensor`` forms), the
course's own modules (``utils.scratch``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Case, Code, Question
from ..forbid import AUTOGRAD, COURSE
from ..review import Review

ASSIGNMENT = "01_backprop"
TITLE = "Backpropagation by hand"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=dtype)


def _uniform(g: torch.Generator, low: float, high: float, n: int = 1) -> list[float]:
    return (low + (high - low) * torch.rand(n, generator=g, dtype=F64)).tolist()


# --------------------------------------------------------------------------- q1 the scalar engine

# The harness runs in the learner's kernel: leaves a, b, c of the learner's class, the expression, backward.
_SCALAR_RUN = """
def run(Scalar, expression, values):
    leaves = [Scalar(float(v)) for v in values.tolist()]
    out = eval(expression, {"math": math}, dict(zip("abc", leaves)))
    out.backward()
    return (float(out.data), *(float(leaf.grad) for leaf in leaves))
"""
SCALAR_HARNESS = Code(
    f"(lambda ns: (exec({_SCALAR_RUN!r}, ns), ns['run'])[1])({{'torch': torch, 'math': math}})"
)

SCALAR_HINT = (
    "each new operation computes its value from .data and gives its closure the local derivative of "
    "every input, which it multiplies by out.grad and *adds* to that input's grad (a leaf used twice "
    "collects both contributions); wrap plain numbers in Scalar first, and for 2 / a or 2 ** a "
    "(__rtruediv__, __rpow__) the number is the left operand; the sigmoid must not call math.exp of a "
    "large positive number (math.exp(800) raises OverflowError): use exp(-|a|) as the chapter 02 sigmoid does"
)

SCALAR_EXPRESSIONS = [  # (label, expression over the leaves a, b, c, how to draw a, b, c)
    ("a sigmoid neuron: (a * b + c).sigmoid()", "(a * b + c).sigmoid()", "normal"),
    ("sigmoid of large inputs: a = 800, b = -800", "a.sigmoid() + b.sigmoid() * c", "large"),
    ("a quotient of Scalars: (a + b) / (b * c)", "(a + b) / (b * c)", "positive"),
    ("a leaf divided by itself: a / a + b", "a / a + b", "positive"),
    ("numbers on either side: 2 / a + b / 4 - c", "2 / a + b / 4 - c", "positive"),
    ("a Scalar exponent: a ** b * c", "a ** b * c", "positive"),
    ("a number raised to a Scalar: 2 ** a + b ** 3 - c", "2 ** a + b ** 3 - c", "normal"),
    (
        "squared error of a neuron, scaled: ((a * b + c).sigmoid() - 0.3) ** 2 / (1 + a ** 2)",
        "((a * b + c).sigmoid() - 0.3) ** 2 / (1 + a ** 2)",
        "normal",
    ),
]


def _scalar_values(g: torch.Generator, kind: str) -> list[float]:
    if kind == "large":
        return [800.0, -800.0, *_uniform(g, -2.0, 2.0)]
    if kind == "positive":
        return _uniform(g, 0.5, 2.5, 3)
    return _randn(g, 3).tolist()


def scalar_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, expression, kind in SCALAR_EXPRESSIONS:
        values = _scalar_values(g, kind)
        leaves = [torch.tensor(v, dtype=F64, requires_grad=True) for v in values]
        out = eval(expression, {}, dict(zip("abc", leaves)))  # noqa: S307 - the course's own expressions
        out.backward()
        grads = [0.0 if leaf.grad is None else float(leaf.grad) for leaf in leaves]  # unused: 0
        expected = (float(out.detach()), *grads)
        cases.append(
            Case(
                f"{label}, a, b, c = {', '.join(f'{v:.4g}' for v in values)}",
                "Scalar",
                {"expression": expression, "values": torch.tensor(values, dtype=F64)},
                expected,
                atol=1e-9,
                rtol=1e-7,
                hint=SCALAR_HINT,
                outputs=("value", "a.grad", "b.grad", "c.grad"),
                harness=SCALAR_HARNESS,
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 a tanh layer, leading dims

TANH_SHAPES = [  # (label, leading dims, D, M, dtype, input scale)
    ("x (N, D) = (6, 4), M = 3", (6,), 4, 3, F32, 1.0),
    ("a single vector x (D,) = (5,), M = 2", (), 5, 2, F64, 1.0),
    ("a sequence x (N, T, D) = (3, 7, 4), M = 5", (3, 7), 4, 5, F64, 1.0),
    ("feature maps x (B, H, W, D) = (2, 3, 3, 6), M = 4", (2, 3, 3), 6, 4, F32, 1.0),
    ("N = 1, float64", (1,), 8, 3, F64, 1.0),
    ("saturated units (inputs * 30)", (5, 2), 3, 4, F64, 30.0),
]


def tanh_cases(g: torch.Generator) -> list[Case]:
    forward, backward = [], []
    for label, lead, d, m, dtype, scale in TANH_SHAPES:
        x = _randn(g, *lead, d, dtype=dtype) * scale
        w = _randn(g, d, m, dtype=dtype) / d**0.5
        b = _randn(g, m, dtype=dtype)
        dout = _randn(g, *lead, m, dtype=dtype)
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        out = torch.tanh(xr @ wr + br)
        out.backward(dout)
        forward.append(
            Case(
                f"forward, {label}",
                "tanh_layer",
                {"x": x, "W": w, "b": b},
                out.detach(),
                **TOL[dtype],
                hint="tanh(x @ W + b): @ multiplies the last dimension of x with W whatever the leading "
                "dimensions, and b broadcasts over them; keep the dtype",
                unchanged=("x", "W", "b"),
            )
        )
        backward.append(
            Case(
                f"backward, {label}",
                "tanh_layer_backward",
                {"dout": dout, "x": x, "W": w, "out": out.detach()},
                (xr.grad, wr.grad, br.grad),
                **TOL[dtype],
                hint="first the gradient at the pre-activation, from the output alone (tanh' is a function "
                "of tanh); then the linear layer's rules of the chapter, where every leading position of x "
                "is one more example: W and b were used at all of them, so their gradients add up over "
                "all of them (flatten the leading dimensions); dx has the shape of x",
                unchanged=("dout", "x", "W", "out"),
                outputs=("dx", "dW", "db"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q3 weighted cross-entropy


def _labels(g: torch.Generator, n: int, c: int, ignored: int = 0, ignore_index: int = -100) -> torch.Tensor:
    y = torch.randint(0, c, (n,), generator=g)
    if ignored:
        y[torch.randperm(n, generator=g)[:ignored]] = ignore_index
    return y


def weighted_ce_cases(g: torch.Generator) -> list[Case]:
    def weights(c: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.rand(c, generator=g, dtype=dtype) * 3 + 0.1

    inputs = [  # (label, logits, y, weight, ignore_index)
        ("N=6, C=4, class weights", _randn(g, 6, 4, dtype=F32), _labels(g, 6, 4), weights(4, F32), -100),
        ("no weights (None): a plain mean", _randn(g, 5, 3, dtype=F32), _labels(g, 5, 3), None, -100),
        (
            "two of eight labels ignored (-100), class weights, float64",
            _randn(g, 8, 5) * 2,
            _labels(g, 8, 5, ignored=2),
            weights(5, F64),
            -100,
        ),
        ("ignore_index = 0: class 0 is ignored", _randn(g, 7, 3), _labels(g, 7, 3), weights(3, F64), 0),
        ("N=1, C=2, class weights", _randn(g, 1, 2), _labels(g, 1, 2), weights(2, F64), -100),
        (
            "logits in the thousands (randn * 1000), weights, one label ignored",
            _randn(g, 6, 5, dtype=F32) * 1000,
            _labels(g, 6, 5, ignored=1),
            weights(5, F32),
            -100,
        ),
        (
            "logits around -3000, float64, no weights",
            _randn(g, 5, 4) - 3000,
            _labels(g, 5, 4),
            None,
            -100,
        ),
    ]
    cases = []
    for label, logits, y, weight, ignore_index in inputs:
        if not (y != ignore_index).any():  # at least one sample counts (otherwise the loss is 0 / 0)
            y[0] = (ignore_index + 1) % logits.shape[1]
        tol = TOL[logits.dtype]
        if logits.dtype == F32 and logits.abs().max() > 500:
            tol = {"atol": 5e-4, "rtol": 1e-5}  # float32 logits near 1000s are 6e-5 apart: rounding
        lr = logits.clone().requires_grad_()
        loss = F.cross_entropy(lr, y, weight=weight, ignore_index=ignore_index)
        loss.backward()
        args = {"logits": logits, "y": y, "weight": weight, "ignore_index": ignore_index}
        cases.append(
            Case(
                label,
                "weighted_softmax_cross_entropy",
                args,
                (loss.detach(), lr.grad),
                **tol,
                hint="the loss is a weighted *mean*: every counted sample's -log p[y] times the weight of "
                "its class, divided by the sum of those weights (not by N); an ignored sample is in "
                "neither sum and gets a zero row in dlogits; each counted row of the gradient is the "
                "chapter's p - onehot(y), scaled by that sample's share of the weight; subtract each "
                "row's max before exp",
                unchanged=("logits", "y", "weight"),
                outputs=("loss", "dlogits"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 L2 normalization

NORMALIZE_INPUTS = [  # (label, shape, dtype, eps, special rows)
    ("x (N, D) = (5, 6), eps 1e-12", (5, 6), F32, 1e-12, None),
    ("3-D x (2, 4, 3), float64", (2, 4, 3), F64, 1e-12, None),
    ("D = 1 (each row becomes its sign)", (6, 1), F64, 1e-12, None),
    ("a row of zeros, eps 1e-6, float64", (4, 5), F64, 1e-6, "zero"),
    ("a row shorter than eps = 0.1, float64", (4, 3), F64, 0.1, "short"),
    ("large rows (randn * 1e3), float64", (3, 8), F64, 1e-12, "large"),
]


def normalize_cases(g: torch.Generator) -> list[Case]:
    forward, backward = [], []
    for label, shape, dtype, eps, special in NORMALIZE_INPUTS:
        x = _randn(g, *shape, dtype=dtype)
        if special == "zero":
            x[1] = 0.0
        elif special == "short":
            x[2] = x[2] / x[2].norm() * 0.04  # norm 0.04 < eps
        elif special == "large":
            x = x * 1e3
        dout = _randn(g, *shape, dtype=dtype)
        xr = x.clone().requires_grad_()
        y = F.normalize(xr, dim=-1, eps=eps)
        y.backward(dout)
        forward.append(
            Case(
                f"forward, {label}",
                "l2_normalize",
                {"x": x, "eps": eps},
                y.detach(),
                **TOL[dtype],
                hint="divide each vector along the last dimension by its length, or by eps when the length "
                "is smaller than eps (so a row of zeros stays zeros, not NaN); keepdim for broadcasting",
                unchanged=("x",),
            )
        )
        backward.append(
            Case(
                f"backward, {label}",
                "l2_normalize_backward",
                {"dout": dout, "x": x, "eps": eps},
                xr.grad,
                **TOL[dtype],
                hint="y = x / n with n = |x| depends on x twice, directly and through n: dn/dx = x / n = y, "
                "so the second path removes from dout / n its component along y (one dot product per "
                "row); where n < eps the divisor is the constant eps and only the direct path remains",
                unchanged=("dout", "x"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Two paths to one input",
        7,
        points=0.5,
        explain="f = (x + y) * x uses x twice: through q = x + y (df/dq * dq/dx = x * 1 = 2) and directly "
        "as the right factor (df/dx = q = 5). The contributions of the paths add up: 2 + 5 = 7 (5 forgets "
        "the first path).",
    ),
    Review(
        "r2",
        "Parameters of an MLP",
        235146,
        points=0.5,
        explain="Each linear layer has fan_in * fan_out weights plus fan_out biases: 784 * 256 + 256 = "
        "200,960, 256 * 128 + 128 = 32,896, 128 * 10 + 10 = 1,290; in all 235,146 (234,752 forgets the "
        "biases).",
    ),
    Review(
        "r3",
        "A softmax cross-entropy gradient",
        -0.2130,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="p = softmax(2, 0, 0) = (e^2, 1, 1) / (e^2 + 2) = (0.787, 0.107, 0.107); dL/dz = p - "
        "onehot(y) with y = 0, so dL/dz_0 = 0.787 - 1 = -0.213 (0.787 forgets the one-hot target; with N = "
        "1 there is nothing to divide by).",
    ),
    Review(
        "r4",
        "The gradient of a shared bias",
        32.0,
        atol=1e-6,
        rtol=0.0,
        points=0.5,
        explain="The bias is added to each of the 64 rows, so its gradient is the sum of their upstream "
        "gradients: 64 * 0.5 = 32 (0.5 is the mean, which the loss already took care of).",
    ),
    Review(
        "r5",
        "Five sigmoid layers",
        0.0009765625,
        atol=0.0,
        rtol=0.02,
        points=0.5,
        explain="sigma'(z) = sigma(z) (1 - sigma(z)) is at most 1/4 (at z = 0), so five layers multiply the "
        "gradient by at most (1/4)^5 = 1/1024 = 0.000977 (not 5 * 1/4: the factors multiply along "
        "the chain).",
    ),
    Review(
        "r6",
        "A gradient check in float32",
        {"a", "b"},
        points=0.5,
        explain="In float32, f(x) carries a rounding error of about 1e-7 * |f|, and the central difference "
        "divides it by 2h = 2e-5: an error of order 1e-2 for a correct gradient (a). Float64 makes it about "
        "1e-11 (b). A smaller h divides the rounding error by a smaller number and makes it worse (c), and "
        "nothing points to a wrong gradient (d).",
    ),
]

WHY = "chapter 01's exercise asks for the gradients computed by hand, without autograd or torch.nn.functional"

QUESTIONS = [
    Question(
        "q1",
        "Scalar engine: sigmoid, division and powers",
        ("Scalar",),
        scalar_cases,
        forbid=("torch.sigmoid", "torch.special.expit", *AUTOGRAD, *COURSE),
        why="q1 asks for the local derivatives of the new operations written by hand",
    ),
    Question(
        "q2",
        "A tanh layer over any leading dimensions: forward and backward",
        ("tanh_layer", "tanh_layer_backward"),
        tanh_cases,
        forbid=("torch.nn.functional.linear", "torch.nn.Linear", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q3",
        "Weighted softmax cross-entropy with ignored labels: loss and gradient",
        ("weighted_softmax_cross_entropy",),
        weighted_ce_cases,
        forbid=(
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss",
            "torch.nn.functional.log_softmax",
            "torch.nn.functional.softmax",
            "torch.logsumexp",
            "torch.nn.CrossEntropyLoss",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    Question(
        "q4",
        "L2 normalization: forward and backward",
        ("l2_normalize", "l2_normalize_backward"),
        normalize_cases,
        forbid=("torch.nn.functional.normalize", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    *REVIEW,
]
