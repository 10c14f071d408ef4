"""utils.metrics.detection against pycocotools' COCOeval (all twelve summary numbers, and the full
precision and recall arrays, on hundreds of images of random detections), and VOC AP against the VOC
devkit's voc_ap."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO  # the reference: in the dev extra of pyproject.toml
from pycocotools.cocoeval import COCOeval

from utils.metrics.detection import COCO_STATS, MeanAveragePrecision, coco_map, precision_recall, voc_ap


def det(boxes, scores, labels) -> dict:
    return {
        "boxes": torch.as_tensor(boxes),
        "scores": torch.as_tensor(scores),
        "labels": torch.as_tensor(labels),
    }


def truth(boxes, labels) -> dict:
    return {"boxes": torch.as_tensor(boxes), "labels": torch.as_tensor(labels)}


def random_detections(
    n_images: int, seed: int, num_classes: int = 5, many: bool = False, tie_scores: bool = False
) -> tuple[list[dict], list[dict]]:
    """Images of random ground truth (sizes from 2 to 300 pixels: small, medium and large objects, some
    crowds, some zero-area boxes) and detections near it or anywhere, with random labels and scores.
    Some images have no ground truth, no detections or neither; ``many`` gives images with more than
    100 detections (in one class and across classes); ``tie_scores`` rounds scores so that many tie."""
    g = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(n_images):
        kind = i % 10  # 0: no ground truth, 1: no detections, 2: neither
        m = 0 if kind in (0, 2) else int(g.integers(1, 12))
        xy = g.uniform(0, 500, (m, 2))
        wh = np.exp(g.uniform(np.log(2), np.log(300), (m, 2)))
        wh[g.random(m) < 0.03] = 0.0  # a few zero-area boxes
        gt = np.concatenate([xy, xy + wh], 1)
        gt_labels = g.integers(1, num_classes + 1, m)
        k = 0 if kind in (1, 2) else int(g.integers(1, 25))
        if many and i % 7 == 3:
            k = int(g.integers(101, 160))
        near = gt[g.integers(0, m, k)] + g.normal(0, 6, (k, 4)) if m else np.zeros((k, 4))
        xy = g.uniform(0, 500, (k, 2))
        anywhere = np.concatenate([xy, xy + np.exp(g.uniform(np.log(2), np.log(300), (k, 2)))], 1)
        boxes = np.where((g.random(k) < 0.35)[:, None] | (m == 0), anywhere, near)
        boxes = np.concatenate(
            [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1
        )
        labels = g.integers(1, num_classes + 1, k)
        if m:
            same = g.random(k) < 0.7  # most detections keep the label of a box they are near
            labels = np.where(same, gt_labels[g.integers(0, m, k)], labels)
        if many and i % 14 == 3:
            labels[:] = labels[0]  # more than 100 detections of one class in one image
        scores = g.random(k)
        if tie_scores:
            scores = np.round(scores, 1)
        preds.append(
            det(
                torch.tensor(boxes, dtype=torch.float32),
                torch.tensor(scores, dtype=torch.float32),
                torch.tensor(labels),
            )
        )
        target = {
            "boxes": torch.tensor(gt, dtype=torch.float32),
            "labels": torch.tensor(gt_labels),
            "iscrowd": torch.tensor(g.random(m) < 0.08),
        }
        if i % 3 == 0:  # the object's own area (e.g. its mask's), not the box's
            target["area"] = torch.tensor(wh.prod(1) * g.uniform(0.3, 1.0, m))
        targets.append(target)
    return preds, targets


def cocoeval(preds, targets, iou_thresholds=None, max_detections=None) -> COCOeval:
    """pycocotools on the same data: xyxy -> (x, y, w, h) in float64, as utils.metrics.detection converts."""
    images, annotations, results, categories = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1})
        boxes = t["boxes"].double().tolist()
        areas = t["area"].double().tolist() if "area" in t else [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        for b, label, crowd, area in zip(boxes, t["labels"].tolist(), t["iscrowd"].tolist(), areas):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "area": area,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "iscrowd": int(crowd),
                }
            )
            categories.add(label)
        for b, score, label in zip(
            p["boxes"].double().tolist(), p["scores"].double().tolist(), p["labels"].tolist()
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label,
                    "score": score,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                }
            )
            categories.add(label)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in sorted(categories)],
        }
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        if iou_thresholds is not None:
            evaluation.params.iouThrs = np.array(iou_thresholds)
        if max_detections is not None:
            evaluation.params.maxDets = list(max_detections)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def assert_same_as_cocoeval(metric: MeanAveragePrecision, result: dict, reference: COCOeval) -> None:
    keys = list(COCO_STATS)
    if metric.max_detections != (1, 10, 100):
        keys[6:9] = [f"mar_{m}" for m in metric.max_detections]
    ours = np.array([result[k] for k in keys])
    np.testing.assert_allclose(ours, reference.stats, rtol=0, atol=1e-6)  # the criterion
    np.testing.assert_allclose(ours, reference.stats, rtol=0, atol=1e-12)  # in fact equal up to rounding
    np.testing.assert_array_equal(metric.precision.numpy(), reference.eval["precision"])
    np.testing.assert_array_equal(metric.recall.numpy(), reference.eval["recall"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_cocoeval_on_hundreds_of_images(seed):
    preds, targets = random_detections(300, seed)
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    result = metric.compute()
    assert_same_as_cocoeval(metric, result, cocoeval(preds, targets))
    for key in COCO_STATS:  # the data exercises every number: none is undefined, none trivial
        assert 0.0 < result[key] < 1.0, key


def test_equals_cocoeval_with_many_classes_and_more_than_100_detections_per_image():
    preds, targets = random_detections(200, 3, num_classes=40, many=True)
    assert max(len(p["scores"]) for p in preds) > 150
    assert any(len(p["labels"]) > 100 and len(p["labels"].unique()) == 1 for p in preds)
    metric = MeanAveragePrecision(class_metrics=True)
    metric.update(preds, targets)
    result = metric.compute()
    reference = cocoeval(preds, targets)
    assert_same_as_cocoeval(metric, result, reference)
    per_class = reference.eval["precision"][:, :, :, 0, -1]
    expected = [
        per_class[:, :, k][per_class[:, :, k] > -1].mean() if (per_class[:, :, k] > -1).any() else -1
        for k in range(per_class.shape[2])
    ]
    np.testing.assert_allclose(result["map_per_class"].numpy(), expected, rtol=0, atol=1e-12)
    assert result["classes"].tolist() == reference.params.catIds


def test_equals_cocoeval_with_tied_scores():
    """Ties are broken as COCOeval breaks them: by image, then by order within the image."""
    preds, targets = random_detections(300, 4, tie_scores=True)
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    assert_same_as_cocoeval(metric, metric.compute(), cocoeval(preds, targets))


@pytest.mark.parametrize(
    "thresholds, max_dets",
    [((0.3, 0.5, 0.75, 0.9), (1, 5, 100)), ((0.6, 0.8), (2, 3, 100)), ((0.5, 0.75), (1, 4, 20))],
)
def test_equals_cocoeval_with_other_thresholds_and_detection_limits(thresholds, max_dets):
    preds, targets = random_detections(200, 5)
    metric = MeanAveragePrecision(iou_thresholds=thresholds, max_detections=max_dets)
    metric.update(preds, targets)
    result = metric.compute()
    reference = cocoeval(preds, targets, thresholds, max_dets)
    if max_dets[-1] != 100:
        # COCOeval.summarize reads its first number at 100 detections whatever maxDets says (-1 here);
        # ours is at the largest limit, the mean of the same precision array
        assert reference.stats[0] == -1
        precision = reference.eval["precision"][:, :, :, 0, -1]
        assert result["map"] == pytest.approx(precision[precision > -1].mean(), abs=1e-12)
        reference.stats[0] = result["map"]
    assert_same_as_cocoeval(metric, result, reference)
    if 0.5 not in thresholds:
        assert result["map_50"] == -1.0


def test_batches_reset_and_functional_form():
    preds, targets = random_detections(120, 6)
    whole = coco_map(preds, targets)
    metric = MeanAveragePrecision()
    for start in range(0, 120, 32):
        metric.update(preds[start : start + 32], targets[start : start + 32])
    assert metric.compute() == whole
    metric.reset()
    metric.update(preds[:10], targets[:10])
    assert metric.compute() == coco_map(preds[:10], targets[:10]) != whole


def test_known_values():
    gt = [truth([[0.0, 0.0, 10.0, 10.0]], [1])]
    perfect = [det([[0.0, 0.0, 10.0, 10.0]], [0.9], [1])]
    result = coco_map(perfect, gt)
    # precision is TP / (TP + FP + 2.2e-16), as in COCOeval
    assert [result[k] for k in ("map", "map_50", "map_small", "mar_1")] == pytest.approx([1.0] * 4, abs=1e-15)
    assert result["map_medium"] == result["map_large"] == result["mar_large"] == -1.0  # no object that size
    # a false positive scored above the true one: precision 1/2 at recall 1, at every threshold
    worse = [det([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]], [0.9, 0.8], [1, 1])]
    result = coco_map(worse, gt)
    assert result["map"] == pytest.approx(0.5) and result["mar_1"] == 0.0 and result["mar_10"] == 1.0
    shifted = [det([[0.0, 2.0, 10.0, 10.0]], [0.9], [1])]
    result = coco_map(shifted, gt)  # IoU 0.8: matched at 0.50, ..., 0.80, missed at 0.85, 0.90, 0.95
    assert result["map"] == pytest.approx(7 / 10) and result["map_75"] == pytest.approx(1.0)
    wrong_class = [det([[0.0, 0.0, 10.0, 10.0]], [0.9], [2])]
    assert coco_map(wrong_class, gt)["map"] == 0.0


def test_empty_cases():
    assert set(coco_map([], []).values()) == {-1.0}  # no images
    no_gt = [truth(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))]
    some = [det([[0.0, 0.0, 5.0, 5.0]], [0.5], [1])]
    assert set(coco_map(some, no_gt).values()) == {-1.0}  # AP is undefined without ground truth
    none = [det(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))]
    gt = [truth([[0.0, 0.0, 50.0, 50.0]], [3])]
    result = coco_map(none, gt)  # nothing detected: AP and AR are 0 where an object exists
    assert result["map"] == result["mar_100"] == result["map_medium"] == 0.0 and result["map_small"] == -1.0


def test_precision_recall_curve_and_voc_ap():
    a, b, far = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 50.0, 50.0]
    gt = [truth([a, b], [1, 1]), truth([a], [2])]
    preds = [det([a, far, b], [0.9, 0.8, 0.7], [1, 1, 1]), det([a], [0.6], [2])]
    curve = precision_recall(preds, gt, label=1)
    torch.testing.assert_close(curve.precision, torch.tensor([1.0, 0.5, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(curve.recall, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert curve.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert voc_ap(curve.recall, curve.precision) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert voc_ap(curve.recall, curve.precision, "11point") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    pooled = precision_recall(preds, gt)  # both classes, by score
    assert pooled.recall[-1] == 1.0 and len(pooled.scores) == 4
    with pytest.raises(ValueError, match="no ground-truth box of class 7"):
        precision_recall(preds, gt, label=7)


def devkit_voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """voc_ap of the PASCAL VOC devkit (as in py-faster-rcnn's voc_eval.py), transcribed."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


@pytest.mark.parametrize("seed", range(5))
def test_voc_ap_matches_the_devkit(seed):
    g = np.random.default_rng(seed)
    hits = g.random(60) < 0.5
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    rec, prec = tp / (hits.sum() + 5), tp / (tp + fp)  # 5 objects never found
    assert voc_ap(rec, prec) == pytest.approx(devkit_voc_ap(rec, prec, False), abs=1e-12)
    eleven = voc_ap(torch.tensor(rec), torch.tensor(prec), "11point")
    assert eleven == pytest.approx(devkit_voc_ap(rec, prec, True), abs=1e-12)
    preds, targets = random_detections(80, seed)
    curve = precision_recall(preds, targets, label=1)
    assert voc_ap(curve.recall, curve.precision) == pytest.approx(
        devkit_voc_ap(curve.recall.numpy(), curve.precision.numpy(), False), abs=1e-12
    )


def test_clear_errors():
    good_pred = det(torch.zeros(1, 4), torch.ones(1), torch.ones(1, dtype=torch.int64))
    good_gt = truth(torch.zeros(1, 4), torch.ones(1, dtype=torch.int64))
    metric = MeanAveragePrecision()
    with pytest.raises(ValueError, match="same length"):
        metric.update([good_pred], [])
    with pytest.raises(TypeError, match="one dict per image"):
        metric.update(good_pred, good_gt)
    with pytest.raises(ValueError, match=r"preds\[0\] must be a dict with keys"):
        metric.update([{"boxes": torch.zeros(1, 4)}], [good_gt])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metric.update([{**good_pred, "boxes": torch.zeros(1, 5)}], [good_gt])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must have shape"):
        metric.update([good_pred], [{**good_gt, "labels": torch.ones(2, dtype=torch.int64)}])
    with pytest.raises(TypeError, match="integer class labels"):
        metric.update([{**good_pred, "labels": torch.ones(1)}], [good_gt])
    xywh_by_mistake = {**good_pred, "boxes": torch.tensor([[5.0, 5.0, 2.0, 8.0]])}
    metric.update([good_pred, xywh_by_mistake], [good_gt, good_gt])
    with pytest.raises(ValueError, match=r"preds\[1\]\['boxes'\] must be xyxy"):
        metric.compute()
    metric.reset()
    metric.update([{**good_pred, "scores": torch.tensor([float("nan")])}], [good_gt])
    with pytest.raises(ValueError, match=r"preds\[0\]\['scores'\] must be finite"):
        metric.compute()
    with pytest.raises(ValueError, match="iou_thresholds"):
        MeanAveragePrecision(iou_thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="max_detections"):
        MeanAveragePrecision(max_detections=(0, 10))
    with pytest.raises(ValueError, match="method"):
        voc_ap([0.5], [1.0], method="area")
