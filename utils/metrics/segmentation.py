"""Semantic segmentation metrics: confusion matrix, pixel accuracy, IoU and Dice per class, their means.

Chapter 12 builds them by hand and then uses this module (and :class:`SegmentationMetrics` as the
epoch-end metric of the segmentation task). Conventions:

* ``pred`` is either labels ``Tensor[N, H, W]`` (int) or scores ``Tensor[N, C, H, W]`` (float logits or
  probabilities, whose argmax over ``C`` is the prediction); ``target`` is labels ``Tensor[N, H, W]``
  in ``[0, num_classes)``. A single image ``(H, W)`` / ``(C, H, W)`` works too.
* Pixels whose target is ``ignore_index`` (e.g. 255 on the borders of VOC's masks) count nowhere.
* Everything comes from one confusion matrix over all pixels of all images (rows: true class,
  columns: predicted class), so means are over the dataset's pixels, not averages of per-image scores.
* IoU of class ``c`` is ``TP / (TP + FP + FN)``, Dice (= F1) is ``2 TP / (2 TP + FP + FN)``. A class
  absent from both the prediction and the target has ``0 / 0``: its IoU and Dice are NaN and the
  means leave it out, as scikit-learn's ``f1_score(..., zero_division=np.nan)`` does (the tests
  compare with it, and with ``jaccard_score`` on the classes that occur, since ``jaccard_score`` has
  no NaN option). A class present in only one of them scores 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .classification import _as_tensor

__all__ = [
    "SegmentationMetrics",
    "confusion_matrix",
    "dice_from_confusion",
    "dice_per_class",
    "iou_from_confusion",
    "iou_per_class",
    "mean_dice",
    "mean_iou",
    "pixel_accuracy",
]


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _pixels(pred: Any, target: Any, num_classes: int, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Predicted and true labels of the pixels that count, flattened: ``Tensor[P]`` int64 each."""
    pred, target = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold integer class labels (N, H, W), got dtype {target.dtype}")
    if target.dim() < 2:
        raise ValueError(f"target must be labels of shape (N, H, W) or (H, W), got {tuple(target.shape)}")
    if pred.is_floating_point():
        if pred.dim() != target.dim() + 1 or pred.shape[:-3] + pred.shape[-2:] != target.shape:
            raise ValueError(
                f"float pred must be scores (N, C, H, W) for target {tuple(target.shape)}, "
                f"got {tuple(pred.shape)} (for labels pass an integer tensor)"
            )
        if pred.shape[-3] == 1:
            raise ValueError(
                "pred has one channel: threshold it first, (pred > 0).long() for logits or "
                "(pred > 0.5).long() for probabilities"
            )
        if pred.shape[-3] != num_classes:
            raise ValueError(f"pred holds scores for {pred.shape[-3]} classes but num_classes={num_classes}")
        pred = pred.argmax(dim=-3)
    elif pred.shape != target.shape:
        raise ValueError(
            f"pred labels {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, labels in (("target", target), ("pred", pred)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            allowed = (
                f" (or ignore_index={ignore_index})" if name == "target" and ignore_index is not None else ""
            )
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}]{allowed}, got values from "
                f"{labels.min().item()} to {labels.max().item()}"
            )
    return pred, target


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Pixel counts ``Tensor[C, C]`` (int64, CPU): entry ``[i, j]`` counts class-``i`` pixels predicted ``j``.

    Rows are true classes, columns predicted ones. Matches
    ``sklearn.metrics.confusion_matrix(target, pred, labels=range(C))`` on the pixels that count.
    Chapter 12 builds it by hand.
    """
    num_classes = _check_num_classes(num_classes)
    pred, target = _pixels(pred, target, num_classes, ignore_index)
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def _check_confusion(confusion: Tensor) -> Tensor:
    if not isinstance(confusion, Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError("confusion must be a square matrix (C, C): rows true classes, columns predicted")
    return confusion.to(torch.float64)


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """IoU per class ``Tensor[C]`` (float64) from a confusion matrix; NaN for classes absent from both."""
    cm = _check_confusion(confusion)
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
    return tp / union  # 0 / 0 = nan: absent from prediction and target


def dice_from_confusion(confusion: Tensor) -> Tensor:
    """Dice (F1) per class ``Tensor[C]`` (float64) from a confusion matrix, NaN for absent classes."""
    cm = _check_confusion(confusion)
    tp = cm.diagonal()
    return 2 * tp / (cm.sum(0) + cm.sum(1))  # 2 TP / (2 TP + FP + FN)


def _nanmean(values: Tensor) -> float:
    return values.nanmean().item()


def pixel_accuracy(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> float:
    """Fraction of the pixels that count whose predicted class is right. Chapter 12 builds it by hand."""
    cm = confusion_matrix(pred, target, num_classes, ignore_index)
    if cm.sum() == 0:
        raise ValueError("no pixel to score: every target pixel equals ignore_index (or the input is empty)")
    return cm.diagonal().sum().item() / cm.sum().item()


def iou_per_class(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """IoU (Jaccard index) of each class, ``Tensor[C]`` float64, NaN for classes absent from both.

    Matches ``sklearn.metrics.jaccard_score(..., average=None)`` on the classes that occur.
    Chapter 12 builds it by hand.
    """
    return iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_iou(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> float:
    """mIoU: the mean of :func:`iou_per_class` over the classes that occur. Chapter 12 builds it by hand."""
    return _nanmean(iou_per_class(pred, target, num_classes, ignore_index))


def dice_per_class(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Dice coefficient (F1) of each class, ``Tensor[C]`` float64, NaN for classes absent from both.

    Matches ``sklearn.metrics.f1_score(..., labels=range(C), average=None, zero_division=np.nan)``.
    Chapter 12 builds it by hand.
    """
    return dice_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_dice(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> float:
    """The mean of :func:`dice_per_class` over the classes that occur. Chapter 12 builds it by hand."""
    return _nanmean(dice_per_class(pred, target, num_classes, ignore_index))


class SegmentationMetrics:
    """Segmentation metrics accumulated over batches: ``update(pred_or_logits, target)``, then ``compute()``.

    ``compute()`` returns ``pixel_accuracy``, ``miou`` and ``mdice`` (Python floats) and
    ``iou_per_class`` and ``dice_per_class`` (``Tensor[C]``, NaN for classes absent so far from
    both predictions and targets); ``confusion`` holds the running ``Tensor[C, C]``. Equal to the
    functions above applied to all batches at once. The segmentation task of ``utils.train`` uses
    it at the end of each epoch; chapter 12 introduces it.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Start counting again from zero."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred_or_logits: Any, target: Any) -> None:
        """Add a batch: labels ``(N, H, W)`` or scores ``(N, C, H, W)``, and target labels ``(N, H, W)``."""
        self.confusion += confusion_matrix(pred_or_logits, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        if self.confusion.sum() == 0:
            raise ValueError("no pixel counted yet: call update() with predictions and targets first")
        iou, dice = iou_from_confusion(self.confusion), dice_from_confusion(self.confusion)
        accuracy = self.confusion.diagonal().sum().item() / self.confusion.sum().item()
        return {
            "pixel_accuracy": accuracy,
            "miou": _nanmean(iou),
            "mdice": _nanmean(dice),
            "iou_per_class": iou,
            "dice_per_class": dice,
        }
