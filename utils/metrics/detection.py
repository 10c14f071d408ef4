"""Detection metrics: COCO's mean average precision and recall, VOC's AP, precision-recall curves.

Chapter 10 builds average precision by hand (match detections to ground truth by IoU, sort by
score, accumulate precision and recall, take the area under the interpolated curve) and then uses
this module; chapter 11 evaluates detectors with it. Inputs follow torchvision's detection API:

* ``preds``: one dict per image with ``boxes`` ``Tensor[K, 4]`` (xyxy), ``scores`` ``Tensor[K]``
  and ``labels`` ``Tensor[K]`` (int), as a torchvision detector returns them in eval mode;
* ``targets``: one dict per image with ``boxes`` ``Tensor[M, 4]`` and ``labels`` ``Tensor[M]``,
  optionally ``iscrowd`` ``Tensor[M]`` (crowd regions: detections on them are neither right nor
  wrong) and ``area`` ``Tensor[M]`` (the object's area for the size ranges; the box area otherwise).

:class:`MeanAveragePrecision` gives the twelve numbers of pycocotools' ``COCOeval.summarize()``,
equal to them (the tests check to 1e-6 on random detections; :mod:`utils.metrics.coco_eval` says
how): ``map`` (AP at IoU 0.50:0.05:0.95), ``map_50``, ``map_75``, ``map_small`` / ``_medium`` /
``_large`` (objects under 32², up to 96², above 96² pixels), ``mar_1`` / ``mar_10`` / ``mar_100``
(recall with at most 1, 10, 100 detections per image) and ``mar_small`` / ``_medium`` / ``_large``.
A number that is undefined (e.g. ``map_small`` without small objects) is -1, as in COCOeval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .coco_eval import AREA_RANGES, IOU_THRESHOLDS, RECALL_THRESHOLDS, Detections, accumulate, match

__all__ = ["COCO_STATS", "MeanAveragePrecision", "PRCurve", "coco_map", "precision_recall", "voc_ap"]

AREAS = ("all", "small", "medium", "large")
# the keys of compute() in the order of COCOeval.stats (with the default max_detections)
COCO_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a tensor, got {type(value).__name__}") from err


def _field(d: Mapping, key: str, n: int | None, what: str, kind: str) -> Tensor:
    """``d[key]`` as a CPU tensor of shape (n, 4) for boxes or (n,) otherwise, of the right kind of number."""
    v = _tensor(d[key], f"{what}['{key}']")
    want = (n, 4) if kind == "boxes" else (n,)
    if v.dim() != len(want) or (n is not None and v.shape[0] != n) or v.shape[1:] != want[1:]:
        shape = "(N, 4)" if kind == "boxes" else "(N,), one per box"
        raise ValueError(f"{what}['{key}'] must have shape {shape}, got {tuple(v.shape)}")
    if v.is_complex() or (kind != "bool" and v.dtype == torch.bool):
        raise TypeError(f"{what}['{key}'] must hold real numbers, got {v.dtype}")
    if kind == "int" and v.is_floating_point():
        raise TypeError(f"{what}['{key}'] must hold integer class labels, got {v.dtype}")
    return v


def _image(pred: Any, target: Any, i: int) -> tuple[Tensor, ...]:
    """Check the structure of image ``i`` (the values are checked for all images at once, in ``_data``)."""
    for d, name, keys in (
        (pred, "preds", ("boxes", "scores", "labels")),
        (target, "targets", ("boxes", "labels")),
    ):
        if not isinstance(d, Mapping) or any(k not in d for k in keys):
            raise ValueError(
                f"{name}[{i}] must be a dict with keys {keys}, got "
                f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}"
            )
    boxes = _field(pred, "boxes", None, f"preds[{i}]", "boxes")
    scores = _field(pred, "scores", len(boxes), f"preds[{i}]", "float")
    labels = _field(pred, "labels", len(boxes), f"preds[{i}]", "int")
    gt_boxes = _field(target, "boxes", None, f"targets[{i}]", "boxes")
    gt_labels = _field(target, "labels", len(gt_boxes), f"targets[{i}]", "int")
    crowd = (
        _field(target, "iscrowd", len(gt_boxes), f"targets[{i}]", "bool").bool()
        if "iscrowd" in target
        else torch.zeros(len(gt_boxes), dtype=torch.bool)
    )
    given = "area" in target  # else the box's area, computed in _data
    area = (
        _field(target, "area", len(gt_boxes), f"targets[{i}]", "float")
        if given
        else torch.zeros(len(gt_boxes))
    )
    return boxes, scores, labels, gt_boxes, gt_labels, crowd, area, torch.full((len(gt_boxes),), given)


def _check_values(values: Tensor, image: Tensor, what: str, boxes: bool = False) -> None:
    """Finite values (and xyxy boxes with x1 <= x2, y1 <= y2), else an error naming the first bad image."""
    bad = ~torch.isfinite(values)
    if bad.dim() == 2:
        bad = bad.any(1)
    message = "must be finite"
    if boxes and not bad.any():
        bad = (values[:, 2] < values[:, 0]) | (values[:, 3] < values[:, 1])
        message = (
            "must be xyxy with x1 <= x2 and y1 <= y2 (convert xywh or cxcywh boxes first, e.g. with "
            "utils.ops.box_convert)"
        )
    if bad.any():
        raise ValueError(f"{what.format(int(image[bad][0]))} {message}")


def _check_lists(preds: Any, targets: Any) -> None:
    if isinstance(preds, Mapping) or isinstance(targets, Mapping):
        raise TypeError(
            "preds and targets must be lists with one dict per image (wrap a single image in [...])"
        )
    if not isinstance(preds, Sequence) or not isinstance(targets, Sequence) or len(preds) != len(targets):
        raise ValueError("preds and targets must be lists of the same length, one dict per image")


def _mean_defined(values: Tensor) -> float:
    """Mean of the entries that are defined (> -1), -1 when none is: COCOeval's summary rule."""
    defined = values[values > -1]
    return defined.mean().item() if defined.numel() else -1.0


class MeanAveragePrecision:
    """COCO's detection metrics, accumulated over batches: ``update(preds, targets)`` then ``compute()``.

    ``iou_thresholds`` default to COCO's 0.50, 0.55, ..., 0.95; ``max_detections`` to (1, 10, 100)
    (detections per image and class beyond the largest are dropped, lowest scores first; AP uses
    the largest, AR each: ``mar_<m>``). ``class_metrics=True`` adds ``classes`` (``Tensor[K]``, every
    label seen, sorted) and, in that order, ``map_per_class`` and ``mar_<largest>_per_class``
    (``Tensor[K]``, -1 for a class without ground truth). After ``compute()``,
    ``precision`` (``Tensor[T, 101, K, 4, M]``, COCOeval's ``eval["precision"]``: the interpolated
    precision at the recall thresholds 0, 0.01, ..., 1, per threshold, class, area range and
    maximum number of detections; -1 where undefined) and ``recall`` (``Tensor[T, K, 4, M]``) are
    kept for plots. Chapter 10 builds the metric by hand; chapter 11 evaluates detectors with it.
    """

    def __init__(
        self,
        iou_thresholds: Sequence[float] | None = None,
        max_detections: Sequence[int] = (1, 10, 100),
        class_metrics: bool = False,
    ) -> None:
        thresholds = IOU_THRESHOLDS if iou_thresholds is None else tuple(float(t) for t in iou_thresholds)
        if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"iou_thresholds must be numbers in [0, 1], got {iou_thresholds!r}")
        max_det = tuple(sorted(max_detections))
        if not max_det or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in max_det):
            raise ValueError(f"max_detections must be positive ints, got {max_detections!r}")
        self.iou_thresholds, self.max_detections, self.class_metrics = thresholds, max_det, class_metrics
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._images: list[tuple[Tensor, ...]] = []
        self.precision: Tensor | None = None
        self.recall: Tensor | None = None

    def update(self, preds: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]) -> None:
        """Add a batch: one prediction dict and one target dict per image (see the module docstring)."""
        _check_lists(preds, targets)
        first = len(self._images)
        self._images.extend(_image(p, t, first + i) for i, (p, t) in enumerate(zip(preds, targets)))

    def _data(self) -> Detections:
        """All images seen so far, concatenated, checked and in COCO's terms (xywh boxes, float64)."""
        images = self._images

        def cat(i: int, *shape: int, dtype: torch.dtype = torch.float64) -> Tensor:
            parts = [im[i] for im in images]
            return torch.cat(parts).to(dtype) if parts else torch.zeros(0, *shape, dtype=dtype)

        index = torch.arange(len(images))
        num_dets = torch.tensor([len(im[0]) for im in images], dtype=torch.int64)
        num_gt = torch.tensor([len(im[3]) for im in images], dtype=torch.int64)
        image, gt_image = torch.repeat_interleave(index, num_dets), torch.repeat_interleave(index, num_gt)
        boxes, scores, gt_boxes, area = cat(0, 4), cat(1), cat(3, 4), cat(6)
        _check_values(boxes, image, "preds[{}]['boxes']", boxes=True)
        _check_values(scores, image, "preds[{}]['scores']")
        _check_values(gt_boxes, gt_image, "targets[{}]['boxes']", boxes=True)
        given = cat(7, dtype=torch.bool)
        _check_values(area[given], gt_image[given], "targets[{}]['area']")
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # COCO's (x, y, w, h)
        gt_boxes = torch.cat([gt_boxes[:, :2], gt_boxes[:, 2:] - gt_boxes[:, :2]], dim=1)
        return Detections(
            boxes=boxes,
            scores=scores,
            labels=cat(2, dtype=torch.int64),
            image=image,
            gt_boxes=gt_boxes,
            gt_labels=cat(4, dtype=torch.int64),
            gt_image=gt_image,
            gt_crowd=cat(5, dtype=torch.bool),
            gt_area=torch.where(given, area, gt_boxes[:, 2] * gt_boxes[:, 3]),
        )

    def compute(self) -> dict[str, Any]:
        """The summary numbers (Python floats; see the module docstring), and per class if asked."""
        data = self._data()
        classes = torch.unique(torch.cat([data.labels, data.gt_labels]))
        thresholds = torch.tensor(self.iou_thresholds, dtype=torch.float64)
        areas = torch.tensor([AREA_RANGES[a] for a in AREAS], dtype=torch.float64)
        matches = match(data, classes, thresholds, self.max_detections[-1], areas)
        precision, recall = accumulate(
            matches, self.max_detections, classes, torch.tensor(RECALL_THRESHOLDS, dtype=torch.float64)
        )
        self.precision, self.recall = precision, recall
        last = len(self.max_detections) - 1
        out = {"map": _mean_defined(precision[:, :, :, 0, last])}
        for name, t in (("map_50", 0.5), ("map_75", 0.75)):
            at = np.flatnonzero(np.isclose(self.iou_thresholds, t))
            out[name] = _mean_defined(precision[at[0], :, :, 0, last]) if len(at) else -1.0
        for a in (1, 2, 3):
            out[f"map_{AREAS[a]}"] = _mean_defined(precision[:, :, :, a, last])
        for i, m in enumerate(self.max_detections):
            out[f"mar_{m}"] = _mean_defined(recall[:, :, 0, i])
        for a in (1, 2, 3):
            out[f"mar_{AREAS[a]}"] = _mean_defined(recall[:, :, a, last])
        if self.class_metrics:
            out["map_per_class"] = torch.tensor(
                [_mean_defined(precision[:, :, k, 0, last]) for k in range(len(classes))], dtype=torch.float64
            )
            out[f"mar_{self.max_detections[-1]}_per_class"] = torch.tensor(
                [_mean_defined(recall[:, k, 0, last]) for k in range(len(classes))], dtype=torch.float64
            )
            out["classes"] = classes
        return out


def coco_map(
    preds: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]], **kwargs: Any
) -> dict[str, Any]:
    """Functional form: ``MeanAveragePrecision(**kwargs)`` updated with all images, then computed."""
    metric = MeanAveragePrecision(**kwargs)
    metric.update(preds, targets)
    return metric.compute()


class PRCurve(NamedTuple):
    """A precision-recall curve: one point per detection, by decreasing score (``Tensor[N]`` float64 each)."""

    precision: Tensor
    recall: Tensor
    scores: Tensor


def precision_recall(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    *,
    iou_threshold: float = 0.5,
    label: int | None = None,
    max_detections: int = 100,
    area: str = "all",
) -> PRCurve:
    """The raw precision-recall curve of the detections of class ``label`` (None: all classes pooled).

    Detections are matched as in :class:`MeanAveragePrecision` at one IoU threshold; going down
    the detections by score, point ``i`` is the precision and recall of the first ``i + 1``
    (detections that COCO ignores, on crowds or outside the ``area`` range, are left out).
    ``voc_ap(curve.recall, curve.precision)`` is the area under it. Chapter 10 plots it.
    """
    _check_lists(preds, targets)
    if area not in AREAS:
        raise ValueError(f"area must be one of {AREAS}, got {area!r}")
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    data = metric._data()
    classes = torch.unique(torch.cat([data.labels, data.gt_labels]))
    m = match(
        data,
        classes,
        torch.tensor([float(iou_threshold)], dtype=torch.float64),
        max_detections,
        torch.tensor([AREA_RANGES[area]], dtype=torch.float64),
    )
    wanted = torch.ones_like(m.labels, dtype=torch.bool) if label is None else m.labels == label
    tp, fp = m.true_positive[:, 0, 0], m.false_positive[:, 0, 0]
    order = torch.sort(m.scores, descending=True, stable=True).indices
    order = order[(wanted & (tp | fp))[order]]
    gt_wanted = m.gt_counted[:, 0] & (True if label is None else m.gt_labels == label)
    num_gt = int(gt_wanted.sum())
    if num_gt == 0:
        raise ValueError(f"recall is undefined: no ground-truth box of class {label} in area range {area!r}")
    tp_sum = torch.cumsum(tp[order].to(torch.float64), 0)
    fp_sum = torch.cumsum(fp[order].to(torch.float64), 0)
    return PRCurve(tp_sum / (tp_sum + fp_sum), tp_sum / num_gt, m.scores[order])


def voc_ap(recall: Any, precision: Any, method: str = "all_points") -> float:
    """Area under a precision-recall curve (points by decreasing score), as PASCAL VOC computes it.

    ``"all_points"`` (VOC 2010 and later): the area under the precision envelope (the best
    precision at any higher recall), summed where recall changes. ``"11point"`` (VOC 2007): the mean
    of the envelope at recall 0, 0.1, ..., 1. Matches the VOC devkit's ``voc_ap``.
    Chapter 10 builds both by hand.
    """
    rec = _tensor(recall, "recall").to(torch.float64).reshape(-1)
    prec = _tensor(precision, "precision").to(torch.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision must have the same length, got {len(rec)} and {len(prec)}")
    if method == "11point":
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit's thresholds, float rounding included
            above = prec[rec >= t]
            total += (above.max().item() if above.numel() else 0.0) / 11.0
        return total
    if method != "all_points":
        raise ValueError(f"method must be 'all_points' or '11point', got {method!r}")
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), rec, torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), prec, torch.zeros(1, dtype=torch.float64)])
    mpre = mpre.flip(0).cummax(0).values.flip(0)  # the envelope
    steps = torch.where(mrec[1:] != mrec[:-1])[0]
    return ((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]).sum().item()
