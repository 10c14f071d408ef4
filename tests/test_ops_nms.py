"""utils.ops.nms against torchvision.ops.nms / batched_nms (index for index), and Soft-NMS against a
direct transcription of its definition (torchvision has none) and against torchvision's NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from test_boxes import random_boxes

from utils.ops import batched_nms, nms, soft_nms


def clustered(n: int, generator: torch.Generator, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in overlapping clusters (what a detector outputs), with random scores."""
    boxes = random_boxes(n, generator, dtype, scale=60.0)
    jitter = torch.rand(n, 4, generator=generator).to(dtype) * 6
    centres = random_boxes(max(n // 8, 1), generator, dtype, scale=60.0)
    picks = torch.randint(0, centres.shape[0], (n,), generator=generator)
    boxes = torch.where(torch.rand(n, 1, generator=generator) < 0.7, centres[picks] + jitter, boxes)
    return boxes, torch.rand(n, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_torchvision(dtype, threshold, seed):
    gen = torch.Generator().manual_seed(seed)
    boxes, scores = clustered(300, gen, dtype)
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, tvops.nms(boxes, scores, threshold))
    if 0 < threshold < 1:
        assert 0 < keep.numel() < 300  # the test suppresses something and keeps something


def test_nms_ties_keep_the_lower_index_like_torchvision():
    """Equal scores are visited in index order (a stable sort): of two identical boxes, the first survives."""
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    far = torch.tensor([[50.0, 50.0, 60.0, 60.0]])
    boxes = torch.cat([far, box, box, box, far + 100])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.9, 0.5])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 0, 4]  # the first of the tied identical boxes; then equal scores by index
    assert torch.equal(keep, tvops.nms(boxes, scores, 0.5))
    flat = torch.full((5,), 0.3)
    assert nms(boxes, flat, 0.5).tolist() == tvops.nms(boxes, flat, 0.5).tolist() == [0, 1, 4]


def test_nms_threshold_is_strict_and_compared_in_float64():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == tvops.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == tvops.nms(boxes, scores, 0.49).tolist() == [0]
    # 1/3 is not a float32: the float32 IoU 0.33333334 is above the float64 threshold 1/3
    thirds = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])  # IoU 1/3
    for threshold in (1 / 3, float(np.float32(1 / 3))):
        assert nms(thirds, scores, threshold).tolist() == tvops.nms(thirds, scores, threshold).tolist()


def test_nms_empty_and_degenerate_boxes():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert torch.equal(empty, tvops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5))
    points = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = nms(points, scores, 0.5)
    assert keep.tolist() == tvops.nms(points, scores, 0.5).tolist() == [0, 1, 2]  # IoU nan: none suppressed


@pytest.mark.parametrize("n", [200, 1500])  # torchvision switches strategy above 1000 boxes on the CPU
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_nms_matches_torchvision(n, dtype):
    gen = torch.Generator().manual_seed(n)
    boxes, scores = clustered(n, gen, dtype)
    idxs = torch.randint(0, 7, (n,), generator=gen)
    for threshold in (0.3, 0.5, 0.8):
        keep = batched_nms(boxes, scores, idxs, threshold)
        assert torch.equal(keep, tvops.batched_nms(boxes, scores, idxs, threshold))
        assert (scores[keep].diff() <= 0).all()
    # per category it is plain NMS
    for c in range(7):
        members = torch.where(idxs == c)[0]
        kept_here = keep[idxs[keep] == c]
        assert set(kept_here.tolist()) == set(members[nms(boxes[members], scores[members], 0.8)].tolist())


def test_batched_nms_categories_never_suppress_each_other_and_empty():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes, scores = box.repeat(3, 1), torch.tensor([0.5, 0.9, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [1, 2, 0]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [1]
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def soft_nms_reference(
    boxes: np.ndarray,
    scores: np.ndarray,
    sigma: float,
    score_threshold: float,
    method: str,
    iou_threshold: float,
) -> tuple[list[int], list[float]]:
    """Soft-NMS straight from its definition, box by box in float64 (continuous coordinates)."""
    scores = scores.astype(np.float64).copy()
    alive = [i for i in range(len(scores)) if scores[i] >= score_threshold]
    keep, kept = [], []
    while alive:
        best = max(alive, key=lambda i: (scores[i], -i))  # highest score, then lowest index
        keep.append(best)
        kept.append(scores[best])
        alive.remove(best)
        bx1, by1, bx2, by2 = boxes[best]
        survivors = []
        for i in alive:
            x1, y1, x2, y2 = boxes[i]
            inter = max(0.0, min(bx2, x2) - max(bx1, x1)) * max(0.0, min(by2, y2) - max(by1, y1))
            iou = inter / ((bx2 - bx1) * (by2 - by1) + (x2 - x1) * (y2 - y1) - inter)
            if method == "gaussian":
                weight = math.exp(-iou * iou / sigma)
            elif iou > iou_threshold:
                weight = (1 - iou) if method == "linear" else 0.0
            else:
                weight = 1.0
            scores[i] *= weight
            if scores[i] >= score_threshold and weight > 0:
                survivors.append(i)
        alive = survivors
    return keep, kept


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_nms_matches_its_definition(method, seed):
    gen = torch.Generator().manual_seed(seed)
    boxes, scores = clustered(120, gen, torch.float64)
    keep, new_scores = soft_nms(
        boxes, scores, sigma=0.5, score_threshold=0.05, method=method, iou_threshold=0.3
    )
    ref_keep, ref_scores = soft_nms_reference(boxes.numpy(), scores.numpy(), 0.5, 0.05, method, 0.3)
    assert keep.tolist() == ref_keep
    np.testing.assert_allclose(new_scores.numpy(), ref_scores, rtol=1e-12)
    assert (new_scores <= scores[keep]).all() and (new_scores >= 0.05).all()
    assert new_scores[0] == scores.max()  # the best box keeps its score


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_soft_nms_hard_is_torchvision_nms(threshold):
    gen = torch.Generator().manual_seed(7)
    boxes, scores = clustered(200, gen)
    keep, new_scores = soft_nms(boxes, scores, score_threshold=0.0, method="hard", iou_threshold=threshold)
    assert torch.equal(keep, tvops.nms(boxes, scores, threshold))
    assert torch.equal(new_scores, scores[keep])
    above = torch.where(scores >= 0.4)[0]  # score_threshold drops low boxes first
    keep, _ = soft_nms(boxes, scores, score_threshold=0.4, method="hard", iou_threshold=threshold)
    assert torch.equal(keep, above[tvops.nms(boxes[above], scores[above], threshold)])


def test_soft_nms_gaussian_keeps_every_box_without_threshold_and_decays_by_the_formula():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.6])
    keep, new_scores = soft_nms(boxes, scores, sigma=0.5, score_threshold=0.0)
    assert keep.tolist() == [0, 2, 1]  # box 1 (IoU 0.5 with box 0) decays to 0.8 exp(-0.25 / 0.5) = 0.485
    torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.6, 0.8 * math.exp(-0.5)]))
    keep, new_scores = soft_nms(boxes, scores, method="linear", iou_threshold=0.3, score_threshold=0.0)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.6, 0.8 * 0.5]))
    keep, _ = soft_nms(boxes, scores, method="linear", iou_threshold=0.6, score_threshold=0.0)
    assert keep.tolist() == [0, 1, 2]  # IoU 0.5 is not above 0.6: no decay
    empty_keep, empty_scores = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert empty_keep.shape == empty_scores.shape == (0,) and empty_keep.dtype == torch.int64


def test_clear_errors():
    boxes, scores = torch.zeros(3, 4), torch.zeros(3)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        nms(boxes, torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        nms(torch.zeros(2, 3, 4), scores, 0.5)
    with pytest.raises(TypeError, match="float"):
        nms(boxes, torch.zeros(3, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        nms(boxes, scores, "0.5")
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="method"):
        soft_nms(boxes, scores, method="cosine")
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(boxes, scores, sigma=0.0)
