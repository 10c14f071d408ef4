"""utils.ops.coder and utils.ops.matcher against torchvision.models.detection._utils (bit for bit), and
assign_anchors against the target assignment of torchvision's RPN and RoI heads."""

from __future__ import annotations

import math

import pytest
import torch
from test_boxes import random_boxes
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from utils.ops import BoxCoder, Matcher, assign_anchors, box_iou, decode_boxes, encode_boxes

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0)]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------------------------
# box coder
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_coder_matches_torchvision(gen, weights, dtype):
    proposals, gt = random_boxes(200, gen, dtype), random_boxes(200, gen, dtype)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    codes = ours.encode_single(gt, proposals)
    assert codes.shape == (200, 4)
    assert torch.equal(codes, theirs.encode_single(gt, proposals))
    assert torch.equal(encode_boxes(gt, proposals, weights), codes)
    rel = torch.randn(200, 12, generator=gen).to(dtype) * 2  # 3 boxes per reference box
    assert torch.equal(ours.decode_single(rel, proposals), theirs.decode_single(rel, proposals))
    assert ours.decode_single(rel, proposals).shape == (200, 12)
    # one tensor per image, as torchvision's encode / decode take them
    split = [proposals[:70], proposals[70:]]
    out, ref = ours.encode([gt[:70], gt[70:]], split), theirs.encode([gt[:70], gt[70:]], split)
    assert len(out) == 2 and all(torch.equal(a, b) for a, b in zip(out, ref))
    assert torch.equal(ours.decode(rel, split), theirs.decode(rel, split))
    assert ours.decode(rel, split).shape == (200, 3, 4)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_decode_inverts_encode(gen, weights):
    anchors, gt = random_boxes(100, gen, torch.float64), random_boxes(100, gen, torch.float64)
    coder = BoxCoder(weights, bbox_xform_clip=math.inf)
    torch.testing.assert_close(
        coder.decode_single(coder.encode_single(gt, anchors), anchors), gt, rtol=1e-12, atol=1e-10
    )
    zero = coder.decode_single(torch.zeros(100, 4, dtype=torch.float64), anchors)  # no change: the anchor
    torch.testing.assert_close(zero, anchors, rtol=1e-12, atol=1e-12)


def test_encode_known_values_and_leading_dims():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    gt = torch.tensor([[5.0, 0.0, 15.0, 40.0]])  # centre (10, 20), size (10, 40)
    torch.testing.assert_close(encode_boxes(gt, anchor), torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]))
    torch.testing.assert_close(
        encode_boxes(gt, anchor, (10.0, 10.0, 5.0, 5.0)), torch.tensor([[5.0, 5.0, 0.0, 5 * math.log(2.0)]])
    )
    batched = encode_boxes(gt.expand(2, 3, 4), anchor.expand(2, 3, 4))
    assert batched.shape == (2, 3, 4) and torch.equal(batched[1, 2], encode_boxes(gt, anchor)[0])


def test_decode_clips_large_log_scales_like_torchvision():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])  # exp(100) would overflow float32
    out = decode_boxes(huge, anchors)
    assert torch.isfinite(out).all()
    assert out[0, 2] - out[0, 0] == pytest.approx(1000.0, rel=1e-5)  # width clipped to 16 * 1000 / 16
    assert torch.equal(out, tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(huge, anchors))


def test_coder_degenerate_boxes_like_torchvision():
    """Zero-width or zero-height boxes give infinite or nan targets, exactly where torchvision gives them."""
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 6.0, 2.0]]
    )
    coder, ref = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    for gt, anchors in ((boxes, boxes.flip(0)), (boxes.flip(0), boxes), (boxes, boxes)):
        torch.testing.assert_close(
            coder.encode_single(gt, anchors), ref.encode_single(gt, anchors), rtol=0, atol=0, equal_nan=True
        )
    codes = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        coder.decode_single(codes, boxes), ref.decode_single(codes, boxes), rtol=0, atol=0, equal_nan=True
    )
    assert not torch.isfinite(coder.encode_single(boxes, boxes)[1:]).all()  # the degenerate rows


def test_coder_empty_inputs():
    coder, ref = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    empty = torch.zeros(0, 4)
    assert coder.encode_single(empty, empty).shape == (0, 4)
    assert coder.decode_single(empty, empty).shape == ref.decode_single(empty, empty).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 4), [empty]).shape == ref.decode(torch.zeros(0, 4), [empty]).shape


def test_coder_clear_errors():
    with pytest.raises(ValueError, match="four positive"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same shape"):
        encode_boxes(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(N, 4 \* K\)"):
        decode_boxes(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one per row"):
        decode_boxes(torch.zeros(3, 4), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------
# matcher
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("thresholds", [(0.7, 0.3), (0.5, 0.4), (0.5, 0.5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matcher_matches_torchvision(low_quality, thresholds, seed):
    gen = torch.Generator().manual_seed(seed)
    gt, anchors = random_boxes(6, gen), random_boxes(500, gen)
    quality = box_iou(gt, anchors)  # (M, N)
    out = Matcher(*thresholds, low_quality)(quality)
    assert out.dtype == torch.int64 and out.shape == (500,)
    assert torch.equal(out, tv_utils.Matcher(*thresholds, low_quality)(quality))
    coarse = (quality * 10).round() / 10  # many ties, between boxes and at the thresholds
    reference = tv_utils.Matcher(*thresholds, low_quality)(coarse)
    assert torch.equal(Matcher(*thresholds, low_quality)(coarse), reference)
    assert set(out.unique().tolist()) <= set(range(6)) | {-1, -2}


def test_matcher_thresholds_and_best_anchor_rule():
    quality = torch.tensor(
        [[0.7, 0.3, 0.5, 0.1, 0.2], [0.1, 0.0, 0.6, 0.1, 0.0], [0.0, 0.0, 0.0, 0.25, 0.25]]
    )  # box 2 overlaps nothing well (two tied best)
    assert Matcher(0.7, 0.3)(quality).tolist() == [0, -2, -2, -1, -1]  # >= high: match; == low: ignored
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality).tolist() == [0, -2, 1, 2, 2]


def test_matcher_empty_inputs():
    """torchvision raises on an image without boxes; here every prediction is background."""
    assert Matcher(0.7, 0.3)(torch.zeros(0, 4)).tolist() == [-1, -1, -1, -1]
    assert Matcher(0.7, 0.3, True)(torch.zeros(3, 0)).shape == (0,)
    with pytest.raises(ValueError):
        tv_utils.Matcher(0.7, 0.3)(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="M ground-truth"):
        Matcher(0.7, 0.3)(torch.zeros(4))


# --------------------------------------------------------------------------------------------
# assign_anchors
# --------------------------------------------------------------------------------------------
def anchors_near(gt: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random anchors plus jittered copies of the ground-truth boxes, so that every band is populated."""
    jitter = (torch.rand(len(gt) * 6, 4, generator=gen) - 0.5) * 12
    return torch.cat([random_boxes(400, gen), gt.repeat(6, 1) + jitter])


def roi_heads(fg: float, bg: float) -> RoIHeads:
    return RoIHeads(None, None, None, fg, bg, 512, 0.25, None, 0.05, 0.5, 100)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresholds", [(0.5, 0.5), (0.5, 0.4), (0.7, 0.3)])
def test_assign_anchors_matches_torchvision_roi_heads(seed, thresholds):
    gen = torch.Generator().manual_seed(seed)
    gt = random_boxes(5, gen)
    anchors = anchors_near(gt, gen)
    gt_labels = torch.randint(1, 4, (5,), generator=gen)
    labels, matched = assign_anchors(anchors, gt, gt_labels, *thresholds, allow_low_quality_matches=False)
    ref_idxs, ref_labels = roi_heads(*thresholds).assign_targets_to_proposals([anchors], [gt], [gt_labels])
    assert labels.dtype == torch.int64
    assert torch.equal(labels, ref_labels[0])
    assert torch.equal(matched, gt[ref_idxs[0]])
    assert (labels > 0).any() and (labels == 0).any()
    assert thresholds[0] == thresholds[1] or (labels == -1).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_assign_anchors_low_quality_matches_torchvision_rpn(seed):
    gen = torch.Generator().manual_seed(seed)
    anchors, gt = random_boxes(400, gen), random_boxes(8, gen)
    gt_labels = torch.randint(1, 4, (8,), generator=gen)
    rpn = RegionProposalNetwork(
        None, None, 0.7, 0.3, 256, 0.5, {"training": 10, "testing": 10}, {"training": 10, "testing": 10}, 0.7
    )
    ref_labels, ref_matched = rpn.assign_targets_to_anchors([anchors], [{"boxes": gt, "labels": gt_labels}])
    labels, matched = assign_anchors(anchors, gt, gt_labels, 0.7, 0.3)
    rpn_style = labels.clamp(max=1).float()  # the RPN only asks "object or not": 1 / 0 / -1
    assert torch.equal(rpn_style, ref_labels[0])
    assert torch.equal(matched, ref_matched[0])
    assert (labels > 0).sum() >= 8 - 1  # every box (up to ties) has at least its best anchor
    strict, _ = assign_anchors(anchors, gt, gt_labels, 0.7, 0.3, allow_low_quality_matches=False)
    assert (strict > 0).sum() < (labels > 0).sum()


def test_assign_anchors_known_values_and_no_boxes():
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 4.5]]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    labels, matched = assign_anchors(anchors, gt, torch.tensor([3]), 0.5, 0.4)
    assert labels.tolist() == [3, 3, 0, -1]  # IoU 1, 0.6, 0 and 0.45
    assert torch.equal(matched, gt.expand(4, 4))
    labels, matched = assign_anchors(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert labels.tolist() == [0, 0, 0, 0] and torch.equal(matched, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="gt_labels"):
        assign_anchors(anchors, gt, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\(A, 4\)"):
        assign_anchors(anchors[None], gt, torch.tensor([1]))
