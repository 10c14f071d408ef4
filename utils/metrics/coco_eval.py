"""COCO's detection evaluation, vectorised: match detections to ground truth, then precision and recall.

:mod:`utils.metrics.detection` wraps this in :class:`~utils.metrics.detection.MeanAveragePrecision`.
The steps are pycocotools' ``COCOeval.evaluate`` and ``accumulate``, with the same results (the
tests compare all twelve summary numbers), computed for all images at once instead of one image and
one class at a time. Chapter 10 builds the matching by hand for one image; the rules are:

1. Detections and ground-truth boxes only meet within the same image and class (a "group").
   In each group the detections are sorted by decreasing score (ties: input order) and only the
   first ``max(max_detections)`` are kept.
2. IoU is computed as COCO does, from ``(x, y, w, h)`` boxes in float64; a detection's overlap with
   a *crowd* box is divided by the detection's own area (a crowd box covers many objects).
3. Greedy matching, one IoU threshold ``t`` and one area range at a time: detections in score
   order each take the unmatched ground-truth box with the highest IoU ``>= t`` (ties: the later
   box), preferring boxes that are not ignored; ignored boxes (crowds, and boxes outside the area
   range) are only taken when no other is left, and crowds can be taken any number of times.
   Detections matched to an ignored box, and unmatched detections outside the area range, are
   ignored: they count neither as true nor as false positives.
4. Per class, area range and maximum number of detections per image: pool the detections of all
   images by decreasing score, accumulate true and false positives, and read the precision
   envelope (the best precision at any higher recall) at the recall thresholds 0, 0.01, ..., 1.

The matching is sequential only along the detections of a group (a detection can only take what
the better-scored ones left), so the loop below runs over ranks (at most 100) and handles, at each
rank, every group, threshold and area range at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# pycocotools' parameters, computed as it computes them (np.linspace), so thresholds agree to the bit
IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist())
RECALL_THRESHOLDS = tuple(
    np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True).tolist()
)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}


@dataclass
class Detections:
    """Everything one evaluation needs, concatenated over images (float64 / int64 / bool, CPU).

    Boxes are ``(x, y, w, h)``; ``*_image`` is the index of the image each box belongs to.
    """

    boxes: Tensor  # (D, 4)
    scores: Tensor  # (D,)
    labels: Tensor  # (D,)
    image: Tensor  # (D,)
    gt_boxes: Tensor  # (G, 4)
    gt_labels: Tensor  # (G,)
    gt_image: Tensor  # (G,)
    gt_crowd: Tensor  # (G,) bool
    gt_area: Tensor  # (G,)


@dataclass
class Matches:
    """Result of :func:`match`: per kept detection (in group order) and per ground-truth box."""

    labels: Tensor  # (D,) class of each kept detection
    scores: Tensor  # (D,)
    rank: Tensor  # (D,) position of the detection in its group, by decreasing score
    true_positive: Tensor  # (D, A, T) bool
    false_positive: Tensor  # (D, A, T) bool
    gt_labels: Tensor  # (G,)
    gt_counted: Tensor  # (G, A) bool: not ignored, so part of the recall's denominator


def _group_starts(sorted_keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For keys sorted into groups: (group id of each element, first index of each group, group sizes)."""
    _, inverse, counts = torch.unique_consecutive(sorted_keys, return_inverse=True, return_counts=True)
    return inverse, torch.cumsum(counts, 0) - counts, counts


def coco_iou(dt: Tensor, gt: Tensor, crowd: Tensor) -> Tensor:
    """IoU of each pair ``(dt[i], gt[i])`` of ``(x, y, w, h)`` boxes, exactly as pycocotools' ``bbIou``.

    ``Tensor[P, 4]`` twice and ``crowd`` ``Tensor[P]`` -> ``Tensor[P]``: the overlap is divided by
    the union, or by the detection's area when the ground truth is a crowd.
    """
    w = torch.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - torch.maximum(dt[:, 0], gt[:, 0])
    h = torch.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - torch.maximum(dt[:, 1], gt[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    dt_area, gt_area = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    union = torch.where(crowd, dt_area, dt_area + gt_area - inter)
    return torch.where(overlap, inter / torch.where(overlap, union, 1.0), 0.0)


def _last_best(candidate: Tensor, iou: Tensor) -> Tensor:
    """Slot of the highest IoU among ``candidate`` slots (ties: the last slot), -1 when there is none."""
    best = torch.where(candidate, iou, -1.0).amax(dim=-1, keepdim=True)  # IoU is never negative
    hit = candidate & (iou == best)
    slots = torch.arange(iou.shape[-1], device=iou.device)
    return torch.where(hit, slots, -1).amax(dim=-1)


def _greedy(
    boxes: Tensor,
    rank: Tensor,
    group: Tensor,
    table: Tensor,
    data: Detections,
    gt_ignored: Tensor,
    thresholds: Tensor,
) -> Tensor:
    """Steps 2-3 for the detections of some groups: the ground-truth box each one takes, ``Tensor[n, A, T]``.

    ``boxes`` ``Tensor[n, 4]``, ``rank`` ``Tensor[n]``, ``group`` ``Tensor[n]`` (the row of the
    detection's group in ``table``); ``table`` ``Tensor[g, S]`` holds the indices of each group's
    ground-truth boxes in input order (-1: empty slot). Returns ground-truth indices, -1 where unmatched.
    """
    valid = table >= 0
    gt = table.clamp(min=0)
    crowd = valid & data.gt_crowd[gt]  # (g, S)
    ignored = gt_ignored[gt].permute(0, 2, 1) & valid[:, None, :]  # (g, A, S)

    # 2. IoU of each detection with each ground-truth slot of its group (-1 for empty slots)
    ious = torch.full(table[group].shape, -1.0, dtype=torch.float64)  # (n, S)
    per_det = valid.sum(1)[group]  # (n,) ground-truth boxes in the detection's group
    pair_det = torch.repeat_interleave(torch.arange(len(boxes)), per_det)
    first_pair = torch.cumsum(per_det, 0) - per_det  # (n,) where each detection's pairs start
    pair_slot = torch.arange(len(pair_det)) - torch.repeat_interleave(first_pair, per_det)
    pair_gt = table[group[pair_det], pair_slot]
    ious[pair_det, pair_slot] = coco_iou(boxes[pair_det], data.gt_boxes[pair_gt], data.gt_crowd[pair_gt])

    # 3. rank by rank, for every group, area range (A) and threshold (T) at once
    num_areas, num_thr = gt_ignored.shape[1], len(thresholds)
    thresholds = thresholds.clamp(max=1 - 1e-10)[None, None, :, None]  # (1, 1, T, 1), as COCO
    taken = torch.zeros(len(table), num_areas, num_thr, table.shape[1], dtype=torch.bool)
    matched = torch.full((len(boxes), num_areas, num_thr), -1, dtype=torch.int64)  # slot taken, or -1
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        d = torch.where(rank == r)[0]  # at most one detection per group
        g = group[d]
        iou = ious[d][:, None, None, :]  # (n_r, 1, 1, S)
        free = ~taken[g] | crowd[g][:, None, None, :]  # crowds can be matched again
        candidate = free & (iou >= thresholds)  # (n_r, A, T, S)
        ign = ignored[g][:, :, None, :]  # (n_r, A, 1, S)
        best = _last_best(candidate & ~ign, iou)  # a box that counts, if any ...
        best = torch.where(best >= 0, best, _last_best(candidate & ign, iou))  # ... else an ignored one
        matched[d] = best
        n, a, t = torch.where(best >= 0)
        taken[g[n], a, t, best[n, a, t]] = True
    return torch.where(matched >= 0, table[group[:, None, None], matched.clamp(min=0)], -1)


def match(
    data: Detections, classes: Tensor, iou_thresholds: Tensor, max_det: int, area_ranges: Tensor
) -> Matches:
    """Steps 1-3 of the module docstring: which detections are true / false positives, per threshold and area.

    ``classes`` ``Tensor[K]`` sorted (every label that occurs), ``iou_thresholds`` ``Tensor[T]``,
    ``area_ranges`` ``Tensor[A, 2]`` (bounds included).
    """
    num_classes = max(len(classes), 1)
    group = data.image * num_classes + torch.searchsorted(classes, data.labels)  # (D,) image-major
    gt_group = data.gt_image * num_classes + torch.searchsorted(classes, data.gt_labels)  # (G,)

    # 1. detections by group, then by decreasing score (a stable sort keeps input order for ties)
    order = torch.sort(data.scores, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    det_group, starts, _ = _group_starts(group[order])  # det_group: 0 .. Gd - 1
    rank = torch.arange(len(order)) - starts[det_group]
    keep = rank < max_det
    order, rank, det_group = order[keep], rank[keep], det_group[keep]
    boxes = data.boxes[order]
    det_groups = torch.unique_consecutive(group[order])  # (Gd,) the groups that have detections

    # ground truth: its slot (position in its group, input order) and the row of its group in det_groups
    gt_order = torch.sort(gt_group, stable=True).indices
    gt_group_id, gt_starts, _ = _group_starts(gt_group[gt_order])
    slot = torch.empty_like(gt_order)
    slot[gt_order] = torch.arange(len(gt_order)) - gt_starts[gt_group_id]
    row = torch.searchsorted(det_groups, gt_group).clamp(max=max(len(det_groups) - 1, 0))
    in_det_group = (
        det_groups[row] == gt_group if len(det_groups) else torch.zeros_like(gt_group, dtype=torch.bool)
    )
    area_lo, area_hi = area_ranges[:, 0], area_ranges[:, 1]
    gt_area = data.gt_area[:, None]
    gt_ignored = data.gt_crowd[:, None] | (gt_area < area_lo) | (gt_area > area_hi)  # (G, A)

    # steps 2-3 by buckets of groups with about as many ground-truth boxes, so that padding stays small
    matched_gt = torch.full((len(order), len(area_ranges), len(iou_thresholds)), -1, dtype=torch.int64)
    gt_per_group = torch.bincount(row[in_det_group], minlength=len(det_groups))  # (Gd,)
    bucket = torch.ceil(torch.log2(gt_per_group.clamp(min=1).to(torch.float64))).long()  # 1, 2, 3-4, 5-8, ...
    for b in torch.unique(bucket).tolist() if len(data.gt_labels) else []:
        groups = torch.where(bucket == b)[0]
        dets = torch.where(bucket[det_group] == b)[0]
        gts = torch.where(in_det_group)[0]
        gts = gts[bucket[row[gts]] == b]
        table = torch.full((len(groups), max(int(gt_per_group[groups].max()), 1)), -1, dtype=torch.int64)
        table[torch.searchsorted(groups, row[gts]), slot[gts]] = gts
        rows = torch.searchsorted(groups, det_group[dets])
        matched_gt[dets] = _greedy(boxes[dets], rank[dets], rows, table, data, gt_ignored, iou_thresholds)

    matched = matched_gt >= 0
    areas = torch.arange(len(area_ranges))[None, :, None]
    to_ignored = (
        matched & gt_ignored[matched_gt.clamp(min=0), areas]
        if len(data.gt_labels)
        else torch.zeros_like(matched)
    )
    area = boxes[:, 2] * boxes[:, 3]
    outside = ((area[:, None] < area_lo) | (area[:, None] > area_hi))[:, :, None]  # (D, A, 1)
    ignore = to_ignored | (~matched & outside)
    return Matches(
        labels=data.labels[order],
        scores=data.scores[order],
        rank=rank,
        true_positive=matched & ~ignore,
        false_positive=~matched & ~ignore,
        gt_labels=data.gt_labels,
        gt_counted=~gt_ignored,
    )


def accumulate(
    m: Matches, max_detections: tuple[int, ...], classes: Tensor, recall_thresholds: Tensor
) -> tuple[Tensor, Tensor]:
    """Step 4: precision ``Tensor[T, R, K, A, M]`` and recall ``Tensor[T, K, A, M]``, -1 where undefined.

    Undefined means the class has no ground-truth box that counts in that area range, as in COCOeval.
    """
    num_areas, num_thr = m.true_positive.shape[1:]
    shape = (num_thr, len(recall_thresholds), len(classes), num_areas, len(max_detections))
    precision = torch.full(shape, -1.0, dtype=torch.float64)
    recall = torch.full((num_thr, len(classes), num_areas, len(max_detections)), -1.0, dtype=torch.float64)
    # all images pooled, by decreasing score (ties: image order, then rank), split by class
    order = torch.sort(m.scores, descending=True, stable=True).indices
    order = order[torch.sort(m.labels[order], stable=True).indices]
    per_class = torch.bincount(torch.searchsorted(classes, m.labels), minlength=len(classes))
    gt_count = torch.zeros(len(classes), num_areas, dtype=torch.float64)
    gt_count.index_add_(0, torch.searchsorted(classes, m.gt_labels), m.gt_counted.to(torch.float64))
    eps = np.spacing(1)
    for k, dets in enumerate(torch.split(order, per_class.tolist())):
        defined = gt_count[k] > 0  # (A,)
        for i, max_det in enumerate(max_detections):
            sel = dets[m.rank[dets] < max_det]
            tp = torch.cumsum(m.true_positive[sel].permute(1, 2, 0).to(torch.float64), dim=2)  # (A, T, n)
            fp = torch.cumsum(m.false_positive[sel].permute(1, 2, 0).to(torch.float64), dim=2)
            rc = tp / gt_count[k].clamp(min=1)[:, None, None]
            pr = tp / (fp + tp + eps)
            envelope = pr.flip(2).cummax(2).values.flip(2)  # best precision at this recall or higher
            found = torch.searchsorted(
                rc.contiguous(),  # first point reaching each recall threshold
                recall_thresholds.expand(num_areas, num_thr, -1).contiguous(),
            )
            n = len(sel)
            at_thresholds = (
                envelope.gather(2, found.clamp(max=max(n - 1, 0)))
                if n
                else torch.zeros_like(found, dtype=torch.float64)
            )
            at_thresholds = torch.where(found < n, at_thresholds, 0.0)  # recall never reached: 0
            final_recall = rc[:, :, -1] if n else torch.zeros(num_areas, num_thr, dtype=torch.float64)
            precision[:, :, k, defined, i] = at_thresholds[defined].permute(1, 2, 0)
            recall[:, k, defined, i] = final_recall[defined].T
    return precision, recall
