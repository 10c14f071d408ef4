"""Figures of the detection chapters: the vision tasks side by side, detections coloured by how they were
scored, anchors and their training labels, precision-recall curves and the three ways to take AP.

Boxes are pixel ``xyxy`` in the continuous convention of :func:`utils.viz.draw_boxes` (a box
``[0, 0, 10, 10]`` covers the top-left 10x10 pixels); chapter 10 explains the conventions. Every
function returns the matplotlib ``Figure`` (and draws into ``ax`` when given one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .metrics.matching import match_detections
from .viz import _figure_for, _image, _imshow, _numpy, draw_boxes, overlay_masks, palette

__all__ = [
    "OUTCOME_COLOURS",
    "draw_anchor_labels",
    "draw_detections",
    "plot_ap_methods",
    "plot_pr_curve",
    "plot_task_hierarchy",
]

OUTCOME_COLOURS = {"true positive": "tab:green", "false positive": "tab:red", "missed": "gold"}


def _rect(ax: Axes, box: Sequence[float], colour: Any, **style: Any) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    # pixel (r, c) is drawn centred on (c, r): a box's edges are half a pixel before its first pixel
    ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colour, **style))


def _clean(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_task_hierarchy(scene: Mapping[str, torch.Tensor], classes: Sequence[str]) -> Figure:
    """One scene seen by six tasks: classification, localisation, detection, semantic, instance and
    panoptic segmentation. ``scene`` is a dict of :mod:`utils.data.scenes` (``image`` (3, H, W),
    ``boxes`` (K, 4) pixel-inclusive as the scenes give them, ``labels`` (K,), ``semantic_mask``
    (H, W), ``instance_masks`` (K, H, W)); ``classes`` names labels 1.. (``classes[k - 1]``).
    Chapter 10 opens with it.
    """
    image, labels = scene["image"], scene["labels"]
    boxes = scene["boxes"].double() + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)  # exclusive
    masks = scene["instance_masks"]
    names = ("background", *classes)
    if len(labels) == 0:
        raise ValueError("the scene holds no object: pick a scene with at least one")
    largest = int(masks.flatten(1).sum(1).argmax())
    fig, axes = plt.subplots(1, 6, figsize=(15, 2.9))
    _imshow(axes[0], _image(image))
    _clean(axes[0], f"classification\n'{names[int(labels[largest])]}'")
    draw_boxes(image, boxes[largest : largest + 1], labels[largest : largest + 1], classes=names, ax=axes[1])
    _clean(axes[1], "classification + localisation\none label, one box")
    draw_boxes(image, boxes, labels, classes=names, ax=axes[2])
    _clean(axes[2], f"object detection\n{len(labels)} boxes with labels")
    overlay_masks(image, scene["semantic_mask"], alpha=0.7, ax=axes[3])
    _clean(axes[3], "semantic segmentation\na class per pixel")
    overlay_masks(image, masks.bool(), alpha=0.7, ax=axes[4])
    _clean(axes[4], "instance segmentation\na mask per object")
    panoptic = _image(image).copy()
    panoptic[~masks.bool().any(0).numpy()] = (0.45, 0.45, 0.45)  # every pixel labelled: background is 'stuff'
    overlay_masks(panoptic, masks.bool(), alpha=0.85, ax=axes[5])
    _clean(axes[5], "panoptic segmentation\nclass + instance per pixel")
    fig.tight_layout()
    return fig


def draw_detections(
    image: Any,
    detections: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    iou_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Detections (a dict of ``boxes``, ``scores``, ``labels``) drawn over ``image``, coloured by how COCO
    scores them at ``iou_threshold``: true positives green, false positives (nothing there, a wrong
    class, too loose, or a duplicate) red and dashed, ground-truth boxes that no detection found gold
    and dotted. Detections scoring below ``score_threshold`` are left out. ``classes`` names labels
    (``classes[label]``) in the captions. Chapter 10 uses it to show NMS and AP at work.
    """
    boxes = torch.as_tensor(detections["boxes"]).detach().cpu().double().reshape(-1, 4)
    scores = torch.as_tensor(detections["scores"]).detach().cpu().double().reshape(-1)
    labels = torch.as_tensor(detections["labels"]).detach().cpu().long().reshape(-1)
    gt = torch.as_tensor(target["boxes"]).detach().cpu().double().reshape(-1, 4)
    gt_labels = torch.as_tensor(target["labels"]).detach().cpu().long().reshape(-1)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    matched = torch.full((len(boxes),), -1, dtype=torch.int64)
    for c in torch.unique(torch.cat([labels, gt_labels])).tolist():  # COCO matches within a class
        d, g = torch.where(labels == c)[0], torch.where(gt_labels == c)[0]
        m = match_detections(boxes[d], scores[d], gt[g], iou_threshold)
        matched[d] = torch.where(m >= 0, g[m.clamp(min=0)] if len(g) else m, -1)
    img = _image(image)
    h, w = img.shape[:2]
    fig, ax = _figure_for(ax, (5, 5 * h / w))
    _imshow(ax, img)
    found = set(matched[matched >= 0].tolist())
    for j, box in enumerate(gt.tolist()):
        if j not in found:
            _rect(ax, box, OUTCOME_COLOURS["missed"], linewidth=2, linestyle=":")
    for i in torch.argsort(scores).tolist():  # the best detections drawn last, on top
        tp = bool(matched[i] >= 0)
        colour = OUTCOME_COLOURS["true positive" if tp else "false positive"]
        _rect(ax, boxes[i].tolist(), colour, linewidth=2 if tp else 1.5, linestyle="-" if tp else "--")
        name = classes[int(labels[i])] if classes is not None else str(int(labels[i]))
        ax.text(
            float(boxes[i, 0]) - 0.5,
            float(boxes[i, 1]) - 0.5,
            f"{name} {float(scores[i]):.2f}",
            fontsize=6,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "linewidth": 0},
        )
    n_tp = len(found)
    ax.set_title(
        title
        or f"{n_tp} true, {len(boxes) - n_tp} false positives, {len(gt) - n_tp} missed "
        f"(IoU ≥ {iou_threshold:g})",
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def draw_anchor_labels(
    image: Any,
    anchors: torch.Tensor,
    labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    *,
    show: Sequence[str] = ("positive", "ignored"),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """The training labels of anchors over ``image``: positives (``labels > 0``) green, ignored ones
    (``labels == -1``) orange and dashed, ground-truth boxes white; negatives (0) are not drawn.
    ``anchors`` ``Tensor[A, 4]``, ``labels`` ``Tensor[A]`` as :func:`utils.ops.assign_anchors` returns
    them; ``show`` picks the kinds drawn. Chapter 10 uses it to show the ignore band and the best-anchor
    rule.
    """
    if not set(show) <= {"positive", "ignored"}:
        raise ValueError(f"show must hold 'positive' and/or 'ignored', got {show!r}")
    anchors = torch.as_tensor(anchors).detach().cpu().double()
    labels = torch.as_tensor(labels).detach().cpu().long()
    if anchors.shape != (len(labels), 4):
        raise ValueError(
            f"anchors (A, 4) and labels (A,) must agree, got {tuple(anchors.shape)} and {tuple(labels.shape)}"
        )
    img = _image(image)
    h, w = img.shape[:2]
    fig, ax = _figure_for(ax, (5, 5 * h / w))
    _imshow(ax, img)
    if "ignored" in show:
        for box in anchors[labels == -1].tolist():
            _rect(ax, box, "tab:orange", linewidth=1, linestyle="--")
    if "positive" in show:
        for box in anchors[labels > 0].tolist():
            _rect(ax, box, "tab:green", linewidth=1.5)
    for box in torch.as_tensor(gt_boxes).double().tolist():
        _rect(ax, box, "white", linewidth=2)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(
        title
        or f"{int((labels > 0).sum())} positive, {int((labels == -1).sum())} ignored, "
        f"{int((labels == 0).sum())} negative anchors",
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _envelope(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The best precision at this recall or a higher one (what every AP variant integrates)."""
    return np.maximum.accumulate(precision[::-1])[::-1]


def plot_pr_curve(
    recall: Any,
    precision: Any,
    *,
    ax: Axes | None = None,
    label: str | None = None,
    envelope: bool = True,
    colour: Any = None,
) -> Figure:
    """A precision-recall curve, one point per detection by decreasing score (``recall``, ``precision``
    of equal length, e.g. :func:`utils.metrics.detection.precision_recall`), and its envelope
    (dashed). Chapter 10 plots them.
    """
    r = _numpy(recall, "recall").astype(np.float64).reshape(-1)
    p = _numpy(precision, "precision").astype(np.float64).reshape(-1)
    if r.shape != p.shape:
        raise ValueError(f"recall and precision must have the same length, got {len(r)} and {len(p)}")
    fig, ax = _figure_for(ax, (4.5, 3.5))
    line = ax.plot(r, p, marker=".", markersize=3, linewidth=1, color=colour, label=label)[0]
    if envelope and len(r):
        ax.step(r, _envelope(r, p), where="post", linestyle="--", linewidth=1, color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    if label:
        ax.legend(fontsize=8)
    return fig


def plot_ap_methods(recall: Any, precision: Any, values: Mapping[str, float] | None = None) -> Figure:
    """The three ways to turn a precision-recall curve into AP, side by side: VOC 2007's mean of the
    envelope at 11 recall points, VOC 2010's area under the envelope, and COCO's mean at 101 points.
    ``values`` (``"11point"``, ``"all_points"``, ``"101point"`` -> AP) puts the numbers in the titles;
    compute them with :mod:`utils.metrics.detection`. Chapter 10 draws it for its worked example.
    """
    r = _numpy(recall, "recall").astype(np.float64).reshape(-1)
    p = _numpy(precision, "precision").astype(np.float64).reshape(-1)
    if r.shape != p.shape or len(r) == 0:
        raise ValueError("recall and precision must be non-empty and of the same length")
    env = _envelope(r, p)
    values = dict(values or {})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    colours = palette(3)

    def envelope_at(t: float) -> float:
        above = env[r >= t - 1e-12]
        return float(above.max()) if len(above) else 0.0

    for ax, (key, name, points) in zip(
        axes,
        [
            ("11point", "VOC 2007: 11 points", np.linspace(0, 1, 11)),
            ("all_points", "VOC 2010+: area under the envelope", None),
            ("101point", "COCO: 101 points", np.linspace(0, 1, 101)),
        ],
    ):
        ax.plot(r, p, marker=".", color="0.5", linewidth=1, label="precision at each detection")
        if points is None:
            xs = np.concatenate([[0.0], r])
            ys = np.concatenate([[env[0]], env])
            ax.fill_between(xs, ys, step="pre", alpha=0.3, color=colours[1], label="area counted")
        else:
            heights = [envelope_at(t) for t in points]
            ax.bar(
                points,
                heights,
                width=0.6 / len(points) if len(points) > 20 else 0.04,
                alpha=0.6,
                color=colours[0 if len(points) == 11 else 2],
                label="envelope at the recall points",
            )
        title = name + (f"\nAP = {values[key]:.4f}" if key in values else "")
        ax.set(title=title, xlabel="recall", xlim=(-0.03, 1.03), ylim=(0, 1.05))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
