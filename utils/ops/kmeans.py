"""Anchor shapes chosen from the data: k-means on the widths and heights of the training boxes.

YOLOv2 (Redmon and Farhadi, 2017) replaced hand-picked anchor shapes by the centres of k-means
clusters of the ground-truth boxes' ``(w, h)``, with the distance ``1 - IoU`` between two shapes
placed at the same centre instead of the Euclidean distance, which lets large boxes dominate the
error. Chapter 10 builds the clustering by hand, then uses :func:`kmeans_anchors` and compares the
clusters with the default anchors by :func:`mean_best_iou`.

Shapes are ``Tensor[N, 2]`` of positive ``(w, h)``; anchors are ``Tensor[K, 2]`` shapes, or, through
:func:`anchor_shapes`, the shapes of torchvision's anchors (``sizes`` x ``aspect_ratios``, ratio = h / w).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["DISTANCES", "KMeansAnchors", "anchor_shapes", "kmeans_anchors", "mean_best_iou", "wh_iou"]

DISTANCES = ("iou", "euclidean")


def _check_wh(wh: Tensor, name: str) -> Tensor:
    """``wh`` as a float tensor (N, 2) of positive finite sizes, or a clear error."""
    if not isinstance(wh, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, 2) holding (w, h), got {type(wh).__name__}"
        )
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) holding (w, h), got {tuple(wh.shape)}")
    if wh.is_complex() or wh.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {wh.dtype}")
    wh = wh if wh.dtype in (torch.float32, torch.float64) else wh.float()
    if not torch.isfinite(wh).all() or (wh <= 0).any():
        raise ValueError(
            f"{name} must hold positive, finite widths and heights (a box of zero width has no shape)"
        )
    return wh


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of box shapes placed at the same centre: ``Tensor[N, 2]`` and ``Tensor[K, 2]`` -> ``Tensor[N, K]``.

    ``min(w1, w2) * min(h1, h2) / (w1 h1 + w2 h2 - min(w1, w2) * min(h1, h2))``: the IoU the two boxes
    would have if their centres coincided, the best any placement gives. Chapter 10 builds it by hand.
    """
    wh1, wh2 = _check_wh(wh1, "wh1"), _check_wh(wh2, "wh2")
    inter = torch.min(wh1[:, None, :], wh2[None, :, :]).prod(dim=2)  # (N, K)
    union = wh1.prod(dim=1)[:, None] + wh2.prod(dim=1)[None, :] - inter
    return inter / union


def anchor_shapes(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """The ``(w, h)`` of the anchors ``sizes x aspect_ratios`` (ratio = h / w, area size²): ``Tensor[A, 2]``.

    Ratio-major, as :func:`utils.ops.cell_anchors` orders them, without its rounding. Chapter 10
    compares these default shapes with k-means anchors.
    """
    s = torch.as_tensor(sizes, dtype=torch.float64)
    r = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    if s.dim() != 1 or r.dim() != 1 or len(s) == 0 or len(r) == 0 or (s <= 0).any() or (r <= 0).any():
        raise ValueError(
            f"sizes and aspect_ratios must be non-empty sequences of positive numbers, got {sizes!r} "
            f"and {aspect_ratios!r}"
        )
    w = (s[None, :] / r.sqrt()[:, None]).reshape(-1)  # (R * S,)
    h = (s[None, :] * r.sqrt()[:, None]).reshape(-1)
    return torch.stack([w, h], dim=1)


def mean_best_iou(wh: Tensor, anchors: Tensor) -> float:
    """Mean over the boxes ``Tensor[N, 2]`` of the IoU with their best-fitting anchor shape ``Tensor[K, 2]``.

    The measure YOLOv2 uses to compare anchor sets ("Avg IoU"): how well the best anchor of each box
    fits it, centres aligned. Chapter 10 compares default and k-means anchors with it.
    """
    wh, anchors = _check_wh(wh, "wh"), _check_wh(anchors, "anchors")
    if len(wh) == 0:
        raise ValueError("wh holds no boxes: the mean best IoU of no boxes is undefined")
    return wh_iou(wh, anchors.to(wh.dtype)).amax(dim=1).mean().item()


class KMeansAnchors(NamedTuple):
    """Result of :func:`kmeans_anchors`: the ``anchors`` ``Tensor[K, 2]`` sorted by area, the cluster of
    each box ``assignment`` ``Tensor[N]`` (int64, into the sorted anchors), their ``mean_best_iou``, and
    the number of Lloyd ``iterations`` run."""

    anchors: Tensor
    assignment: Tensor
    mean_best_iou: float
    iterations: int


def _distance(wh: Tensor, centres: Tensor, distance: str) -> Tensor:
    """Distance ``Tensor[N, K]`` of each shape to each centre: ``1 - IoU`` or squared Euclidean."""
    if distance == "iou":
        return 1.0 - wh_iou(wh, centres)
    return ((wh[:, None, :] - centres[None, :, :]) ** 2).sum(dim=2)


def _kmeans_plus_plus(wh: Tensor, k: int, distance: str, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each new centre is a box drawn with probability proportional to its distance
    (``1 - IoU``, or the squared Euclidean distance) to the nearest centre chosen so far."""
    first = torch.randint(len(wh), (1,), generator=generator)
    centres = wh[first]  # (1, 2)
    for _ in range(1, k):
        nearest = _distance(wh, centres, distance).amin(dim=1).clamp(min=0)  # (N,)
        if nearest.sum() <= 0:  # fewer distinct shapes than k: repeat one (an empty cluster, handled later)
            pick = torch.randint(len(wh), (1,), generator=generator)
        else:
            pick = torch.multinomial(nearest.double(), 1, generator=generator)
        centres = torch.cat([centres, wh[pick]])
    return centres


def kmeans_anchors(
    wh: Tensor,
    k: int,
    *,
    distance: str = "iou",
    iterations: int = 300,
    seed: int = 0,
    init: Tensor | None = None,
    center: str = "mean",
) -> KMeansAnchors:
    """Cluster box shapes ``wh`` ``Tensor[N, 2]`` into ``k`` anchor shapes with Lloyd's k-means.

    ``distance="iou"`` (YOLOv2's ``1 - IoU`` of shapes centred together) or ``"euclidean"`` (plain
    k-means on ``(w, h)``, the same as scikit-learn's ``KMeans`` from the same ``init``). Starts from
    ``init`` ``Tensor[k, 2]`` when given, else from k-means++ seeding with a generator seeded by
    ``seed``; then alternates assigning each box to its nearest centre and moving each centre to the
    ``center`` (``"mean"`` or ``"median"``) of its boxes, until no assignment changes or after
    ``iterations`` rounds. A cluster that loses all its boxes takes the box worst served by its
    centre. Returns :class:`KMeansAnchors` (anchors sorted by area). Chapter 10 builds it by hand.
    """
    wh = _check_wh(wh, "wh")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if center not in ("mean", "median"):
        raise ValueError(f"center must be 'mean' or 'median', got {center!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(wh):
        raise ValueError(f"k must be an int between 1 and the number of boxes ({len(wh)}), got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if init is None:
        centres = _kmeans_plus_plus(wh, k, distance, torch.Generator().manual_seed(int(seed)))
    else:
        centres = _check_wh(init, "init").to(wh.dtype).clone()
        if centres.shape != (k, 2):
            raise ValueError(f"init must have shape (k, 2) = ({k}, 2), got {tuple(centres.shape)}")
    assignment = torch.full((len(wh),), -1, dtype=torch.int64)
    rounds = 0
    for rounds in range(1, iterations + 1):
        new = _distance(wh, centres, distance).argmin(dim=1)  # (N,) nearest centre of each box
        if torch.equal(new, assignment):
            break
        assignment = new
        for j in range(k):
            members = wh[assignment == j]
            if len(members) == 0:  # an empty cluster: move it to the worst-served box, if any is
                served = _distance(wh, centres, distance).amin(dim=1)
                if served.max() > 0:  # (fewer distinct shapes than k: nothing to gain, keep it)
                    centres[j] = wh[served.argmax()]
                continue
            centres[j] = members.mean(dim=0) if center == "mean" else members.median(dim=0).values
    anchors = centres[torch.argsort(centres.prod(dim=1), stable=True)]  # by area, small to large
    assignment = _distance(wh, anchors, distance).argmin(dim=1)  # (N,) into the sorted anchors
    return KMeansAnchors(anchors, assignment, mean_best_iou(wh, anchors), rounds)
