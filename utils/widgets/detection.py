"""The explorers of chapter 10: non-maximum suppression on one image, and the IoU family of two boxes.

* :func:`nms_explorer`: a detector's raw output on one image; move the NMS threshold and the score
  threshold, switch between greedy NMS (per class), soft-NMS and none, and watch which detections
  survive, how COCO scores them (true positives, false positives, missed objects) and the image's AP;
* :func:`iou_explorer`: slide and stretch a box against a fixed one and read IoU, GIoU, DIoU and CIoU.

:func:`nms_summary` and :func:`iou_summary` compute what the widgets show. On the website the widgets
show the state saved when the page was built; run the notebook to move the controls.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from utils.metrics.detection import coco_map
from utils.ops import batched_nms, box_iou, complete_box_iou, distance_box_iou, generalized_box_iou, soft_nms

__all__ = ["NMS_METHODS", "iou_explorer", "iou_summary", "nms_explorer", "nms_summary"]

NMS_METHODS = ("greedy", "soft", "none")


def _per_class_soft_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, sigma: float):
    """Gaussian soft-NMS within each class: (kept indices, their decayed scores)."""
    keep, new_scores = [], []
    for c in torch.unique(labels).tolist():
        members = torch.where(labels == c)[0]
        k, s = soft_nms(boxes[members], scores[members], sigma=sigma)
        keep.append(members[k])
        new_scores.append(s)
    if not keep:
        return torch.zeros(0, dtype=torch.int64), scores.new_zeros(0)
    return torch.cat(keep), torch.cat(new_scores)


def nms_summary(
    raw: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    method: str = "greedy",
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    sigma: float = 0.5,
) -> dict[str, Any]:
    """What survives post-processing of one image's raw detections, and its AP.

    Detections scoring below ``score_threshold`` are dropped; then ``"greedy"`` runs per-class NMS
    at ``iou_threshold`` (:func:`utils.ops.batched_nms`), ``"soft"`` per-class Gaussian soft-NMS with
    ``sigma`` (scores decay, nothing below 0.001 survives), ``"none"`` keeps everything. Returns
    ``detections`` (the kept ``boxes``, ``scores``, ``labels``), ``kept`` (their number) and ``map_50``
    and ``map`` of this image alone (COCO, :func:`utils.metrics.detection.coco_map`). Chapter 10 uses it.
    """
    if method not in NMS_METHODS:
        raise ValueError(f"method must be one of {NMS_METHODS}, got {method!r}")
    boxes, scores, labels = raw["boxes"], raw["scores"], raw["labels"]
    above = torch.where(scores >= score_threshold)[0]
    boxes, scores, labels = boxes[above], scores[above], labels[above]
    if method == "greedy":
        keep = batched_nms(boxes, scores, labels, float(iou_threshold))
        kept = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    elif method == "soft":
        keep, new_scores = _per_class_soft_nms(boxes, scores, labels, sigma)
        kept = {"boxes": boxes[keep], "scores": new_scores, "labels": labels[keep]}
    else:
        kept = {"boxes": boxes, "scores": scores, "labels": labels}
    metrics = coco_map([kept], [{"boxes": target["boxes"], "labels": target["labels"]}])
    return {
        "detections": kept,
        "kept": len(kept["boxes"]),
        "map_50": metrics["map_50"],
        "map": metrics["map"],
    }


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def nms_explorer(
    image: torch.Tensor,
    raw: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    classes: Sequence[str] | None = None,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    dpi: int = 80,
):
    """An ipywidgets box: NMS method, IoU threshold and score threshold, a line of numbers, and the image
    with the surviving detections coloured by :func:`utils.viz_detection.draw_detections`.

    ``image`` (3, H, W), ``raw`` one image's detections before NMS (``boxes``, ``scores``, ``labels``),
    ``target`` its ground truth (``boxes``, ``labels``), ``classes`` the names of the labels. The box
    has the attributes ``method``, ``iou``, ``score``, ``summary`` and ``image``. Chapter 10 shows it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from utils.viz_detection import draw_detections

    method = widgets.ToggleButtons(
        options=[("greedy NMS", "greedy"), ("soft-NMS", "soft"), ("none", "none")],
        value="greedy",
        description="method",
    )
    iou = widgets.FloatSlider(
        value=iou_threshold,
        min=0.05,
        max=1.0,
        step=0.05,
        description="NMS IoU",
        continuous_update=False,
        readout_format=".2f",
    )
    score = widgets.FloatSlider(
        value=score_threshold,
        min=0.0,
        max=0.95,
        step=0.05,
        description="min score",
        continuous_update=False,
        readout_format=".2f",
    )
    summary = widgets.HTML()
    picture = widgets.Image(format="png")

    def update(change: Any = None) -> None:
        result = nms_summary(
            raw, target, method=method.value, iou_threshold=iou.value, score_threshold=score.value
        )
        fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=dpi)
        draw_detections(image, result["detections"], target, classes=classes, ax=ax)
        fig.tight_layout()
        picture.value = _png(fig)
        plt.close(fig)
        summary.value = (
            f"<b>{result['kept']}</b> of {len(raw['boxes'])} detections kept &nbsp;|&nbsp; this "
            f"image: AP50 {result['map_50']:.3f}, AP@[.5:.95] {result['map']:.3f}"
        )

    for control in (method, iou, score):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([method, widgets.HBox([iou, score]), summary, picture])
    box.method, box.iou, box.score, box.summary, box.image = method, iou, score, summary, picture
    return box


def iou_summary(box_a: Sequence[float], box_b: Sequence[float]) -> dict[str, float]:
    """IoU, GIoU, DIoU and CIoU of two ``xyxy`` boxes (floats), from :mod:`utils.ops`. Chapter 10 uses it."""
    a = torch.tensor([list(box_a)], dtype=torch.float64)
    b = torch.tensor([list(box_b)], dtype=torch.float64)
    return {
        "IoU": box_iou(a, b).item(),
        "GIoU": generalized_box_iou(a, b).item(),
        "DIoU": distance_box_iou(a, b).item(),
        "CIoU": complete_box_iou(a, b).item(),
    }


def iou_explorer(dpi: int = 80):
    """An ipywidgets box: move box B (its centre, width and height) against a fixed 40x40 box A and read
    the four overlap measures; B starts half a width to the right of A. Attributes ``dx``, ``dy``, ``w``,
    ``h``, ``summary`` and ``image``. Chapter 10 shows it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    a = (30.0, 30.0, 70.0, 70.0)
    dx = widgets.FloatSlider(
        value=20.0, min=-60.0, max=60.0, step=2.0, description="B: x shift", continuous_update=False
    )
    dy = widgets.FloatSlider(
        value=0.0, min=-60.0, max=60.0, step=2.0, description="B: y shift", continuous_update=False
    )
    w = widgets.FloatSlider(
        value=40.0, min=4.0, max=90.0, step=2.0, description="B: width", continuous_update=False
    )
    h = widgets.FloatSlider(
        value=40.0, min=4.0, max=90.0, step=2.0, description="B: height", continuous_update=False
    )
    summary = widgets.HTML()
    picture = widgets.Image(format="png")

    def update(change: Any = None) -> None:
        cx, cy = 50.0 + dx.value, 50.0 + dy.value
        b = (cx - w.value / 2, cy - h.value / 2, cx + w.value / 2, cy + h.value / 2)
        values = iou_summary(a, b)
        fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=dpi)
        for box, colour, name in ((a, "tab:blue", "A"), (b, "tab:orange", "B")):
            ax.add_patch(
                Rectangle(
                    box[:2],
                    box[2] - box[0],
                    box[3] - box[1],
                    fill=False,
                    edgecolor=colour,
                    linewidth=2,
                    label=name,
                )
            )
        enclosing = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
        ax.add_patch(
            Rectangle(
                enclosing[:2],
                enclosing[2] - enclosing[0],
                enclosing[3] - enclosing[1],
                fill=False,
                edgecolor="0.6",
                linestyle=":",
                label="enclosing box C",
            )
        )
        ax.set(xlim=(-20, 120), ylim=(120, -20), aspect="equal", xticks=[], yticks=[])
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        picture.value = _png(fig)
        plt.close(fig)
        summary.value = " &nbsp;|&nbsp; ".join(f"{k} <b>{v:+.3f}</b>" for k, v in values.items())

    for control in (dx, dy, w, h):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([dx, dy]), widgets.HBox([w, h]), summary, picture])
    box.dx, box.dy, box.w, box.h, box.summary, box.image = dx, dy, w, h, summary, picture
    return box
