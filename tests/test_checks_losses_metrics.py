"""The chapter 03 question set (03_losses_metrics), questions 1-4: the reference solutions of the
solution notebook pass every case for several seeds, other correct ways of writing them pass too,
typical wrong answers (the unstable formula, the weight on the wrong term, the weighted mean of
F.cross_entropy, precision averaged over the positives found, a grid of temperatures, ...) and the
forbidden shortcuts fail with a message that says what is wrong. The make-it-work question and the
review block: tests/test_grading_ch03.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from conftest import functions_for, solution_namespace
from utils.grading import Question, evaluate, get_assignment
from utils.grading.checks.losses_metrics import optimal_temperature_reference, softmax_focal_reference

ASSIGNMENT = "03_losses_metrics"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]


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
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 9
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    # q1: large logits of both signs, pos_weight per class and below 1, soft targets, finite 0-dim references
    big = [c for c in cases["q1"] if c.args["logits"].abs().max() > 100]
    assert len(big) >= 3 and any((c.args["logits"] < -100).any() for c in big)
    assert any(len(c.args["pos_weight"]) > 1 for c in cases["q1"])
    assert any((c.args["pos_weight"] < 1).all() for c in cases["q1"])
    assert any(((c.args["targets"] > 0) & (c.args["targets"] < 1)).any() for c in cases["q1"])
    assert all(c.expected.dim() == 0 and torch.isfinite(c.expected) for c in cases["q1"])
    # q2: gamma 0 and fractional, weights and None, N = 1, logits in the thousands
    assert {0.0, 0.5} <= {c.args["gamma"] for c in cases["q2"]}
    assert any(c.args["weight"] is None for c in cases["q2"]) and any(
        c.args["weight"] is not None for c in cases["q2"]
    )
    assert any(len(c.args["y"]) == 1 for c in cases["q2"])
    assert any(c.args["logits"].abs().max() > 500 for c in cases["q2"])
    # q3: ties, a single class, every class with a positive, a perfect ranking
    assert any(len(c.args["scores"].unique()) < c.args["scores"].numel() / 2 for c in cases["q3"])
    assert any(c.args["scores"].shape[1] == 1 for c in cases["q3"]) and any(
        c.expected == 1.0 for c in cases["q3"]
    )
    assert all((c.args["targets"].sum(dim=0) >= 1).all() for c in cases["q3"])
    # q4: temperatures far from 1 on both sides, float32 and float64, a relative tolerance
    temperatures = [c.expected for c in cases["q4"]]
    assert min(temperatures) < 0.6 and max(temperatures) > 20
    assert {c.args["logits"].dtype for c in cases["q4"]} == {torch.float32, torch.float64}
    assert all(c.rtol == 1e-4 and c.atol == 0 for c in cases["q4"])
    q1 = QSET.question("q1")
    assert not torch.equal(q1.cases(1)[0].args["logits"], q1.cases(2)[0].args["logits"])
    assert torch.equal(q1.cases(1)[0].args["logits"], q1.cases(1)[0].args["logits"])


def test_the_references_of_the_checker_are_right():
    """The float64 references written in the checker, against an independent computation."""
    g = torch.Generator().manual_seed(0)
    logits, y = (
        torch.randn(30, 5, generator=g, dtype=torch.float64) * 3,
        torch.randint(0, 5, (30,), generator=g),
    )
    assert torch.allclose(softmax_focal_reference(logits, y, 0.0, None), F.cross_entropy(logits, y))
    weight = torch.rand(5, generator=g, dtype=torch.float64)
    p_y = torch.softmax(logits, 1)[torch.arange(30), y]
    direct = (-(weight[y]) * (1 - p_y) ** 2 * torch.log(p_y)).mean()
    assert torch.allclose(softmax_focal_reference(logits, y, 2.0, weight), direct)
    for scale in (0.3, 1.0, 4.0, 50.0):
        z = logits * scale

        def nll(log_t):
            return float(F.cross_entropy(z / math.exp(log_t), y))

        best = math.exp(minimize_scalar(nll, bounds=(-8, 8), method="bounded", options={"xatol": 1e-10}).x)
        assert math.isclose(optimal_temperature_reference(z, y), best, rel_tol=1e-6)
    with pytest.raises(ValueError, match="no finite optimal temperature"):
        optimal_temperature_reference(torch.eye(3) * 5, torch.arange(3))  # perfectly separated


ALTERNATIVES = {  # other correct answers: they must pass too
    "q1 with the two softplus terms kept apart": (
        "q1",
        """
def weighted_bce_with_logits(logits, targets, pos_weight):
    def softplus(x):
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))
    return (pos_weight * targets * softplus(-logits) + (1 - targets) * softplus(logits)).mean()
""",
    ),
    "q2 with torch.log_softmax and 1 - exp": (
        "q2",
        """
def softmax_focal_loss(logits, y, gamma, weight=None):
    log_p_y = torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y]
    w = 1.0 if weight is None else weight[y]
    return (-w * (1 - log_p_y.exp()) ** gamma * log_p_y).mean()
""",
    ),
    "q3 by comparing every pair of scores": (
        "q3",
        """
def mean_average_precision(scores, targets):
    aps = []
    for s, t in zip(scores.T, targets.T.bool()):
        above = s[None, :] >= s[t][:, None]  # (positives, N): samples scored at least as high
        precision = (above & t[None, :]).sum(1) / above.sum(1)
        aps.append(precision.double().mean())
    return float(torch.stack(aps).mean())
""",
    ),
    "q4 with Newton's method on log T": (
        "q4",
        """
def optimal_temperature(logits, y):
    z = logits.double()
    z_y = z[torch.arange(len(y)), y]
    beta = 1.0
    for _ in range(100):
        p = torch.softmax(beta * z, dim=1)
        mean_z = (p * z).sum(1)
        slope = (mean_z - z_y).mean()
        curvature = ((p * z * z).sum(1) - mean_z ** 2).mean()
        beta = max(beta - float(slope / curvature), beta / 10)
    return 1 / beta
""",
    ),
    "q4 with torch.optim.LBFGS on log T, in float32": (
        "q4",
        """
def optimal_temperature(logits, y):
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1, max_iter=200, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")
    def closure():
        optimizer.zero_grad()
        shifted = logits.float() / log_t.exp()
        loss = (torch.logsumexp(shifted, 1) - shifted[torch.arange(len(y)), y]).mean()
        loss.backward()
        return loss
    optimizer.step(closure)
    return float(log_t.detach().exp())
""",
    ),
}


@pytest.mark.parametrize("label", list(ALTERNATIVES))
def test_other_correct_answers_pass(label):
    qid, source = ALTERNATIVES[label]
    for seed in (0, 1, 2):
        result = result_of(qid, source, seed=seed)
        assert result.passed, result.line()


BROKEN = {
    "weighted BCE: sigmoid, then log": (
        "q1",
        """
def weighted_bce_with_logits(logits, targets, pos_weight):
    p = 1 / (1 + torch.exp(-logits))
    return -(pos_weight * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
""",
        ["logits in the hundreds", "where the reference is finite", "softplus"],
    ),
    "weighted BCE: the weight on the negatives' term": (
        "q1",
        """
def weighted_bce_with_logits(logits, targets, pos_weight):
    softplus_neg = (-logits).clamp(min=0) + torch.log1p(torch.exp(-logits.abs()))
    return (pos_weight * (1 - targets) * (logits + softplus_neg) + targets * softplus_neg).mean()
""",
        ["pos_weight (1,)", "values off"],
    ),
    "weighted BCE: the weight ignored": (
        "q1",
        """
def weighted_bce_with_logits(logits, targets, pos_weight):
    return (logits.clamp(min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))).mean()
""",
        ["N=8, 0/1 targets", "values off"],
    ),
    "weighted BCE as a Python float": (
        "q1",
        """
_reference = weighted_bce_with_logits
def weighted_bce_with_logits(logits, targets, pos_weight):
    return _reference(logits, targets, pos_weight).item()
""",
        ["expected a torch.Tensor, got float"],
    ),
    "focal loss: the weighted mean of F.cross_entropy": (
        "q2",
        """
_reference = softmax_focal_loss
def softmax_focal_loss(logits, y, gamma, weight=None):
    loss = _reference(logits, y, gamma, weight)
    return loss if weight is None else loss * len(y) / weight[y].sum()
""",
        ["gamma 2 with class weights", "values off", "not divided by the sum of the weights"],
    ),
    "focal loss: an unstable softmax": (
        "q2",
        """
def softmax_focal_loss(logits, y, gamma, weight=None):
    p = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    p_y = p[torch.arange(len(y)), y]
    w = 1.0 if weight is None else weight[y]
    return (-w * (1 - p_y) ** gamma * torch.log(p_y)).mean()
""",
        ["thousands", "where the reference is finite"],
    ),
    "focal loss: the factor on the true class's probability": (
        "q2",
        """
_reference = softmax_focal_loss
def softmax_focal_loss(logits, y, gamma, weight=None):
    log_p_y = torch.log_softmax(logits, 1)[torch.arange(len(y)), y]
    w = 1.0 if weight is None else weight[y]
    return (-w * log_p_y.exp() ** gamma * log_p_y).mean()
""",
        ["gamma 2, N=20", "values off"],
    ),
    "mAP: precision averaged over the positives found, ties broken by position": (
        "q3",
        """
def mean_average_precision(scores, targets):
    aps = []
    for s, t in zip(scores.T, targets.T.double()):
        t = t[torch.argsort(s, descending=True, stable=True)]
        ranks = torch.arange(1, len(t) + 1)
        aps.append(((t.cumsum(0) / ranks) * t).sum() / t.sum())
    return float(torch.stack(aps).mean())
""",
        ["tied scores", "values off", "*distinct* score"],
    ),
    "mAP: the micro average": (
        "q3",
        """
_reference = mean_average_precision
def mean_average_precision(scores, targets):
    return _reference(scores.reshape(-1, 1), targets.reshape(-1, 1))
""",
        ["N=50, C=4", "values off"],
    ),
    "temperature: the chapter's grid": (
        "q4",
        """
def optimal_temperature(logits, y):
    grid = torch.linspace(0.1, 100.0, 9991)
    nll = torch.stack([torch.nn.functional.cross_entropy(logits / t, y) for t in grid])
    return float(grid[nll.argmin()])
""",
        ["values off", "a grid of temperatures is not precise enough"],
    ),
    "temperature: the accuracy-maximising one": (
        "q4",
        """
def optimal_temperature(logits, y):
    return 1.0
""",
        ["overconfident", "values off"],
    ),
    "not implemented": (
        "q4",
        """
def optimal_temperature(logits, y):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = result_of(qid, source, seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


def test_unstable_answers_fail_only_on_large_logits():
    """The unstable formula is right for small logits: only the large-logit cases catch it."""
    result = result_of("q1", BROKEN["weighted BCE: sigmoid, then log"][1])
    failed = [c.name for c in result.cases if not c.passed]
    assert failed and all("hundreds" in n or "thousands" in n or "-200" in n for n in failed), failed


SHORTCUTS = {  # the right values, computed the forbidden way
    "q1": (
        """
import torch.nn.functional as F
def weighted_bce_with_logits(logits, targets, pos_weight):
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
""",
        "binary_cross_entropy_with_logits",
    ),
    "q1 through F.logsigmoid": (
        """
import torch.nn.functional as F
def weighted_bce_with_logits(logits, targets, pos_weight):
    return -(pos_weight * targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()
""",
        "logsigmoid",
    ),
    "q2": (
        """
from utils.scratch.losses import softmax_focal_loss
""",
        "utils.scratch",
    ),
    "q3": (
        """
from sklearn.metrics import average_precision_score
def mean_average_precision(scores, targets):
    return float(average_precision_score(targets.numpy(), scores.numpy(), average="macro"))
""",
        "sklearn",
    ),
    "q4": (
        """
def optimal_temperature(logits, y):
    from scipy.optimize import minimize_scalar
    import torch.nn.functional as F
    return minimize_scalar(lambda t: float(F.cross_entropy(logits / t, y)), bounds=(0.01, 100),
                           method="bounded").x
""",
        "scipy",
    ),
}


@pytest.mark.parametrize("label", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_with_the_call_named(label):
    source, name = SHORTCUTS[label]
    result = result_of(label.split()[0], source)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert name in result.feedback() and "which this question forbids" in result.feedback()
