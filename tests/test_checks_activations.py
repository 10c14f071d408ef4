"""The 02_activations question set: reference solutions pass every case for several seeds, the cases
cover the edge cases the questions promise, and plausible wrong answers fail with a helpful message.

The reference solutions are defined here, so these tests do not depend on the solution notebook
(tests/test_exercises.py grades the real notebooks)."""

from __future__ import annotations

import dataclasses

import textwrap

import pytest
import torch

from utils.grading import evaluate, get_assignment

QSET = get_assignment("02_activations")

SOLUTIONS = """
import math
import torch


def sigmoid(x):
    e = torch.exp(-x.abs())
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x):
    s = sigmoid(x)
    return s * (1 - s)


def gelu(x):
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def gelu_grad(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def leaky_relu(x, alpha):
    return torch.where(x > 0, x, alpha * x)


def leaky_relu_grad(x, alpha):
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, alpha))


def log_softmax(z, dim):
    shifted = z - z.amax(dim=dim, keepdim=True)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()
"""


def namespace(*overrides: str) -> dict:
    """The reference solutions, then optional sources that replace some of them."""
    ns: dict = {}
    for source in (SOLUTIONS, *overrides):
        exec(textwrap.dedent(source), ns)
    return ns


def run(qid: str, ns: dict, seed: int):
    q = QSET.question(qid)
    return evaluate(q, {name: ns[name] for name in q.functions}, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = namespace()
    for q in QSET.questions:
        result = run(q.id, ns, seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 8


def without_forbidden_calls(q):
    """The question with its watch off: the course's own versions, which learners may not call, must
    still be right by the question's checks."""
    return dataclasses.replace(q, forbid=())


def test_the_chapter_versions_pass_too():
    """utils.scratch.activations (erfc-based GELU, e / (1 + e)**2 derivatives) is accepted as well."""
    from utils.scratch import activations as A

    functions = {
        "sigmoid": A.sigmoid,
        "sigmoid_grad": A.sigmoid_grad,
        "gelu": A.gelu,
        "gelu_grad": A.gelu_grad,
        "leaky_relu": A.leaky_relu,
        "leaky_relu_grad": A.leaky_relu_grad,
        "log_softmax": A.log_softmax,
    }
    for q in QSET.questions:
        result = evaluate(without_forbidden_calls(q), {name: functions[name] for name in q.functions}, seed=3)
        assert result.passed, result.line()


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4"] and QSET.max_score == 4
    cases = {q.id: q.cases(5) for q in QSET.questions}
    for qid in ("q1", "q2"):
        extreme = [c for c in cases[qid] if "1e4" in c.name]
        assert {c.args["x"].dtype for c in extreme} == {torch.float32, torch.float64}
        assert all(c.args["x"].abs().max() == 1e4 and (c.args["x"] == -1e4).any() for c in extreme)
        assert {c.function for c in extreme} == set(QSET.question(qid).functions)  # values and derivatives
    assert any(c.args["x"].dim() == 0 for c in cases["q1"])  # a 0-dim tensor
    assert all((c.args["x"] == 0).any() for c in cases["q3"] if "zeros" in c.name)
    assert {c.args["alpha"] for c in cases["q3"]} >= {0.0, 0.01, 0.2}
    dims = {(c.args["z"].dim(), c.args["dim"]) for c in cases["q4"]}
    assert {(2, 0), (2, 1), (3, 1), (3, -1), (1, 0)} <= dims
    big = [c for c in cases["q4"] if c.args["z"].abs().max() > 500]
    assert len(big) >= 3 and all(torch.isfinite(c.expected).all() for c in big)
    # fresh inputs: two seeds give different tensors, the same seed twice the same
    first = lambda seed: QSET.question("q2").cases(seed)[0].args["x"]  # noqa: E731
    assert not torch.equal(first(1), first(2)) and torch.equal(first(1), first(1))


BROKEN = {
    "naive sigmoid": (
        "q1",
        """
def sigmoid(x):
    return torch.exp(x) / (1 + torch.exp(x))
""",
        ["1e4", "NaN", "never take exp of a large positive number"],
    ),
    "naive sigmoid derivative": (
        "q1",
        """
def sigmoid_grad(x):
    return torch.exp(-x) / (1 + torch.exp(-x)) ** 2
""",
        ["sigmoid_grad, |x| up to 1e4", "NaN", "reuse your stable sigmoid"],
    ),
    "sigmoid in float32": (
        "q1",
        """
_stable = sigmoid
def sigmoid(x):
    return _stable(x).float()
""",
        ["wrong dtype: expected torch.float64, got torch.float32"],
    ),
    "tanh approximation instead of exact GELU": (
        "q2",
        """
def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
""",
        ["values off", "not the tanh approximation"],
    ),
    "GELU derivative without the product rule": (
        "q2",
        """
def gelu_grad(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))
""",
        ["gelu_grad", "values off", "x * phi(x)"],
    ),
    "leaky ReLU derivative 1 at zero": (
        "q3",
        """
def leaky_relu_grad(x, alpha):
    return torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, alpha))
""",
        ["with exact zeros", "values off", "also at x == 0"],
    ),
    "leaky ReLU derivative from Python numbers": (
        "q3",
        """
def leaky_relu_grad(x, alpha):
    return torch.where(x > 0, 1.0, alpha)
""",
        ["wrong dtype: expected torch.float64, got torch.float32", "torch.full_like"],
    ),
    "leaky ReLU in place": (
        "q3",
        """
def leaky_relu(x, alpha):
    x[x < 0] *= alpha
    return x
""",
        ["modified its argument `x`"],
    ),
    "naive log-softmax": (
        "q4",
        """
def log_softmax(z, dim):
    return torch.log(torch.exp(z) / torch.exp(z).sum(dim=dim, keepdim=True))
""",
        ["NaN", "subtract the maximum along dim"],
    ),
    "log-softmax always along the last dim": (
        "q4",
        """
def log_softmax(z, dim):
    shifted = z - z.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
""",
        ["dim=0", "values off", "not always the last one"],
    ),
    "log-softmax without keepdim": (
        "q4",
        """
def log_softmax(z, dim):
    shifted = z - z.amax(dim=dim)
    return shifted - shifted.exp().sum(dim=dim).log()
""",
        ["raised RuntimeError"],
    ),
    "not implemented": (
        "q2",
        """
def gelu(x):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["6/12 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = run(qid, namespace(source), seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


def test_naive_variants_fail_only_on_the_extreme_cases():
    """The unstable formulas are right for ordinary inputs: only the large ones expose them."""
    for label, marker in [("naive sigmoid", "1e4"), ("naive log-softmax", "")]:
        qid, source, _ = BROKEN[label]
        result = run(qid, namespace(source), seed=0)
        failed = [c.name for c in result.cases if not c.passed]
        assert failed, label
        if label == "naive sigmoid":
            assert all(marker in name for name in failed), failed
        else:
            z_max = {c.name: c.args["z"].abs().max() for c in QSET.question("q4").cases(0)}
            assert all(z_max[name] > 50 for name in failed), failed
