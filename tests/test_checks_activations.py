"""The 02_activations question set: the reference solutions of the solution notebook pass every case for
several seeds, the cases hold the edge cases the questions promise, typical wrong answers and the
forbidden shortcuts fail with a message that says what is wrong, and the review answers are right
(recomputed here from their definitions) while the usual mistakes are not."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, functions_for, solution_namespace
from utils.grading import Question, Review, evaluate, get_assignment

ASSIGNMENT = "02_activations"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def result_of(qid: str, *sources: str, seed: int = 0):
    q = QSET.question(qid)
    return evaluate(q, functions_for(solution_namespace(ASSIGNMENT, *sources), q), seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace(ASSIGNMENT)
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 10


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 7
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    assert sum(c.args["x"].abs().max() >= 1e4 for c in cases["q1"]) >= 4  # tanh(u) is exactly +-1
    assert all((c.args["x"] == 0).any() for c in cases["q2"])  # the kink
    weights = [c.args["weight"] for c in cases["q2"]]
    assert any(len(w) == 1 for w in weights) and any((w < 0).any() for w in weights)
    assert any((w > 1).any() for w in weights)
    assert {c.args["x"].dim() for c in cases["q2"]} == {2, 3, 4}
    betas = {float(c.args["beta"]) for c in cases["q3"]}
    assert {0.0, 1.0, 10.0} <= betas and min(betas) < 0
    assert all(c.args["beta"].dim() == 0 for c in cases["q3"])
    assert any((c.args["x"] * c.args["beta"]).abs().max() >= 5e3 for c in cases["q3"])
    q4 = cases["q4"]
    assert {0.1, 10.0} <= {round(float(c.args["T"]), 6) for c in q4}
    assert {c.args["dim"] for c in q4} >= {0, 1, -1} and any(c.args["z"].abs().max() > 500 for c in q4)
    for case in (c for cs in cases.values() for c in cs):
        values = case.expected if isinstance(case.expected, tuple) else (case.expected,)
        assert all(torch.isfinite(v).all() for v in values), case.name


def test_the_exact_gelu_is_too_far_from_the_approximation_to_pass():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    gap = (F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max()
    assert 1e-4 < gap < 1e-3  # far outside the tolerance of q1
    result = result_of("q1", "def gelu_tanh(x):\n    return x * 0.5 * torch.erfc(-x / math.sqrt(2))\n")
    assert not result.passed and "values off" in result.feedback()


BROKEN = {  # label: (question, source replacing part of the reference, fragments of the feedback)
    "GELU derivative without the chain rule through u": (
        "q1",
        """
def gelu_tanh_grad(x):
    t = torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t)
""",
        ["gelu_tanh_grad", "values off", "chain rule"],
    ),
    "PReLU slope gradient of the first example only": (
        "q2",
        """
_reference = prelu_backward
def prelu_backward(dout, x, weight):
    dx, _ = _reference(dout, x, weight)
    _, dweight = _reference(dout[:1], x[:1], weight)
    return dx, dweight
""",
        ["prelu_backward", "dweight: values off", "every example"],
    ),
    "PReLU derivative 1 at x == 0": (
        "q2",
        """
_reference = prelu_backward
def prelu_backward(dout, x, weight):
    dx, dweight = _reference(dout, x, weight)
    return torch.where(x == 0, dout, dx), dweight
""",
        ["prelu_backward", "dx: values off", "x == 0"],
    ),
    "PReLU shared slope returned as a 0-dim tensor": (
        "q2",
        """
_reference = prelu_backward
def prelu_backward(dout, x, weight):
    dx, dweight = _reference(dout, x, weight)
    return dx, dweight.reshape(()) if len(weight) == 1 else dweight
""",
        ["a shared slope", "dweight: wrong shape: expected (1,), got ()"],
    ),
    "Swish derivative with the textbook sigmoid derivative": (
        "q3",
        """
def swish_backward(dout, x, beta):
    z = beta * x
    s = swish(x, beta) / x.where(x != 0, torch.ones_like(x))
    s = torch.where(x == 0, torch.full_like(x, 0.5), s)
    ds = torch.exp(-z) / (1 + torch.exp(-z)) ** 2
    return dout * (s + x * beta * ds), (dout * x * x * ds).sum()
""",
        ["|x| up to 1e4", "NaN"],
    ),
    "Swish: x treated as a constant inside the sigmoid": (
        "q3",
        """
_reference = swish_backward
def swish_backward(dout, x, beta):
    _, dbeta = _reference(dout, x, beta)
    return dout * swish(x, beta) / x.where(x != 0, torch.ones_like(x)), dbeta
""",
        ["swish_backward, beta = 1 (SiLU)", "dx: values off", "product rule"],
    ),
    "Swish: dbeta with x instead of x squared": (
        "q3",
        """
_reference = swish_backward
def swish_backward(dout, x, beta):
    dx, dbeta = _reference(dout, x, beta)
    z = beta * x
    e = torch.exp(-z.abs())
    s = torch.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return dx, (dout * x * s * (1 - s)).sum()
""",
        ["swish_backward", "dbeta: values off"],
    ),
    "softmax at a temperature without the max shift": (
        "q4",
        """
def softmax_t(z, T, dim):
    e = torch.exp(z / T)
    return e / e.sum(dim=dim, keepdim=True)
""",
        ["thousands", "NaN"],
    ),
    "softmax at a temperature: dz not divided by T": (
        "q4",
        """
_reference = softmax_t_backward
def softmax_t_backward(dout, z, T, dim):
    dz, dT = _reference(dout, z, T, dim)
    return dz * T, dT
""",
        ["T = 0.1 (sharp)", "dz: values off", "1/T"],
    ),
    "softmax at a temperature: dT with the wrong sign": (
        "q4",
        """
_reference = softmax_t_backward
def softmax_t_backward(dout, z, T, dim):
    dz, dT = _reference(dout, z, T, dim)
    return dz, -dT
""",
        ["softmax_t_backward", "dT: values off"],
    ),
    "softmax backward along the last dimension only": (
        "q4",
        """
def softmax_t_backward(dout, z, T, dim):
    p = softmax_t(z, T, dim)
    du = p * (dout - (dout * p).sum(dim=-1, keepdim=True))
    return du / T, -(du * z).sum() / T ** 2
""",
        ["dim=0", "dz: values off", "along dim"],
    ),
    "not implemented": (
        "q4",
        """
def softmax_t(z, T, dim):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_typical_wrong_answers_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = result_of(qid, source, seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


SHORTCUTS = {  # the right values, computed the forbidden way
    "q1": (
        """
import torch.nn.functional as F
def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")
""",
        "torch.nn.functional.gelu",
    ),
    "q2": (
        """
import torch.nn.functional as F
def prelu_backward(dout, x, weight):
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    F.prelu(xr, wr).backward(dout)
    return xr.grad, wr.grad
""",
        "torch.nn.functional.prelu",
    ),
    "q3": (
        """
def swish(x, beta):
    return x * (beta * x).sigmoid()
""",
        "torch.sigmoid",
    ),
    "q4": (
        """
def softmax_t(z, T, dim):
    return torch.softmax(z / T, dim)
""",
        "torch.softmax",
    ),
}


@pytest.mark.parametrize("qid", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_with_the_call_named(qid):
    source, name = SHORTCUTS[qid]
    result = result_of(qid, source)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert name in result.feedback() and "which this question forbids" in result.feedback()


def test_the_review_answers_are_what_their_definitions_give():
    z = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    torch.tanh(z).backward()
    assert math.isclose(REVIEWS["r1"].answer, float(z.grad) ** 10, rel_tol=0.005)
    assert math.isclose(
        REVIEWS["r2"].answer, float(F.gelu(torch.tensor(-1.0, dtype=torch.float64))), abs_tol=1e-4
    )
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64))
    jacobian = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), logits)
    assert math.isclose(REVIEWS["r3"].answer, float(jacobian[0, 1]), abs_tol=1e-6)
    weight = torch.empty(4096, 512)
    torch.nn.init.kaiming_normal_(weight, nonlinearity="relu")  # fan_in 512
    assert math.isclose(REVIEWS["r4"].answer, math.sqrt(2 / 512)) and abs(weight.std() - 0.0625) < 1e-3
    p = torch.softmax(torch.tensor([2.0, 0.0], dtype=torch.float64) / 0.5, 0)
    assert math.isclose(REVIEWS["r5"].answer, float(p[0]), abs_tol=1e-4)
    z = torch.linspace(-3, -1, 2001, dtype=torch.float64, requires_grad=True)
    smallest = {}
    for name, fn in {"a": F.relu, "b": lambda v: F.leaky_relu(v, 0.01), "c": F.elu, "d": F.gelu}.items():
        (grad,) = torch.autograd.grad(fn(z).sum(), z)
        smallest[name] = float(grad.abs().min())
    assert {k for k, v in smallest.items() if v == 0} == REVIEWS["r6"].answer == {"a"}


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 3.6e-15, "r2": -0.8413, "r3": 0.56, "r4": 0.0039, "r5": 0.7311, "r6": {"a", "c", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
