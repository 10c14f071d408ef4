"""The 08_training_cnns questions: reference solutions pass every case, plausible wrong answers fail
with a message that says what is wrong, and the packaged versions in utils pass too; the loss scaling
of q4 is checked against torch's GradScaler, the broken script of q5 scores zero until every bug is
fixed, q6's steps give full, partial and zero points, and the review answers are right."""

from __future__ import annotations

import dataclasses
import math

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, solution_namespace
from utils.grading import MakeItWork, Question, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks.training_cnns import animal_silhouettes, debug_data, held_out_animals

ASSIGNMENT = "08_training_cnns"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def namespace(*overrides: str) -> dict:
    """The reference solutions of solutions/08_training_cnns.ipynb, then the ``overrides``."""
    return solution_namespace("08_training_cnns", *overrides)


def functions(ns: dict, qid: str) -> dict:
    return {name: ns[name] for name in QSET.question(qid).functions}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_reference_solutions_pass(seed):
    ns = namespace()
    for q in IMPLEMENT:
        result = evaluate(q, functions(ns, q.id), seed=seed)
        assert result.passed, result.line()
        assert len(result.cases) >= (1 if q.id == "q5" else 5)


def test_the_utils_versions_pass():
    from utils import debug, interpret

    packaged = {
        "grad_cam": interpret.grad_cam,
        "fgsm": interpret.fgsm,
        "initial_loss_check": lambda m, loader, c: tuple(debug.initial_loss_check(m, loader, c)),
    }
    for q in IMPLEMENT[:3]:
        # the watch off: the course's versions, which learners may not call, must still be right by the checks
        result = evaluate(dataclasses.replace(q, forbid=()), {n: packaged[n] for n in q.functions}, seed=3)
        assert result.passed, result.line()


def test_cases_cover_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "q6", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 12
    # at least half of the points for what the lesson did not show: q4-q6 and the review questions
    assert sum(q.points for q in QSET.questions if q.id not in ("q1", "q2", "q3")) >= QSET.max_score / 2
    amp_cases = QSET.question("q4").cases(0)
    assert {c.args["dtype"] for c in amp_cases} == {torch.bfloat16, torch.float16}
    skipped = [[step[1] for step in c.expected[0]] for c in amp_cases]
    assert any(any(s) and not all(s) for s in skipped)  # skipped steps, then good ones
    scales = [[step[2] for step in c.expected[0]] for c in amp_cases]
    assert any(s[-1] > c.args["scale"] for s, c in zip(scales, amp_cases))  # the scale grows too
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


# --------------------------------------------------------------------------- q4 mixed precision

AMP_BROKEN = {
    "no autocast": (
        """
def train_step_amp(model, optimizer, x, y, state, dtype):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    (loss * state["scale"]).backward()
    grads = [p.grad for p in model.parameters()]
    for g in grads:
        g.div_(state["scale"])
    finite = all(bool(torch.isfinite(g).all()) for g in grads)
    if finite:
        optimizer.step()
        state["growth_tracker"] += 1
        if state["growth_tracker"] == state["growth_interval"]:
            state["scale"] *= state["growth_factor"]
            state["growth_tracker"] = 0
    else:
        state["scale"] *= state["backoff_factor"]
        state["growth_tracker"] = 0
    return loss.item(), not finite
""",
        "values off",
    ),
    "steps on inf gradients": (
        """
_ref = train_step_amp
def train_step_amp(model, optimizer, x, y, state, dtype):
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    (loss * state["scale"]).backward()
    for p in model.parameters():
        p.grad.div_(state["scale"])
        p.grad.nan_to_num_(0.0, 0.0, 0.0)
    optimizer.step()
    state["growth_tracker"] += 1
    return loss.item(), False
""",
        "values off",
    ),
    "never unscales": (
        """
def train_step_amp(model, optimizer, x, y, state, dtype):
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    (loss * state["scale"]).backward()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    if finite:
        optimizer.step()
        state["growth_tracker"] += 1
        if state["growth_tracker"] == state["growth_interval"]:
            state["scale"] *= state["growth_factor"]
            state["growth_tracker"] = 0
    else:
        state["scale"] *= state["backoff_factor"]
        state["growth_tracker"] = 0
    return loss.item(), not finite
""",
        "values off",
    ),
    "growth tracker not reset after a skip": (
        """
_ref = train_step_amp
def train_step_amp(model, optimizer, x, y, state, dtype):
    tracker = state["growth_tracker"]
    loss, skipped = _ref(model, optimizer, x, y, state, dtype)
    if skipped:
        state["growth_tracker"] = tracker
    return loss, skipped
""",
        "values off",
    ),
}


@pytest.mark.parametrize("label", list(AMP_BROKEN))
def test_wrong_loss_scaling_fails(label):
    source, fragment = AMP_BROKEN[label]
    result = evaluate(QSET.question("q4"), functions(namespace(source), "q4"), seed=0)
    assert not result.passed and result.score == 0, result.line()
    assert fragment in result.feedback() and "GradScaler" not in result.feedback().split("Hint")[0]


def test_the_grad_scaler_itself_is_forbidden():
    source = """
def train_step_amp(model, optimizer, x, y, state, dtype):
    scaler = torch.amp.GradScaler("cpu", init_scale=state["scale"], growth_interval=state["growth_interval"])
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), scaler.get_scale() < state["scale"]
"""
    result = evaluate(QSET.question("q4"), functions(namespace(source), "q4"), seed=0, assignment=ASSIGNMENT)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert "GradScaler" in result.feedback() and "which this question forbids" in result.feedback()


# --------------------------------------------------------------------------- q5 the broken script


def _bugs_left(*undone: tuple[str, str]) -> str:
    """The fixed train_digits of the solution notebook with fixes undone (each ``(fix, bug)`` put back)."""
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if c.get("id") == "q5-solution")
    for fix, bug in undone:
        assert fix in source, fix
        source = source.replace(fix, bug)
    return source


RAW, EVAL = ("/ 255", ""), ("model.train()", "model.eval()")
# each of these alone, and the raw inputs together with training in eval mode, keep the script below the
# bar (either of the last two alone does not: batch norm right after the first convolution rescales raw
# inputs, and a network without dropout or batch statistics still learns the digits)
BUGS_LEFT = {
    "softmax before the loss": [
        ("nn.Linear(32 * 7 * 7, 10),\n", "nn.Linear(32 * 7 * 7, 10), nn.Softmax(dim=1),\n")
    ],
    "no zero_grad": [("optimizer.zero_grad()", "pass")],
    "raw 0-255 inputs and training in eval mode": [RAW, EVAL],
}


@pytest.mark.parametrize("label", list(BUGS_LEFT))
def test_bugs_left_score_zero(label):
    result = evaluate(QSET.question("q5"), functions(namespace(_bugs_left(*BUGS_LEFT[label])), "q5"), seed=0)
    assert not result.passed and result.score == 0, result.line()
    assert "capped at the bar" in result.feedback() and "F.cross_entropy expect" in result.feedback()


def test_the_broken_script_as_given_scores_zero_and_the_test_digits_are_unseen():
    ns = namespace()
    result = evaluate(QSET.question("q5"), {"train_digits": ns["broken_train_digits"]}, seed=0)
    assert result.score == 0 and "got 0.1" in result.feedback(), result.feedback()
    x, y, x_test, y_test = debug_data(3)
    assert x.dtype == torch.uint8 and x.shape == (2000, 1, 28, 28) and int(x.max()) == 255
    assert x_test.shape == (1000, 1, 28, 28) and len(y_test) == 1000
    assert not (torch.cdist(x_test[:200].flatten(1).float(), x.flatten(1).float()) < 1e-6).any()


# --------------------------------------------------------------------------- q6 make it work


def test_the_grader_scores_on_data_the_exercise_never_loads():
    x_fit, y_fit, x_val, y_val = animal_silhouettes()
    x_test, y_test = held_out_animals(123)
    assert x_fit.shape == (1000, 1, 28, 28) and x_val.shape == (1000, 1, 28, 28)
    assert x_test.shape == (1998, 1, 28, 28) and torch.bincount(y_test, minlength=10).min() >= 150
    import utils.data

    train = utils.data.animals("train").images.flatten(1)
    assert not (torch.cdist(x_test[:300].flatten(1), train) < 1e-6).any()  # another split
    q = QSET.question("q6")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.metric == "accuracy"


def _trained_predict(train_source: str):
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    cells = {c.get("id"): c.source for c in nb.cells}
    x_fit, y_fit, _, _ = animal_silhouettes()
    ns: dict = {"torch": torch, "F": F, "nn": nn, "math": math, "SEED": 0, "x_fit": x_fit, "y_fit": y_fit}
    for source in (train_source, cells["q6-predict"]):
        exec(source, ns)
    return ns["predict"]


def _points(predict) -> float:
    q = QSET.question("q6")
    batches, targets, n = q.prepare(0)
    outputs = [predict(b) for b in batches]
    points, _, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    return points


@pytest.mark.slow
def test_the_steps_give_full_partial_and_zero_points():
    """The notebook's training reaches the top step, the same network after 4 epochs the
    lower one (4 epochs instead of 20), after one epoch none, nor does a constant answer."""
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    train = next(c.source for c in nb.cells if c.get("id") == "q6-train")
    line = "EPOCHS, BATCH = 20, 64"
    assert line in train
    variants = {"good": train, "short": train.replace(line, "EPOCHS, BATCH = 4, 64"), "one epoch": ""}
    variants["one epoch"] = train.replace(line, "EPOCHS, BATCH = 1, 64")
    points = {name: _points(_trained_predict(source)) for name, source in variants.items()}
    points["constant"] = _points(lambda images: torch.zeros(len(images), dtype=torch.int64))
    assert points == {"good": 2, "short": 1, "one epoch": 0, "constant": 0}, points


# --------------------------------------------------------------------------- review questions


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def test_the_review_answers_are_what_their_definitions_give():
    assert REVIEWS["r1"].answer == int(torch.finfo(torch.float16).max)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0, growth_interval=2000)
    w = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([w], lr=0.0)
    for step in range(2001):
        optimizer.zero_grad()
        scaler.scale((w * (float("inf") if step == 2000 else 1.0)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    assert REVIEWS["r2"].answer == scaler.get_scale()
    logits = torch.zeros(1000, 100)
    assert abs(REVIEWS["r3"].answer - F.cross_entropy(logits, torch.randint(0, 100, (1000,)))) < 0.005


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    assert set(answers) == set(REVIEWS)
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 65536, "r2": 131072.0, "r3": 2.3, "r4": {"b", "d"}, "r5": {"a", "c"}, "r6": "a"}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    right, message = REVIEWS["r1"].verdict({"r1": 65504.0})
    assert not right and "expected an int" in message
