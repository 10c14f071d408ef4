"""The chapter 06 question set (06_convolutions): the reference solutions of the solution notebook pass
every case for several seeds, other correct ways of writing them pass too, typical wrong answers (the
padding left on dx, the stride forgotten in dw, reflect that repeats the border, dilation that moves
the window instead of spreading the taps) and the forbidden shortcuts (autograd, F.conv_transpose2d,
torch.nn.grad, F.pad, the course's own convolution) score zero with a message that says what is wrong;
the review answers are right and the usual mistakes are not; the make-it-work question scores on data
the exercise never loads and gives full, partial and zero points."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, functions_for, solution_namespace
from utils.grading import MakeItWork, Question, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks.convolutions import canvas_digits, held_out_canvas_digits

ASSIGNMENT = "06_convolutions"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def result_of(qid: str, *sources: str, seed: int = 0):
    q = QSET.question(qid)
    return evaluate(q, functions_for(solution_namespace(ASSIGNMENT, *sources), q), seed=seed)


def test_question_set_shape_and_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 9 and QSET.question("q1").points == 2
    cases = {q.id: q.cases(0) for q in IMPLEMENT}
    # q1: a stride that leaves pixels unreached (their gradient is 0), padding, float32 and float64
    assert any(bool((c.expected[0][..., -1] == 0).all()) for c in cases["q1"])
    assert {c.args["x"].dtype for c in cases["q1"]} == {torch.float32, torch.float64}
    assert any(c.args["padding"] > 0 for c in cases["q1"]) and any(
        c.args["w"].shape[-1] == 1 for c in cases["q1"]
    )
    # q2: every mode, the largest reflect pad, a circular pad of the whole size
    assert {c.args["mode"] for c in cases["q2"]} == {"constant", "reflect", "replicate", "circular"}
    assert any(
        c.args["mode"] == "reflect" and max(c.args["pad"][:2]) == c.args["x"].shape[3] - 1
        for c in cases["q2"]
    )
    assert any(c.args["mode"] == "circular" and c.args["pad"][0] == c.args["x"].shape[3] for c in cases["q2"])
    # q3: every padding mode, dilations above 1 with and without stride, no bias
    assert {c.args["padding_mode"] for c in cases["q3"]} == {"zeros", "reflect", "replicate", "circular"}
    assert {c.args["dilation"] for c in cases["q3"]} >= {1, 2, 3} and any(
        c.args["b"] is None for c in cases["q3"]
    )
    q1 = QSET.question("q1")
    assert not torch.equal(q1.cases(1)[0].args["x"], q1.cases(2)[0].args["x"])
    assert torch.equal(q1.cases(1)[0].args["x"], q1.cases(1)[0].args["x"])


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace(ASSIGNMENT)
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed and result.score == q.points, result.line()
        assert result.cases_passed == len(result.cases) >= 6


def test_the_references_of_the_checker_are_right():
    """q3's expected values are nn.Conv2d's own output with that padding mode and dilation."""
    for case in QSET.question("q3").cases(0):
        a = case.args
        c_out, c_in, k, _ = a["w"].shape
        layer = nn.Conv2d(
            c_in,
            c_out,
            k,
            stride=a["stride"],
            padding=a["padding"],
            dilation=a["dilation"],
            padding_mode=a["padding_mode"],
            bias=a["b"] is not None,
        ).to(a["x"].dtype)
        with torch.no_grad():
            layer.weight.copy_(a["w"])
            if a["b"] is not None:
                layer.bias.copy_(a["b"])
            assert torch.allclose(layer(a["x"]), case.expected, atol=1e-4)


ALTERNATIVES = {  # other correct answers: they must pass too
    "q1 with one Python loop over the output positions": (
        "q1",
        """
def conv2d_backward(dout, x, w, stride, padding):
    n, c_in, h, width = x.shape
    _, _, kh, kw = w.shape
    xp = x.new_zeros(n, c_in, h + 2 * padding, width + 2 * padding)
    xp[:, :, padding:padding + h, padding:padding + width] = x
    dxp, dw = torch.zeros_like(xp), torch.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            g = dout[:, :, i, j]  # (N, C_out)
            dw += torch.einsum("no,nchw->ochw", g, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += torch.einsum("no,ochw->nchw", g, w)
    return dxp[:, :, padding:padding + h, padding:padding + width], dw, dout.sum((0, 2, 3))
""",
    ),
    "q2 with torch.cat of flipped slices": (
        "q2",
        """
def pad2d(x, pad, mode):
    left, right, top, bottom = pad
    def along(t, before, after, dim):
        n = t.shape[dim]
        if mode == "constant":
            shape = list(t.shape)
            parts = [t.new_zeros(*shape[:dim], before, *shape[dim + 1:]), t,
                     t.new_zeros(*shape[:dim], after, *shape[dim + 1:])]
        elif mode == "reflect":
            parts = [t.narrow(dim, 1, before).flip(dim), t, t.narrow(dim, n - 1 - after, after).flip(dim)]
        elif mode == "replicate":
            parts = [t.narrow(dim, 0, 1).expand(*t.shape[:dim], before, *t.shape[dim + 1:]), t,
                     t.narrow(dim, n - 1, 1).expand(*t.shape[:dim], after, *t.shape[dim + 1:])]
        else:
            parts = [t.narrow(dim, n - before, before), t, t.narrow(dim, 0, after)]
        return torch.cat(parts, dim)
    return along(along(x, top, bottom, 2), left, right, 3)
""",
    ),
}


@pytest.mark.parametrize("label", list(ALTERNATIVES))
def test_other_correct_answers_pass(label):
    qid, source = ALTERNATIVES[label]
    for seed in (0, 1):
        result = result_of(qid, source, seed=seed)
        assert result.passed, result.line()


BROKEN = {
    "backward: dx keeps the padding": (
        "q1",
        """
_reference = conv2d_backward
def conv2d_backward(dout, x, w, stride, padding):
    dx, dw, db = _reference(dout, x, w, stride, padding)
    return F.pad(dx, (padding,) * 4) if padding else dx, dw, db
""",
        ["padding 1", "crop the padding off dx"],
    ),
    "backward: the stride forgotten (every window one pixel apart)": (
        "q1",
        """
_reference = conv2d_backward
def conv2d_backward(dout, x, w, stride, padding):
    return _reference(dout, x, w, 1, padding) if stride == 1 else (torch.zeros_like(x), torch.zeros_like(w),
                                                                    dout.sum((0, 2, 3)))
""",
        ["stride 2", "values off"],
    ),
    "backward: db not summed over the batch": (
        "q1",
        """
_reference = conv2d_backward
def conv2d_backward(dout, x, w, stride, padding):
    dx, dw, _ = _reference(dout, x, w, stride, padding)
    return dx, dw, dout[0].sum((1, 2))
""",
        ["db", "sums dout over (N, H_out, W_out)"],
    ),
    "reflect that repeats the border pixel (symmetric)": (
        "q2",
        """
_reference = pad2d
def pad2d(x, pad, mode):
    if mode != "reflect":
        return _reference(x, pad, mode)
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    def source(size, before, after):
        i = torch.arange(-before, size + after)
        i = torch.where(i < 0, -i - 1, i)
        return torch.where(i > size - 1, 2 * size - 1 - i, i)
    return x[..., source(h, top, bottom)[:, None], source(w, left, right)[None, :]]
""",
        ["reflect", "the edge itself is not repeated"],
    ),
    "pad in the order (top, bottom, left, right)": (
        "q2",
        """
_reference = pad2d
def pad2d(x, pad, mode):
    left, right, top, bottom = pad
    return _reference(x, (top, bottom, left, right), mode)
""",
        ["the last dimension first"],
    ),
    "dilation that moves the window instead of spreading the taps": (
        "q3",
        """
_reference = conv2d_dilated
def conv2d_dilated(x, w, b, stride, padding, dilation, padding_mode):
    return _reference(x, w, b, stride * dilation, padding, 1, padding_mode)
""",
        ["dilation 2", "d pixels apart"],
    ),
    "zeros padding whatever the mode": (
        "q3",
        """
_reference = conv2d_dilated
def conv2d_dilated(x, w, b, stride, padding, dilation, padding_mode):
    return _reference(x, w, b, stride, padding, dilation, "zeros")
""",
        ["reflect padding", "values off"],
    ),
    "not implemented": (
        "q1",
        """
def conv2d_backward(dout, x, w, stride, padding):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_wrong_variants_score_zero_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    result = result_of(qid, source)
    assert not result.passed and result.score == 0
    feedback = result.feedback()
    for fragment in fragments:
        assert fragment in feedback, feedback


SHORTCUTS = {  # the right values, computed the forbidden way
    "q1 through autograd": (
        """
def conv2d_backward(dout, x, w, stride, padding):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    b = torch.zeros(w.shape[0], dtype=w.dtype, requires_grad=True)
    out = conv2d_dilated(x, w, b, stride, padding, 1, "zeros")
    return torch.autograd.grad(out, (x, w, b), dout)
""",
        "torch.autograd.grad",
    ),
    "q1 through torch.nn.grad": (
        """
def conv2d_backward(dout, x, w, stride, padding):
    dx = torch.nn.grad.conv2d_input(x.shape, w, dout, stride=stride, padding=padding)
    dw = torch.nn.grad.conv2d_weight(x, w.shape, dout, stride=stride, padding=padding)
    return dx, dw, dout.sum((0, 2, 3))
""",
        "torch.nn.grad",
    ),
    "q1 through F.conv_transpose2d": (
        """
_reference = conv2d_backward
def conv2d_backward(dout, x, w, stride, padding):
    dx, dw, db = _reference(dout, x, w, stride, padding)
    out = F.conv_transpose2d(dout, w, stride=stride, padding=padding)
    return dx, dw, db
""",
        "conv_transpose2d",
    ),
    "q2": (
        """
def pad2d(x, pad, mode):
    return F.pad(x, pad, mode=mode)
""",
        "pad",
    ),
    "q3 through nn.Conv2d": (
        """
def conv2d_dilated(x, w, b, stride, padding, dilation, padding_mode):
    layer = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, padding=padding,
                            dilation=dilation, padding_mode=padding_mode, bias=b is not None).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
        return layer(x)
""",
        "Conv2d",
    ),
    "q3 through the course's convolution": (
        """
from utils.scratch.conv import conv2d_im2col
def conv2d_dilated(x, w, b, stride, padding, dilation, padding_mode):
    return conv2d_im2col(pad2d(x, (padding,) * 4, "constant"), w, b, stride=stride, dilation=dilation)
""",
        "utils.scratch",
    ),
}


@pytest.mark.parametrize("label", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_with_the_call_named(label):
    source, name = SHORTCUTS[label]
    result = result_of(label.split()[0], source)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert name in result.feedback() and "which this question forbids" in result.feedback()


# --------------------------------------------------------------------------- review questions


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def _measured_receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """The extent of the input pixels one output unit's gradient reaches, through all-one 1-D convolutions."""
    x = torch.zeros(1, 1, 101, dtype=torch.float64, requires_grad=True)
    out = x
    for k, s, d in layers:
        out = F.conv1d(out, torch.ones(1, 1, k, dtype=torch.float64), stride=s, dilation=d)
    out[0, 0, out.shape[-1] // 2].backward()
    reached = (x.grad[0, 0] != 0).nonzero()
    return int(reached.max() - reached.min() + 1)  # the extent (a dilated stack leaves holes inside it)


def test_the_review_answers_are_what_their_definitions_give():
    assert REVIEWS["r1"].answer == _measured_receptive_field([(3, 1, 1), (3, 1, 1), (3, 2, 1)])
    assert REVIEWS["r2"].answer == _measured_receptive_field([(3, 1, 2)] * 3)
    assert REVIEWS["r3"].answer == nn.Conv2d(3, 8, 5, stride=2, padding=1)(torch.zeros(1, 3, 32, 32)).shape[2]
    separable = nn.Sequential(nn.Conv2d(64, 64, 3, groups=64, bias=False), nn.Conv2d(64, 128, 1, bias=False))
    assert REVIEWS["r4"].answer == sum(p.numel() for p in separable.parameters())
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    out = conv(torch.zeros(1, 3, 32, 32))
    assert REVIEWS["r5"].answer == out.numel() * conv.weight[0].numel()
    assert REVIEWS["r6"].answer == {"a", "c"}


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 9, "r2": 15, "r3": 16, "r4": 73728, "r5": 1327104, "r6": {"b", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    right, message = REVIEWS["r1"].verdict({"r1": 7.0})
    assert not right and "expected an int" in message


# --------------------------------------------------------------------------- make it work


def test_the_grader_scores_on_data_the_exercise_never_loads():
    x_fit, y_fit, x_val, y_val = canvas_digits()
    x_test, y_test = held_out_canvas_digits(123)
    assert x_fit.shape == (1000, 1, 40, 40) and x_val.shape == (500, 1, 40, 40)
    assert x_test.shape == (1000, 1, 40, 40) and torch.bincount(y_test, minlength=10).min() >= 80
    assert x_fit[:, :, :6].abs().sum() == 0 and x_fit[:, :, 34:].abs().sum() == 0  # centred digits
    assert not torch.equal(x_test, held_out_canvas_digits(124)[0])  # the grader's seed places the digits
    import utils.data

    train = utils.data.mnist("train").images.flatten(1)
    test = utils.data.mnist("test").images.flatten(1)
    assert not (torch.cdist(test[:300], train) < 1e-6).any()  # another split: no image in common
    q = QSET.question("q4")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.metric == "accuracy"


def _trained_predict(train_source: str):
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    cells = {c.get("id"): c.source for c in nb.cells}
    x_fit, y_fit, _, _ = canvas_digits()
    ns: dict = {"torch": torch, "F": F, "nn": nn, "math": math, "SEED": 0, "x_fit": x_fit, "y_fit": y_fit}
    for source in (train_source, cells["q4-predict"]):
        exec(source, ns)
    return ns["predict"]


def _points(predict) -> tuple[float, str]:
    q = QSET.question("q4")
    batches, targets, n = q.prepare(0)
    outputs = [predict(b) for b in batches]
    points, text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    return points, text


@pytest.mark.slow
def test_the_steps_give_full_partial_and_zero_points():
    """The notebook's training (global max pooling, digits shifted by up to 6 pixels) reaches the top
    step (0.94 with seed 0), the same training with shifts of up to 2 pixels the lower one (0.89), the
    same network trained on the centred digits none (0.69), nor a constant answer."""
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    train = next(c.source for c in nb.cells if c.get("id") == "q4-train")
    line = "xb, yb = shift(x_fit[order[i:i + BATCH]], generator), y_fit[order[i:i + BATCH]]"
    offsets = "torch.randint(-6, 7, (len(images), 2), generator=generator)"
    assert line in train and offsets in train
    variants = {
        "good": train,
        "small shifts": train.replace(offsets, "torch.randint(-2, 3, (len(images), 2), generator=generator)"),
        "centred": train.replace(line, "xb, yb = x_fit[order[i:i + BATCH]], y_fit[order[i:i + BATCH]]"),
    }
    points = {name: _points(_trained_predict(source)) for name, source in variants.items()}
    points["constant"] = _points(lambda images: torch.zeros(len(images), dtype=torch.int64))
    expected = {"good": 2, "small shifts": 1, "centred": 0, "constant": 0}
    assert {name: p for name, (p, _) in points.items()} == expected, points
