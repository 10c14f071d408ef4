"""Matching anchors (or proposals) to ground-truth boxes by IoU, for the training targets of a detector.

Each anchor takes the ground-truth box it overlaps most. With ``IoU >= high_threshold`` it is a
positive (it learns that object's class and box); with ``IoU < low_threshold`` a negative
(background); in between it is ignored (no loss), so that ambiguous anchors do not teach either
answer. Some objects overlap no anchor well: ``allow_low_quality_matches`` also makes positive, for
each ground-truth box, the anchor(s) that overlap it most, whatever the IoU (the "best-anchor"
rule of Faster R-CNN's RPN). Chapter 10 builds this by hand; chapter 11 trains detectors with it.
:class:`Matcher` matches ``torchvision.models.detection._utils.Matcher`` to the last bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .boxes import _check_boxes, box_iou

__all__ = ["Matcher", "assign_anchors"]


class Matcher:
    """Assign each prediction (anchor, proposal) the index of its ground-truth box, or a negative code.

    ``matcher(match_quality_matrix)`` takes ``Tensor[M, N]``, the quality (IoU) of ground-truth
    box ``m`` with prediction ``n``, and returns int64 ``Tensor[N]``: the matched ``m`` in ``[0, M)``,
    ``BELOW_LOW_THRESHOLD = -1`` (background) or ``BETWEEN_THRESHOLDS = -2`` (ignored). An anchor
    whose best IoU equals ``high_threshold`` is matched; one equal to ``low_threshold`` is ignored.
    Ties between ground-truth boxes go to the one ``Tensor.max`` picks, as in torchvision.

    Unlike torchvision, which raises on empty input during training, an image without
    ground-truth boxes gives ``-1`` for every prediction (all background) and no predictions give
    an empty result. Chapter 10 builds it by hand.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ) -> None:
        if not low_threshold <= high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        if not isinstance(match_quality_matrix, Tensor) or match_quality_matrix.dim() != 2:
            raise ValueError("match_quality_matrix must be a tensor (M ground-truth boxes, N predictions)")
        num_gt, num_pred = match_quality_matrix.shape
        if num_gt == 0 or num_pred == 0:
            return torch.full(
                (num_pred,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=match_quality_matrix.device
            )
        best_quality, matches = match_quality_matrix.max(dim=0)  # (N,): best ground truth per prediction
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        below = best_quality < self.low_threshold
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[below] = self.BELOW_LOW_THRESHOLD
        matches[between] = self.BETWEEN_THRESHOLDS
        if all_matches is not None:
            # the best-anchor rule: for each ground truth, the prediction(s) overlapping it most (ties
            # included) get back their best match, however low its quality
            best_for_each_gt = match_quality_matrix.max(dim=1).values  # (M,)
            _, preds_to_update = torch.where(match_quality_matrix == best_for_each_gt[:, None])
            matches[preds_to_update] = all_matches[preds_to_update]
        return matches


def assign_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    *,
    allow_low_quality_matches: bool = True,
) -> tuple[Tensor, Tensor]:
    """Training targets of anchors (A, 4) for one image's ``gt_boxes`` (M, 4) and ``gt_labels`` (M,).

    Returns ``(labels, matched_gt_boxes)``: ``labels`` int64 ``Tensor[A]`` is ``-1`` for ignored
    anchors (best IoU in ``[neg_iou, pos_iou)``), ``0`` for background (best IoU ``< neg_iou``)
    and the matched box's label ``k`` for positives (``>= pos_iou``, or best anchor of a box when
    ``allow_low_quality_matches``); ``matched_gt_boxes`` ``Tensor[A, 4]`` is, for each anchor, the
    ground-truth box it overlaps most (meaningful for positives only; zeros when the image has no
    boxes). ``gt_labels`` should be ``>= 1`` (0 means background). The defaults are RetinaNet's;
    Faster R-CNN's RPN uses ``pos_iou=0.7, neg_iou=0.3``, its box head ``0.5, 0.5`` without
    low-quality matches. The same rule as torchvision's ``RoIHeads.assign_targets_to_proposals``.
    Chapter 10 builds it by hand.
    """
    _check_boxes(anchors, "anchors")
    _check_boxes(gt_boxes, "gt_boxes")
    if anchors.dim() != 2 or gt_boxes.dim() != 2:
        raise ValueError(
            "anchors and gt_boxes must have shapes (A, 4) and (M, 4), got "
            f"{tuple(anchors.shape)} and {tuple(gt_boxes.shape)}"
        )
    if (
        not isinstance(gt_labels, Tensor)
        or gt_labels.shape != gt_boxes.shape[:1]
        or gt_labels.is_floating_point()
    ):
        raise ValueError(
            f"gt_labels must be an integer tensor of shape (M,) = ({gt_boxes.shape[0]},), one per box"
        )
    matcher = Matcher(pos_iou, neg_iou, allow_low_quality_matches)
    if gt_boxes.shape[0] == 0:
        labels = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
        return labels, torch.zeros_like(anchors)
    matches = matcher(box_iou(gt_boxes, anchors))  # (A,) index of the matched box, -1 or -2
    matched_gt_boxes = gt_boxes[matches.clamp(min=0)]  # (A, 4)
    labels = gt_labels.to(torch.int64)[matches.clamp(min=0)]  # (A,)
    labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
    return labels, matched_gt_boxes
