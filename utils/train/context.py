"""What a task's step may use (:class:`StepContext`), and how :func:`fit` turns its arguments into
optimizers, schedulers and a mixed-precision setting."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from utils.common import apply_step, backward
from utils.train import distributed

__all__ = ["StepContext", "resolve_amp", "resolve_optimizers", "resolve_schedulers"]

# Schedulers whose schedule is written in batches, not epochs: fit steps them after every optimizer step.
PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


class StepContext:
    """The loop's side of a step: the device, mixed precision, and the backward pass and optimizer step.

    A task's ``training_step(model, batch, ctx)`` runs its forward pass inside ``with ctx.autocast():``.
    With automatic optimization the loop back-propagates the returned ``"loss"``; a task that steps
    several optimizers itself (``automatic_optimization = False``, the GAN) calls, for each,
    ``ctx.backward(loss, name)`` then ``ctx.step(name)``. Between them the context applies

    * the fp16 gradient scaler (one per optimizer) when ``amp`` asks for float16;
    * gradient accumulation: the gradients of ``accumulate`` consecutive batches are added up (each
      loss divided by the number of batches in the window) and ``ctx.step`` only steps on the last
      batch of a window, so that it equals one batch that many times larger;
    * clipping of the global gradient norm to ``grad_clip`` (after unscaling);
    * under torchrun, the loop runs the step inside DDP's ``no_sync()`` except on the last batch of a
      window; for a task that is not wrapped in DDP, ``ctx.step`` averages the gradients itself.

    Attributes a step may read: ``device``, ``epoch`` and ``batch_idx`` (0-based), ``optimizers``
    (dict name -> optimizer), ``where`` (the loader's name, for error messages).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        amp_dtype: torch.dtype | None = None,
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        grad_clip: float | None = None,
        accumulate: int = 1,
        average_gradients: bool = False,
        channels_last: bool = False,
        where: str = "the loader",
    ) -> None:
        self.device = device
        self.channels_last = channels_last
        self.amp_dtype = amp_dtype
        self.optimizers = dict(optimizers or {})
        fp16 = amp_dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler(device.type) if fp16 else None for name in self.optimizers}
        self.grad_clip = grad_clip
        self.accumulate = accumulate
        self.average_gradients = average_gradients
        self.where = where
        self.epoch = 0
        self.batch_idx = 0
        self.steps_per_epoch: int | None = None
        self.stepped: set[str] = set()  # the optimizers that stepped in the current batch
        self._pending: set[str] = set()  # optimizers holding gradients not yet stepped

    # ---- what the loop calls ----------------------------------------------------------------
    def begin_batch(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx
        self.stepped = set()

    @property
    def window_size(self) -> int:
        """Number of batches whose gradients the current optimizer step adds up (``accumulate``, or fewer
        in the last window of an epoch)."""
        start = self.batch_idx - self.batch_idx % self.accumulate
        if self.steps_per_epoch is None:
            return self.accumulate
        return min(self.accumulate, self.steps_per_epoch - start)

    @property
    def end_of_window(self) -> bool:
        """True on the batch where the accumulated gradients are applied."""
        last = self.steps_per_epoch is not None and self.batch_idx == self.steps_per_epoch - 1
        return last or self.batch_idx % self.accumulate == self.accumulate - 1

    def flush(self) -> None:
        """At the end of an epoch, step every optimizer that still holds accumulated gradients."""
        for name in sorted(self._pending):
            self._apply(name)

    # ---- what a task calls ------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` with the run's mixed-precision dtype (nothing in full precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _name(self, name: str | None) -> str:
        if not self.optimizers:
            raise RuntimeError(
                "no optimizer here: backward and step belong to training steps, not to validation"
            )
        if name is None:
            if len(self.optimizers) > 1:
                raise ValueError(
                    f"this run has several optimizers {sorted(self.optimizers)}: name the one to use"
                )
            return next(iter(self.optimizers))
        if name not in self.optimizers:
            raise KeyError(f"no optimizer named {name!r}; this run has {sorted(self.optimizers)}")
        return name

    def backward(self, loss: torch.Tensor, optimizer_name: str | None = None) -> None:
        """Back-propagate ``loss`` into the gradients that optimizer ``optimizer_name`` will apply.

        The first backward pass after a step clears that optimizer's old gradients; the loss is
        divided by the number of batches in the accumulation window and scaled by the fp16 scaler.
        """
        name = self._name(optimizer_name)
        if name not in self._pending:
            self.optimizers[name].zero_grad(set_to_none=True)
            self._pending.add(name)
        if self.window_size != 1:
            loss = loss / self.window_size
        backward(loss, self.scalers[name])

    def step(self, optimizer_name: str | None = None) -> bool:
        """Apply the accumulated gradients with optimizer ``optimizer_name`` if this batch ends a window.

        Returns whether it stepped. Unscales and clips first (``grad_clip``).
        """
        name = self._name(optimizer_name)
        if name not in self._pending or not self.end_of_window:
            return False
        self._apply(name)
        return True

    def _apply(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.average_gradients and distributed.is_distributed():
            distributed.average_gradients([p for g in optimizer.param_groups for p in g["params"]])
        apply_step(optimizer, scaler=self.scalers[name], max_norm=self.grad_clip)
        self._pending.discard(name)
        self.stepped.add(name)


# --------------------------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------------------------
def resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
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
            raise ValueError(
                f"amp='bf16' was asked for, but {torch.cuda.get_device_name(device)} does not "
                f"support bfloat16; use amp='fp16'"
            )
        if device.type not in ("cuda", "cpu"):
            raise ValueError(
                f"amp='bf16' runs on CUDA and CPU in this loop, not on {device.type}; pass amp=False"
            )
        return torch.bfloat16
    if not cuda:  # fp16
        raise ValueError(
            f"amp='fp16' needs a CUDA device, but the device is {device.type}; pass amp=False "
            f"(or amp='bf16' on CPU)"
        )
    return torch.float16


# --------------------------------------------------------------------------------------------
# Optimizers and schedulers
# --------------------------------------------------------------------------------------------
def resolve_optimizers(
    task: Any, model: nn.Module, optimizer: Any, lr: Any
) -> dict[str, torch.optim.Optimizer]:
    """The run's optimizers by name: ``optimizer`` (one, or a dict), else ``task.configure_optimizers``."""
    if optimizer is None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        takes_lr = "lr" in inspect.signature(task.configure_optimizers).parameters
        optimizer = task.configure_optimizers(model, lr=lr) if takes_lr else task.configure_optimizers(model)
    optimizers = dict(optimizer) if isinstance(optimizer, Mapping) else {"optimizer": optimizer}
    own = {id(p) for p in model.parameters()}
    for name, opt in optimizers.items():
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer (or a dict of them), got "
                f"{type(opt).__name__}" + (f" for {name!r}" if len(optimizers) > 1 else "")
            )
        if not any(id(p) in own for group in opt.param_groups for p in group["params"]):
            raise ValueError(
                "the optimizer updates none of this model's parameters: build it with model.parameters()"
            )
    if not optimizers:
        raise ValueError("the task configured no optimizer")
    return optimizers


def resolve_schedulers(scheduler: Any, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """The run's learning-rate schedulers by optimizer name.

    ``scheduler`` is a scheduler, a function ``optimizer -> scheduler`` (one optimizer), or a dict
    ``optimizer name -> either``.
    """
    if scheduler is None:
        return {}
    if isinstance(scheduler, Mapping):
        unknown = set(scheduler) - set(optimizers)
        if unknown:
            raise ValueError(
                f"schedulers given for {sorted(unknown)}, but the optimizers are {sorted(optimizers)}"
            )
        return {name: _build_scheduler(s, optimizers[name]) for name, s in scheduler.items()}
    if hasattr(scheduler, "step"):
        for name, opt in optimizers.items():
            if getattr(scheduler, "optimizer", opt) is opt:
                return {name: scheduler}
        raise ValueError(
            "the scheduler was built on another optimizer than the one fit uses: pass that optimizer too"
        )
    if len(optimizers) > 1:
        raise ValueError(
            f"with several optimizers {sorted(optimizers)}, pass scheduler as a dict name -> scheduler"
        )
    name, opt = next(iter(optimizers.items()))
    return {name: _build_scheduler(scheduler, opt)}


def _build_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    if not hasattr(scheduler, "step"):
        if not callable(scheduler):
            raise TypeError(
                f"scheduler must be a learning-rate scheduler or a function optimizer -> scheduler, "
                f"got {type(scheduler).__name__}"
            )
        scheduler = scheduler(optimizer)
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError(
            "the scheduler was built on another optimizer than the one fit uses: pass that optimizer too"
        )
    return scheduler


def step_schedulers(
    schedulers: dict[str, Any], names: Any, *, per_batch: bool, metric: float | None = None
) -> None:
    """Step the schedulers of ``names``: the per-batch ones after a batch, the others after an epoch."""
    for name in names:
        s = schedulers.get(name)
        if s is None or isinstance(s, PER_BATCH_SCHEDULERS) != per_batch:
            continue
        if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
            s.step(metric)
        else:
            s.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
