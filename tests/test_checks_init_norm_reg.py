"""The 05_init_norm_reg question set: reference solutions pass every case (also the statistical ones,
over several seeds), and typical mistakes fail with a message that says what is wrong."""

from __future__ import annotations

import dataclasses

import textwrap

import pytest
import torch

from utils.grading import evaluate, get_assignment

QSET = get_assignment("05_init_norm_reg")

SOLUTIONS = """
import math
import torch


def he_init_(weight, fan_mode="fan_in"):
    receptive_field = math.prod(weight.shape[2:])
    fan = weight.shape[1] * receptive_field if fan_mode == "fan_in" else weight.shape[0] * receptive_field
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / fan))
    return weight


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    if training:
        m = x.numel() // x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean.reshape(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / torch.sqrt(var + eps)
    x_hat = (x - mean.reshape(1, -1, 1, 1)) * inv_std.reshape(1, -1, 1, 1)
    out = gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
    return out, running_mean, running_var, (x_hat, gamma, inv_std)


def batchnorm_backward(dout, cache):
    x_hat, gamma, inv_std = cache
    m = dout.numel() // dout.shape[1]
    dbeta = dout.sum(dim=(0, 2, 3))
    dgamma = (dout * x_hat).sum(dim=(0, 2, 3))
    scale = (gamma * inv_std / m).reshape(1, -1, 1, 1)
    dx = scale * (m * dout - dbeta.reshape(1, -1, 1, 1) - x_hat * dgamma.reshape(1, -1, 1, 1))
    return dx, dgamma, dbeta


def dropout(x, p, training):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    mask = (torch.rand_like(x) >= p).to(x.dtype)
    return x * mask / (1 - p)
"""


def namespace(*overrides: str) -> dict:
    ns: dict = {}
    for source in (SOLUTIONS, *overrides):
        exec(textwrap.dedent(source), ns)
    return ns


def functions_for(ns: dict, qid: str) -> dict:
    return {name: ns[name] for name in QSET.question(qid).functions}


def test_question_set_shape():
    assert QSET.ids == ["q1", "q2", "q3", "q4"] and QSET.max_score == 4
    assert [q.functions for q in QSET.questions] == [
        ("he_init_",),
        ("batchnorm_forward",),
        ("batchnorm_backward",),
        ("dropout",),
    ]
    cases = {q.id: q.cases(0) for q in QSET.questions}
    assert any(c.harness is not None and "Parameter" in c.harness.source for c in cases["q1"])
    assert {c.args["training"] for c in cases["q2"]} == {True, False}
    assert any(c.args["x"].shape[0] == 1 for c in cases["q2"]) and any(
        c.args["x"].dtype == torch.float64 for c in cases["q2"]
    )
    assert any(c.args["x"].mean() > 50 for c in cases["q2"])  # the large-mean case
    assert all(isinstance(c.args["cache"], tuple) and len(c.args["cache"]) == 3 for c in cases["q3"])
    assert {c.args.get("p") for c in cases["q4"]} >= {0.0, 1.0, 0.5}
    # fresh inputs: two seeds differ, one seed twice is the same
    q2 = QSET.question("q2")
    assert not torch.equal(q2.cases(1)[0].args["x"], q2.cases(2)[0].args["x"])
    assert torch.equal(q2.cases(1)[0].args["x"], q2.cases(1)[0].args["x"])


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_solutions_pass_every_case(seed):
    ns = namespace()
    for q in QSET.questions:
        result = evaluate(q, functions_for(ns, q.id), seed=seed)
        assert result.passed, result.line()


def test_the_library_versions_pass_too():
    from utils.scratch import init, norm

    functions = {
        "he_init_": init.he_init_,
        "batchnorm_forward": norm.batchnorm_forward,
        "batchnorm_backward": norm.batchnorm_backward,
        "dropout": norm.dropout,
    }
    for q in QSET.questions:
        # the watch off: the course's versions, which learners may not call, must still be right by the checks
        q = dataclasses.replace(q, forbid=())
        result = evaluate(q, {name: functions[name] for name in q.functions}, seed=7)
        assert result.passed, result.line()


BROKEN = {
    "xavier instead of he": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    k = math.prod(weight.shape[2:])
    with torch.no_grad():
        return weight.normal_(0, math.sqrt(2.0 / (weight.shape[0] * k + weight.shape[1] * k)))
""",
        ["values off", "0.005 * |expected|", "sqrt(2 / fan)"],
    ),
    "fans swapped": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    k = math.prod(weight.shape[2:])
    fan = weight.shape[0] * k if fan_mode == "fan_in" else weight.shape[1] * k
    with torch.no_grad():
        return weight.normal_(0, math.sqrt(2.0 / fan))
""",
        ["values off", "fan_in = weight.shape[1] * k"],
    ),
    "kernel size forgotten": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    fan = weight.shape[1] if fan_mode == "fan_in" else weight.shape[0]
    with torch.no_grad():
        return weight.normal_(0, math.sqrt(2.0 / fan))
""",
        ["case 'std over", "Conv2d weight", "values off"],
    ),
    "uniform with the right variance": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    k = math.prod(weight.shape[2:])
    fan = weight.shape[1] * k if fan_mode == "fan_in" else weight.shape[0] * k
    bound = math.sqrt(6.0 / fan)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)
""",
        ["kurtosis", "normal"],
    ),
    "new tensor instead of in place": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    k = math.prod(weight.shape[2:])
    fan = weight.shape[1] * k if fan_mode == "fan_in" else weight.shape[0] * k
    return torch.randn(weight.shape) * math.sqrt(2.0 / fan)
""",
        ["NaN", "in place"],
    ),
    "no torch.no_grad": (
        "q1",
        """
def he_init_(weight, fan_mode="fan_in"):
    k = math.prod(weight.shape[2:])
    fan = weight.shape[1] * k if fan_mode == "fan_in" else weight.shape[0] * k
    return weight.normal_(0, math.sqrt(2.0 / fan))
""",
        ["nn.Parameter", "raised RuntimeError", "torch.no_grad()"],
    ),
    "naive variance": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    if not training:
        return _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)
    m = x.numel() // x.shape[1]
    mean = x.mean(dim=(0, 2, 3))
    var = (x * x).mean(dim=(0, 2, 3)) - mean * mean
    inv_std = 1.0 / torch.sqrt(var + eps)
    x_hat = (x - mean.reshape(1, -1, 1, 1)) * inv_std.reshape(1, -1, 1, 1)
    out = gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
    rm = (1 - momentum) * running_mean + momentum * mean
    rv = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    return out, rm, rv, (x_hat, gamma, inv_std)
""",
        ["case 'training, inputs with a large mean", "values off", "E[x^2] - E[x]^2"],
    ),
    "biased running variance": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    out, rm, rv, cache = _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)
    if training:
        m = x.numel() // x.shape[1]
        rv = (rv - (1 - momentum) * running_var) * (m - 1) / m + (1 - momentum) * running_var
    return out, rm, rv, cache
""",
        ["running_var: values off", "unbiased"],
    ),
    "momentum the other way round": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    return _ref_forward(x, gamma, beta, running_mean, running_var, 1 - momentum, eps, training)
""",
        ["running_mean: values off", "(1 - momentum) * running_mean + momentum * mean"],
    ),
    "running statistics updated in place": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    out, rm, rv, cache = _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)
    running_mean.copy_(rm)
    running_var.copy_(rv)
    return out, running_mean, running_var, cache
""",
        ["modified its argument `running_mean`", "do not modify the arguments in place"],
    ),
    "batch statistics in evaluation mode": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    out, _, _, cache = _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, True)
    if training:
        return _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, True)
    return out, running_mean.clone(), running_var.clone(), cache
""",
        ["case 'evaluation mode, x (8, 4, 5, 5)'", "out: values off"],
    ),
    "cache in another order": (
        "q2",
        """
_ref_forward = batchnorm_forward
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training):
    out, rm, rv, (x_hat, gamma_, inv_std) = _ref_forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)
    return out, rm, rv, (x_hat, inv_std, gamma_)
""",
        ["cache (x_hat, gamma, inv_std)", "cache = (x_hat, gamma, inv_std)"],
    ),
    "backward ignores the batch statistics": (
        "q3",
        """
def batchnorm_backward(dout, cache):
    x_hat, gamma, inv_std = cache
    dx = (gamma * inv_std).reshape(1, -1, 1, 1) * dout
    return dx, (dout * x_hat).sum(dim=(0, 2, 3)), dout.sum(dim=(0, 2, 3))
""",
        ["dx: values off", "not just gamma * inv_std * dout"],
    ),
    "backward keeps the dims": (
        "q3",
        """
_ref_backward = batchnorm_backward
def batchnorm_backward(dout, cache):
    dx, dgamma, dbeta = _ref_backward(dout, cache)
    return dx, dgamma.reshape(1, -1, 1, 1), dbeta
""",
        ["dgamma: wrong shape"],
    ),
    "dropout without scaling": (
        "q4",
        """
def dropout(x, p, training):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p)
""",
        ["values off", "1 / (1 - p)"],
    ),
    "one mask per row": (
        "q4",
        """
def dropout(x, p, training):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    mask = (torch.rand(x.shape[-1]) >= p).to(x.dtype)
    return x * mask / (1 - p)
""",
        ["independent values", "not one per row or per column"],
    ),
    "seeded inside": (
        "q4",
        """
def dropout(x, p, training):
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(x.shape, generator=g, dtype=x.dtype) >= p).to(x.dtype)
    return x * mask / (1 - p)
""",
        ["a fresh mask at every call", "expected False, got True"],
    ),
    "division by zero at p = 1": (
        "q4",
        """
def dropout(x, p, training):
    if not training:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)
""",
        ["p = 1 in training mode", "NaN", "0 / 0"],
    ),
    "dropout also in evaluation": (
        "q4",
        """
def dropout(x, p, training):
    if p == 1:
        return torch.zeros_like(x)
    return x * (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)
""",
        ["evaluation mode (training=False) returns x", "identity"],
    ),
    "dropout in place": (
        "q4",
        """
def dropout(x, p, training):
    if not training or p == 0:
        return x
    if p == 1:
        return x.zero_()
    return x.mul_((torch.rand_like(x) >= p).to(x.dtype) / (1 - p))
""",
        ["modified its argument `x`"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    q = QSET.question(qid)
    result = evaluate(q, functions_for(namespace(source), qid), seed=0)
    assert not result.passed and result.score == 0, label
    feedback = result.feedback()
    for fragment in fragments:
        assert fragment in feedback, feedback


def test_naive_variance_fails_for_stability_not_logic():
    qid, source, _ = BROKEN["naive variance"]
    result = evaluate(QSET.question(qid), functions_for(namespace(source), qid), seed=3)
    verdicts = {c.name: c.passed for c in result.cases}
    assert verdicts["training, x (8, 4, 5, 5)"] and verdicts["evaluation mode, x (8, 4, 5, 5)"]
    assert not verdicts["training, inputs with a large mean (64 + randn)"]
