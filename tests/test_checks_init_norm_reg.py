"""The chapter 05 question set (05_init_norm_reg): the reference solutions of the solution notebook pass
every case (the statistical ones over several seeds), other correct ways of writing them pass too,
typical wrong answers (a normal instead of a uniform distribution, the leaky slope ignored, the affine
map per group, batch norm's backward formula reused with per-group sums, the bias forgotten in the
fold) and the forbidden shortcuts score zero with a message that says what is wrong; the review
answers are right and the usual mistakes are not; the make-it-work question scores on data the
exercise never loads and gives full, partial and zero points."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, functions_for, solution_namespace
from utils.grading import MakeItWork, Question, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks.init_norm_reg import held_out_silhouettes, kaiming_bound, silhouettes

ASSIGNMENT = "05_init_norm_reg"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def result_of(qid: str, *sources: str, seed: int = 0):
    q = QSET.question(qid)
    return evaluate(q, functions_for(solution_namespace(ASSIGNMENT, *sources), q), seed=seed)


def test_question_set_shape_and_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 10
    # what the lesson did not print (q1 uniform for leaky ReLU, q2/q3 group norm with its affine map
    # forward and backward, q4 the fold) carries at least half of the points
    assert sum(q.points for q in IMPLEMENT) == 5 and QSET.question("q3").points == 2
    cases = {q.id: q.cases(0) for q in IMPLEMENT}
    assert {c.args["a"] for c in cases["q1"]} >= {0.0, 0.2, math.sqrt(5)}
    assert {c.args["mode"] for c in cases["q1"]} == {"fan_in", "fan_out"}
    assert any("Parameter" in c.harness.source for c in cases["q1"])
    groups = {(c.args["groups"], c.args["x"].shape[1]) for c in cases["q2"]}
    assert any(g == 1 for g, _ in groups) and any(g == ch for g, ch in groups)  # layer and instance norm
    assert any(c.args["x"].shape[0] == 1 for c in cases["q2"])
    assert any(c.args["x"].mean() > 50 for c in cases["q2"])  # the large mean
    assert {c.args["x"].dtype for c in cases["q3"]} == {torch.float32, torch.float64}
    assert all((c.args["gamma"].std() > 0.1) for c in cases["q3"])  # gamma differs inside every group
    assert any(c.args["b"] is None for c in cases["q4"]) and any(c.args["w"].dim() == 2 for c in cases["q4"])
    q2 = QSET.question("q2")
    assert not torch.equal(q2.cases(1)[0].args["x"], q2.cases(2)[0].args["x"])
    assert torch.equal(q2.cases(1)[0].args["x"], q2.cases(1)[0].args["x"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace(ASSIGNMENT)
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed and result.score == q.points, result.line()
        assert result.cases_passed == len(result.cases) >= 5


def test_the_references_of_the_checker_are_right():
    """The bound of q1 is torch's; q4's expected values fold batch norm exactly (against F.batch_norm)."""
    for shape, a, mode in [((64, 256), 0.0, "fan_in"), ((16, 32, 5, 5), 0.2, "fan_out")]:
        w = torch.empty(shape)
        torch.nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity="leaky_relu")
        assert w.abs().max() <= kaiming_bound(shape, a, mode) < w.abs().max() * 1.01
    for case in QSET.question("q4").cases(0):
        args = case.args
        if args["w"].dim() != 4:
            continue
        c_out, c_in = args["w"].shape[:2]
        groups = c_out if c_in == 1 else 1  # the depthwise case: one group per channel
        x = torch.randn(2, c_in * groups, 7, 7, dtype=args["w"].dtype)
        z = F.conv2d(x, args["w"], args["b"], groups=groups)
        stats = args["running_mean"], args["running_var"], args["gamma"], args["beta"]
        bn = F.batch_norm(z, *stats, eps=args["eps"])
        w, b = case.expected
        assert torch.allclose(F.conv2d(x, w, b, groups=groups), bn, atol=1e-4)


ALTERNATIVES = {  # other correct answers: they must pass too
    "q1 through the bound of a unit-variance uniform times the He std": (
        "q1",
        """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    dims = weight.shape
    fan = (dims[1] if mode == "fan_in" else dims[0]) * weight[0][0].numel()
    std = math.sqrt(2.0 / (1 + a ** 2) / fan)
    with torch.no_grad():
        weight.copy_((torch.rand(dims) * 2 - 1) * math.sqrt(3.0) * std)
    return weight
""",
    ),
    "q2 with var(unbiased=False) and rsqrt": (
        "q2",
        """
def groupnorm_forward(x, gamma, beta, groups, eps):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    x_hat = ((g - g.mean(-1, keepdim=True)) * torch.rsqrt(g.var(-1, unbiased=False, keepdim=True) + eps))
    return x_hat.reshape(x.shape) * gamma[:, None, None] + beta[:, None, None]
""",
    ),
    "q3 through the mean and variance gradients, step by step": (
        "q3",
        """
def groupnorm_backward(dout, x, gamma, groups, eps):
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, -1)
    m = xg.shape[2]
    mu = xg.mean(-1, keepdim=True)
    var = ((xg - mu) ** 2).mean(-1, keepdim=True)
    x_hat = (xg - mu) / torch.sqrt(var + eps)
    dgamma = (dout * x_hat.reshape(x.shape)).sum((0, 2, 3))
    dbeta = dout.sum((0, 2, 3))
    dxhat = (dout * gamma[:, None, None]).reshape(n, groups, m)
    dvar = (dxhat * (xg - mu) * -0.5 * (var + eps) ** -1.5).sum(-1, keepdim=True)
    dmu = (-dxhat / torch.sqrt(var + eps)).sum(-1, keepdim=True)
    dmu = dmu + dvar * (-2 * (xg - mu)).mean(-1, keepdim=True)
    dx = dxhat / torch.sqrt(var + eps) + dvar * 2 * (xg - mu) / m + dmu / m
    return dx.reshape(x.shape), dgamma, dbeta
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
    "Kaiming: the normal distribution (the chapter's He init)": (
        "q1",
        """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    fan = (weight.shape[1] if mode == "fan_in" else weight.shape[0]) * math.prod(weight.shape[2:])
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / ((1 + a * a) * fan)))
    return weight
""",
        ["largest |w|", "not from a normal one"],
    ),
    "Kaiming: the leaky slope ignored": (
        "q1",
        """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    fan = (weight.shape[1] if mode == "fan_in" else weight.shape[0]) * math.prod(weight.shape[2:])
    bound = math.sqrt(6.0 / fan)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
    return weight
""",
        ["a = 0.2", "(1 + a^2) / 2"],
    ),
    "Kaiming: a new tensor returned, the weight left as it was": (
        "q1",
        """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    fan = (weight.shape[1] if mode == "fan_in" else weight.shape[0]) * math.prod(weight.shape[2:])
    bound = math.sqrt(6.0 / ((1 + a * a) * fan))
    return torch.empty_like(weight).uniform_(-bound, bound)
""",
        ["in place"],
    ),
    "group norm: gamma and beta per group": (
        "q2",
        """
def groupnorm_forward(x, gamma, beta, groups, eps):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, -1)
    mean = g.mean(2, keepdim=True)
    x_hat = (g - mean) / torch.sqrt(((g - mean) ** 2).mean(2, keepdim=True) + eps)
    gamma_g, beta_g = gamma[:groups].reshape(1, groups, 1), beta[:groups].reshape(1, groups, 1)
    return (gamma_g * x_hat + beta_g).reshape(x.shape)
""",
        ["values off", "one pair per channel"],
    ),
    "group norm: the variance as E[x^2] - E[x]^2": (
        "q2",
        """
def groupnorm_forward(x, gamma, beta, groups, eps):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, -1)
    mean = g.mean(2, keepdim=True)
    var = (g * g).mean(2, keepdim=True) - mean ** 2
    x_hat = ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    return gamma.reshape(1, c, 1, 1) * x_hat + beta.reshape(1, c, 1, 1)
""",
        ["values off", "not E[x^2] - E[x]^2"],
    ),
    "group norm backward: batch norm's formula with per-group sums, gamma taken out of the sums": (
        "q3",
        """
def groupnorm_backward(dout, x, gamma, groups, eps):
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, -1)
    m = xg.shape[2]
    mean = xg.mean(2, keepdim=True)
    inv_std = 1 / torch.sqrt(((xg - mean) ** 2).mean(2, keepdim=True) + eps)
    x_hat = (xg - mean) * inv_std
    dbeta = dout.sum((0, 2, 3))
    dgamma = (dout * x_hat.reshape(x.shape)).sum((0, 2, 3))
    d = dout.reshape(n, groups, m)
    dx = inv_std / m * (m * d - d.sum(2, keepdim=True) - x_hat * (d * x_hat).sum(2, keepdim=True))
    return (dx.reshape(x.shape) * gamma.reshape(1, c, 1, 1)), dgamma, dbeta
""",
        ["values off", "gamma changes from channel to channel"],
    ),
    "fold: the running mean forgotten in the bias": (
        "q4",
        """
def fold_batchnorm(w, b, gamma, beta, running_mean, running_var, eps):
    scale = gamma / torch.sqrt(running_var + eps)
    bias = b if b is not None else torch.zeros_like(running_mean)
    return w * scale.reshape(-1, *[1] * (w.dim() - 1)), bias * scale + beta
""",
        ["values off", "fold the mean"],
    ),
    "not implemented": (
        "q3",
        """
def groupnorm_backward(dout, x, gamma, groups, eps):
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


def test_the_naive_variance_fails_for_stability_not_logic():
    """E[x^2] - E[x]^2 is right in exact arithmetic: it passes in float64 and fails in float32 where the
    mean is large compared with the spread (64 + randn, or two values per group)."""
    result = result_of("q2", BROKEN["group norm: the variance as E[x^2] - E[x]^2"][1])
    failed = [c.name for c in result.cases if not c.passed]
    assert "inputs with a large mean (64 + randn)" in failed and not any("float64" in n for n in failed)
    assert any(c.passed for c in result.cases if "float64" in c.name)


SHORTCUTS = {  # the right values, computed the forbidden way
    "q1": (
        """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    return torch.nn.init.kaiming_uniform_(weight, a=a, mode=mode, nonlinearity="leaky_relu")
""",
        "torch.nn.init",
    ),
    "q2": (
        """
def groupnorm_forward(x, gamma, beta, groups, eps):
    return F.group_norm(x, groups, gamma, beta, eps)
""",
        "group_norm",
    ),
    "q2 through nn.GroupNorm": (
        """
def groupnorm_forward(x, gamma, beta, groups, eps):
    layer = torch.nn.GroupNorm(groups, x.shape[1], eps=eps).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
        return layer(x)
""",
        "GroupNorm",
    ),
    "q3 through autograd": (
        """
def groupnorm_backward(dout, x, gamma, groups, eps):
    x = x.clone().requires_grad_()
    gamma = gamma.clone().requires_grad_()
    beta = torch.zeros_like(gamma, requires_grad=True)
    groupnorm_forward(x, gamma, beta, groups, eps).backward(dout)
    return x.grad, gamma.grad, beta.grad
""",
        "backward",
    ),
    "q4": (
        """
def fold_batchnorm(w, b, gamma, beta, running_mean, running_var, eps):
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    return fuse_conv_bn_weights(w, b, running_mean, running_var, eps, gamma, beta)
""",
        "fusion",
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


def test_the_review_answers_are_what_their_definitions_give():
    conv = torch.nn.Conv2d(64, 128, 3)
    torch.nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    assert math.isclose(REVIEWS["r1"].answer, math.sqrt(2 / (64 * 9)), abs_tol=5e-5)
    assert abs(float(conv.weight.detach().std()) - REVIEWS["r1"].answer) < 0.002
    bn = torch.nn.BatchNorm2d(128)
    assert REVIEWS["r2"].answer == sum(p.numel() for p in bn.parameters())
    bn = torch.nn.BatchNorm2d(1)
    for _ in range(5):
        bn(torch.randn(4, 1, 3, 3) * 0 + 2.0)
    assert math.isclose(REVIEWS["r3"].answer, float(bn.running_mean), abs_tol=1e-4)
    w = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([w], lr=0.1, weight_decay=5e-4)
    for _ in range(10_000):
        w.grad = torch.zeros(1)
        optimizer.step()
    assert math.isclose(REVIEWS["r4"].answer, float(w.detach()), abs_tol=1e-4)
    x = torch.randn(64, 8, 5, 5)
    layers = {"b": torch.nn.LayerNorm([8, 5, 5]), "c": torch.nn.GroupNorm(2, 8)}
    layers["d"] = torch.nn.BatchNorm2d(8).eval()
    layers["a"] = torch.nn.BatchNorm2d(8).train()
    alone = {k for k, layer in layers.items() if torch.allclose(layer(x[:1]), layer(x)[:1], atol=1e-5)}
    assert alone == REVIEWS["r6"].answer


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 0.1768, "r2": 512, "r3": 2.0, "r4": 0.5, "r5": {"b", "d"}, "r6": {"a", "b", "c", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    right, message = REVIEWS["r2"].verdict({"r2": 256.0})
    assert not right and "expected an int" in message


# --------------------------------------------------------------------------- make it work


def test_the_grader_scores_on_data_the_exercise_never_loads():
    x_fit, y_fit, x_val, y_val = silhouettes()
    x_test, y_test = held_out_silhouettes(123)
    assert x_fit.shape == x_val.shape == (500, 1, 28, 28) and x_test.shape == (1998, 1, 28, 28)
    assert torch.bincount(y_test, minlength=10).min() > 100
    other, _ = held_out_silhouettes(124)
    assert not torch.equal(x_test, other)  # the grader's seed draws the transformations
    import utils.data

    train = utils.data.animals("train").images.flatten(1)
    test = utils.data.animals("test").images.flatten(1)
    assert not (torch.cdist(test[:300], train) < 1e-6).any()  # another split: no image in common
    q = QSET.question("q5")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.metric == "accuracy"


def _trained_predict(train_source: str):
    """``predict`` after the notebook's training cell (``train_source``) and its predict cell."""
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    cells = {c.get("id"): c.source for c in nb.cells}
    x_fit, y_fit, x_val, y_val = silhouettes()
    ns: dict = {"torch": torch, "F": F, "math": math, "SEED": 0, "x_fit": x_fit, "y_fit": y_fit}
    for source in (train_source, cells["q5-predict"]):
        exec(source, ns)
    return ns["predict"]


def _points(predict) -> tuple[float, str]:
    q = QSET.question("q5")
    batches, targets, n = q.prepare(0)
    outputs = [predict(b) for b in batches]
    points, text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    return points, text


@pytest.mark.slow
def test_the_steps_give_full_partial_and_zero_points():
    """The notebook's training (augmentation drawn like the grader's transformations) reaches the top
    step, the same training without the random shifts the lower one (0.79 with seed 0), upright images
    alone none (0.67)."""
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    train = next(c.source for c in nb.cells if c.get("id") == "q5-train")
    line = "xb, yb = augment(x_fit[order[i:i + BATCH]], generator), y_fit[order[i:i + BATCH]]"
    shifts = "theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.2"
    assert line in train and shifts in train
    variants = {
        "good": train,
        "no shifts": train.replace(shifts, "theta[:, :, 2] = 0.0 * torch.rand(n, 2, generator=generator)"),
        "upright": train.replace(line, "xb, yb = x_fit[order[i:i + BATCH]], y_fit[order[i:i + BATCH]]"),
    }
    points = {name: _points(_trained_predict(source)) for name, source in variants.items()}
    assert {name: p for name, (p, _) in points.items()} == {"good": 2, "no shifts": 1, "upright": 0}, points
