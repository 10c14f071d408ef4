"""utils.synthetic_detector (chapter 10): each fault appears at the rate it is set to, a perfect setting
scores AP 1 with the course's metric, errors scale with the object, and draws are reproducible."""

from __future__ import annotations

import pytest
import torch

from utils.metrics.detection import coco_map
from utils.ops import box_iou
from utils.synthetic_detector import SyntheticDetector

SIZE = (200, 300)  # (height, width)


def targets(n: int = 60, seed: int = 0, scale: float = 1.0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        m = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * torch.tensor([200.0, 120.0])
        wh = 10 + torch.rand(m, 2, generator=g) * 60
        out.append(
            {"boxes": torch.cat([xy, xy + wh], 1) * scale, "labels": torch.randint(1, 5, (m,), generator=g)}
        )
    return out


def test_a_perfect_detector_returns_the_ground_truth_and_scores_ap_one():
    t = targets()
    preds = SyntheticDetector(jitter=0.0, recall=1.0, false_positives=0.0)(t, SIZE)
    for p, g in zip(preds, t):
        assert set(p) == {"boxes", "scores", "labels", "source"}
        assert p["boxes"].dtype == torch.float32 and p["labels"].dtype == torch.int64
        torch.testing.assert_close(p["boxes"], g["boxes"])
        assert torch.equal(p["labels"], g["labels"]) and torch.equal(
            p["source"], torch.arange(len(g["labels"]))
        )
        assert ((p["scores"] > 0) & (p["scores"] < 1)).all()
    result = coco_map(preds, t)
    assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)


def test_rates_of_misses_duplicates_false_positives_and_confusions():
    t = targets(400, seed=1)
    n_objects = sum(len(x["labels"]) for x in t)
    det = SyntheticDetector(jitter=0.05, recall=0.7, duplicates=2.0, false_positives=1.5, wrong_label=0.3)
    preds = det(t, SIZE)
    found = sum(len(p["source"][p["source"] >= 0].unique()) for p in preds)
    assert found / n_objects == pytest.approx(0.7, abs=0.04)
    per_found = sum(int((p["source"] >= 0).sum()) for p in preds) / found
    assert per_found == pytest.approx(3.0, abs=0.15)  # 1 + Poisson(2)
    fps = sum(int((p["source"] < 0).sum()) for p in preds) / len(t)
    assert fps == pytest.approx(1.5, abs=0.15)
    true = torch.cat([g["labels"][p["source"][p["source"] >= 0]] for p, g in zip(preds, t)])
    given = torch.cat([p["labels"][p["source"] >= 0] for p in preds])
    assert (true != given).float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert given.min() >= 1 and given.max() <= 4
    boxes = torch.cat([p["boxes"] for p in preds])
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes[:, 0::2].max() <= SIZE[1] and boxes[:, 1::2].max() <= SIZE[0] and boxes.min() >= 0
    # false positives score lower than true detections on average, but the two overlap
    fp_scores = torch.cat([p["scores"][p["source"] < 0] for p in preds])
    tp_scores = torch.cat([p["scores"][p["source"] >= 0] for p in preds])
    assert fp_scores.mean() < tp_scores.mean() and fp_scores.max() > tp_scores.median()


def test_relative_jitter_does_not_depend_on_size_but_pixel_jitter_does():
    t, big = targets(50, seed=2), targets(50, seed=2, scale=3.0)
    det = SyntheticDetector(jitter=0.1, recall=1.0, false_positives=0.0)
    small_preds, big_preds = det(t, (10_000, 10_000)), det(big, (10_000, 10_000))  # no clipping
    for a, b in zip(small_preds, big_preds):
        torch.testing.assert_close(a["boxes"] * 3, b["boxes"], rtol=1e-5, atol=1e-3)

    def mean_iou(preds, truth):
        return torch.cat(
            [box_iou(p["boxes"], g["boxes"][p["source"]]).diagonal() for p, g in zip(preds, truth)]
        ).mean()

    pixel = SyntheticDetector(jitter=0.0, pixel_jitter=3.0, recall=1.0, false_positives=0.0)
    assert mean_iou(pixel(t, (10_000, 10_000)), t) < mean_iou(pixel(big, (10_000, 10_000)), big) - 0.05


def test_more_jitter_lowers_the_iou_and_the_draws_are_reproducible():
    t = targets(80, seed=3)
    ious = []
    for jitter in (0.02, 0.1, 0.3):
        preds = SyntheticDetector(jitter=jitter, recall=1.0, false_positives=0.0, seed=5)(t, (10_000, 10_000))
        ious.append(torch.cat([box_iou(p["boxes"], g["boxes"]).diagonal() for p, g in zip(preds, t)]).mean())
    assert ious[0] > ious[1] > ious[2]
    a = SyntheticDetector(seed=1, duplicates=1.0)(t, SIZE)
    b = SyntheticDetector(seed=1, duplicates=1.0)(t, SIZE)
    c = SyntheticDetector(seed=2, duplicates=1.0)(t, SIZE)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, c) if len(x["boxes"]))


def test_images_without_objects_get_only_false_positives():
    preds = SyntheticDetector(false_positives=3.0)(
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}] * 30, SIZE
    )
    assert sum(len(p["boxes"]) for p in preds) > 30
    assert all((p["source"] == -1).all() for p in preds)


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="recall is a probability"):
        SyntheticDetector(recall=1.5)
    with pytest.raises(ValueError, match="jitter must be a number >= 0"):
        SyntheticDetector(jitter=-0.1)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticDetector(num_classes=0)
    with pytest.raises(TypeError, match="one dict per image"):
        SyntheticDetector()({"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}, SIZE)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticDetector()(targets(2), 100)
    with pytest.raises(ValueError, match="boxes but"):
        SyntheticDetector()([{"boxes": torch.zeros(2, 4), "labels": torch.ones(1)}], SIZE)
