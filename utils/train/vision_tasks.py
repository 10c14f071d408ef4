"""Tasks for detection and segmentation (chapters 11 and 12): steps, losses and epoch-end metrics.

Both measure the whole validation set at the end of an epoch (mAP needs every detection of every
image before it can rank them). The predictions are kept on the CPU during validation; under
torchrun every process's share is gathered before the metric is computed, so the numbers equal a
single-process run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.common import move_to, unpack_batch
from utils.train import distributed
from utils.train.tasks import Task, full_precision

__all__ = ["Detection", "Segmentation", "dice_loss"]


class _EpochMetric:
    """Collects ``update`` arguments of a validation epoch on the CPU and feeds them, from every process,
    to a fresh metric built by ``factory`` when the epoch ends."""

    def __init__(
        self, factory: Callable[[], Any] | None, prepare: Callable[..., tuple] | None = None
    ) -> None:
        self.factory, self.prepare = factory, prepare
        self.records: list[tuple[Any, ...]] = []

    def reset(self) -> None:
        self.records = []

    def update(self, *args: Any) -> None:
        if self.factory is not None:
            self.records.append(move_to(args, "cpu"))

    def compute(self) -> dict[str, float]:
        if self.factory is None:
            return {}
        metric = self.factory()
        for records in distributed.all_gather_objects(self.records):
            for args in records:
                metric.update(*(self.prepare(*args) if self.prepare is not None else args))
        self.records = []
        return _scalars(metric.compute())


def _scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a metric's result as floats (per-class tensors and lists are left out)."""
    out = {}
    for name, value in result.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
def _default_map() -> Any:
    try:
        from utils.metrics.detection import MeanAveragePrecision
    except ImportError as err:
        raise ImportError(
            f"Detection measures mAP with utils.metrics.detection.MeanAveragePrecision, which "
            f"cannot be imported here ({err}); pass Detection(metric=...) or metric=False"
        ) from err
    return MeanAveragePrecision()


class Detection(Task):
    """Train a detector that follows torchvision's convention (Faster R-CNN, RetinaNet, FCOS, the course's
    own).

    In train mode ``model(images, targets)`` returns a dict of losses: the step's loss is their sum
    (torchvision's ``references/detection/engine.py``), and each is logged (``train_loss_classifier``,
    ``train_loss_box_reg``, ...). In eval mode ``model(images)`` returns one dict per image with
    ``boxes`` (K, 4) xyxy, ``scores`` (K,) and ``labels`` (K,) int64; validation feeds them to the
    metric and logs its scalar results at the end of the epoch (``val_map``, ``val_map_50``, ...;
    torchvision's detectors compute no loss in eval mode, so there is no ``val_loss``: early-stop on
    ``monitor="val_map"``).

    Batches: a dict from ``utils.data.collate_scenes`` (``image`` (B, 3, H, W) or a list, ``boxes``
    and ``labels`` lists; ``instance_masks`` become ``masks`` with ``masks=True``, for Mask R-CNN),
    or a pair ``(images, targets)`` with a list of images (sizes may differ) and a list of target dicts.

    ``metric``: a function returning a fresh object with ``update(preds, targets)`` and
    ``compute() -> dict``; default ``utils.metrics.detection.MeanAveragePrecision()``; ``False``
    measures nothing. Chapter 11 trains detectors with it.
    """

    def __init__(self, metric: Callable[[], Any] | bool | None = None, *, masks: bool = False) -> None:
        if metric is not None and metric is not False and not callable(metric):
            raise TypeError(
                f"metric must be a function returning a fresh metric object, got {type(metric).__name__}"
            )
        self.metric = _EpochMetric(None if metric is False else (metric or _default_map))
        self.masks = masks

    def split(self, batch: Any, where: str) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """``(images, targets)``: a list of (3, H, W) tensors and a list of dicts with boxes and labels."""
        if isinstance(batch, Mapping):
            missing = {"image", "boxes", "labels"} - set(batch)
            if missing:
                raise TypeError(
                    f"each batch of {where} is a dict without {sorted(missing)}; detection needs "
                    f"image, boxes and labels (utils.data.collate_scenes gives them)"
                )
            images = list(batch["image"])
            targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
            if self.masks:
                for t, m in zip(targets, batch["instance_masks"]):
                    t["masks"] = m.to(torch.uint8)
        else:
            images, targets = unpack_batch(batch, f"each batch of {where}")
            images, targets = list(images), list(targets)
        if len(images) != len(targets) or not all(isinstance(t, Mapping) and "boxes" in t for t in targets):
            raise TypeError(
                f"each batch of {where} must hold one target dict with 'boxes' and 'labels' per image"
            )
        return images, targets

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        images, targets = self.split(batch, ctx.where)
        with ctx.autocast():
            losses = model(images, targets)
        if not isinstance(losses, Mapping) or not losses:
            raise TypeError(
                f"in train mode a detector must return a dict of losses, model(images, targets) -> "
                f"dict[str, Tensor] (torchvision's convention); got {type(losses).__name__}"
            )
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}

    def validation_epoch_start(self) -> None:
        self.metric.reset()

    def validation_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        images, targets = self.split(batch, ctx.where)
        with ctx.autocast():
            preds = model(images)
        if (
            not isinstance(preds, Sequence)
            or len(preds) != len(images)
            or not all(isinstance(p, Mapping) and {"boxes", "scores", "labels"} <= set(p) for p in preds)
        ):
            raise TypeError(
                "in eval mode a detector must return one dict with boxes, scores and labels per image "
                "(torchvision's convention)"
            )
        preds = [
            {"boxes": p["boxes"].float(), "scores": p["scores"].float(), "labels": p["labels"]} for p in preds
        ]
        keep = ("boxes", "labels", "iscrowd", "area")
        self.metric.update(preds, [{k: t[k] for k in keep if k in t} for t in targets])
        return {}

    def validation_epoch_end(self) -> dict[str, float]:
        return self.metric.compute()


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------
def _default_segmentation_metric(num_classes: int, ignore_index: int | None) -> Callable[[], Any]:
    def build() -> Any:
        try:
            from utils.metrics.segmentation import SegmentationMetrics
        except ImportError as err:
            raise ImportError(
                f"Segmentation measures mIoU with utils.metrics.segmentation.SegmentationMetrics, "
                f"which cannot be imported here ({err}); pass Segmentation(metric=...) or "
                f"metric=False"
            ) from err
        return SegmentationMetrics(num_classes, ignore_index=ignore_index)

    return build


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int | None = None,
    weight: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    r"""Soft Dice loss ``1 - mean_c (2 |P_c T_c| + s) / (|P_c| + |T_c| + s)`` over a batch. Chapter 12 derives
    it.

    ``logits`` (B, C, H, W), ``target`` (B, H, W) int64 class indices; ``P_c`` are the softmax
    probabilities of class ``c``, ``T_c`` its one-hot mask, the sums run over every pixel of the
    batch except those labelled ``ignore_index``. ``weight`` (C,) weights the classes' mean.
    """
    c = logits.shape[1]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    probs = full_precision(logits).softmax(dim=1) * valid.unsqueeze(1)  # (B, C, H, W)
    onehot = F.one_hot(torch.where(valid, target, 0), c).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (C,)
    dice = (2 * inter + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    if weight is None:
        return 1 - dice.mean()
    weight = weight.to(dice)
    return 1 - (dice * weight).sum() / weight.sum()


class Segmentation(Task):
    """Per-pixel classification: ``model(images)`` gives logits (B, C, H, W) for masks (B, H, W) int64.

    ``loss``: ``"ce"`` (per-pixel cross-entropy, ``class_weights`` (C,) and ``ignore_index``
    honoured), ``"dice"`` (:func:`dice_loss`) or ``"ce+dice"`` (their sum; ``ce`` and ``dice`` are
    also logged). A model returning torchvision's dict ``{"out": ..., "aux": ...}`` is trained on
    ``out + aux_weight * aux``. Validation logs the loss, and at the end of the epoch the scalar
    results of ``metric`` (default ``utils.metrics.segmentation.SegmentationMetrics(num_classes,
    ignore_index)``: ``val_pixel_accuracy``, ``val_miou``, ``val_mdice``); ``metric=False`` measures
    nothing, or pass a function returning an object with ``update(logits_or_pred, target)`` and
    ``compute()``. Batches: ``(images, masks)`` or a dict with ``image`` and ``semantic_mask``.
    Chapter 12 trains segmentation networks with it.
    """

    LOSSES = ("ce", "dice", "ce+dice")

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        loss: str = "ce",
        class_weights: Sequence[float] | torch.Tensor | None = None,
        *,
        metric: Callable[[], Any] | bool | None = None,
        aux_weight: float = 0.5,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if loss not in self.LOSSES:
            raise ValueError(f"loss must be one of {self.LOSSES}, got {loss!r}")
        self.num_classes, self.ignore_index, self.loss = num_classes, ignore_index, loss
        self.class_weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        if self.class_weights is not None and self.class_weights.shape != (num_classes,):
            raise ValueError(
                f"class_weights must hold one weight per class, shape ({num_classes},), got "
                f"{tuple(self.class_weights.shape)}"
            )
        if metric is not None and metric is not False and not callable(metric):
            raise TypeError(
                f"metric must be a function returning a fresh metric object, got {type(metric).__name__}"
            )
        factory = (
            None if metric is False else (metric or _default_segmentation_metric(num_classes, ignore_index))
        )
        self.metric = _EpochMetric(factory, prepare=lambda pred, target: (pred.long(), target.long()))
        self.aux_weight = aux_weight

    def split(self, batch: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, Mapping):
            if "image" not in batch or "semantic_mask" not in batch:
                raise TypeError(f"each batch of {where} is a dict without 'image' and 'semantic_mask'")
            x, y = batch["image"], batch["semantic_mask"]
        else:
            x, y = unpack_batch(batch, f"each batch of {where}", tensors=True)
        if y.ndim != 3 or y.is_floating_point():
            raise ValueError(
                f"segmentation masks must be int64 class indices of shape (B, H, W), got dtype "
                f"{y.dtype} and shape {tuple(y.shape)}"
            )
        return x, y.long()

    def _check_target(self, target: torch.Tensor) -> None:
        labels = target if self.ignore_index is None else target[target != self.ignore_index]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"mask values must lie in [0, {self.num_classes - 1}]"
                + (f" or equal ignore_index={self.ignore_index}" if self.ignore_index is not None else "")
                + f", got values from {labels.min().item()} to {labels.max().item()}"
            )

    def _losses(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes or logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"the model must return logits (B, {self.num_classes}, H, W) matching masks of shape "
                f"{tuple(target.shape)}, got {tuple(logits.shape)}"
            )
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        parts = {}
        if "ce" in self.loss:
            parts["ce"] = F.cross_entropy(
                full_precision(logits),
                target,
                weight=weight,
                ignore_index=-100 if self.ignore_index is None else self.ignore_index,
            )
        if "dice" in self.loss:
            parts["dice"] = dice_loss(logits, target, ignore_index=self.ignore_index, weight=weight)
        return parts

    def _step(
        self, model: nn.Module, batch: Any, ctx: Any
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        x, y = self.split(batch, ctx.where)
        self._check_target(y)
        with ctx.autocast():
            out = model(x)
        logits = out["out"] if isinstance(out, Mapping) else out
        parts = self._losses(logits, y)
        loss = sum(parts.values())
        if isinstance(out, Mapping) and out.get("aux") is not None and self.aux_weight:
            loss = loss + self.aux_weight * sum(self._losses(out["aux"], y).values())
        result = {"loss": loss, **({k: v.detach() for k, v in parts.items()} if len(parts) > 1 else {})}
        return result, logits, y

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        return self._step(model, batch, ctx)[0]

    def validation_epoch_start(self) -> None:
        self.metric.reset()

    def validation_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        result, logits, y = self._step(model, batch, ctx)
        small = (
            torch.int16
            if self.num_classes < 2**15 and -(2**15) <= (self.ignore_index or 0) < 2**15
            else torch.int64
        )
        self.metric.update(
            logits.argmax(dim=1).to(small), y.to(small)
        )  # compact on the CPU until the epoch ends
        return result

    def validation_epoch_end(self) -> dict[str, float]:
        return self.metric.compute()
