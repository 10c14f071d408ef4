"""The chapter 03 question set (03_losses_metrics): the reference solutions of the solution notebook
pass every case for several seeds, other correct ways of writing them pass too, and plausible wrong
answers (the unstable formula, the other smoothing convention, a transposed confusion matrix, an
average over the present classes only, ...) fail with a message that says what is wrong."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
import torch

from conftest import ROOT
from utils.grading import evaluate, get_assignment
from utils.grading.core import Question

QSET = get_assignment("03_losses_metrics")
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]  # q5 and r1-r6: tests/test_grading_ch03.py
SOLUTION = ROOT / "solutions" / "03_losses_metrics.ipynb"


def solution_namespace(*extra: str) -> dict:
    """The function cells of the solution notebook executed in a fresh namespace, then ``extra`` sources."""
    ns: dict = {"torch": torch}
    nb = nbformat.read(SOLUTION, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith("def "):
            exec(cell.source, ns)
    for source in extra:
        exec(textwrap.dedent(source), ns)
    return ns


def functions_for(ns: dict, q: Question) -> dict:
    return {name: ns[name] for name in q.functions}


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace()
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 7


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 9
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    # q1: large logits of both signs, several shapes, soft targets, float64; references finite 0-dim
    big = [c for c in cases["q1"] if c.args["logits"].abs().max() > 100]
    assert len(big) >= 3 and any((c.args["logits"] < -100).any() for c in big)
    assert {c.args["logits"].dim() for c in cases["q1"]} == {1, 2}
    assert any(((c.args["targets"] > 0) & (c.args["targets"] < 1)).any() for c in cases["q1"])
    assert all(c.expected.dim() == 0 and torch.isfinite(c.expected) for c in cases["q1"])
    # q2: smoothing 0 and 1, C = 2, N = 1, logits in the thousands
    smoothings = {c.args["smoothing"] for c in cases["q2"]}
    assert {0.0, 1.0} <= smoothings and len(smoothings) >= 5
    assert any(c.args["logits"].shape[1] == 2 for c in cases["q2"]) and any(
        c.args["logits"].shape[0] == 1 for c in cases["q2"]
    )
    assert sum(c.args["logits"].abs().max() > 500 for c in cases["q2"]) >= 3
    # q3: alpha < 0, gamma 0 and fractional, large logits
    assert any(c.args["alpha"] < 0 for c in cases["q3"]) and {0.0, 0.5} <= {
        c.args["gamma"] for c in cases["q3"]
    }
    assert any(c.args["logits"].abs().max() > 100 for c in cases["q3"])
    # q4: classes never predicted, never true, absent from both; exact int64 matrices
    absent = [
        c
        for c in cases["q4"]
        if c.function == "confusion_matrix"
        and not set(range(c.args["num_classes"])) <= set(c.args["pred"].tolist()) | set(c.args["y"].tolist())
    ]
    assert absent and all(
        c.expected.dtype == torch.int64 and c.atol == c.rtol == 0
        for c in cases["q4"]
        if c.function == "confusion_matrix"
    )
    assert any(c.expected == 0.0 for c in cases["q4"] if c.function == "macro_f1")
    assert any(c.expected == 1.0 for c in cases["q4"] if c.function == "macro_f1")
    assert all(set(c.unchanged) == {"pred", "y"} for c in cases["q4"])
    # fresh inputs: two seeds differ, one seed twice is the same
    q1 = QSET.question("q1")
    assert not torch.equal(q1.cases(1)[0].args["logits"], q1.cases(2)[0].args["logits"])
    assert torch.equal(q1.cases(1)[0].args["logits"], q1.cases(1)[0].args["logits"])


ALTERNATIVES = {  # other correct answers: they must pass too
    "q1 with logsigmoid": (
        "q1",
        """
import torch.nn.functional as F
def bce_with_logits(logits, targets):
    return -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()
""",
    ),
    "q2 with logsumexp and a full target matrix": (
        "q2",
        """
def cross_entropy_label_smoothing(logits, y, smoothing):
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    q = torch.full_like(log_p, smoothing / logits.shape[1])
    q[torch.arange(len(y)), y] += 1 - smoothing
    return -(q * log_p).sum(dim=1).mean()
""",
    ),
    "q3 with p_t = exp(-ce)": (
        "q3",
        """
import torch.nn.functional as F
def focal_loss(logits, targets, alpha, gamma):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = ce * (1 - torch.exp(-ce)) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()
""",
    ),
    "q4 with loops and precision/recall": (
        "q4",
        """
def confusion_matrix(pred, y, num_classes):
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for p, t in zip(pred.tolist(), y.tolist()):
        cm[t, p] += 1
    return cm

def macro_f1(pred, y, num_classes):
    cm = confusion_matrix(pred, y, num_classes).float()
    tp = cm.diagonal()
    precision, recall = tp / cm.sum(dim=0), tp / cm.sum(dim=1)
    return (2 * precision * recall / (precision + recall)).nan_to_num(0.0).mean()
""",
    ),
}


@pytest.mark.parametrize("label", list(ALTERNATIVES))
def test_other_correct_answers_pass(label):
    qid, source = ALTERNATIVES[label]
    q = QSET.question(qid)
    for seed in (0, 1, 2):
        result = evaluate(q, functions_for(solution_namespace(source), q), seed=seed)
        assert result.passed, result.line()


BROKEN = {
    "naive BCE (sigmoid, then log)": (
        "q1",
        """
def bce_with_logits(logits, targets):
    p = torch.sigmoid(logits)
    return -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
""",
        ["logits in the hundreds", "NaN", "stable form"],
    ),
    "BCE on probabilities with PyTorch's clamp": (
        "q1",
        """
import torch.nn.functional as F
def bce_with_logits(logits, targets):
    return F.binary_cross_entropy(torch.sigmoid(logits), targets)
""",
        ["logits in the hundreds", "values off"],
    ),
    "BCE summed instead of averaged": (
        "q1",
        """
def bce_with_logits(logits, targets):
    return (logits.clamp(min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))).sum()
""",
        ["values off", "averaged over all entries"],
    ),
    "BCE as a Python float": (
        "q1",
        """
def bce_with_logits(logits, targets):
    return (logits.clamp(min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))).mean().item()
""",
        ["expected a torch.Tensor, got float"],
    ),
    "smoothing spread over the wrong classes only": (
        "q2",
        """
def cross_entropy_label_smoothing(logits, y, smoothing):
    log_p = torch.log_softmax(logits, dim=1)
    q = torch.full_like(log_p, smoothing / (logits.shape[1] - 1))
    q[torch.arange(len(y)), y] = 1 - smoothing
    return -(q * log_p).sum(dim=1).mean()
""",
        ["values off", "including the true one"],
    ),
    "unstable softmax": (
        "q2",
        """
def cross_entropy_label_smoothing(logits, y, smoothing):
    p = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    q = torch.full_like(p, smoothing / logits.shape[1])
    q[torch.arange(len(y)), y] += 1 - smoothing
    return -(q * p.log()).sum(dim=1).mean()
""",
        ["thousands", "NaN", "stably"],
    ),
    "focal loss with log(sigmoid)": (
        "q3",
        """
def focal_loss(logits, targets, alpha, gamma):
    p = torch.sigmoid(logits)
    ce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean()
""",
        ["logits in the hundreds", "NaN"],
    ),
    "focal loss that always weights by alpha": (
        "q3",
        """
import torch.nn.functional as F
def focal_loss(logits, targets, alpha, gamma):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    return ((alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** gamma).mean()
""",
        ["alpha -1 (no weighting)", "values off", "only when alpha >= 0"],
    ),
    "focal loss with alpha on the wrong class": (
        "q3",
        """
import torch.nn.functional as F
def focal_loss(logits, targets, alpha, gamma):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = ((1 - alpha) * targets + alpha * (1 - targets)) * loss
    return loss.mean()
""",
        ["alpha 0.25, gamma 2", "values off"],
    ),
    "transposed confusion matrix": (
        "q4",
        """
def confusion_matrix(pred, y, num_classes):
    return torch.bincount(pred * num_classes + y, minlength=num_classes ** 2).reshape(num_classes, num_classes)
""",
        ["confusion matrix, N=50", "exact match required", "rows: true, columns: predicted"],
    ),
    "confusion matrix sized by the labels seen": (
        "q4",
        """
def confusion_matrix(pred, y, num_classes):
    c = int(max(pred.max(), y.max())) + 1
    return torch.bincount(y * c + pred, minlength=c * c).reshape(c, c)
""",
        ["wrong shape: expected (6, 6), got (3, 3)"],
    ),
    "confusion matrix as float": (
        "q4",
        """
def confusion_matrix(pred, y, num_classes):
    cm = torch.zeros(num_classes, num_classes)
    cm.index_put_((y, pred), torch.ones(len(y)), accumulate=True)
    return cm
""",
        ["wrong dtype: expected torch.int64, got torch.float32"],
    ),
    "macro-F1 over the classes that occur": (
        "q4",
        """
def macro_f1(pred, y, num_classes):
    cm = confusion_matrix(pred, y, num_classes).double()
    tp = cm.diagonal()
    denominator = tp + cm.sum(dim=0) + cm.sum(dim=1) - tp
    present = denominator > 0
    return (2 * tp[present] / denominator[present]).mean().item()
""",
        ["macro-F1, num_classes=6 but only classes 0-2 occur", "values off", "including the absent ones"],
    ),
    "macro-F1 with NaN for absent classes": (
        "q4",
        """
def macro_f1(pred, y, num_classes):
    cm = confusion_matrix(pred, y, num_classes).double()
    tp = cm.diagonal()
    precision, recall = tp / cm.sum(dim=0), tp / cm.sum(dim=1)
    return (2 * precision * recall / (precision + recall)).mean()
""",
        ["class 3 is never predicted", "got nan, expected the finite value", "0/0"],
    ),
    "micro-F1 (the accuracy) instead of macro": (
        "q4",
        """
def macro_f1(pred, y, num_classes):
    return (pred == y).double().mean().item()
""",
        ["macro-F1, N=50, C=5", "values off"],
    ),
    "not implemented": (
        "q4",
        """
def macro_f1(pred, y, num_classes):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    q = QSET.question(qid)
    for seed in (0, 1):
        result = evaluate(q, functions_for(solution_namespace(source), q), seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


def test_stable_answers_fail_only_on_large_logits():
    """The unstable formulas are right for small logits: only the large-logit cases catch them."""
    source, qid = BROKEN["naive BCE (sigmoid, then log)"][1], "q1"
    q = QSET.question(qid)
    result = evaluate(q, functions_for(solution_namespace(source), q), seed=0)
    failed = [c.name for c in result.cases if not c.passed]
    assert failed and all("hundreds" in n or "thousands" in n or "-200" in n for n in failed), failed
