"""The training loop: :func:`fit`, and :func:`evaluate` and :func:`predict` beside it.

Chapter 01 writes a training loop by hand (forward, loss, backward, step); from chapter 02 on the
chapters call :func:`fit`. What one step is belongs to a task (``utils.train.tasks``); this file is
the loop around it: epochs, devices, progress bar, validation, schedulers, early stopping,
checkpoints and, under ``torchrun``, data parallelism (``utils.train.distributed``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import utils
from utils.common import check_loader, check_model, eval_mode, model_device, move_to, unpack_batch
from utils.train import checkpoint as ckpt
from utils.train import distributed
from utils.train.context import (
    StepContext,
    current_lr,
    resolve_amp,
    resolve_optimizers,
    resolve_schedulers,
    step_schedulers,
)
from utils.train.history import History
from utils.train.tasks import Classification, Task

__all__ = ["evaluate", "fit", "predict"]

# The progress bar shows a running loss; reading it forces the GPU to catch up, so do it rarely.
_REFRESH_EVERY = 20


class _Means:
    """Running sums of a step's outputs, kept on the device so that adding does not wait for the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.device, self.sums, self.counts, self.batches = device, {}, {}, 0

    def add(self, out: dict[str, Any], size: int) -> None:
        """Add a step's outputs: a scalar counts ``size`` times (a batch mean), a pair is ``(sum, count)``."""
        self.batches += 1
        for key, value in out.items():
            if isinstance(value, tuple):
                total, count = value
                total = total.detach().to(self.dtype) if isinstance(total, torch.Tensor) else float(total)
            else:
                count = size
                total = (
                    value.detach().to(self.dtype) * size
                    if isinstance(value, torch.Tensor)
                    else float(value) * size
                )
            if key not in self.sums:
                self.sums[key], self.counts[key] = torch.zeros((), dtype=self.dtype, device=self.device), 0
            self.sums[key] += total
            self.counts[key] += count

    def means(self, reduce: bool = False) -> dict[str, float]:
        if reduce:
            pairs = distributed.all_reduce_sums(
                {k: (self.sums[k], self.counts[k]) for k in self.sums}, self.device
            )
        else:
            pairs = {k: (self.sums[k].item(), self.counts[k]) for k in self.sums}
        return {k: (s / c if c else math.nan) for k, (s, c) in pairs.items()}


def _positive_int(value: Any, name: str, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{what}, got {value!r}")
    return int(value)


def _resolve_task(task: Task | None, loss_fn: Callable) -> Task:
    if task is None:
        return Classification(loss_fn)
    if not isinstance(task, Task):
        raise TypeError(
            f"task must be a utils.train.Task (Classification(), Detection(), ...), got {type(task).__name__}"
        )
    if loss_fn is not F.cross_entropy:
        raise ValueError(
            "pass the loss to the task (e.g. Classification(loss_fn)), not loss_fn= next to task="
        )
    return task


def _frozen_parts(model: nn.Module) -> list[nn.Module]:
    """Submodules the learner put in eval mode in a model that is in training mode: they stay in eval mode."""
    return [m for m in model.modules() if not m.training] if model.training else []


def _renamed(values: dict[str, float], task: Task) -> dict[str, float]:
    """A step's keys as the History names them (``accuracy`` -> ``acc`` for classification)."""
    return {task.history_names.get(k, k): v for k, v in values.items()}


def _postfix(values: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.4f}" for k, v in list(values.items())[:6] if math.isfinite(v)}


def _train_epoch(
    task: Task,
    net: nn.Module,
    loader: Iterable,
    ctx: StepContext,
    schedulers: dict,
    frozen: list[nn.Module],
    bar: Any,
    reduce: bool,
) -> dict[str, float]:
    """One pass over ``loader``: the task's step, backward, step. Returns the epoch's means by name."""
    net.train()
    for m in frozen:
        m.eval()
    sums = _Means(ctx.device)
    sync = getattr(net, "no_sync", None)  # DDP: all-reduce the gradients only on a window's last batch
    for i, batch in enumerate(loader):
        batch = move_to(batch, ctx.device, channels_last=ctx.channels_last)
        ctx.begin_batch(i)
        with sync() if sync is not None and not ctx.end_of_window else contextlib.nullcontext():
            out = task.training_step(net, batch, ctx)
            if task.automatic_optimization:
                if not isinstance(out, dict) or "loss" not in out:
                    raise TypeError(f"{type(task).__name__}.training_step must return a dict with a 'loss'")
                ctx.backward(out["loss"])
                ctx.step()
        step_schedulers(schedulers, ctx.stepped, per_batch=True)
        sums.add(out, task.batch_size(batch))
        if bar is not None:
            bar.update(1)
            if i % _REFRESH_EVERY == 0:
                bar.set_postfix(_postfix(_renamed(sums.means(), task)))
    ctx.flush()
    if sums.batches == 0:
        raise ValueError(
            "train_loader yielded no batches (a generator is used up after one pass: "
            "pass a DataLoader or a list)"
        )
    return sums.means(reduce)


def _validate(
    task: Task, model: nn.Module, loader: Iterable, ctx: StepContext, reduce: bool = False
) -> dict[str, float]:
    """The task's validation steps over ``loader`` (eval mode, inference mode), then its epoch-end metrics."""
    task.validation_epoch_start()
    sums = _Means(ctx.device)
    with eval_mode(model), torch.inference_mode():
        for batch in loader:
            batch = move_to(batch, ctx.device, channels_last=ctx.channels_last)
            sums.add(task.validation_step(model, batch, ctx), task.batch_size(batch))
    batches = sum(distributed.all_gather_objects(sums.batches)) if reduce else sums.batches
    if batches == 0:
        raise ValueError(f"{ctx.where} yielded no batches")
    return {**sums.means(reduce), **task.validation_epoch_end()}


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable = F.cross_entropy,
    device: str | torch.device | None = None,
    *,
    task: Task | None = None,
    amp: Any = False,
) -> dict[str, float]:
    """The task's validation metrics of ``model`` over ``loader``; by default ``{"loss": float, "accuracy":
    float}``.

    Runs under ``torch.inference_mode()`` with the model in eval mode, then gives every submodule
    back its previous train/eval mode. ``device`` defaults to the device the model is on (given,
    the model is moved there). For the default :class:`~utils.train.tasks.Classification`,
    ``accuracy`` is NaN when the outputs are not class logits (N, C) with integer targets (N,);
    another ``task`` gives its own keys (``Detection()``: ``map``, ``map_50``, ...).
    Chapter 01 computes this by hand.
    """
    check_model(model)
    check_loader(loader, "loader")
    task = _resolve_task(task, loss_fn)
    device = model_device(model, default=utils.device()) if device is None else utils.device(device)
    model.to(device)
    task.setup(model, device)
    ctx = StepContext(device, amp_dtype=resolve_amp(amp, device), where="the evaluation loader")
    return _validate(task, model, loader, ctx)


def _collect(chunks: list[Any]) -> Any:
    """Batches of outputs joined: tensors concatenated, lists of per-image outputs chained."""
    first = chunks[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(chunks)
    if isinstance(first, dict):
        return {k: _collect([c[k] for c in chunks]) for k in first}
    if isinstance(first, tuple):
        return tuple(_collect(list(parts)) for parts in zip(*chunks))
    return [item for chunk in chunks for item in chunk]


def predict(model: nn.Module, loader: Iterable, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """Model outputs for every batch of ``loader``, joined on the CPU: ``(outputs, targets)``.

    Batches are ``(inputs, targets)`` pairs, dicts with ``image`` (targets: the ``label`` entry, if
    any), or bare inputs (then ``targets`` is None). Tensor outputs (logits) are concatenated;
    a tuple of tensors (a VAE's) gives a tuple; lists (a detector's dicts, one per image) are
    chained into one list. Runs under ``torch.inference_mode()`` in eval mode and restores the previous
    modes; ``device`` defaults to the model's device. Chapter 08 uses it for the confusion matrix.
    """
    check_model(model)
    check_loader(loader, "loader")
    device = model_device(model, default=utils.device()) if device is None else utils.device(device)
    model.to(device)
    outputs, targets = [], []
    with eval_mode(model), torch.inference_mode():
        for batch in loader:
            if isinstance(batch, dict):
                x, y = batch["image"], batch.get("label")
            elif isinstance(batch, torch.Tensor):
                x, y = batch, None
            else:
                x, y = unpack_batch(batch, "each batch of loader")
            outputs.append(move_to(_to_float(model(move_to(x, device))), "cpu"))
            if y is not None:
                targets.append(
                    y.cpu()
                    if isinstance(y, torch.Tensor)
                    else move_to(y, "cpu")
                    if _is_dicts(y)
                    else torch.as_tensor(y)
                )
    if not outputs:
        raise ValueError("loader yielded no batches")
    if targets and len(targets) != len(outputs):
        raise ValueError("loader mixed (inputs, targets) pairs with bare input batches")
    return _collect(outputs), (_collect(targets) if targets else None)


def _is_dicts(y: Any) -> bool:
    return isinstance(y, (list, tuple)) and bool(y) and isinstance(y[0], dict)


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float(v) for v in out)
    return out


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int,
    task: Task | None = None,
    optimizer: Any = None,
    lr: float = 1e-3,
    loss_fn: Callable = F.cross_entropy,
    device: str | torch.device | None = None,
    amp: Any = "auto",
    channels_last: bool = False,
    scheduler: Any = None,
    grad_clip: float | None = None,
    accumulate: int = 1,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    mode: str | None = None,
    progress: bool | None = None,
    seed: int | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`. Chapter 02 first uses it.

    Arguments:

    * ``train_loader`` / ``val_loader``: iterables of batches (DataLoaders); the batches are moved to
      the device (tensors inside tuples, lists and dicts too) and handed to the task.
    * ``task``: what one step is (``utils.train.tasks``): :class:`Classification` by default (batches
      of ``(inputs, targets)``, ``loss_fn(model(inputs), targets)``), or ``Detection()``,
      ``Segmentation(...)``, ``Reconstruction(...)``, ``GAN(...)``, ``Distillation(...)``, your own.
    * ``optimizer``: an optimizer, or a dict ``name -> optimizer`` for a task with several; by default
      the task's (``AdamW(lr=lr)`` over the parameters with ``requires_grad``: a frozen backbone is left out).
    * ``loss_fn``: for the default task, any ``loss_fn(outputs, targets)`` returning the mean loss of a batch.
    * ``device``: defaults to ``utils.device()``; the model is moved there.
    * ``amp``: ``"auto"`` uses mixed precision on CUDA (bf16 where the GPU supports it, else fp16
      with a gradient scaler) and full precision on CPU and MPS; ``"bf16"`` / ``"fp16"`` ask for
      one explicitly (an error where the device cannot); ``False`` turns it off.
    * ``channels_last``: convert the model and every 4-D input to the channels-last memory format.
    * ``scheduler``: a learning-rate scheduler built on ``optimizer``, or a function
      ``optimizer -> scheduler`` (handy with the default optimizer), or a dict by optimizer name. It is
      stepped once per epoch, except ``OneCycleLR`` and ``CyclicLR``, which are stepped after every
      optimizer step (build them with ``total_steps = epochs * len(train_loader)``, divided by
      ``accumulate``); ``ReduceLROnPlateau`` is given the ``monitor`` metric (the training loss
      without it).
    * ``grad_clip``: clip the global gradient norm to this value before every step (chapter 04).
    * ``accumulate``: add up the gradients of this many batches before each step, which equals a
      batch that many times larger (for batches of equal size).
    * ``checkpoint``: a file written at the end of every epoch with the model, optimizers,
      schedulers, gradient scalers, history and every random state (torch, CUDA, NumPy, Python,
      the loader's generator). ``resume=True`` continues from it at the next epoch (when the file
      does not exist yet the run starts from epoch 1, so the same cell serves both). With the same
      ``seed``, a resumed run ends with exactly the weights of an uninterrupted one (for loaders
      with ``num_workers=0`` or non-persistent workers). Without ``resume`` an existing file is
      overwritten.
    * ``early_stopping``: a patience ``p``: stop when ``monitor`` (default ``"val_loss"``; any
      metric of the History, e.g. ``"val_map"``) has not improved for ``p`` epochs. ``mode``:
      ``"min"`` or ``"max"``, inferred from the name when None (losses go down; accuracy, mAP, mIoU and
      Dice go up). At the end the model gets back the weights of the best epoch
      (``history.best_epoch``), whether or not it stopped early.
    * ``progress``: one tqdm bar over all batches of all epochs, showing the running metrics. The
      default (``None``) shows it unless the environment variable ``COURSE_PROGRESS`` is ``0``, as
      in the website build, where a saved progress bar would tell a reader nothing.
    * ``seed``: when given, seed Python, NumPy, torch and the loader's generator first.

    Parts the learner put in eval mode (a frozen backbone's batch norm) stay in eval mode while the
    rest trains. Under ``torchrun`` the run is data-parallel: see ``utils.train.distributed``.
    """
    # ---- check the arguments -------------------------------------------------------------
    check_model(model)
    epochs = _positive_int(epochs, "epochs")
    accumulate = _positive_int(accumulate, "accumulate")
    check_loader(train_loader, "train_loader")
    if val_loader is not None:
        check_loader(val_loader, "val_loader")
    task = _resolve_task(task, loss_fn)
    history = History(monitor=monitor, mode=mode)
    if early_stopping is not None:
        _positive_int(early_stopping, "early_stopping", " (the patience in epochs) or None")
        if monitor.startswith("val_") and val_loader is None:
            raise ValueError(f"early_stopping watches {monitor}, a validation metric: pass a val_loader")
    if grad_clip is not None and (
        isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) or not grad_clip > 0
    ):
        raise ValueError(
            f"grad_clip must be a positive number (the largest gradient norm) or None, got {grad_clip!r}"
        )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint='path.pt', the file to resume from")

    # ---- set up ------------------------------------------------------------------------------
    device = utils.device(device)
    ddp = distributed.setup(device)
    if seed is not None:  # each process its own stream: seed + rank
        utils.seed_everything(seed + distributed.rank())
        for g in ckpt.loader_generators(train_loader):
            g.manual_seed(seed + distributed.rank())
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    task.setup(model, device)
    optimizers = resolve_optimizers(task, model, optimizer, lr)
    schedulers = resolve_schedulers(scheduler, optimizers)
    amp_dtype = resolve_amp(amp, device)
    net, sampler = model, getattr(train_loader, "sampler", None)
    sampler = sampler if hasattr(sampler, "set_epoch") else None  # a DistributedSampler the learner built
    if ddp:
        train_loader, sampler = distributed.shard_loader(
            train_loader, train=True, seed=seed or 0, name="train_loader"
        )
        if val_loader is not None:
            val_loader, _ = distributed.shard_loader(val_loader, train=False, seed=0, name="val_loader")
        if task.ddp:
            net = distributed.wrap_model(model, device, task.find_unused_parameters)
        else:
            distributed.broadcast_parameters(model)
    ctx = StepContext(
        device,
        amp_dtype=amp_dtype,
        optimizers=optimizers,
        grad_clip=grad_clip,
        accumulate=accumulate,
        average_gradients=ddp and not task.ddp,
        channels_last=channels_last,
        where="train_loader",
    )
    val_ctx = StepContext(device, amp_dtype=amp_dtype, channels_last=channels_last, where="val_loader")
    try:
        ctx.steps_per_epoch = len(train_loader)
    except TypeError:
        ctx.steps_per_epoch = None

    start, best_state = 0, None
    if resume and Path(checkpoint).is_file():
        start, best_state, history = ckpt.resume_run(
            checkpoint, model, ctx, schedulers, history, train_loader, epochs
        )
    bar = _progress_bar(progress, ctx.steps_per_epoch, epochs - start)

    # ---- train -------------------------------------------------------------------------------
    frozen = _frozen_parts(model)
    first = next(iter(optimizers.values()))
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            lr_now = current_lr(first)
            ctx.epoch = val_ctx.epoch = epoch
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new shuffle every epoch, the same in every process
            if bar is not None:
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
            train = _renamed(_train_epoch(task, net, train_loader, ctx, schedulers, frozen, bar, ddp), task)
            for name, value in train.items():
                if "loss" in name and not math.isfinite(value):
                    raise FloatingPointError(
                        f"the training {name.replace('_', ' ')} became {value} in epoch {epoch + 1}: lower "
                        "the "
                        f"learning rate (it is {lr_now:g}) or check the inputs for NaN"
                    )
            val = (
                _renamed(_validate(task, model, val_loader, val_ctx, ddp), task)
                if val_loader is not None
                else {}
            )
            values = {
                **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()},
            }
            step_schedulers(
                schedulers,
                list(schedulers),
                per_batch=False,
                metric=values.get(history.monitor, values.get("train_loss")),
            )
            history.append({**values, "lr": lr_now, "epoch_time": time.perf_counter() - t0})

            if early_stopping is not None:
                if history.monitor not in history:
                    raise ValueError(
                        f"early_stopping watches monitor={history.monitor!r}, which this run does not "
                        f"record; it records {sorted(history.metrics)}"
                    )
                if history.best_epoch == epoch:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                elif history.best_epoch is not None and epoch - history.best_epoch >= early_stopping:
                    history.stopped_early = True
                history.stopped_early = distributed.broadcast_object(history.stopped_early)  # rank 0 decides
            if checkpoint is not None:
                ckpt.save_run(checkpoint, model, ctx, schedulers, history, train_loader, epoch, best_state)
            if bar is not None:
                bar.set_postfix(_postfix({**train, **{f"val_{k}": v for k, v in val.items()}}))
            if history.stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()

    if early_stopping is not None and best_state is not None:
        model.load_state_dict(best_state)
    return history


def _progress_bar(progress: bool | None, steps_per_epoch: int | None, epochs: int) -> Any:
    """One tqdm bar over every batch of the run, on rank 0 only; None when there is none to show."""
    if progress is None:
        progress = os.environ.get("COURSE_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")
    if not progress or epochs <= 0 or not distributed.is_main_process():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps_per_epoch * epochs if steps_per_epoch else None, unit="batch", dynamic_ncols=True)
