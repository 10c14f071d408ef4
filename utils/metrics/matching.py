"""Matching the detections of one image to its ground truth, the way COCO does: the step before AP.

Chapter 10 builds this rule by hand and uses :func:`match_detections` to colour detections as true
or false positives; :mod:`utils.metrics.coco_eval` applies the same rule to all images, classes,
thresholds and size ranges at once (with crowds and ignored boxes, which this function leaves out).

The rule (pycocotools' ``COCOeval.evaluateImg``): go down the detections by decreasing score (ties:
input order); each takes, among the ground-truth boxes still free, the one with the highest IoU,
provided that IoU is at least ``iou_threshold`` (ties: the later box). A detection that finds none
is a false positive, and so is a second detection of an object already taken (a duplicate). PASCAL
VOC's rule differs in one point: a detection whose best box is already taken is a false positive even
when another free box overlaps it enough.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.boxes import _check_boxes
from .coco_eval import coco_iou

__all__ = ["match_detections"]


def match_detections(boxes: Tensor, scores: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index of the ground-truth box each detection matches, or -1: ``Tensor[K]`` int64, in input order.

    ``boxes`` ``Tensor[K, 4]`` and ``gt_boxes`` ``Tensor[M, 4]`` are xyxy boxes of one image and one
    class, ``scores`` ``Tensor[K]``. IoU is computed as pycocotools computes it (float64, from
    ``(x, y, w, h)``), and ``IoU >= iou_threshold`` counts (a threshold of 1 is read as ``1 - 1e-10``,
    as COCO does). ``(match >= 0)`` are the true positives. Chapter 10 builds the rule by hand.
    """
    _check_boxes(boxes, "boxes")
    _check_boxes(gt_boxes, "gt_boxes")
    if boxes.dim() != 2 or gt_boxes.dim() != 2:
        raise ValueError(
            f"boxes and gt_boxes must have shapes (K, 4) and (M, 4), got {tuple(boxes.shape)} and "
            f"{tuple(gt_boxes.shape)}"
        )
    if not isinstance(scores, Tensor) or scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be a tensor of shape (K,) = ({len(boxes)},), one per detection")
    if isinstance(iou_threshold, bool) or not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    dt = boxes.detach().cpu().to(torch.float64)
    gt = gt_boxes.detach().cpu().to(torch.float64)
    dt = torch.cat([dt[:, :2], dt[:, 2:] - dt[:, :2]], dim=1)  # COCO's (x, y, w, h)
    gt = torch.cat([gt[:, :2], gt[:, 2:] - gt[:, :2]], dim=1)
    k, m = len(dt), len(gt)
    match = torch.full((k,), -1, dtype=torch.int64)
    if k == 0 or m == 0:
        return match.to(boxes.device)
    iou = coco_iou(  # (K, M), every pair
        dt.repeat_interleave(m, dim=0), gt.repeat(k, 1), torch.zeros(k * m, dtype=torch.bool)
    ).reshape(k, m)
    threshold = min(float(iou_threshold), 1 - 1e-10)
    free = torch.ones(m, dtype=torch.bool)
    for d in torch.sort(scores.detach().cpu(), descending=True, stable=True).indices.tolist():
        candidates = free & (iou[d] >= threshold)
        if not candidates.any():
            continue
        best = torch.where(candidates, iou[d], -1.0)
        g = int(torch.where(best == best.max())[0][-1])  # the highest IoU; ties: the later box
        match[d] = g
        free[g] = False
    return match.to(boxes.device)
