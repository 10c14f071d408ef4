"""The question set chapter 01's exercise had before it asked for what the lesson did not print (the
linear layer, the ReLU, softmax cross-entropy and central differences): the fixture of the grading
engine's own tests (tests/test_grading.py), which check generation, feedback, ``check`` and the
command-line grader on it. It stands in for ``01_backprop`` only while those tests run
(:func:`install`, :func:`restore`, and :func:`main` for a grader process).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.grading.checks import QuestionSet, get_assignment, register
from utils.grading.core import Case, Code, Question
from utils.grading.forbid import AUTOGRAD, COURSE

ASSIGNMENT = "01_backprop"
TITLE = "Backpropagation by hand"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-9, "rtol": 1e-7}}


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1 linear layer

LINEAR_SHAPES = [  # (N, D, M, dtype, label)
    (4, 3, 5, F32, "N=4, D=3, M=5"),
    (1, 7, 2, F32, "N=1 (a single example), D=7, M=2"),
    (16, 1, 3, F64, "D=1, float64"),
    (8, 5, 1, F64, "M=1, float64"),
    (32, 20, 10, F32, "N=32, D=20, M=10"),
]


def linear_cases(g: torch.Generator) -> list[Case]:
    """Forward cases first (a wrong forward pass is the first thing to fix), then backward."""
    forward, backward = [], []
    for n, d, m, dtype, label in LINEAR_SHAPES:
        x, w, b, dout = (
            _randn(g, n, d, dtype=dtype),
            _randn(g, d, m, dtype=dtype),
            _randn(g, m, dtype=dtype),
            _randn(g, n, m, dtype=dtype),
        )
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        out = F.linear(xr, wr.T, br)  # (N, M)
        out.backward(dout)
        forward.append(
            Case(
                f"forward, {label}",
                "linear_forward",
                {"x": x, "W": w, "b": b},
                out.detach(),
                **TOL[dtype],
                hint="out = x @ W + b: (N, D) @ (D, M) gives (N, M), and b (M,) broadcasts over the N rows; "
                "keep the dtype of the inputs",
                unchanged=("x", "W", "b"),
            )
        )
        backward.append(
            Case(
                f"backward, {label}",
                "linear_backward",
                {"dout": dout, "x": x, "W": w},
                (xr.grad, wr.grad, br.grad),
                **TOL[dtype],
                hint="dx = dout @ W.T (N, D), dW = x.T @ dout (D, M), db = dout.sum(dim=0) (M,); the shapes "
                "of x, W and b hold also when N == 1",
                unchanged=("dout", "x", "W"),
                outputs=("dx", "dW", "db"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q2 ReLU


def _with_zeros(g: torch.Generator, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    x = _randn(g, *shape, dtype=dtype)
    mask = torch.rand(*shape, generator=g) < 0.25
    mask.view(-1)[0] = True  # at least one exact zero
    return x.masked_fill(mask, 0.0)


def relu_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("x with exact zeros, shape (5, 4)", _with_zeros(g, 5, 4, dtype=F32)),
        ("1-D with zeros, float64", _with_zeros(g, 9, dtype=F64)),
        ("3-D (2, 3, 4) with zeros", _with_zeros(g, 2, 3, 4, dtype=F32)),
        ("all negative, shape (3, 3)", -torch.rand(3, 3, generator=g) - 0.1),
    ]
    forward, backward = [], []
    for label, x in inputs:
        xr = x.clone().requires_grad_()
        out = torch.relu(xr)
        dout = _randn(g, *x.shape, dtype=x.dtype)
        out.backward(dout)
        forward.append(
            Case(
                f"forward, {label}",
                "relu_forward",
                {"x": x},
                out.detach(),
                hint="max(x, 0) elementwise with the shape and dtype of x, e.g. x.clamp(min=0); "
                "do not change x in place (no x.clamp_(...) or x[x < 0] = 0 on x itself)",
                unchanged=("x",),
            )
        )
        backward.append(
            Case(
                f"backward, {label}",
                "relu_backward",
                {"dout": dout, "x": x},
                xr.grad,
                hint="dx = dout where x > 0 and 0 elsewhere; at x == 0 the gradient is 0 (the convention of "
                "torch.relu), "
                "so use x > 0, not x >= 0; do not change dout in place",
                unchanged=("dout", "x"),
            )
        )
    return forward + backward


# --------------------------------------------------------------------------- q3 softmax cross-entropy


def softmax_ce_cases(g: torch.Generator) -> list[Case]:
    def logits_and_labels(n: int, c: int, dtype: torch.dtype, scale: float = 1.0, shift: float = 0.0):
        return _randn(g, n, c, dtype=dtype) * scale + shift, torch.randint(0, c, (n,), generator=g)

    inputs = [
        ("N=5, C=4", *logits_and_labels(5, 4, F32)),
        ("N=1 (a single example), C=3", *logits_and_labels(1, 3, F32)),
        ("C=2, float64", *logits_and_labels(7, 2, F64)),
        (
            "all logits equal (the loss is log C)",
            torch.full((4, 5), 2.5),
            torch.randint(0, 5, (4,), generator=g),
        ),
        ("logits in the thousands (randn * 1000)", *logits_and_labels(6, 5, F32, scale=1000.0)),
        ("logits around +3000 (randn + 3000)", *logits_and_labels(6, 4, F32, shift=3000.0)),
        ("logits around -3000 (randn - 3000), float64", *logits_and_labels(5, 3, F64, shift=-3000.0)),
    ]
    cases = []
    for label, logits, y in inputs:
        tol = TOL[logits.dtype]
        if logits.dtype == F32 and logits.abs().max() > 1000:
            # float32 values near 3000 are 2.4e-4 apart: correct formulas (max-shift or logsumexp)
            # differ from torch by rounding of that order, so the absolute tolerance follows it
            tol = {"atol": 5e-4, "rtol": 1e-5}
        lr = logits.clone().requires_grad_()
        loss = F.cross_entropy(lr, y)  # mean over the batch, 0-dim
        loss.backward()
        cases.append(
            Case(
                label,
                "softmax_cross_entropy",
                {"logits": logits, "y": y},
                (loss.detach(), lr.grad),
                **tol,
                hint="subtract each row's max before exp (log-sum-exp trick) so large logits stay finite; "
                "loss = mean over the batch of -log softmax[y], a 0-dim tensor (not .item()); "
                "dlogits = (softmax(logits) - one_hot(y)) / N",
                unchanged=("logits", "y"),
                outputs=("loss", "dlogits"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 numerical gradient

NUMGRAD_FUNCTIONS = [  # (label, source, shape of x)
    ("cubic plus product of sines, x of shape (6,)", "lambda x: (x ** 3).sum() + torch.sin(x).prod()", (6,)),
    ("logsumexp of all entries, 2-D x (3, 4)", "lambda x: torch.logsumexp(x.reshape(-1), dim=0)", (3, 4)),
    ("tanh(x @ x.T).sum(), 2-D x (3, 3)", "lambda x: torch.tanh(x @ x.T).sum()", (3, 3)),
    ("a single value: exp(2x), x of shape (1,)", "lambda x: torch.exp(2 * x).sum()", (1,)),
    (
        "(row sums)^2 plus product of cosines, 3-D x (2, 2, 3)",
        "lambda x: (x.sum(dim=-1) ** 2).sum() + torch.cos(x).prod()",
        (2, 2, 3),
    ),
]


def numgrad_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, source, shape in NUMGRAD_FUNCTIONS:
        f = Code(source)
        x = _randn(g, *shape, dtype=F64)
        xr = x.clone().requires_grad_()
        f.build()(xr).backward()
        cases.append(
            Case(
                f"{label}; f = {source}",
                "numerical_gradient",
                {"f": f, "x": x},
                xr.grad,
                atol=1e-8,
                rtol=1e-6,
                hint="for every entry i: grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h) (central, not "
                "one-sided), "
                "looping over x.numel() entries of a flat view so any shape works; put x[i] back afterwards "
                "(save the old value) or work on a copy, so x is unchanged; return float64 with the shape of "
                "x",
                unchanged=("x",),
            )
        )
    return cases


WHY = "chapter 01's exercise asks for the gradients computed by hand, without autograd or torch.nn.functional"

QUESTIONS = [
    Question(
        "q1",
        "Linear layer: forward and backward",
        ("linear_forward", "linear_backward"),
        linear_cases,
        forbid=("torch.nn.functional.linear", "torch.nn.Linear", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q2",
        "ReLU: forward and backward",
        ("relu_forward", "relu_backward"),
        relu_cases,
        forbid=("torch.nn.functional.relu", "torch.nn.functional.threshold", *AUTOGRAD, *COURSE),
        why=WHY,
    ),
    Question(
        "q3",
        "Softmax cross-entropy: loss and gradient",
        ("softmax_cross_entropy",),
        softmax_ce_cases,
        forbid=(
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss",
            "torch.nn.functional.log_softmax",
            "torch.nn.functional.softmax",
            "torch.logsumexp",
            *AUTOGRAD,
            *COURSE,
        ),
        why=WHY,
    ),
    Question(
        "q4",
        "Numerical gradient (central differences)",
        ("numerical_gradient",),
        numgrad_cases,
        forbid=(*AUTOGRAD, *COURSE),
        why="q4 asks for the gradient from function values alone",
    ),
]


def install() -> QuestionSet:
    """Register this question set as ``01_backprop``; returns the course's own, for :func:`restore`."""
    course = get_assignment(ASSIGNMENT)
    register(ASSIGNMENT, QUESTIONS, TITLE, replace=True)
    return course


def restore(course: QuestionSet) -> None:
    register(course.assignment, course.questions, course.title, replace=True)


def main() -> int:
    """``python -c "import grading_demo; grading_demo.main()" grade ...``: the command-line grader with
    this question set installed (the same entry point as ``python -m utils.grading``)."""
    from utils.grading.__main__ import main as cli_main

    install()
    return cli_main()
