"""Checkpoints: the weights, the optimizers' and schedulers' states, and every random state of a run.

Chapter 08 explains them. A file is written next to its destination under a name of its own and then
renamed over it (``os.replace`` is atomic), so an interruption while saving, or another process
saving at the same moment, never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import random
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.common import check_model
from utils.train import distributed
from utils.train.history import History

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

# 1: the first fit (one optimizer, one random state). 2: also dicts of named optimizers and schedulers,
# and a list of random states, one per process, under torchrun. Files of format 1 still load.
CHECKPOINT_FORMAT = "utils.train/2"


def _states(obj: Any) -> Any:
    """``obj.state_dict()``, or a dict ``name -> state_dict`` for a dict of optimizers or schedulers."""
    if isinstance(obj, Mapping):
        return {name: o.state_dict() for name, o in obj.items()}
    return obj.state_dict()


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: Any = None, scheduler: Any = None, **extra: Any
) -> Path:
    """Save the state of ``model`` (and ``optimizer``, ``scheduler``) plus any ``extra`` values to ``path``.

    ``optimizer`` and ``scheduler`` may also be dicts ``name -> optimizer`` (a GAN's generator and
    discriminator). ``extra`` values should be tensors or plain Python values so that
    :func:`load_checkpoint` can read them safely. The file is written under a unique temporary name
    in the same folder and renamed over ``path``, so an interruption while saving leaves the
    previous checkpoint intact. Chapter 08 explains checkpoints.
    """
    check_model(model)
    path = Path(path)
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = _states(optimizer)
    if scheduler is not None:
        state["scheduler"] = _states(scheduler)
    reserved = set(state) & set(extra)
    if reserved:
        raise ValueError(
            f"extra values may not be named {sorted(reserved)}: those keys are the checkpoint's own"
        )
    state.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")  # no two writers share it
    try:
        with open(tmp, "xb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``, ``scheduler``).

    Returns the whole checkpoint dict, so that the ``extra`` values saved with it can be read.
    Tensors are loaded onto the devices of the objects they go into. By default the file is read
    with ``torch.load(weights_only=True)``, which cannot run code hidden in a file; pass
    ``weights_only=False`` only for a file you trust that holds other Python objects.
    Chapter 08 explains checkpoints.
    """
    check_model(model)
    state = read_checkpoint(path, weights_only)
    apply_checkpoint(state, path, model, optimizer, scheduler)
    return state


def read_checkpoint(path: str | os.PathLike, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint dict in ``path`` (on the CPU), or a clear error."""
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
        raise ValueError(
            f"{path} is not a checkpoint written by utils.train.save_checkpoint (no 'model' entry)"
        )
    return state


def apply_checkpoint(
    state: dict[str, Any], path: Any, model: nn.Module, optimizer: Any, scheduler: Any
) -> None:
    """Load the model's, optimizers' and schedulers' states of a checkpoint dict into the objects given."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RuntimeError(f"the checkpoint {path} does not fit this model: {err}") from err
    for what, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if what not in state:
            raise ValueError(f"the checkpoint {path} holds no {what} state to load into the {what} given")
        saved = state[what]
        if not isinstance(obj, Mapping):
            if what == "optimizer" and "param_groups" not in saved:
                raise ValueError(
                    f"the checkpoint {path} holds the states of several optimizers {sorted(saved)}: "
                    f"pass a dict with those names"
                )
            obj.load_state_dict(saved)
            continue
        if sorted(saved) != sorted(obj):
            raise ValueError(
                f"the checkpoint {path} holds {what} states named {sorted(saved)}, "
                f"but the {what}s given are named {sorted(obj)}"
            )
        for name, o in obj.items():
            o.load_state_dict(saved[name])


# --------------------------------------------------------------------------------------------
# Random states
# --------------------------------------------------------------------------------------------
def loader_generators(loader: Any) -> list[torch.Generator]:
    """The random generators a DataLoader shuffles with (none: it uses the global torch RNG)."""
    found: list[torch.Generator] = []
    for g in (
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
    ):
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def rng_state(loader: Any) -> dict[str, Any]:
    """Every random state a training epoch reads, as values ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
        "loader": [g.get_state() for g in loader_generators(loader)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU-only run leaves CUDA untouched
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], loader: Any) -> None:
    """Restore what :func:`rng_state` saved (the loader's generators included)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generators = loader_generators(loader)
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
    if (
        "mps" in state
        and getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        torch.mps.set_rng_state(state["mps"])


# --------------------------------------------------------------------------------------------
# What fit saves and resumes from
# --------------------------------------------------------------------------------------------
def _packed(objects: dict[str, Any], ctx: Any) -> Any:
    """What a checkpoint stores: the object itself for a run with one optimizer, else the dict by name."""
    if len(ctx.optimizers) == 1:
        return next(iter(objects.values()), None)
    return objects or None


def save_run(
    path: Any,
    model: nn.Module,
    ctx: Any,
    schedulers: dict,
    history: History,
    loader: Any,
    epoch: int,
    best_state: dict | None,
) -> None:
    """The checkpoint fit writes after an epoch (on rank 0; every process's random state in it)."""
    rng = rng_state(loader)
    if distributed.is_distributed():
        rng = distributed.all_gather_objects(rng)  # one random state per process
    if distributed.is_main_process():
        scalers = {name: s.state_dict() if s is not None else None for name, s in ctx.scalers.items()}
        extra = {
            "scaler": _packed(scalers, ctx),
            "epoch": epoch + 1,
            "history": history.as_dict(),
            "rng": rng,
        }
        if best_state is not None:
            extra["best_model"] = best_state
        save_checkpoint(path, model, _packed(ctx.optimizers, ctx), _packed(schedulers, ctx), **extra)
    distributed.barrier()  # nobody reads the file before rank 0 has written it


def resume_run(
    path: Any, model: nn.Module, ctx: Any, schedulers: dict, history: History, loader: Any, epochs: int
) -> tuple[int, dict | None, History]:
    """Load a checkpoint written by fit: ``(epochs done, best weights or None, History)``."""
    state = read_checkpoint(path)
    if "epoch" not in state or "history" not in state or "rng" not in state:
        raise ValueError(f"{path} was not written by fit (it lacks epoch, history or random states)")
    apply_checkpoint(state, path, model, _packed(ctx.optimizers, ctx), _packed(schedulers, ctx))
    saved = state.get("scaler")
    for name, scaler in ctx.scalers.items():
        s = saved.get(name) if isinstance(saved, dict) and len(ctx.scalers) > 1 else saved
        if scaler is not None and s is not None:
            scaler.load_state_dict(s)
    resumed = History.from_dict({**state["history"], "monitor": history.monitor, "mode": history.mode})
    resumed.best_epoch = resumed._best()
    rng = state["rng"]
    if isinstance(rng, list):  # written under torchrun: one state per process
        if len(rng) == distributed.world_size():
            set_rng_state(rng[distributed.rank()], loader)
        else:
            warnings.warn(
                f"{path} holds the random states of {len(rng)} processes but this run has "
                f"{distributed.world_size()}: the resumed run will not repeat the uninterrupted one",
                stacklevel=3,
            )
    else:
        set_rng_state(rng, loader)
    start = int(state["epoch"])
    if start > epochs:
        warnings.warn(
            f"{path} already holds {start} epochs, more than epochs={epochs}; nothing to train", stacklevel=3
        )
    if resumed.stopped_early:
        start = max(start, epochs)  # that run is over: only restore its best weights
    return start, state.get("best_model"), resumed
