"""The 06_convolutions question set (chapter 06): reference solutions pass every case, the course's own
utils implementations pass too, and plausible mistakes fail with a message that points at them."""

from __future__ import annotations

import dataclasses

import textwrap

import pytest
import torch

from utils.grading import evaluate, get_assignment
from utils.receptive_field import receptive_field as rf_table
from utils.scratch import conv

QSET = get_assignment("06_convolutions")


REFERENCE = """
def conv2d_forward(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = torch.zeros(n, c, h + 2 * padding, wd + 2 * padding, dtype=x.dtype)
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = torch.zeros(n, c_out, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]  # (N, C, kh, kw)
            out[:, :, i, j] = torch.einsum("nchw,ochw->no", patch, w)
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def _windows(x, k, stride):
    ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    return torch.stack([x[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride]
                        for u in range(k) for v in range(k)], dim=2)  # (N, C, k*k, Ho, Wo)


def maxpool2d_forward(x, k, stride):
    return _windows(x, k, stride).max(dim=2).values


def maxpool2d_backward(dout, x, k, stride):
    winner = _windows(x, k, stride).argmax(dim=2)  # first maximum, row-major
    dx = torch.zeros_like(x)
    ho, wo = dout.shape[2:]
    for u in range(k):
        for v in range(k):
            dx[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride] += (winner == u * k + v) * dout
    return dx


def conv_output_size(n, k, stride, padding, dilation):
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def receptive_field(layers):
    r, j = 1, 1
    for k, s, d in layers:
        r += d * (k - 1) * j
        j *= s
    return r
"""


def namespace(*overrides: str) -> dict:
    ns: dict = {"torch": torch}
    for source in (REFERENCE, *overrides):
        exec(textwrap.dedent(source), ns)
    return ns


def functions(ns: dict, qid: str) -> dict:
    return {name: ns[name] for name in QSET.question(qid).functions}


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = namespace()
    for q in QSET.questions:
        result = evaluate(q, functions(ns, q.id), seed=seed)
        assert result.passed, result.line()
        assert len(result.cases) >= 8


def test_the_course_implementations_pass():
    answers = {
        "conv2d_forward": conv.conv2d_im2col,
        "maxpool2d_forward": conv.maxpool2d_forward,
        "maxpool2d_backward": conv.maxpool2d_backward,
        "conv_output_size": conv.conv_output_size,
        "receptive_field": lambda layers: rf_table(layers)[-1].size if layers else 1,
    }
    for q in QSET.questions:
        q = dataclasses.replace(q, forbid=())  # learners may not call the course's versions; they must pass
        result = evaluate(q, {name: answers[name] for name in q.functions}, seed=7)
        assert result.passed, result.line()


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4"] and QSET.max_score == 4
    cases = {q.id: q.cases(3) for q in QSET.questions}
    conv_cases = cases["q1"]
    assert any(c.args["b"] is None for c in conv_cases)
    assert any(
        c.args["stride"] > 1
        and (c.args["x"].shape[2] + 2 * c.args["padding"] - c.args["w"].shape[2]) % c.args["stride"]
        for c in conv_cases
    )  # a stride that does not divide
    assert any(c.args["x"].shape[1] > 1 and c.args["w"].shape[0] > 1 for c in conv_cases)
    assert {c.args["x"].dtype for c in conv_cases} == {torch.float32, torch.float64}
    pool = cases["q2"]
    assert any(c.args["k"] > c.args["stride"] for c in pool)  # overlapping windows
    assert any((c.args["x"] < 0).all() for c in pool if c.function == "maxpool2d_forward")
    ties = [c for c in pool if "ties" in c.name and c.function == "maxpool2d_backward"]
    assert ties and all(len(c.args["x"].unique()) <= 3 for c in ties)
    sizes = cases["q3"]
    assert any(c.args["dilation"] > 1 for c in sizes) and any(c.expected == 1 for c in sizes)
    rf = cases["q4"]
    assert any(c.args["layers"] == [] and c.expected == 1 for c in rf)
    assert [c.expected for c in rf if c.args["layers"] == [(3, 1, 1)] * 3] == [7]
    # fresh inputs: two seeds differ, one seed twice is the same
    q1 = QSET.question("q1")
    assert not torch.equal(q1.cases(1)[0].args["x"], q1.cases(2)[0].args["x"])
    assert torch.equal(q1.cases(1)[0].args["x"], q1.cases(1)[0].args["x"])


BROKEN = {
    "flipped kernel (a true convolution)": (
        "q1",
        """
_ref = conv2d_forward
def conv2d_forward(x, w, b, stride, padding):
    return _ref(x, w.flip(-1, -2), b, stride, padding)
""",
        ["values off", "no kernel flip"],
    ),
    "bias always added": (
        "q1",
        """
_ref = conv2d_forward
def conv2d_forward(x, w, b, stride, padding):
    return _ref(x, w, None, stride, padding) + b.reshape(1, -1, 1, 1)
""",
        ["case 'no bias (b is None)", "raised AttributeError", "when b is not None"],
    ),
    "padding ignored": (
        "q1",
        """
_ref = conv2d_forward
def conv2d_forward(x, w, b, stride, padding):
    return _ref(x, w, b, stride, 0)
""",
        ["wrong shape", "pad x with zeros"],
    ),
    "float32 output": (
        "q1",
        """
_ref = conv2d_forward
def conv2d_forward(x, w, b, stride, padding):
    return _ref(x, w, b, stride, padding).float()
""",
        ["wrong dtype: expected torch.float64, got torch.float32"],
    ),
    "max starts at zero": (
        "q2",
        """
_ref = maxpool2d_forward
def maxpool2d_forward(x, k, stride):
    return _ref(x, k, stride).clamp(min=0)
""",
        ["values off", "exact match required", "not from 0"],
    ),
    "gradient to every tied maximum": (
        "q2",
        """
def maxpool2d_backward(dout, x, k, stride):
    win = _windows(x, k, stride)
    mask = (win == win.max(dim=2, keepdim=True).values).to(dout.dtype)
    dx = torch.zeros_like(x)
    ho, wo = dout.shape[2:]
    for u in range(k):
        for v in range(k):
            dx[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride] += mask[:, :, u * k + v] * dout
    return dx
""",
        ["case 'backward, ties", "FIRST maximum"],
    ),
    "overlapping gradients overwritten": (
        "q2",
        """
def maxpool2d_backward(dout, x, k, stride):
    winner = _windows(x, k, stride).argmax(dim=2)
    dx = torch.zeros_like(x)
    ho, wo = dout.shape[2:]
    for u in range(k):
        for v in range(k):
            sl = dx[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride]
            sl.copy_(torch.where(winner == u * k + v, dout, sl))
    return dx
""",
        ["case 'backward, overlapping windows", "ADD (+=)"],
    ),
    "true division": (
        "q3",
        """
def conv_output_size(n, k, stride, padding, dilation):
    return (n + 2 * padding - dilation * (k - 1) - 1) / stride + 1
""",
        ["expected an int, got float", "integer division"],
    ),
    "the right size as a float": (
        "q3",
        """
def conv_output_size(n, k, stride, padding, dilation):
    return float((n + 2 * padding - dilation * (k - 1) - 1) // stride + 1)
""",
        ["expected an int, got float 26.0 (return an int"],
    ),
    "dilation forgotten": (
        "q3",
        """
def conv_output_size(n, k, stride, padding, dilation):
    return (n + 2 * padding - k) // stride + 1
""",
        ["case 'dilation 2", "got 18, expected 16", "d (k - 1) + 1"],
    ),
    "jump updated too early": (
        "q4",
        """
def receptive_field(layers):
    r, j = 1, 1
    for k, s, d in layers:
        j *= s
        r += d * (k - 1) * j
    return r
""",
        ["case 'conv, 2x2 pooling", "got 9, expected 8", "update r before j"],
    ),
    "dilation ignored": (
        "q4",
        """
def receptive_field(layers):
    r, j = 1, 1
    for k, s, d in layers:
        r += (k - 1) * j
        j *= s
    return r
""",
        ["case 'dilations 1, 2, 4, 8", "expected 31"],
    ),
    "not implemented": (
        "q3",
        """
def conv_output_size(n, k, stride, padding, dilation):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/15 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = evaluate(QSET.question(qid), functions(namespace(source), qid), seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback
