"""Small helpers that several modules share: argument checks, batches, devices, the optimizer step.

Each exists once here, so that ``utils.train``, ``utils.debug``, ``utils.optim`` and
``utils.interpret`` check their arguments with the same words and move batches the same way:

* :func:`check_model`, :func:`check_loader`: a clear ``TypeError`` for a wrong argument;
* :func:`model_device`: the device a model lives on;
* :func:`unpack_batch`: an ``(inputs, targets)`` pair out of a batch, or a clear error;
* :func:`move_to`: tensors inside tuples, lists and dicts moved to a device, recursively;
* :func:`eval_mode`: eval mode for a while, then every submodule gets back the mode it had
  (:func:`keep_modes`: the same for any change of modes);
* :func:`optimizer_step`: zero the gradients, back-propagate, (clip,) step: the four lines of
  chapter 01's training loop, with an optional fp16 gradient scaler; :func:`backward` and
  :func:`apply_step` are its two halves, for gradient accumulation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "apply_step",
    "backward",
    "check_loader",
    "check_model",
    "eval_mode",
    "keep_modes",
    "model_device",
    "move_to",
    "optimizer_step",
    "unpack_batch",
]


def check_model(model: Any, name: str = "model") -> nn.Module:
    """``model`` itself when it is an ``nn.Module``; else a ``TypeError`` naming ``name``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_loader(loader: Any, name: str = "loader") -> Iterable:
    """``loader`` itself when it can be iterated over batches (a DataLoader, a list of batches, ...).

    A tensor, a string or a non-iterable is a ``TypeError`` naming ``name``: iterating over a
    tensor would silently train on its rows one at a time.
    """
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError(
            f"{name} must be an iterable of batches such as a torch.utils.data.DataLoader, "
            f"got {type(loader).__name__}"
        )
    return loader


def model_device(model: nn.Module, default: str | torch.device | None = None) -> torch.device:
    """The device of the model's first parameter, else of its first buffer, else ``default`` (CPU if None)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(default if default is not None else "cpu")


def _describe(batch: Any) -> str:
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(batch)}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return f"a {type(batch).__name__}"


def unpack_batch(batch: Any, where: str = "each batch", *, tensors: bool = False) -> tuple[Any, Any]:
    """The ``(inputs, targets)`` of a batch that is a pair (a tuple or list of two items).

    Anything else is a ``TypeError`` naming ``where`` (``"each batch of train_loader"``) and what
    came instead. With ``tensors=True`` both items must be tensors.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        if tensors and not all(isinstance(t, torch.Tensor) for t in batch):
            got = ", ".join(type(t).__name__ for t in batch)
            raise TypeError(f"{where} must be an (inputs, targets) pair of tensors, got a pair of ({got})")
        return batch[0], batch[1]
    raise TypeError(f"{where} must be an (inputs, targets) pair, got {_describe(batch)}")


def move_to(obj: Any, device: str | torch.device, *, channels_last: bool = False) -> Any:
    """``obj`` with every tensor in it moved to ``device``: tensors, and tuples, lists and dicts of them.

    Goes through nested containers (a list of images of different sizes, a list of target dicts);
    anything that is not a tensor comes back as it is. With ``channels_last`` every 4-D tensor is
    also put in the channels-last memory format (chapter 07). Copies are non-blocking, so that a
    pinned CPU batch overlaps with the GPU's work.
    """
    if isinstance(obj, torch.Tensor):
        if channels_last and obj.ndim == 4:
            return obj.to(device, non_blocking=True, memory_format=torch.channels_last)
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):  # a plain dict comes back (in the same order)
        return {k: move_to(v, device, channels_last=channels_last) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple keeps its type
        return type(obj)(*(move_to(v, device, channels_last=channels_last) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(v, device, channels_last=channels_last) for v in obj)
    return obj


@contextlib.contextmanager
def keep_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the ``with`` block the modes may change; then every submodule gets back the mode it had."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside the ``with`` block; afterwards each gets back the mode it had.

    ``model.train()`` after an evaluation would also switch back parts the learner had put in eval
    mode on purpose (a frozen backbone's batch norm); this restores them one by one.
    """
    with keep_modes(model):
        model.eval()
        yield model


def optimizer_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, scaler: Any = None, max_norm: float | None = None
) -> None:
    """Zero the gradients, back-propagate ``loss``, clip, and take one optimizer step. Chapter 01 writes it.

    ``scaler`` is an fp16 ``torch.amp.GradScaler`` (the loss is scaled before the backward pass
    so that small gradients do not underflow, and unscaled before clipping); ``max_norm`` clips the
    global gradient norm of the optimizer's parameters (chapter 04). ``utils.train`` splits the
    same steps over gradient accumulation: see :func:`backward` and :func:`apply_step`.
    """
    optimizer.zero_grad(set_to_none=True)
    backward(loss, scaler)
    apply_step(optimizer, scaler=scaler, max_norm=max_norm)


def backward(loss: torch.Tensor, scaler: Any = None) -> None:
    """``loss.backward()``, through the gradient scaler when there is one."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


def apply_step(
    optimizer: torch.optim.Optimizer, *, scaler: Any = None, max_norm: float | None = None
) -> None:
    """One step with the gradients already accumulated: unscale, clip to ``max_norm``, step, update the
    scaler."""
    if max_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
