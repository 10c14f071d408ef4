"""The 08_training_cnns questions: reference solutions pass every case, plausible wrong answers fail
with a message that says what is wrong, and the packaged versions in utils pass too."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import solution_namespace
from utils.grading import evaluate, get_assignment

QSET = get_assignment("08_training_cnns")


def namespace(*overrides: str) -> dict:
    """The reference solutions of solutions/08_training_cnns.ipynb, then the ``overrides``."""
    return solution_namespace("08_training_cnns", *overrides)


def functions(ns: dict, qid: str) -> dict:
    return {name: ns[name] for name in QSET.question(qid).functions}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_reference_solutions_pass(seed):
    ns = namespace()
    for q in QSET.questions:
        result = evaluate(q, functions(ns, q.id), seed=seed)
        assert result.passed, result.line()
        assert len(result.cases) >= 5


def test_the_utils_versions_pass():
    from utils import debug, interpret

    packaged = {
        "grad_cam": interpret.grad_cam,
        "fgsm": interpret.fgsm,
        "initial_loss_check": lambda m, loader, c: tuple(debug.initial_loss_check(m, loader, c)),
    }
    for q in QSET.questions:
        # the watch off: the course's versions, which learners may not call, must still be right by the checks
        result = evaluate(dataclasses.replace(q, forbid=()), {n: packaged[n] for n in q.functions}, seed=3)
        assert result.passed, result.line()


def test_cases_cover_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3"] and QSET.max_score == 3
    cam_cases = QSET.question("q1").cases(0)
    assert any((c.expected == 0).all() for c in cam_cases)  # an all-zero map
    assert any(c.args["x"].shape[-1] != c.args["x"].shape[-2] for c in cam_cases)  # non-square
    assert {type(c.args["class_idx"]) for c in cam_cases} == {int, torch.Tensor}
    fgsm_cases = QSET.question("q2").cases(0)
    assert any(c.args["eps"] == 0 for c in fgsm_cases)
    assert all(c.expected.min() >= 0 and c.expected.max() <= 1 for c in fgsm_cases)
    loss_cases = QSET.question("q3").cases(0)
    assert {c.expected[1] for c in loss_cases} == {True, False}
    assert any(len(c.args["y"]) % c.args["batch_size"] for c in loss_cases)  # a smaller last batch
    assert any(c.expected[0] < 0.5 * torch.log(torch.tensor(10.0)) for c in loss_cases)  # far below ln C
    assert {c.args["train"] for c in loss_cases} == {True, False}  # handed over in train and in eval mode
    band = [c for c in loss_cases if c.args["num_classes"] == 100 and c.expected[1]]
    # within 10% of ln C (relative) yet more than 0.1 away (absolute)
    assert any(0.1 < abs(c.expected[0] - math.log(100)) < 0.1 * math.log(100) for c in band)
    assert any(c.expected.amin() > 0.05 for c in cam_cases)  # a map whose minimum is above zero
    # fresh inputs per seed, the same for the same seed
    a, b = QSET.question("q2").cases(1)[0].args["x"], QSET.question("q2").cases(2)[0].args["x"]
    assert not torch.equal(a, b) and torch.equal(a, QSET.question("q2").cases(1)[0].args["x"])


BROKEN = {
    "grad-cam without relu": (
        "q1",
        """
_ref = grad_cam
def grad_cam(model, target_layer, x, class_idx):
    kept = []
    h = target_layer.register_forward_hook(lambda m, i, o: kept.append(o))
    logits = model(x)
    h.remove()
    idx = torch.as_tensor(class_idx).expand(len(x))
    (dA,) = torch.autograd.grad(logits[torch.arange(len(x)), idx].sum(), kept[0])
    cam = (dA.mean(dim=(2, 3), keepdim=True) * kept[0]).sum(dim=1, keepdim=True)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()
    return cam / cam.abs().amax(dim=(1, 2), keepdim=True)
""",
        ["values off", "relu"],
    ),
    "grad-cam not upsampled": (
        "q1",
        """
_ref = grad_cam
def grad_cam(model, target_layer, x, class_idx):
    full = _ref(model, target_layer, x, class_idx)
    return full[:, ::2, ::2]
""",
        ["wrong shape", "F.interpolate"],
    ),
    "grad-cam divides by zero": (
        "q1",
        """
_ref = grad_cam
def grad_cam(model, target_layer, x, class_idx):
    kept = []
    h = target_layer.register_forward_hook(lambda m, i, o: kept.append(o))
    logits = model(x)
    h.remove()
    idx = torch.as_tensor(class_idx).expand(len(x))
    (dA,) = torch.autograd.grad(logits[torch.arange(len(x)), idx].sum(), kept[0])
    cam = F.relu((dA.mean(dim=(2, 3), keepdim=True) * kept[0]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()
    return cam / cam.amax(dim=(1, 2), keepdim=True)
""",
        ["NaN", "all-zero maps"],
    ),
    "grad-cam keeps the channel dim": (
        "q1",
        """
_ref = grad_cam
def grad_cam(model, target_layer, x, class_idx):
    return _ref(model, target_layer, x, class_idx)[:, None]
""",
        ["wrong shape: expected (3, 16, 16), got (3, 1, 16, 16)"],
    ),
    "fgsm without clamp": (
        "q2",
        """
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return x.detach() + eps * grad.sign()
""",
        ["values off", ".clamp(0, 1)"],
    ),
    "fgsm with the raw gradient": (
        "q2",
        """
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x.detach() + eps * grad).clamp(0, 1)
""",
        ["values off", "grad.sign()"],
    ),
    "fgsm descends": (
        "q2",
        """
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x.detach() - eps * grad.sign()).clamp(0, 1)
""",
        ["values off"],
    ),
    "fgsm in place": (
        "q2",
        """
def fgsm(model, x, y, eps):
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return x.add_(eps * grad.sign()).clamp_(0, 1)
""",
        ["modified its argument `x`"],
    ),
    "initial loss in train mode": (
        "q3",
        """
def initial_loss_check(model, loader, num_classes):
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += len(y)
    loss = total / count
    return loss, abs(loss - math.log(num_classes)) <= 0.1 * math.log(num_classes)
""",
        ["loss: values off", "model.eval()"],
    ),
    "initial loss: mean of batch means": (
        "q3",
        """
def initial_loss_check(model, loader, num_classes):
    was = model.training
    model.eval()
    with torch.no_grad():
        means = [F.cross_entropy(model(x), y).item() for x, y in loader]
    model.train(was)
    loss = sum(means) / len(means)
    return loss, abs(loss - math.log(num_classes)) <= 0.1 * math.log(num_classes)
""",
        ["loss: values off", "mean of batch means"],
    ),
    "initial loss: mode not restored": (
        "q3",
        """
_ref = initial_loss_check
def initial_loss_check(model, loader, num_classes):
    result = _ref(model, loader, num_classes)
    model.eval()
    return result
""",
        ["model in its original mode: expected True, got False"],
    ),
    "initial loss: always back to train mode": (
        "q3",
        """
_ref = initial_loss_check
def initial_loss_check(model, loader, num_classes):
    result = _ref(model, loader, num_classes)
    model.train()
    return result
""",
        ["case 'a model handed over in eval mode", "model in its original mode: expected False, got True"],
    ),
    "initial loss: an absolute tolerance of 0.1": (
        "q3",
        """
_ref = initial_loss_check
def initial_loss_check(model, loader, num_classes):
    loss, _ = _ref(model, loader, num_classes)
    return loss, abs(loss - math.log(num_classes)) <= 0.1
""",
        ["within 10% of ln C (relative)", "ok: expected True, got False"],
    ),
    "grad-cam with min-max scaling": (
        "q1",
        """
_ref = grad_cam
def grad_cam(model, target_layer, x, class_idx):
    cam = _ref(model, target_layer, x, class_idx)
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(high > low, (cam - low) / (high - low).clamp_min(1e-12), cam)
""",
        ["only positive evidence everywhere", "values off", "not min-max"],
    ),
    "grad-cam attached to the graph": (
        "q1",
        """
def grad_cam(model, target_layer, x, class_idx):
    kept = []
    handle = target_layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
    logits = model(x)
    handle.remove()
    A = kept[0]
    idx = torch.as_tensor(class_idx).expand(len(x))
    (dA,) = torch.autograd.grad(logits[torch.arange(len(x)), idx].sum(), A, create_graph=True)
    cam = F.relu((dA.mean(dim=(2, 3), keepdim=True) * A).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
""",
        ["the returned tensor still requires grad"],
    ),
    "initial loss: one-sided tolerance": (
        "q3",
        """
_ref = initial_loss_check
def initial_loss_check(model, loader, num_classes):
    loss, _ = _ref(model, loader, num_classes)
    return loss, loss <= 1.1 * math.log(num_classes)
""",
        ["case 'a loss far below ln C", "ok: expected False, got True"],
    ),
    "not implemented": (
        "q3",
        """
def initial_loss_check(model, loader, num_classes):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/7 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_a_helpful_message(label):
    qid, source, fragments = BROKEN[label]
    q = QSET.question(qid)
    for seed in (0, 1):
        result = evaluate(q, functions(namespace(source), qid), seed=seed)
        assert not result.passed and result.score == 0, result.line()
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback
