"""Non-maximum suppression: keep the best box of each cluster of overlapping boxes.

Chapter 10 builds greedy NMS by hand; chapter 11 runs it (per class, through :func:`batched_nms`)
at the end of every detector. The loops below are the algorithm as the chapter states it, one kept
box per iteration; they agree with ``torchvision.ops.nms`` / ``batched_nms`` index for index.

Ties: boxes are visited in order of decreasing score, boxes with equal scores in order of their index
(a stable sort), so of two identical boxes with the same score the one with the lower index is kept,
as torchvision's CPU kernel does. A box is suppressed when its IoU with a kept box is strictly
greater than ``iou_threshold``; two identical zero-area boxes have IoU ``nan`` and do not suppress
each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .boxes import _check_boxes, box_iou

__all__ = ["batched_nms", "nms", "soft_nms"]

SOFT_NMS_METHODS = ("gaussian", "linear", "hard")


def _check_nms_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float | None = None) -> None:
    _check_boxes(boxes)
    if boxes.dim() != 2:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"scores must be a tensor of shape (N,) = ({boxes.shape[0]},), one per box, got {shape}"
        )
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a float tensor, got dtype {scores.dtype}")
    if iou_threshold is not None and (
        isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float))
    ):
        raise TypeError(f"iou_threshold must be a number, got {iou_threshold!r}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of ``xyxy`` boxes ``Tensor[N, 4]`` with ``scores`` ``Tensor[N]``.

    Repeatedly keep the highest-scoring remaining box and drop every remaining box whose IoU with
    it is greater than ``iou_threshold``. Returns the kept indices (int64 ``Tensor[K]``) in order
    of decreasing score (ties: lower index first). Matches ``torchvision.ops.nms``.
    Chapter 10 builds it by hand.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,) visiting order
    keep = []
    while order.numel() > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        iou = box_iou(boxes[best][None], boxes[rest])[0]  # (len(rest),)
        # compared in float64, as the C++ kernel compares its float IoU with a double threshold
        order = rest[~(iou.double() > iou_threshold)]  # nan (two empty boxes) never suppresses
    if not keep:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return torch.stack(keep)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes with different ``idxs`` (``Tensor[N]`` int) never suppress each other.

    Returns the kept indices (int64) sorted by decreasing score, ties by index. Matches
    ``torchvision.ops.batched_nms``. (torchvision offsets each category's boxes so far apart
    that they cannot overlap and runs one NMS; running NMS per category, as here, gives the same
    boxes without the rounding the offsets cause.) Chapter 11 uses it for per-class NMS.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape or idxs.is_floating_point():
        raise ValueError(
            f"idxs must be an integer tensor of shape (N,) = ({boxes.shape[0]},), one category per box"
        )
    kept = torch.zeros(scores.shape[0], dtype=torch.bool, device=boxes.device)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        kept[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(kept)[0]
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: str = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of dropping them.

    Repeatedly keep the highest-scoring remaining box ``b`` and multiply the score of every
    remaining box ``x`` by a weight of ``iou = IoU(b, x)``:

    * ``"gaussian"``: ``exp(-iou² / sigma)``;
    * ``"linear"``: ``1 - iou`` where ``iou > iou_threshold``, else 1;
    * ``"hard"``: ``0`` where ``iou > iou_threshold``, else 1 (plain NMS).

    Boxes whose score is, or falls, below ``score_threshold`` are dropped, and so are boxes whose
    weight is 0 (``"hard"`` suppression, or ``"linear"`` for a duplicate box). Returns ``(keep,
    new_scores)``: indices (int64 ``Tensor[K]``) in the order they were kept (decreasing decayed
    score; ties: lower index first) and their decayed scores ``Tensor[K]``. torchvision has no
    soft-NMS; with ``method="hard"`` this equals ``torchvision.ops.nms`` on the boxes scoring at
    least ``score_threshold``. Chapter 10 builds it by hand.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    current = scores.clone()  # (N,) decayed scores
    remaining = torch.where(current >= score_threshold)[0]  # indices still in play, increasing
    keep, kept_scores = [], []
    while remaining.numel() > 0:
        pos = torch.argmax(current[remaining])  # the first of equal maxima: the lowest index
        best = remaining[pos]
        keep.append(best)
        kept_scores.append(current[best])
        remaining = torch.cat([remaining[:pos], remaining[pos + 1 :]])
        iou = box_iou(boxes[best][None], boxes[remaining])[0].nan_to_num(0.0)  # (len(remaining),)
        overlaps = iou.double() > iou_threshold  # compared in float64, as in nms
        if method == "gaussian":
            weight = torch.exp(-(iou * iou) / sigma)
        elif method == "linear":
            weight = torch.where(overlaps, 1 - iou, torch.ones_like(iou))
        else:
            weight = torch.where(overlaps, torch.zeros_like(iou), torch.ones_like(iou))
        current[remaining] = current[remaining] * weight.to(current.dtype)
        remaining = remaining[(current[remaining] >= score_threshold) & (weight > 0)]
    if not keep:
        empty = torch.empty(0, dtype=torch.int64, device=boxes.device)
        return empty, scores.new_empty(0)
    return torch.stack(keep), torch.stack(kept_scores)
