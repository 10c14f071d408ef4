"""Tasks: what one training step is. :func:`utils.train.fit` owns the loop, a task owns the step.

A task says how to turn a batch into a loss (``training_step``), what to measure on validation
batches (``validation_step``) and over the whole validation set (``validation_epoch_end``), and
which optimizers to build (``configure_optimizers``). The loop does the rest: devices, progress bar,
mixed precision, clipping, accumulation, checkpoints, early stopping and DDP. This file holds the
protocol (:class:`Task`), :class:`Classification` (the default) and :class:`Distillation`;
``vision_tasks`` holds :class:`~utils.train.vision_tasks.Detection` and
:class:`~utils.train.vision_tasks.Segmentation`, ``generative`` holds
:class:`~utils.train.generative.Reconstruction` and :class:`~utils.train.generative.GAN`.

A chapter that needs a new kind of step writes a task of a few lines::

    class Regression(Task):
        def training_step(self, model, batch, ctx):
            x, y = batch
            with ctx.autocast():
                loss = F.smooth_l1_loss(model(x), y)
            return {"loss": loss}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from utils.common import unpack_batch

__all__ = ["Classification", "Distillation", "Task", "batch_size", "full_precision", "images_of"]


class Task:
    """The protocol between :func:`utils.train.fit` and what it trains. Subclass it and override the steps.

    * ``configure_optimizers(model, lr)`` returns one optimizer or a dict ``name -> optimizer``
      (default: ``AdamW`` over the parameters that require a gradient, so a frozen backbone is left
      out). Used when ``fit`` is given no ``optimizer``.
    * ``training_step(model, batch, ctx) -> dict``: the batch is already on the device. Its ``"loss"``
      (a scalar tensor, the batch mean) is back-propagated by the loop; every entry is logged in the
      History as ``train_<key>``. A value is a scalar (the mean over the batch, weighted by
      :meth:`batch_size` when averaged over the epoch) or a pair ``(sum, count)`` (added up
      separately: exact for an accuracy over pixels or boxes). A task with
      ``automatic_optimization = False`` calls ``ctx.backward(loss, name)`` and ``ctx.step(name)``
      itself (the GAN alternates two optimizers) and need not return a ``"loss"``.
    * ``validation_step(model, batch, ctx) -> dict`` runs in eval mode under
      ``torch.inference_mode()``; logged as ``val_<key>`` (default: the training step's dict).
    * ``validation_epoch_start()`` / ``validation_epoch_end() -> dict[str, float]``: metrics over the
      whole validation set (mAP, mIoU), logged as ``val_<key>``.
    * ``setup(model, device)``: called once before training or evaluation (move a teacher).

    Class attributes: ``automatic_optimization``; ``history_names`` renames step keys in the History
    (:class:`Classification` logs its ``"accuracy"`` as ``train_acc`` / ``val_acc``); ``ddp``: under
    torchrun the model is wrapped in ``DistributedDataParallel`` (False: the loop averages the
    gradients in ``ctx.step`` instead, for a task that calls parts of the model separately);
    ``find_unused_parameters`` is passed to DDP.
    """

    automatic_optimization: bool = True
    history_names: ClassVar[dict[str, str]] = {}
    ddp: bool = True
    find_unused_parameters: bool = False

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once before training or evaluation, with the model already on ``device``."""

    def configure_optimizers(self, model: nn.Module, lr: float = 1e-3) -> Any:
        """``AdamW(lr)`` over the parameters that require a gradient."""
        return torch.optim.AdamW(trainable(model), lr=lr)

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define training_step(model, batch, ctx)")

    def validation_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        return self.training_step(model, batch, ctx)

    def validation_epoch_start(self) -> None:
        """Reset what ``validation_epoch_end`` measures."""

    def validation_epoch_end(self) -> dict[str, float]:
        return {}

    def batch_size(self, batch: Any) -> int:
        """Number of samples in ``batch`` (weights the epoch means)."""
        return batch_size(batch)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` that require a gradient (a clear error when there are none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    return params


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor, or the length of its list of images."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        key = "image" if "image" in batch else next(iter(batch), None)
        return batch_size(batch[key]) if key is not None else 0
    if isinstance(batch, (tuple, list)):
        if not batch:
            return 0
        first = batch[0]
        if isinstance(first, (torch.Tensor, tuple, list)):
            return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else len(first)
        return len(batch)  # a list of samples (dicts)
    raise TypeError(
        f"cannot tell the size of a batch of type {type(batch).__name__}: override Task.batch_size"
    )


def images_of(batch: Any, where: str) -> torch.Tensor:
    """The images of a batch that is a tensor, an ``(images, labels)`` pair or a dict with ``"image"``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), torch.Tensor):
        return batch["image"]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(
        f"{where} must be an image tensor, an (images, labels) pair or a dict with an 'image' "
        f"tensor, got {type(batch).__name__}"
    )


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when autocast gave it in float16 or bfloat16 (losses are computed in fp32)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _tensors(x: Any, y: Any, where: str) -> None:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError(
            f"inputs and targets of {where} must be tensors, got {type(x).__name__} and {type(y).__name__}"
        )


def is_classification(output: torch.Tensor, target: torch.Tensor) -> bool:
    """Accuracy applies when the model gives logits (N, C) and the targets are class labels (N,)."""
    return (
        isinstance(output, torch.Tensor)
        and output.ndim == 2
        and output.is_floating_point()
        and target.ndim == 1
        and not target.is_floating_point()
        and target.dtype != torch.bool
        and target.shape[0] == output.shape[0]
    )


def accuracy(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int] | float:
    """``(number correct, number of samples)`` for class logits, NaN for any other output."""
    if not is_classification(output, target):
        return math.nan
    return (output.detach().argmax(dim=1) == target).sum(), int(target.shape[0])


class Classification(Task):
    """``loss_fn(model(x), y)`` on ``(inputs, targets)`` pairs: what :func:`fit` did from the start.

    Logs ``loss`` and ``accuracy`` (as ``train_acc`` / ``val_acc``; NaN when the outputs are not
    class logits (N, C) with integer targets (N,), e.g. a regression with ``F.mse_loss``).
    ``loss_fn`` must return the mean loss of a batch. Chapter 02 first trains with it.
    """

    history_names: ClassVar[dict[str, str]] = {"accuracy": "acc"}

    def __init__(self, loss_fn: Callable = F.cross_entropy) -> None:
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}"
            )
        self.loss_fn = loss_fn

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        x, y = unpack_batch(batch, f"each batch of {ctx.where}")
        _tensors(x, y, ctx.where)
        with ctx.autocast():  # (a no-op in full precision)
            out = model(x)
            loss = self.loss_fn(out, y)
        return {"loss": loss, "accuracy": accuracy(out, y)}

    def batch_size(self, batch: Any) -> int:
        return int(batch[1].shape[0])


class Distillation(Classification):
    """Knowledge distillation (Hinton et al., 2015): the student learns the teacher's softened outputs.

    On each batch ``(x, y)`` the ``teacher`` (put in eval mode, run without gradients) gives logits
    ``t`` and the student (the model being trained) ``s``. With temperature ``T``::

        kd   = T^2 * KL(softmax(t / T) || softmax(s / T))     (mean over the batch)
        loss = alpha * kd + (1 - alpha) * loss_fn(s, y)

    The ``T^2`` keeps the size of the soft gradients independent of ``T``. Batches may also be bare
    input tensors (no labels: then ``alpha`` must be 1). Logs ``loss``, ``kd``, ``ce`` (the hard-label
    loss) and ``accuracy``. Chapter 16 uses it to shrink a network.
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.9,
        loss_fn: Callable = F.cross_entropy,
    ) -> None:
        super().__init__(loss_fn)
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.teacher.to(device).eval()

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        if isinstance(batch, torch.Tensor):
            if self.alpha != 1:
                raise ValueError(f"{ctx.where} yields inputs without labels: distil with alpha=1")
            x, y = batch, None
        else:
            x, y = unpack_batch(batch, f"each batch of {ctx.where}")
        with ctx.autocast():
            student = model(x)
            with torch.no_grad():
                teacher = self.teacher(x)
        kd = distillation_loss(student, teacher, self.temperature)
        out: dict[str, Any] = {"kd": kd}
        if y is None:
            out["loss"] = kd
            return out
        with ctx.autocast():
            ce = self.loss_fn(student, y)
        out.update(loss=self.alpha * kd + (1 - self.alpha) * ce, ce=ce, accuracy=accuracy(student, y))
        return out

    def batch_size(self, batch: Any) -> int:
        return batch_size(batch)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (N, C)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    t = temperature
    log_p_student = F.log_softmax(full_precision(student) / t, dim=1)
    log_p_teacher = F.log_softmax(full_precision(teacher) / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
