"""One small training loop for the whole course: ``fit``, ``evaluate``, ``predict`` and checkpoints.

Chapter 01 writes a training loop by hand (forward, loss, backward, step); from chapter 02 on the
chapters call :func:`fit`, which adds what every later chapter needs around those four lines:

* a progress bar (tqdm) and a :class:`History` of per-epoch loss, accuracy, learning rate and time;
* mixed precision on CUDA (bf16, or fp16 with a gradient scaler) and optional ``channels_last``;
* a learning-rate scheduler, early stopping on the validation loss;
* a checkpoint written after every epoch, from which an interrupted run resumes and ends with
  exactly the weights an uninterrupted run would have reached.

A typical call::

    history = fit(model, train_loader, val_loader, epochs=10, lr=1e-3, seed=0)
    utils.viz.plot_history(history)

Loaders yield ``(inputs, targets)`` pairs. The loss function must return the *mean* loss of a
batch (PyTorch's default); the epoch loss is the mean over samples. Accuracy is recorded when the
model outputs logits (N, C) and the targets are integer class labels (N,); for any other task
(regression with ``F.mse_loss``, for example) it is NaN.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import utils

__all__ = ["History", "evaluate", "fit", "load_checkpoint", "predict", "save_checkpoint"]

CHECKPOINT_FORMAT = "utils.train/1"

# Schedulers whose schedule is written in batches, not epochs: fit steps them after every batch.
PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)

# The progress bar shows a running loss; reading it forces the GPU to catch up, so do it rarely.
_REFRESH_EVERY = 20


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------
@dataclass
class History:
    """What :func:`fit` records, one entry per epoch (chapter 01 plots one with ``utils.viz.plot_history``).

    Accuracies are NaN when they do not apply (a regression loss); validation entries are NaN
    when there is no validation loader, so that every list has one entry per epoch.
    ``lr`` is the learning rate of the
    first parameter group at the start of the epoch, ``epoch_time`` the seconds the epoch took
    (training and validation). ``best_epoch`` is the 0-based index of the lowest validation loss
    (None without validation); ``stopped_early`` says whether early stopping ended the run.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.train_loss)

    def __len__(self) -> int:
        return self.epochs

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values (lists of floats, ints, bools), safe to save with ``torch.save`` or JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """The inverse of :meth:`as_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown History fields {sorted(unknown)}; expected some of {sorted(names)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})

    def _append(self, *, train_loss, train_acc, val_loss, val_acc, lr, epoch_time) -> None:
        self.train_loss.append(float(train_loss))
        self.train_acc.append(float(train_acc))
        self.val_loss.append(float(val_loss))
        self.val_acc.append(float(val_acc))
        self.lr.append(float(lr))
        self.epoch_time.append(float(epoch_time))
        finite = [(v, i) for i, v in enumerate(self.val_loss) if math.isfinite(v)]
        self.best_epoch = min(finite)[1] if finite else None


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _unpack(batch: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch must be an ``(inputs, targets)`` pair."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        got = f"a dict with keys {sorted(batch)}"
    elif isinstance(batch, (tuple, list)):
        got = f"a {type(batch).__name__} of {len(batch)} items"
    else:
        got = f"a {type(batch).__name__}"
    raise TypeError(f"{where} must yield (inputs, targets) pairs, got {got}")


def _to_device(x: Any, device: torch.device, channels_last: bool = False) -> Any:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs and targets must be tensors, got {type(x).__name__}")
    if channels_last and x.ndim == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)


def _is_classification(output: torch.Tensor, target: torch.Tensor) -> bool:
    """Accuracy applies when the model gives logits (N, C) and the targets are class labels (N,)."""
    return (
        output.ndim == 2
        and output.is_floating_point()
        and target.ndim == 1
        and not target.is_floating_point()
        and target.dtype != torch.bool
        and target.shape[0] == output.shape[0]
    )


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return utils.device()


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_loader(loader: Any, name: str) -> None:
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError(
            f"{name} must be an iterable of (inputs, targets) batches such as a torch.utils.data.DataLoader, "
            f"got {type(loader).__name__}"
        )


def _resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``amp`` asks for on ``device``, or None for full precision.

    ``"auto"``: bf16 on CUDA when the GPU supports it, else fp16; off on CPU and MPS.
    ``"bf16"``: CUDA (when supported) or CPU. ``"fp16"``: CUDA only. ``False``: off.
    """
    if amp is None or amp is False or amp == "off":
        return None
    if amp is True:
        amp = "auto"
    allowed = ("auto", "bf16", "fp16", False)
    if amp not in allowed:
        raise ValueError(f"amp must be one of {allowed}, got {amp!r}")
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if amp == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if bf16_ok else torch.float16
    if amp == "bf16":
        if cuda and not bf16_ok:
            raise ValueError(f"amp='bf16' was asked for, but {torch.cuda.get_device_name(device)} does not support bfloat16; use amp='fp16'")
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"amp='bf16' runs on CUDA and CPU in this loop, not on {device.type}; pass amp=False")
        return torch.bfloat16
    if not cuda:  # fp16
        raise ValueError(f"amp='fp16' needs a CUDA device, but the device is {device.type}; pass amp=False (or amp='bf16' on CPU)")
    return torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Put every submodule in eval mode, then give each back the mode it had (frozen parts stay frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The random generators a DataLoader shuffles with (none: it uses the global torch RNG)."""
    found: list[torch.Generator] = []
    for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _rng_state(loader: Any) -> dict[str, Any]:
    """Every random state a training epoch reads, as plain values ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU-only run leaves CUDA untouched
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any], loader: Any) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generators = _loader_generators(loader)
    if len(generators) != len(state["loader"]):
        warnings.warn(
            f"the checkpoint holds {len(state['loader'])} DataLoader generator state(s) but train_loader has "
            f"{len(generators)}: the resumed run will shuffle differently from an uninterrupted one",
            stacklevel=3,
        )
    else:
        for g, s in zip(generators, state["loader"]):
            g.set_state(s)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, **extra: Any) -> Path:
    """Save the state of ``model`` (and ``optimizer``, ``scheduler``) plus any ``extra`` values to ``path``.

    The file is written next to its destination and then renamed, so an interruption while saving
    leaves the previous checkpoint intact. ``extra`` values should be tensors or plain Python
    values so that :func:`load_checkpoint` can read them safely. Chapter 08 explains checkpoints.
    """
    _check_model(model)
    path = Path(path)
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    reserved = set(state) & set(extra)
    if reserved:
        raise ValueError(f"extra values may not be named {sorted(reserved)}: those keys are the checkpoint's own")
    state.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, *, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``, ``scheduler``).

    Returns the whole checkpoint dict, so that the ``extra`` values saved with it can be read.
    Tensors are loaded onto the devices of the objects they go into. By default the file is read
    with ``torch.load(weights_only=True)``, which cannot run code hidden in a file; pass
    ``weights_only=False`` only for a file you trust that holds other Python objects.
    Chapter 08 explains checkpoints.
    """
    _check_model(model)
    state = _read_checkpoint(path, weights_only)
    _apply_checkpoint(state, path, model, optimizer, scheduler)
    return state


def _read_checkpoint(path: str | os.PathLike, weights_only: bool = True) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        if weights_only and "weights_only" in str(err):
            raise RuntimeError(
                f"{path} holds objects that torch.load(weights_only=True) refuses to unpickle; if you trust "
                f"the file, call load_checkpoint(..., weights_only=False)"
            ) from err
        raise
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a checkpoint written by utils.train.save_checkpoint (no 'model' entry)")
    return state


def _apply_checkpoint(state: dict[str, Any], path: Any, model: nn.Module, optimizer: Any, scheduler: Any) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RuntimeError(f"the checkpoint {path} does not fit this model: {err}") from err
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if name not in state:
            raise ValueError(f"the checkpoint {path} holds no {name} state to load into the {name} given")
        obj.load_state_dict(state[name])


# --------------------------------------------------------------------------------------------
# Evaluation and prediction
# --------------------------------------------------------------------------------------------
def _run_eval(model, loader, loss_fn, device, amp_dtype=None, channels_last=False) -> dict[str, float]:
    total_loss = _accumulator(device, torch.float64)
    correct = _accumulator(device, torch.int64)
    n = n_labelled = 0
    with _eval_mode(model), torch.inference_mode():
        for batch in loader:
            x, y = _unpack(batch, "the evaluation loader")
            x, y = _to_device(x, device, channels_last), _to_device(y, device)
            with _autocast(device, amp_dtype):
                out = model(x)
                loss = loss_fn(out, y)
            total_loss += loss.to(total_loss.dtype) * y.shape[0]
            n += y.shape[0]
            if _is_classification(out, y):
                correct += (out.argmax(dim=1) == y).sum()
                n_labelled += y.shape[0]
    if n == 0:
        raise ValueError("the evaluation loader yielded no batches")
    acc = correct.item() / n_labelled if n_labelled == n else float("nan")
    return {"loss": total_loss.item() / n, "accuracy": acc}


def evaluate(model: nn.Module, loader: Iterable, *, loss_fn: Callable = F.cross_entropy,
             device: str | torch.device | None = None, amp: Any = False) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader``: ``{"loss": float, "accuracy": float}``.

    Runs under ``torch.inference_mode()`` with the model in eval mode, then gives every submodule
    back its previous train/eval mode. ``device`` defaults to the device the model is on (given,
    the model is moved there). ``accuracy`` is NaN when the outputs are not class logits (N, C)
    with integer targets (N,). Chapter 01 computes this by hand.
    """
    _check_model(model)
    _check_loader(loader, "loader")
    device = _model_device(model) if device is None else utils.device(device)
    model.to(device)
    return _run_eval(model, loader, loss_fn, device, _resolve_amp(amp, device))


def predict(model: nn.Module, loader: Iterable, device: str | torch.device | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model outputs for every batch of ``loader``, concatenated on the CPU: ``(logits, targets)``.

    Batches are ``(inputs, targets)`` pairs, or bare input tensors (then ``targets`` is None).
    Runs under ``torch.inference_mode()`` in eval mode and restores the previous modes;
    ``device`` defaults to the model's device. Chapter 08 uses it for the confusion matrix.
    """
    _check_model(model)
    _check_loader(loader, "loader")
    device = _model_device(model) if device is None else utils.device(device)
    model.to(device)
    outputs, targets = [], []
    with _eval_mode(model), torch.inference_mode():
        for batch in loader:
            if isinstance(batch, torch.Tensor):
                x, y = batch, None
            else:
                x, y = _unpack(batch, "loader")
            outputs.append(model(_to_device(x, device)).float().cpu())
            if y is not None:
                targets.append(y.cpu() if isinstance(y, torch.Tensor) else torch.as_tensor(y))
    if not outputs:
        raise ValueError("loader yielded no batches")
    if targets and len(targets) != len(outputs):
        raise ValueError("loader mixed (inputs, targets) pairs with bare input batches")
    return torch.cat(outputs), (torch.cat(targets) if targets else None)


def _accumulator(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A running sum kept on the device, so that adding to it does not wait for the GPU."""
    if dtype == torch.float64 and device.type == "mps":  # MPS has no float64
        dtype = torch.float32
    return torch.zeros((), dtype=dtype, device=device)


def _train_one_epoch(model, loader, loss_fn, optimizer, device, *, amp_dtype=None, scaler=None,
                     channels_last=False, batch_scheduler=None, bar=None) -> tuple[float, float]:
    """One pass over ``loader``: forward, loss, backward, step. Returns (mean loss, accuracy or NaN)."""
    model.train()
    total_loss = _accumulator(device, torch.float64)
    correct = _accumulator(device, torch.int64)
    n = n_labelled = 0
    for i, batch in enumerate(loader):
        x, y = _unpack(batch, "train_loader")
        x, y = _to_device(x, device, channels_last), _to_device(y, device)

        with _autocast(device, amp_dtype):  # (no-op in full precision)
            out = model(x)
            loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scale the loss so that small gradients do not underflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()

        total_loss += loss.detach().to(total_loss.dtype) * y.shape[0]
        n += y.shape[0]
        if _is_classification(out, y):
            correct += (out.detach().argmax(dim=1) == y).sum()
            n_labelled += y.shape[0]
        if bar is not None:
            bar.update(1)
            if i % _REFRESH_EVERY == 0:
                bar.set_postfix(_postfix(total_loss.item() / n, correct.item() / n if n_labelled == n else None))
    if n == 0:
        raise ValueError("train_loader yielded no batches (a generator is used up after one pass: "
                         "pass a DataLoader or a list)")
    return total_loss.item() / n, (correct.item() / n if n_labelled == n else float("nan"))


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *, epochs: int,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        loss_fn: Callable = F.cross_entropy, device: str | torch.device | None = None, amp: Any = "auto",
        channels_last: bool = False, scheduler: Any = None, checkpoint: str | os.PathLike | None = None,
        resume: bool = False, early_stopping: int | None = None, progress: bool | None = None,
        seed: int | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`. Chapter 02 first uses it.

    Arguments:

    * ``train_loader`` / ``val_loader``: iterables of ``(inputs, targets)`` pairs (DataLoaders).
    * ``optimizer``: defaults to ``torch.optim.AdamW(model.parameters(), lr=lr)``.
    * ``loss_fn``: any ``loss_fn(outputs, targets)`` returning the mean loss of a batch.
    * ``device``: defaults to ``utils.device()``; the model is moved there.
    * ``amp``: ``"auto"`` uses mixed precision on CUDA (bf16 where the GPU supports it, else fp16
      with a gradient scaler) and full precision on CPU and MPS; ``"bf16"`` / ``"fp16"`` ask for
      one explicitly (an error where the device cannot); ``False`` turns it off.
    * ``channels_last``: convert the model and every 4-D input to the channels-last memory format.
    * ``scheduler``: a learning-rate scheduler built on ``optimizer``, or a function
      ``optimizer -> scheduler`` (handy with the default optimizer). It is stepped once per epoch,
      except ``OneCycleLR`` and ``CyclicLR``, which are stepped after every batch (build them with
      ``total_steps = epochs * len(train_loader)``); ``ReduceLROnPlateau`` is given the validation
      loss (the training loss without validation).
    * ``checkpoint``: a file written at the end of every epoch with the model, optimizer,
      scheduler, gradient scaler, history and every random state (torch, CUDA, NumPy, Python,
      the loader's generator). ``resume=True`` continues from it at the next epoch (when the file
      does not exist yet the run starts from epoch 1, so the same cell serves both). With the same
      ``seed``, a resumed run ends with exactly the weights of an uninterrupted one (for loaders
      with ``num_workers=0`` or non-persistent workers). Without ``resume`` an existing file is
      overwritten.
    * ``early_stopping``: a patience ``p`` (needs ``val_loader``): stop when the validation loss
      has not improved for ``p`` epochs. At the end the model gets back the weights of the epoch
      with the lowest validation loss (``history.best_epoch``), whether or not it stopped early.
    * ``progress``: one tqdm bar over all batches of all epochs, showing loss and accuracy. The
      default (``None``) shows it unless the environment variable ``COURSE_PROGRESS`` is ``0``, as
      in the website build, where a saved progress bar would tell a reader nothing.
    * ``seed``: when given, seed Python, NumPy, torch and the loader's generator first.
    """
    # ---- check the arguments -------------------------------------------------------------
    _check_model(model)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    epochs = int(epochs)
    _check_loader(train_loader, "train_loader")
    if val_loader is not None:
        _check_loader(val_loader, "val_loader")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if early_stopping is not None:
        if isinstance(early_stopping, bool) or not isinstance(early_stopping, int) or early_stopping < 1:
            raise ValueError(f"early_stopping must be a positive int (the patience in epochs) or None, got {early_stopping!r}")
        if val_loader is None:
            raise ValueError("early_stopping watches the validation loss: pass a val_loader")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint='path.pt', the file to resume from")

    if seed is not None:
        utils.seed_everything(seed)
        for g in _loader_generators(train_loader):
            g.manual_seed(seed)

    device = utils.device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    if optimizer is None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    else:
        own = {id(p) for p in model.parameters()}
        if not any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("the optimizer updates none of this model's parameters: build it with model.parameters()")
    if scheduler is not None and not hasattr(scheduler, "step"):
        if not callable(scheduler):
            raise TypeError(f"scheduler must be a learning-rate scheduler or a function optimizer -> scheduler, got {type(scheduler).__name__}")
        scheduler = scheduler(optimizer)
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("the scheduler was built on another optimizer than the one fit uses: pass that optimizer too")
    per_batch = isinstance(scheduler, PER_BATCH_SCHEDULERS)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    amp_dtype = _resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # ---- resume ------------------------------------------------------------------------------
    history = History()
    start = 0
    best_state = None
    if resume and Path(checkpoint).is_file():
        state = _read_checkpoint(checkpoint)
        if "epoch" not in state or "history" not in state or "rng" not in state:
            raise ValueError(f"{checkpoint} was not written by fit (it lacks epoch, history or random states)")
        _apply_checkpoint(state, checkpoint, model, optimizer, scheduler)
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        history = History.from_dict(state["history"])
        start = int(state["epoch"])
        best_state = state.get("best_model")
        _set_rng_state(state["rng"], train_loader)
        if start > epochs:
            warnings.warn(f"{checkpoint} already holds {start} epochs, more than epochs={epochs}; nothing to train", stacklevel=2)
        if history.stopped_early:
            start = max(start, epochs)  # that run is over: only restore its best weights below

    # ---- train -------------------------------------------------------------------------------
    try:
        steps_per_epoch = len(train_loader)
    except TypeError:
        steps_per_epoch = None
    bar = None
    if progress is None:
        progress = os.environ.get("COURSE_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")
    if progress and start < epochs:
        from tqdm.auto import tqdm

        total = steps_per_epoch * (epochs - start) if steps_per_epoch else None
        bar = tqdm(total=total, unit="batch", dynamic_ncols=True)

    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            lr_now = _current_lr(optimizer)
            if bar is not None:
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
            train_loss, train_acc = _train_one_epoch(
                model, train_loader, loss_fn, optimizer, device, amp_dtype=amp_dtype, scaler=scaler,
                channels_last=channels_last, batch_scheduler=scheduler if per_batch else None, bar=bar)
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning rate "
                    f"(it is {lr_now:g}) or check the inputs for NaN"
                )

            if val_loader is not None:
                val = _run_eval(model, val_loader, loss_fn, device, amp_dtype, channels_last)
            else:
                val = {"loss": float("nan"), "accuracy": float("nan")}

            if scheduler is not None and not per_batch:
                if plateau:
                    scheduler.step(val["loss"] if val_loader is not None else train_loss)
                else:
                    scheduler.step()

            history._append(train_loss=train_loss, train_acc=train_acc, val_loss=val["loss"],
                            val_acc=val["accuracy"], lr=lr_now, epoch_time=time.perf_counter() - t0)

            if early_stopping is not None:
                if history.best_epoch == epoch:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                elif history.best_epoch is not None and epoch - history.best_epoch >= early_stopping:
                    history.stopped_early = True

            if checkpoint is not None:
                extra = {"scaler": scaler.state_dict() if scaler is not None else None,
                         "epoch": epoch + 1, "history": history.as_dict(), "rng": _rng_state(train_loader)}
                if best_state is not None:
                    extra["best_model"] = best_state
                save_checkpoint(checkpoint, model, optimizer, scheduler, **extra)

            if bar is not None:
                bar.set_postfix(_postfix(train_loss, train_acc, val["loss"], val["accuracy"]))
            if history.stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()

    if early_stopping is not None and best_state is not None:
        model.load_state_dict(best_state)
    return history


def _postfix(loss: float, acc: float | None, val_loss: float | None = None, val_acc: float | None = None) -> dict[str, str]:
    shown = {"loss": loss, "acc": acc, "val_loss": val_loss, "val_acc": val_acc}
    return {k: f"{v:.4f}" for k, v in shown.items() if v is not None and math.isfinite(v)}

