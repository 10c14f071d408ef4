"""What :func:`utils.train.fit` records: any number of named metrics, one value per epoch."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["History", "infer_mode"]

# The attributes of the first History (a dataclass with these six lists); they stay readable as properties.
CLASSIC = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time")
_SETTINGS = ("best_epoch", "stopped_early", "monitor", "mode")

# Metrics where larger is better; everything else (losses, errors, KL) is smaller-is-better.
_LARGER_IS_BETTER = re.compile(
    r"(^|_)(acc|accuracy|map(_\w+)?|mar(_\w+)?|miou|mdice|dice|iou|f1|auc|precision|recall)$"
)


def infer_mode(monitor: str) -> str:
    """``"max"`` for a metric where larger is better (accuracy, mAP, mIoU, Dice), ``"min"`` for a loss.

    A name that is neither is an error: pass ``mode=`` explicitly.
    """
    base = monitor.removeprefix("train_").removeprefix("val_")
    if _LARGER_IS_BETTER.search(base):
        return "max"
    if "loss" in base or base in ("kl", "recon", "error", "err"):
        return "min"
    raise ValueError(f"cannot tell whether {monitor!r} should go up or down: pass mode='min' or mode='max'")


def _series(name: str) -> property:
    def get(self: History) -> list[float]:
        return self.metrics[name] if name in self.metrics else [math.nan] * self.epochs

    def set_(self: History, values: Iterable[float]) -> None:
        self.metrics[name] = [float(v) for v in values]

    return property(get, set_, doc=f"``history[{name!r}]``, or NaN for every epoch when it was not recorded.")


class History:
    """Named metrics, one value per epoch, as :func:`fit` records them. Chapter 01 plots one.

    ``history.metrics`` is a dict ``name -> list of floats``: ``train_<key>`` for what the task's
    training step returns (``train_loss``, ``train_acc``, ``train_kl``, ``train_d_loss``, ...),
    ``val_<key>`` for the validation step and the epoch-end metrics (``val_map``, ``val_miou``),
    ``lr`` (the learning rate of the first parameter group at the start of the epoch) and
    ``epoch_time`` (seconds). ``history["val_map"]`` reads one. The attributes of the first version,
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr`` and ``epoch_time``, still work:
    a metric that was not recorded reads as NaN for every epoch.

    ``best_epoch`` is the 0-based epoch with the best finite value of ``monitor`` (the lowest for
    ``mode="min"``, the highest for ``"max"``; the earliest on a tie; None when it was never
    recorded); ``stopped_early`` says whether early stopping ended the run.
    """

    def __init__(
        self,
        metrics: Mapping[str, Iterable[float]] | None = None,
        *,
        best_epoch: int | None = None,
        stopped_early: bool = False,
        monitor: str = "val_loss",
        mode: str | None = None,
        **series: Iterable[float],
    ) -> None:
        merged = {**dict(metrics or {}), **series}
        self.metrics: dict[str, list[float]] = {}
        for name, values in merged.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise TypeError(
                    f"History metric {name!r} must be a list of numbers, got {type(values).__name__}"
                )
            self.metrics[name] = [float(v) for v in values]
        self.best_epoch = best_epoch
        self.stopped_early = bool(stopped_early)
        self.monitor = monitor
        self.mode = mode if mode is not None else infer_mode(monitor)
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    train_loss = _series("train_loss")
    train_acc = _series("train_acc")
    val_loss = _series("val_loss")
    val_acc = _series("val_acc")
    lr = _series("lr")
    epoch_time = _series("epoch_time")

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return max((len(v) for v in self.metrics.values()), default=0)

    def __len__(self) -> int:
        return self.epochs

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.metrics:
            raise KeyError(f"no metric {name!r} in this History; it holds {sorted(self.metrics)}")
        return self.metrics[name]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return (
            f"History(epochs={self.epochs}, metrics={list(self.metrics)}, best_epoch={self.best_epoch}, "
            f"stopped_early={self.stopped_early})"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values (the metric lists, best_epoch, stopped_early, monitor, mode), safe for
        ``torch.save(weights_only=True)`` or JSON."""
        d: dict[str, Any] = {name: list(values) for name, values in self.metrics.items()}
        d.update(
            best_epoch=self.best_epoch, stopped_early=self.stopped_early, monitor=self.monitor, mode=self.mode
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """The inverse of :meth:`as_dict`. Also reads the dict of the first version (a checkpoint of the
        old ``fit``): its six lists become metrics of the same names."""
        settings = {k: d[k] for k in _SETTINGS if k in d}
        metrics = {k: v for k, v in d.items() if k not in _SETTINGS}
        for name, values in metrics.items():
            if not isinstance(values, (list, tuple)):
                raise TypeError(
                    f"History.from_dict: {name!r} must be a list of numbers (one per epoch), "
                    f"got {type(values).__name__}"
                )
        return cls(metrics, **settings)

    def append(self, values: Mapping[str, float]) -> None:
        """One epoch: every metric gets a value (NaN where ``values`` lacks it); then ``best_epoch``."""
        epoch = self.epochs
        for name in values:
            if name not in self.metrics:  # a metric that first appears now: NaN for the epochs before
                self.metrics[name] = [math.nan] * epoch
        for name, series in self.metrics.items():
            series.append(float(values.get(name, math.nan)))
        self.best_epoch = self._best()

    def _best(self) -> int | None:
        finite = [(v, i) for i, v in enumerate(self.metrics.get(self.monitor, [])) if math.isfinite(v)]
        if not finite:
            return None
        return min(finite, key=lambda t: (t[0] if self.mode == "min" else -t[0], t[1]))[1]
