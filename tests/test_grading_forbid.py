"""Forbidden shortcuts (issue 15, section 4): the watch catches every alias of a forbidden function,
its Tensor-method forms and the course's own modules, imported before or during the call; held-out
"solutions" that wrap the torch function or import the course's reference score zero on the question,
while the course's reference solutions still pass every question with the watch on."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from utils.grading import AUTOGRAD, COURSE, Question, assignments, evaluate, get_assignment
from utils.grading.forbid import ForbidSpecError, forbid_spec
from utils.grading.watch import ForbiddenCallError, Watch

SPEC = forbid_spec(
    ("torch.nn.functional.conv2d", "torch.sigmoid", "torch.nn.functional.max_pool2d", *AUTOGRAD, *COURSE),
    "the test says so",
)
X, W = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
CAPTURED = F.conv2d  # a reference taken before the check, as a notebook's top-level code could


def _scratch_conv():
    from utils.scratch.conv import conv2d_im2col  # imported before the watch starts

    return lambda: conv2d_im2col(X, W)


ATTEMPTS = {  # label -> (call, the forbidden name the message must give)
    "F.conv2d": (lambda: F.conv2d(X, W), "torch.nn.functional.conv2d"),
    "torch.conv2d": (lambda: torch.conv2d(X, W), "torch.nn.functional.conv2d"),
    "torch._C._VariableFunctions": (
        lambda: torch._C._VariableFunctions.conv2d(X, W),
        "torch.nn.functional.conv2d",
    ),
    "captured before the check": (lambda: CAPTURED(X, W), "torch.nn.functional.conv2d"),
    "a default argument": ((lambda conv=F.conv2d: conv(X, W)), "torch.nn.functional.conv2d"),
    "nn.Conv2d": (lambda: torch.nn.Conv2d(1, 1, 3)(X), "torch.nn.functional.conv2d"),
    "x.sigmoid()": (lambda: X.sigmoid(), "torch.sigmoid"),
    "x.sigmoid_()": (lambda: X.clone().sigmoid_(), "torch.sigmoid"),
    "TensorBase.sigmoid": (lambda: torch._C.TensorBase.sigmoid(X), "torch.sigmoid"),
    "F.sigmoid": (lambda: F.sigmoid(X), "torch.sigmoid"),
    "nn.Sigmoid": (lambda: torch.nn.Sigmoid()(X), "torch.sigmoid"),
    "getattr": (lambda: getattr(torch, "sig" + "moid")(X), "torch.sigmoid"),
    "F.max_pool2d": (lambda: F.max_pool2d(X, 2), "torch.nn.functional.max_pool2d"),
    "F.max_pool2d with indices": (
        lambda: F.max_pool2d(X, 2, return_indices=True),
        "torch.nn.functional.max_pool2d",
    ),
    "Tensor.backward": (lambda: (X.clone().requires_grad_() * 2).sum().backward(), "torch.Tensor.backward"),
    "torch.autograd.grad": (
        lambda: torch.autograd.grad(X.clone().requires_grad_().sum(), []),
        "torch.autograd.grad",
    ),
    "torch.func.grad": (lambda: torch.func.grad(lambda t: (t**2).sum())(X), "torch.autograd.grad"),
    "utils.scratch imported before": (_scratch_conv(), "utils.scratch"),
    "import utils.scratch inside": (
        lambda: exec("import utils.scratch.conv", {"__name__": "__main__"}),
        "utils.scratch",
    ),
    "from utils import metrics inside": (
        lambda: exec("from utils import metrics", {"__name__": "__main__"}),
        "utils.metrics",
    ),
    "sys.setprofile(None)": (lambda: sys.setprofile(None), "sys.setprofile"),
}


@pytest.mark.parametrize("label", list(ATTEMPTS))
def test_the_watch_catches_every_form(label):
    call, name = ATTEMPTS[label]
    watch = Watch(SPEC)
    with pytest.raises(ForbiddenCallError) as info:
        with watch:
            call()
    assert name in str(info.value)
    assert str(info.value).endswith("which this question forbids: the test says so")
    assert watch.violation == str(info.value)
    assert sys.getprofile() is None  # the watch leaves no hook behind


def test_catching_the_error_does_not_hide_the_call_and_allowed_calls_run():
    watch = Watch(SPEC)
    with watch:
        try:
            F.conv2d(X, W)
        except ForbiddenCallError:
            pass
        value = torch.exp(X).sum() + torch.relu(X).sum()  # not forbidden: runs normally
    assert watch.violation.startswith("calls torch.nn.functional.conv2d") and torch.isfinite(value)
    clean = Watch(SPEC)
    with clean:
        torch.tanh(X) @ torch.ones(5)
        with torch.no_grad():  # torch.autograd.grad_mode code: not autograd itself
            torch.ones(1) * 2
    assert clean.violation is None


def test_forbidding_unknown_names_is_an_error_of_the_question_set():
    with pytest.raises(ForbidSpecError, match="torch.nn.functional has no attribute 'conv7d'"):
        forbid_spec(("torch.nn.functional.conv7d",), "")
    with pytest.raises(ForbidSpecError, match="no module 'nonexistent_package'"):
        forbid_spec(("nonexistent_package.f",), "")
    assert forbid_spec((), "") is None
    future = forbid_spec(("utils.not_written_yet",), "")  # a course module before it exists: by its path
    assert ["utils.not_written_yet", "/utils/not_written_yet/", "utils.not_written_yet"] in future["modules"]


def test_every_question_set_forbids_names_that_exist():
    for name, qset in assignments().items():
        for q in qset.questions:
            if q.forbid:
                assert q.watch_spec() is not None, f"{name} {q.id}"


def test_the_kernel_side_modules_import_only_the_standard_library():
    """watch.py and runner.py run in the learner's kernel from their source: only stdlib at the top."""
    for name in ("watch.py", "runner.py"):
        tree = ast.parse((ROOT / "utils" / "grading" / name).read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                stdlib = all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__" for m in modules)
                assert stdlib, (name, modules)


# --------------------------------------------------------------------------- held-out shortcuts score zero

SHORTCUTS = {  # (assignment, question) -> notebook code that gives right answers the forbidden way
    ("01_backprop", "q3"): """
def weighted_softmax_cross_entropy(logits, y, weight=None, ignore_index=-100):
    logits = logits.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(logits, y, weight=weight, ignore_index=ignore_index)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad
""",
    ("01_backprop", "q4"): """
def l2_normalize(x, eps=1e-12):
    return torch.nn.functional.normalize(x, dim=-1, eps=eps)
def l2_normalize_backward(dout, x, eps=1e-12):
    x = x.clone().requires_grad_()
    torch.nn.functional.normalize(x, dim=-1, eps=eps).backward(dout)
    return x.grad
""",
    ("02_activations", "q1"): """
def gelu_tanh(x):
    return torch.nn.functional.gelu(x, approximate="tanh")
def gelu_tanh_grad(x):
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(gelu_tanh(x).sum(), x)
    return grad
""",
    ("02_activations", "q4"): """
from utils.scratch.activations import softmax
def softmax_t(z, T, dim):
    return softmax(z / T, dim=dim)
def softmax_t_backward(dout, z, T, dim):
    z, T = z.clone().requires_grad_(), T.clone().requires_grad_()
    return torch.autograd.grad(softmax_t(z, T, dim), (z, T), dout)
""",
    ("03_losses_metrics", "q1"): """
import torch.nn.functional as F
def weighted_bce_with_logits(logits, targets, pos_weight):
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
""",
    ("03_losses_metrics", "q3"): """
def mean_average_precision(scores, targets):
    from sklearn.metrics import average_precision_score
    return float(average_precision_score(targets.numpy(), scores.numpy(), average="macro"))
""",
    ("04_optimizers", "q2"): """
class NesterovAdam(torch.optim.NAdam):
    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3):
        super().__init__(params, lr=lr, betas=betas, eps=eps, momentum_decay=momentum_decay)
""",
    ("05_init_norm_reg", "q1"): """
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    return torch.nn.init.kaiming_uniform_(weight, a=a, mode=mode, nonlinearity="leaky_relu")
""",
    ("05_init_norm_reg", "q4"): """
from torch.nn.utils.fusion import fuse_conv_bn_weights
def fold_batchnorm(w, b, gamma, beta, running_mean, running_var, eps):
    return fuse_conv_bn_weights(w, b, running_mean, running_var, eps, gamma, beta)
""",
    ("06_convolutions", "q1"): """
def conv2d_backward(dout, x, w, stride, padding):
    dx = torch.nn.grad.conv2d_input(x.shape, w, dout, stride=stride, padding=padding)
    dw = torch.nn.grad.conv2d_weight(x, w.shape, dout, stride=stride, padding=padding)
    return dx, dw, dout.sum((0, 2, 3))
""",
    ("06_convolutions", "q2"): """
import torch.nn.functional as F
def pad2d(x, pad, mode):
    return F.pad(x, pad, mode=mode)
""",
    ("07_architectures", "q1"): """
import torchvision
class Bottleneck(torchvision.models.resnet.Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        down = None
        if stride != 1 or in_ch != 4 * width:
            down = torch.nn.Sequential(torch.nn.Conv2d(in_ch, 4 * width, 1, stride=stride, bias=False),
                                       torch.nn.BatchNorm2d(4 * width))
        super().__init__(in_ch, width, stride, downsample=down)
""",
    ("08_training_cnns", "q1"): """
from utils import interpret
def grad_cam(model, target_layer, x, class_idx):
    return interpret.grad_cam(model, target_layer, x, class_idx)
""",
    ("08_training_cnns", "q4"): """
import torch.nn.functional as F
def train_step_amp(model, optimizer, x, y, state, dtype):
    scaler = torch.amp.GradScaler("cpu", init_scale=state["scale"], growth_interval=state["growth_interval"])
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), scaler.get_scale() < state["scale"]
""",
}


def _namespace(source: str) -> dict:
    ns: dict = {"__name__": "__main__", "torch": torch}
    exec(compile(textwrap.dedent(source), "<notebook>", "exec"), ns)
    return ns


@pytest.mark.parametrize("key", list(SHORTCUTS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_a_shortcut_scores_zero_with_the_forbidden_call_named(key):
    assignment, qid = key
    q = get_assignment(assignment).question(qid)
    ns = _namespace(SHORTCUTS[key])
    result = evaluate(q, {name: ns[name] for name in q.functions}, seed=0, assignment=assignment)
    assert result.score == 0 and not result.passed
    failure = result.first_failure
    assert failure.forbidden and "which this question forbids" in failure.message, result.feedback()
    assert "forbidden call in case" in result.feedback()


def _solution_namespace(path: Path) -> dict:
    """The code cells of a solution notebook run as a notebook would, minus the checks and the install."""
    import utils

    ns: dict = {"__name__": "__main__", "utils": utils}
    for cell in nbformat.read(path, as_version=4).cells:
        source = cell.source.lstrip()
        skipped = source.startswith(("check(", "# Setup")) or "grade_notebook" in source
        if cell.cell_type != "code" or skipped:
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        exec(compile(code, str(path), "exec"), ns)
    return ns


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.stem)
def test_the_reference_solutions_pass_with_the_watch_on(path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    ns = _solution_namespace(path)
    for q in get_assignment(path.stem).questions:
        if isinstance(q, Question):
            result = evaluate(q, {name: ns[name] for name in q.functions}, seed=7, assignment=path.stem)
            assert result.passed, result.line()
