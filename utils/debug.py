"""The debugging checklist of chapter 08: cheap checks to run before spending compute on training.

1. :func:`initial_loss_check`: an untrained classifier that knows nothing predicts every class with
   probability about 1/C, so its cross-entropy is about ``ln C``. A much larger loss means a bad
   initialization (e.g. a final layer with a large bias); a much smaller one means the labels leak
   into the input, or the model was not freshly initialized.
2. :func:`overfit_one_batch`: a model that cannot drive the loss of one small batch to nearly zero
   has a bug (wrong labels, a detached graph, a learning rate far off) or too little capacity.
3. :func:`gradient_flow`: the gradient norm of every layer after one backward pass; a layer with a
   zero (or no) gradient does not learn, and norms that shrink by orders of magnitude towards the
   input reveal vanishing gradients. :func:`plot_gradient_flow` draws them.
4. :func:`diagnose_curves`: reads a training history (train and validation loss per epoch) and says
   in one sentence what the curves show: divergence, no learning, overfitting, or healthy.

None of these functions changes the model it is given: the ones that train or run a training-mode
forward pass work on a copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from utils.common import (
    check_model,
    eval_mode,
    model_device,
    optimizer_step,
    unpack_batch,
)

__all__ = [
    "InitialLoss",
    "LayerGrad",
    "OverfitResult",
    "diagnose_curves",
    "expected_initial_loss",
    "gradient_flow",
    "initial_loss_check",
    "overfit_one_batch",
    "plot_gradient_flow",
]


def _device(model: nn.Module, device: Any) -> torch.device:
    """``device`` when given, else the model's own (CPU for a model without parameters)."""
    return torch.device(device) if device is not None else model_device(model)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


# --------------------------------------------------------------------------------------------
# 1. Initial loss
# --------------------------------------------------------------------------------------------
def expected_initial_loss(num_classes: int) -> float:
    """``ln C``: the cross-entropy of a uniform prediction over ``num_classes`` classes. Chapter 08."""
    return math.log(_check_num_classes(num_classes))


class InitialLoss(NamedTuple):
    """What :func:`initial_loss_check` measured: ``loss, ok = initial_loss_check(...)``."""

    loss: float
    ok: bool


def initial_loss_check(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    *,
    rel_tol: float = 0.1,
    max_batches: int | None = None,
    device: Any = None,
) -> InitialLoss:
    """Mean cross-entropy of ``model`` over ``loader`` and whether it is within ``rel_tol`` of ``ln C``.

    The loss is the mean over *samples* (a last, smaller batch counts by its size), measured in eval
    mode (dropout off, batch-norm running statistics) under ``torch.no_grad()``; afterwards every
    submodule gets back the train/eval mode it had. ``ok`` is ``|loss - ln C| <= rel_tol * ln C``:
    a loss far below ``ln C`` is suspicious too. ``max_batches`` limits the batches read;
    ``device`` defaults to the model's device (given, the model is moved there).
    Chapter 08 runs it as the first item of the debugging checklist.
    """
    check_model(model)
    c = _check_num_classes(num_classes)
    if not (isinstance(rel_tol, (int, float)) and rel_tol > 0):
        raise ValueError(f"rel_tol must be a positive number, got {rel_tol!r}")
    device = _device(model, device)
    model.to(device)
    total, count = 0.0, 0
    with eval_mode(model), torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = unpack_batch(batch, "each batch of loader", tensors=True)
            logits = model(x.to(device))  # (B, C)
            if logits.dim() != 2 or logits.shape[1] != c:
                raise ValueError(f"the model must return logits of shape (B, {c}), got {tuple(logits.shape)}")
            total += F.cross_entropy(logits.float(), y.to(device), reduction="sum").item()
            count += y.shape[0]
    if count == 0:
        raise ValueError("loader yielded no samples")
    loss = total / count
    return InitialLoss(loss, bool(abs(loss - math.log(c)) <= rel_tol * math.log(c)))


# --------------------------------------------------------------------------------------------
# 2. Overfit one batch
# --------------------------------------------------------------------------------------------
@dataclass
class OverfitResult:
    """What :func:`overfit_one_batch` observed: the loss after every step, and the verdict."""

    losses: list[float] = field(default_factory=list)
    accuracy: float = float("nan")
    target_loss: float = 0.0
    passed: bool = False

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    @property
    def steps(self) -> int:
        return len(self.losses)


def overfit_one_batch(
    model: nn.Module,
    batch: Any,
    *,
    steps: int = 200,
    lr: float = 1e-3,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    loss_fn: Callable = F.cross_entropy,
    target_loss: float = 0.01,
    device: Any = None,
    copy_model: bool = True,
) -> OverfitResult:
    """Train on one batch ``(x, y)`` for up to ``steps`` steps; passed when the loss gets below
    ``target_loss``.

    Works on a deep copy of ``model`` (``copy_model=False`` trains the model itself), in train mode,
    with ``optimizer(params, lr=lr)`` (default Adam), on ``device`` (default: the model's device; the
    copy, or the model itself, is moved there). Stops as soon as the loss is below
    ``target_loss``. ``accuracy`` is the training-mode accuracy on the batch at the last step.
    A healthy model and pipeline memorize a small batch quickly; chapter 08 explains what a failure means.
    """
    check_model(model)
    x, y = unpack_batch(batch, "batch", tensors=True)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not (isinstance(target_loss, (int, float)) and target_loss > 0):
        raise ValueError(f"target_loss must be a positive number, got {target_loss!r}")
    net = copy.deepcopy(model) if copy_model else model
    device = _device(net, device)
    net.to(device)
    x, y = x.to(device), y.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = (optimizer or torch.optim.Adam)(params, lr=lr)
    result = OverfitResult(target_loss=float(target_loss))
    net.train()
    for _ in range(steps):
        out = net(x)
        loss = loss_fn(out, y)
        optimizer_step(opt, loss)
        value = loss.item()
        result.losses.append(value)
        if not math.isfinite(value) or value < target_loss:
            break
    if out.dim() == 2 and not y.is_floating_point():
        result.accuracy = (out.detach().argmax(dim=1) == y).float().mean().item()
    result.passed = math.isfinite(result.final_loss) and result.final_loss < target_loss
    return result


# --------------------------------------------------------------------------------------------
# 3. Gradient flow
# --------------------------------------------------------------------------------------------
class LayerGrad(NamedTuple):
    """Gradient statistics of one parameter tensor after one backward pass."""

    name: str
    shape: tuple[int, ...]
    grad_norm: float  # 0.0 when no gradient reached the parameter
    param_norm: float
    reached: bool  # False: the parameter is not part of the graph of the loss (it cannot learn)

    @property
    def ratio(self) -> float:
        """``grad_norm / param_norm``: how large one gradient step is relative to the weights."""
        return self.grad_norm / self.param_norm if self.param_norm > 0 else float("inf")


def gradient_flow(
    model: nn.Module,
    batch: Any,
    *,
    loss_fn: Callable = F.cross_entropy,
    weights_only: bool = True,
    train_mode: bool = True,
    device: Any = None,
) -> list[LayerGrad]:
    """The gradient norm of every layer's weights after one forward and backward pass on ``batch``.

    Returns one :class:`LayerGrad` per trainable parameter, in the order of ``model.named_parameters()``
    (input side first); with ``weights_only`` (default) only tensors with at least 2 dimensions, the
    weights of convolutions and linear layers. The pass runs on a copy of the model (in train mode,
    unless ``train_mode=False``, on ``device``, by default the model's), through ``torch.autograd.grad``: the
    model, its ``.grad`` and its
    batch-norm statistics stay untouched. A parameter the loss does not depend on has ``reached=False``
    and ``grad_norm`` 0. Chapter 08 uses it to find a layer that does not learn.
    """
    check_model(model)
    x, y = unpack_batch(batch, "batch", tensors=True)
    net = copy.deepcopy(model)
    device = _device(net, device)
    net.to(device)
    net.train(train_mode)
    named = [
        (n, p) for n, p in net.named_parameters() if p.requires_grad and (p.dim() >= 2 or not weights_only)
    ]
    if not named:
        raise ValueError(
            "the model has no trainable parameters" + (" with 2 or more dimensions" if weights_only else "")
        )
    with torch.enable_grad():
        loss = loss_fn(net(x.to(device)), y.to(device))
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    report = []
    for (name, p), g in zip(named, grads):
        report.append(
            LayerGrad(
                name,
                tuple(p.shape),
                0.0 if g is None else g.norm().item(),
                p.detach().norm().item(),
                g is not None,
            )
        )
    return report


def plot_gradient_flow(
    reports: list[LayerGrad] | Mapping[str, list[LayerGrad]],
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Gradient norm per layer (log scale), input side on the left; one line per report. Chapter 08.

    ``reports`` is the output of :func:`gradient_flow`, or a dict ``label -> report`` to compare
    models. Layers that the gradient never reached are marked with a red x at the bottom.
    """
    if isinstance(reports, Mapping):
        series = dict(reports)
    else:
        series = {"": list(reports)}
    if not series or not all(series.values()):
        raise ValueError("reports must hold at least one non-empty gradient_flow report")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * max(len(r) for r in series.values())), 3.8))
    else:
        fig = ax.figure
    positive = [g.grad_norm for r in series.values() for g in r if g.grad_norm > 0]
    floor = min(positive) / 10 if positive else 1e-12
    for label, report in series.items():
        xs = range(len(report))
        ys = [g.grad_norm if g.grad_norm > 0 else floor for g in report]
        ax.semilogy(xs, ys, marker="o", label=label or None)
        dead = [i for i, g in enumerate(report) if g.grad_norm == 0]
        if dead:
            ax.scatter(
                dead,
                [floor] * len(dead),
                marker="x",
                color="red",
                s=60,
                zorder=3,
                label=f"{label + ': ' if label else ''}no gradient",
            )
    names = [g.name.removesuffix(".weight") for g in next(iter(series.values()))]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="gradient norm", title=title or "Gradient norm per layer (input on the left)")
    ax.grid(alpha=0.3, which="both")
    if any(label for label in series) or any(g.grad_norm == 0 for r in series.values() for g in r):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# 4. Curves
# --------------------------------------------------------------------------------------------
def diagnose_curves(history: Any, *, patience: int = 2, tol: float = 0.05) -> str:
    """One sentence on what the training and validation losses show. Chapter 08.

    ``history`` is a :class:`utils.train.History` or a dict with ``train_loss`` and ``val_loss`` lists.
    In order: ``"diverged"`` (a non-finite loss, or the last training loss above the first);
    ``"not learning"`` (the training loss fell by less than ``tol`` of its first value);
    ``"overfitting"`` (the validation loss has not improved for ``patience`` epochs while the
    training loss kept falling); else ``"healthy"``; with fewer than 2 epochs, ``"too short"``.
    The returned string starts with that word.
    """
    data = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    if "train_loss" not in data:
        raise ValueError("history must have a 'train_loss' list (a utils.train.History or its as_dict())")
    train = [float(v) for v in data["train_loss"]]
    val = [float(v) for v in data.get("val_loss", [])]
    if len(train) < 2:
        epochs = f"{len(train)} epoch{'s' if len(train) != 1 else ''}"
        return f"too short: {epochs} of history, curves need at least 2"
    if not all(math.isfinite(v) for v in train) or train[-1] > train[0]:
        return "diverged: the training loss went up (or became NaN); lower the learning rate"
    if train[0] - min(train) < tol * abs(train[0]):
        return (
            "not learning: the training loss barely moved; "
            "check the learning rate, the labels and the gradient flow"
        )
    finite_val = [v for v in val if math.isfinite(v)]
    if len(finite_val) == len(val) and len(val) == len(train):
        best = min(range(len(val)), key=val.__getitem__)
        if len(val) - 1 - best >= patience and train[-1] < train[best]:
            return (
                f"overfitting: the validation loss was lowest in epoch {best + 1} and has risen since, "
                "while the "
                f"training loss kept falling; stop early, augment or regularize"
            )
    return "healthy: the training loss falls and the validation loss follows it"
