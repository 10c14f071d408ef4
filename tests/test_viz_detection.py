"""The figures of chapter 10 (utils.viz_detection) and its explorers (utils.widgets.detection)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from utils import viz_detection  # noqa: E402
from utils.data import SHAPE_CLASSES, make_scene  # noqa: E402
from utils.metrics.detection import coco_map  # noqa: E402
from utils.widgets import detection as widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rectangles(ax, colour):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_edgecolor() == to_rgba(colour)]


def _one_image():
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 50.0, 90.0, 80.0], [5.0, 60.0, 30.0, 90.0]]),
        "labels": torch.tensor([1, 2, 1]),
    }
    raw = {
        "boxes": torch.tensor(
            [
                [11.0, 10.0, 41.0, 40.0],  # object 0
                [12.0, 11.0, 40.0, 41.0],  # a duplicate of it
                [50.0, 51.0, 89.0, 80.0],  # object 1
                [50.0, 51.0, 89.0, 80.0],  # the same box with the wrong class
                [60.0, 5.0, 90.0, 30.0],  # nothing there
            ]
        ),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.3]),
        "labels": torch.tensor([1, 1, 2, 1, 2]),
    }
    return torch.rand(3, 100, 100, generator=torch.Generator().manual_seed(0)), raw, target


def test_draw_detections_colours_each_outcome_as_coco_scores_it():
    image, raw, target = _one_image()
    fig = viz_detection.draw_detections(image, raw, target, iou_threshold=0.5)
    ax = fig.axes[0]
    colours = viz_detection.OUTCOME_COLOURS
    assert len(_rectangles(ax, colours["true positive"])) == 2  # objects 0 and 1
    assert len(_rectangles(ax, colours["false positive"])) == 3  # duplicate, wrong class, background
    missed = _rectangles(ax, colours["missed"])
    assert len(missed) == 1 and missed[0].get_width() == pytest.approx(25.0)  # object 2
    assert ax.get_title().startswith("2 true, 3 false positives, 1 missed")
    # a score threshold leaves out the low-scoring detections
    fig = viz_detection.draw_detections(image, raw, target, score_threshold=0.65)
    assert fig.axes[0].get_title().startswith("2 true, 1 false positives, 1 missed")


def test_draw_anchor_labels_draws_positives_and_ignored_and_checks_shapes():
    image = torch.zeros(3, 64, 64)
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 24.0, 24.0], [30.0, 30.0, 50.0, 50.0]])
    labels = torch.tensor([1, -1, 0])
    ax = viz_detection.draw_anchor_labels(image, anchors, labels, anchors[:1]).axes[0]
    assert len(_rectangles(ax, "tab:green")) == 1 and len(_rectangles(ax, "tab:orange")) == 1
    assert ax.get_title() == "1 positive, 1 ignored, 1 negative anchors"
    ax = viz_detection.draw_anchor_labels(image, anchors, labels, anchors[:1], show=("positive",)).axes[0]
    assert len(_rectangles(ax, "tab:orange")) == 0
    with pytest.raises(ValueError, match="must agree"):
        viz_detection.draw_anchor_labels(image, anchors, labels[:2], anchors[:1])
    with pytest.raises(ValueError, match="show"):
        viz_detection.draw_anchor_labels(image, anchors, labels, anchors[:1], show=("negative",))


def test_pr_curve_envelope_is_the_running_maximum_from_the_right():
    recall = np.array([0.2, 0.4, 0.4, 0.6, 0.8])
    precision = np.array([1.0, 1.0, 0.67, 0.75, 0.8])
    np.testing.assert_allclose(viz_detection._envelope(recall, precision), [1.0, 1.0, 0.8, 0.8, 0.8])
    ax = viz_detection.plot_pr_curve(recall, precision, label="detector").axes[0]
    assert len(ax.lines) == 2  # the curve and its envelope
    np.testing.assert_allclose(ax.lines[0].get_ydata(), precision)
    with pytest.raises(ValueError, match="same length"):
        viz_detection.plot_pr_curve(recall, precision[:3])


def test_plot_ap_methods_titles_the_three_values_and_rejects_empty_curves():
    recall, precision = np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 1.0, 0.67, 0.75])
    fig = viz_detection.plot_ap_methods(
        recall, precision, {"11point": 0.5, "all_points": 0.6, "101point": 0.7}
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and all(f"AP = {v:.4f}" in t for v, t in zip((0.5, 0.6, 0.7), titles))
    assert len(fig.axes[0].patches) == 11 and len(fig.axes[2].patches) == 101  # one bar per recall point
    with pytest.raises(ValueError, match="non-empty"):
        viz_detection.plot_ap_methods(np.array([]), np.array([]))


def test_plot_task_hierarchy_has_six_panels_and_names_the_largest_object():
    scene = make_scene(5, size=64, min_objects=2, max_objects=3)
    fig = viz_detection.plot_task_hierarchy(scene, SHAPE_CLASSES)
    assert len(fig.axes) == 6
    largest = int(scene["instance_masks"].flatten(1).sum(1).argmax())
    assert SHAPE_CLASSES[int(scene["labels"][largest]) - 1] in fig.axes[0].get_title()
    empty = {**scene, "labels": scene["labels"][:0]}
    with pytest.raises(ValueError, match="no object"):
        viz_detection.plot_task_hierarchy(empty, SHAPE_CLASSES)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.9])
def test_nms_summary_keeps_what_batched_nms_keeps_and_scores_it_with_coco_map(threshold):
    _, raw, target = _one_image()
    out = widgets.nms_summary(raw, target, method="greedy", iou_threshold=threshold)
    keep = torchvision.ops.batched_nms(raw["boxes"], raw["scores"], raw["labels"], threshold)
    torch.testing.assert_close(out["detections"]["boxes"], raw["boxes"][keep])
    assert out["kept"] == len(keep)
    reference = coco_map([{k: v[keep] for k, v in raw.items()}], [target])
    assert out["map_50"] == pytest.approx(reference["map_50"]) and out["map"] == pytest.approx(
        reference["map"]
    )


def test_nms_summary_score_threshold_soft_and_none():
    _, raw, target = _one_image()
    assert widgets.nms_summary(raw, target, method="none")["kept"] == 5
    assert widgets.nms_summary(raw, target, method="none", score_threshold=0.65)["kept"] == 3
    soft = widgets.nms_summary(raw, target, method="soft", sigma=0.5)
    assert soft["kept"] == 5  # soft-NMS lowers scores, here deletes nothing
    # the duplicate (IoU ~0.87 with the best box of its class) decays by exp(-IoU^2 / sigma)
    iou = torchvision.ops.box_iou(raw["boxes"][:1], raw["boxes"][1:2]).item()
    decayed = soft["detections"]["scores"][(soft["detections"]["boxes"] == raw["boxes"][1]).all(1)]
    assert decayed.item() == pytest.approx(0.8 * np.exp(-(iou**2) / 0.5), rel=1e-5)
    with pytest.raises(ValueError, match="method"):
        widgets.nms_summary(raw, target, method="fast")


def test_iou_summary_agrees_with_torchvision():
    a, b = (0.0, 0.0, 10.0, 10.0), (5.0, 2.0, 20.0, 9.0)
    s = widgets.iou_summary(a, b)
    ta, tb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    assert s["IoU"] == pytest.approx(torchvision.ops.box_iou(ta, tb).item())
    assert s["GIoU"] == pytest.approx(torchvision.ops.generalized_box_iou(ta, tb).item())
    assert s["DIoU"] == pytest.approx(torchvision.ops.distance_box_iou(ta, tb).item())
    assert s["CIoU"] == pytest.approx(torchvision.ops.complete_box_iou(ta, tb).item())


def test_explorers_redraw_when_their_controls_move():
    image, raw, target = _one_image()
    box = widgets.nms_explorer(
        image, raw, target, classes=("bg", "a", "b"), iou_threshold=0.5, score_threshold=0
    )
    assert "<b>4</b> of 5" in box.summary.value  # greedy NMS at 0.5 removes the duplicate
    box.method.value = "none"
    assert "<b>5</b> of 5" in box.summary.value
    box.score.value = 0.65
    assert "<b>3</b> of 5" in box.summary.value and len(box.image.value) > 1000
    iou = widgets.iou_explorer()
    assert "IoU <b>+0.333</b>" in iou.summary.value  # half a width apart: IoU 1/3
    iou.dx.value = 60.0  # disjoint: IoU 0, GIoU negative
    assert "IoU <b>+0.000</b>" in iou.summary.value and "GIoU <b>-" in iou.summary.value
