"""utils.metrics.matching (chapter 10): one image's detections matched to its ground truth exactly as
pycocotools' COCOeval.evaluateImg matches them (the same ground-truth box for every detection), on
random images, at several IoU thresholds, and on the hand-made cases where COCO and VOC differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_metrics_detection import cocoeval  # the pycocotools harness of the detection-metric tests
from utils.metrics.matching import match_detections


def one_image(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    m = int(g.integers(0, 8))
    xy = g.uniform(0, 200, (m, 2))
    gt = np.concatenate([xy, xy + g.uniform(10, 80, (m, 2))], 1)
    k = int(g.integers(0, 15))
    near = gt[g.integers(0, m, k)] + g.normal(0, 8, (k, 4)) if m else g.uniform(0, 200, (k, 4))
    boxes = np.concatenate([np.minimum(near[:, :2], near[:, 2:]), np.maximum(near[:, :2], near[:, 2:])], 1)
    return (
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(g.random(k), dtype=torch.float32),
        torch.tensor(gt, dtype=torch.float32),
    )


def coco_matches(boxes, scores, gt, threshold) -> torch.Tensor:
    """pycocotools' answer: the index of the ground-truth box each detection took (-1: none)."""
    preds = [{"boxes": boxes, "scores": scores, "labels": torch.ones(len(boxes), dtype=torch.int64)}]
    targets = [
        {
            "boxes": gt,
            "labels": torch.ones(len(gt), dtype=torch.int64),
            "iscrowd": torch.zeros(len(gt), dtype=torch.bool),
        }
    ]
    evaluation = cocoeval(preds, targets, iou_thresholds=[threshold])
    out = torch.full((len(boxes),), -1, dtype=torch.int64)
    for e in evaluation.evalImgs:
        if e is None or e["aRng"] != [0, 1e10] or e["maxDet"] != 100:
            continue
        for det_id, gt_id in zip(e["dtIds"], e["dtMatches"][0]):
            out[det_id - 1] = int(gt_id) - 1 if gt_id > 0 else -1  # ids count from 1 in input order
    return out


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.75])
def test_matches_pycocotools_on_random_images(threshold):
    checked = 0
    for seed in range(40):
        boxes, scores, gt = one_image(seed)
        if len(boxes) == 0 or len(gt) == 0:
            assert (match_detections(boxes, scores, gt, threshold) == -1).all()
            continue
        ours = match_detections(boxes, scores, gt, threshold)
        assert ours.dtype == torch.int64 and ours.shape == (len(boxes),)
        assert torch.equal(ours, coco_matches(boxes, scores, gt, threshold)), seed
        taken = ours[ours >= 0]
        assert len(taken.unique()) == len(taken)  # each object is taken once
        checked += 1
    assert checked > 25


def test_a_duplicate_is_a_false_positive_and_coco_takes_the_next_free_box():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]])
    # the first detection sits on box 0; the second's best box is box 0 too (taken), box 1 is free
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    ours = match_detections(boxes, scores, gt, 0.5)
    assert ours.tolist() == [0, 1, -1]  # VOC would call the second one a false positive
    assert torch.equal(ours, coco_matches(boxes, scores, gt, 0.5))
    # scores decide the order, not the input order
    assert match_detections(boxes, torch.tensor([0.1, 0.8, 0.9]), gt, 0.5).tolist() == [-1, 1, 0]


def test_threshold_is_inclusive_and_ties_go_to_the_later_box():
    gt = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    half = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # IoU exactly 0.5 with box 0, 0 with box 1
    assert match_detections(half, torch.tensor([1.0]), gt, 0.5).tolist() == [0]
    assert match_detections(half, torch.tensor([1.0]), gt, 0.51).tolist() == [-1]
    middle = torch.tensor([[1.0, 0.0, 2.0, 1.0]])  # IoU 0.5 with both boxes
    assert match_detections(middle, torch.tensor([1.0]), gt, 0.5).tolist() == [1]
    assert torch.equal(
        match_detections(middle, torch.tensor([1.0]), gt, 0.5),
        coco_matches(middle, torch.tensor([1.0]), gt, 0.5),
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="scores must be a tensor of shape"):
        match_detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_detections(torch.zeros(2, 4), torch.zeros(2), torch.zeros(1, 4), 1.5)
    with pytest.raises(ValueError, match="shape"):
        match_detections(torch.zeros(2, 5), torch.zeros(2), torch.zeros(1, 4))
