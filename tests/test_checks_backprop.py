"""The 01_backprop question set: the reference solutions of the solution notebook pass every case for
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

ASSIGNMENT = "01_backprop"
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
        assert result.cases_passed == len(result.cases) >= 7


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 7 and sum(q.points for q in REVIEWS.values()) == 3
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    expressions = " ".join(c.args["expression"] for c in cases["q1"])
    for needed in ("sigmoid()", "a / a", "2 / a", "a ** b", "2 ** a"):
        assert needed in expressions, needed
    assert any(c.args["values"].abs().max() >= 800 for c in cases["q1"])  # math.exp would overflow
    dims = {c.args["x"].dim() for c in cases["q2"]}
    assert {1, 2, 3, 4} <= dims and any(c.args["x"].abs().max() > 20 for c in cases["q2"])
    q3 = cases["q3"]
    assert any(c.args["weight"] is None for c in q3) and any((c.args["y"] == -100).any() for c in q3)
    assert any(c.args["ignore_index"] == 0 for c in q3) and any(
        c.args["logits"].abs().max() > 500 for c in q3
    )
    rows = [c.args["x"].reshape(-1, c.args["x"].shape[-1]).norm(dim=1) for c in cases["q4"]]
    assert any((r == 0).any() for r in rows) and any(((r > 0) & (r < 0.1)).any() for r in rows)
    # every expected value is finite, and fresh inputs: two seeds differ, one seed twice is the same
    for case in (c for cs in cases.values() for c in cs):
        values = case.expected if isinstance(case.expected, tuple) else (case.expected,)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in values), case.name
    q2 = QSET.question("q2")
    assert not torch.equal(q2.cases(1)[0].args["x"], q2.cases(2)[0].args["x"])
    assert torch.equal(q2.cases(1)[0].args["x"], q2.cases(1)[0].args["x"])


def test_every_question_forbids_autograd_and_the_course():
    for q in IMPLEMENT:
        assert "torch.autograd.grad" in q.forbid and "utils.scratch" in q.forbid, q.id


BROKEN = {  # label: (question, source replacing part of the reference, fragments of the feedback)
    "sigmoid through exp of a large number": (
        "q1",
        """
class Scalar(Scalar):
    def sigmoid(self):
        s = 1 / (1 + math.exp(-self.data))
        out = Scalar(s, (self,))
        def back():
            self.grad += s * (1 - s) * out.grad
        out._backward = back
        return out
""",
        ["sigmoid of large inputs", "OverflowError", "math.exp(800)"],
    ),
    "division that overwrites the gradient": (
        "q1",
        """
class Scalar(Scalar):
    def __truediv__(self, other):
        den = other if isinstance(other, Scalar) else Scalar(other)
        out = Scalar(self.data / den.data, (self, den))
        def back():
            self.grad = out.grad / den.data
            den.grad = -out.grad * self.data / den.data ** 2
        out._backward = back
        return out
""",
        ["a leaf divided by itself", "a.grad: values off", "*adds*"],
    ),
    "the divisor's gradient with the wrong sign": (
        "q1",
        """
class Scalar(Scalar):
    def __truediv__(self, other):
        den = other if isinstance(other, Scalar) else Scalar(other)
        out = Scalar(self.data / den.data, (self, den))
        def back():
            self.grad += out.grad / den.data
            den.grad += out.grad * self.data / den.data ** 2
        out._backward = back
        return out
""",
        ["a quotient of Scalars", "b.grad: values off"],
    ),
    "a power that treats the exponent as a constant": (
        "q1",
        """
class Scalar(Scalar):
    def __pow__(self, other):
        k = other.data if isinstance(other, Scalar) else other
        out = Scalar(self.data ** k, (self,))
        def back():
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = back
        return out
""",
        ["a Scalar exponent", "b.grad: values off"],
    ),
    "no __rtruediv__": (
        "q1",
        """
class Scalar(Scalar):
    __rtruediv__ = None
""",
        ["numbers on either side", "TypeError"],
    ),
    "tanh layer: the weight gradient of the first example only": (
        "q2",
        """
def tanh_layer_backward(dout, x, W, out):
    dz = dout * (1 - out * out)
    x2, dz2 = x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1])
    return dz @ W.T, x2[:1].T @ dz2[:1], dz2.sum(dim=0)
""",
        ["backward, x (N, D) = (6, 4)", "dW: values off", "add up over all of them"],
    ),
    "tanh layer: 2-D only": (
        "q2",
        """
def tanh_layer_backward(dout, x, W, out):
    dz = dout * (1 - out * out)
    return dz @ W.T, x.T @ dz, dz.sum(dim=0)
""",
        ["backward, a single vector", "flatten the leading dimensions"],
    ),
    "tanh layer: tanh' of the output instead of the pre-activation": (
        "q2",
        """
def tanh_layer_backward(dout, x, W, out):
    dz = dout * (1 - torch.tanh(out) ** 2)
    x2, dz2 = x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1])
    return dz @ W.T, x2.T @ dz2, dz2.sum(dim=0)
""",
        ["backward, x (N, D)", "dx: values off", "tanh' is a function of tanh"],
    ),
    "weighted cross-entropy divided by N": (
        "q3",
        """
_reference = weighted_softmax_cross_entropy
def weighted_softmax_cross_entropy(logits, y, weight=None, ignore_index=-100):
    loss, dlogits = _reference(logits, y, weight, ignore_index)
    w = torch.ones(logits.shape[1], dtype=logits.dtype) if weight is None else weight
    counted = y != ignore_index
    total = w[torch.where(counted, y, 0)][counted].sum()
    return loss * total / len(y), dlogits * total / len(y)
""",
        ["N=6, C=4, class weights", "loss: values off", "weighted *mean*"],
    ),
    "weighted cross-entropy that counts the ignored labels": (
        "q3",
        """
_reference = weighted_softmax_cross_entropy
def weighted_softmax_cross_entropy(logits, y, weight=None, ignore_index=-100):
    return _reference(logits, y.clamp(min=0), weight, ignore_index=-12345)
""",
        ["ignored", "values off"],
    ),
    "weighted cross-entropy, the naive softmax": (
        "q3",
        """
_reference = weighted_softmax_cross_entropy
def weighted_softmax_cross_entropy(logits, y, weight=None, ignore_index=-100):
    p = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    shifted_free = torch.log(p)
    loss, dlogits = _reference(logits, y, weight, ignore_index)
    counted = y != ignore_index
    rows = torch.arange(len(y))[counted]
    w = torch.ones(logits.shape[1], dtype=logits.dtype) if weight is None else weight
    w_n = w[y[counted]]
    return -(w_n * shifted_free[rows, y[counted]]).sum() / w_n.sum(), dlogits
""",
        ["logits in the thousands", "where the reference is finite"],
    ),
    "L2 normalization without the path through the length": (
        "q4",
        """
def l2_normalize_backward(dout, x, eps=1e-12):
    return dout / (x * x).sum(dim=-1, keepdim=True).sqrt().clamp(min=eps)
""",
        ["backward, x (N, D) = (5, 6)", "values off", "component along y"],
    ),
    "L2 normalization without eps": (
        "q4",
        """
def l2_normalize(x, eps=1e-12):
    return x / (x * x).sum(dim=-1, keepdim=True).sqrt()
""",
        ["forward, a row of zeros", "NaN"],
    ),
    "not implemented": (
        "q4",
        """
def l2_normalize(x, eps=1e-12):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
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
class Scalar(Scalar):
    def sigmoid(self):
        s = float(torch.sigmoid(torch.tensor(self.data)))
        out = Scalar(s, (self,))
        def back():
            self.grad += s * (1 - s) * out.grad
        out._backward = back
        return out
""",
        "torch.sigmoid",
    ),
    "q2": (
        """
def tanh_layer_backward(dout, x, W, out):
    xr, wr = x.clone().requires_grad_(), W.clone().requires_grad_()
    b = torch.zeros(W.shape[1], dtype=W.dtype, requires_grad=True)
    z = torch.atanh(out)  # any graph will do
    torch.tanh(xr @ wr + b).backward(dout)
    return xr.grad, wr.grad, b.grad
""",
        "Tensor.backward",
    ),
    "q3": (
        """
import torch.nn.functional as F
def weighted_softmax_cross_entropy(logits, y, weight=None, ignore_index=-100):
    z = logits.clone().requires_grad_()
    loss = F.cross_entropy(z, y, weight=weight, ignore_index=ignore_index)
    return loss.detach(), torch.autograd.grad(loss, z)[0]
""",
        "torch.nn.functional.cross_entropy",
    ),
    "q4": (
        """
import torch.nn.functional as F
def l2_normalize(x, eps=1e-12):
    return F.normalize(x, dim=-1, eps=eps)
""",
        "torch.nn.functional.normalize",
    ),
}


@pytest.mark.parametrize("qid", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_with_the_call_named(qid):
    source, name = SHORTCUTS[qid]
    result = result_of(qid, source)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert name in result.feedback() and "which this question forbids" in result.feedback()


def test_the_review_answers_are_what_their_definitions_give():
    x, y = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (2.0, 3.0))
    ((x + y) * x).backward()
    assert REVIEWS["r1"].answer == int(x.grad) and isinstance(REVIEWS["r1"].answer, int)
    layers = [784, 256, 128, 10]
    assert REVIEWS["r2"].answer == sum(a * b + b for a, b in zip(layers, layers[1:]))
    z = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    F.cross_entropy(z, torch.tensor([0])).backward()
    assert math.isclose(REVIEWS["r3"].answer, float(z.grad[0, 0]), abs_tol=1e-4)
    b = torch.zeros(5, requires_grad=True)
    (torch.zeros(64, 5) + b).backward(torch.full((64, 5), 0.5))
    assert torch.equal(b.grad, torch.full((5,), REVIEWS["r4"].answer))
    s = torch.linspace(-10, 10, 20001, dtype=torch.float64).sigmoid()
    assert math.isclose(REVIEWS["r5"].answer, float((s * (1 - s)).max()) ** 5, rel_tol=1e-6)
    # r6: a correct gradient checked in float32 with h = 1e-5 is off by about 1e-2, in float64 it is not
    w = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(v):
        return (torch.sin(v) * w.to(v.dtype)).sum() * 100

    def check_error(dtype, h):  # the relative error of the whole numerical gradient (vector norms)
        v = torch.linspace(-1, 1, 50, dtype=dtype)
        numeric = torch.zeros(50, dtype=torch.float64)
        for i in range(50):
            e = torch.zeros(50, dtype=dtype)
            e[i] = h
            numeric[i] = float(f(v + e) - f(v - e)) / (2 * h)
        analytic = torch.cos(v.double()) * w * 100
        return float((numeric - analytic).norm() / (numeric.norm() + analytic.norm()))

    assert check_error(torch.float32, 1e-5) > 1e-3 > 1e-7 > check_error(torch.float64, 1e-5)
    assert check_error(torch.float32, 1e-8) > check_error(torch.float32, 1e-5)  # (c) is wrong
    assert REVIEWS["r6"].answer == {"a", "b"}


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 5, "r2": 234752, "r3": 0.787, "r4": 0.5, "r5": 1.25, "r6": {"c", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    assert "expected an int" in REVIEWS["r1"].verdict({"r1": 7.0})[1]
