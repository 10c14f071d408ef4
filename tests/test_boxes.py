"""utils.ops.boxes agrees with torchvision.ops bit for bit on random, degenerate and empty inputs.

Also: utils.boxes, the old module, still works and warns that it is deprecated.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import torchvision.ops as tvops

from utils.ops import boxes as B

PAIRWISE = ["box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"]
LOSSES = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]
DTYPES = [torch.float32, torch.float64]


def random_boxes(
    n: int, generator: torch.Generator, dtype=torch.float32, scale: float = 100.0
) -> torch.Tensor:
    """n valid xyxy boxes (x1 <= x2, y1 <= y2) with positive area."""
    xy = torch.rand(n, 2, generator=generator) * scale
    wh = torch.rand(n, 2, generator=generator) * scale / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def assert_identical(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Same shape, dtype and bits (nan where torchvision has nan)."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def degenerate() -> torch.Tensor:
    """Identical, nested, touching, disjoint and zero-area boxes."""
    return torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],
            [0.0, 0.0, 2.0, 2.0],
            [0.5, 0.5, 1.5, 1.5],
            [2.0, 0.0, 4.0, 2.0],
            [10.0, 10.0, 12.0, 13.0],
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0],
            [3.0, 1.0, 3.0, 5.0],
        ]
    )


# --------------------------------------------------------------------------------------------
# area, convert, IoU family
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_area_matches_torchvision(gen, fmt):
    boxes = tvops.box_convert(random_boxes(50, gen), "xyxy", fmt)
    ours = B.box_area(boxes, fmt) if fmt != "xyxy" else B.box_area(boxes)
    assert_identical(ours, tvops.box_area(boxes, fmt=fmt))
    assert ours.shape == (50,)


def test_box_area_known_values_and_dtypes():
    boxes = torch.tensor([[0, 0, 2, 3], [1, 1, 1, 5], [10, 20, 13, 24]])
    assert B.box_area(boxes).tolist() == [6, 0, 12]
    assert B.box_area(boxes).dtype == tvops.box_area(boxes).dtype == torch.int64
    small = boxes.to(torch.uint8)  # products would overflow in uint8: both upcast to int32
    assert B.box_area(small).dtype == tvops.box_area(small).dtype
    half = boxes.half()
    assert B.box_area(half).dtype == tvops.box_area(half).dtype == torch.float32


def test_box_area_empty():
    empty = torch.zeros((0, 4))
    assert B.box_area(empty).shape == (0,)
    torch.testing.assert_close(B.box_area(empty), tvops.box_area(empty))


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_match_torchvision_bit_for_bit(gen, name, dtype):
    a, b = random_boxes(30, gen, dtype), random_boxes(20, gen, dtype)
    ours = getattr(B, name)(a, b)
    assert ours.shape == (30, 20)
    assert_identical(ours, getattr(tvops, name)(a, b))
    iou = B.box_iou(a, b)
    assert (iou > 0).any() and (iou == 0).any()  # the random boxes do and do not overlap
    assert (ours <= iou + 1e-6).all()  # every variant only subtracts penalties from the IoU


@pytest.mark.parametrize("name", PAIRWISE)
def test_pairwise_degenerate_boxes_match_torchvision(degenerate, name):
    """Identical boxes, disjoint ones, and zero-area ones (0/0 = nan, exactly where torchvision has it)."""
    ours = getattr(B, name)(degenerate, degenerate)
    assert_identical(ours, getattr(tvops, name)(degenerate, degenerate))
    if name != "complete_box_iou":  # complete IoU has no aspect ratio for a zero-area box
        assert ours[0, 1] == pytest.approx(1.0) and ours[0, 0] == pytest.approx(1.0)
    assert torch.isnan(B.box_iou(degenerate, degenerate)[5, 6])


@pytest.mark.parametrize("name", PAIRWISE)
def test_pairwise_batched_and_integer_inputs(gen, name):
    a, b = random_boxes(24, gen).reshape(2, 3, 4, 4), random_boxes(30, gen).reshape(2, 3, 5, 4)
    ours = getattr(B, name)(a, b)
    assert ours.shape == (2, 3, 4, 5)
    assert_identical(ours, getattr(tvops, name)(a, b))
    ints = (random_boxes(6, gen) * 3).long()
    assert_identical(getattr(B, name)(ints, ints), getattr(tvops, name)(ints, ints))


@pytest.mark.parametrize("name", PAIRWISE)
def test_pairwise_empty_inputs(gen, name):
    a, empty = random_boxes(5, gen), torch.zeros((0, 4))
    fn, ref = getattr(B, name), getattr(tvops, name)
    assert fn(empty, a).shape == ref(empty, a).shape == (0, 5)
    assert fn(a, empty).shape == (5, 0)
    assert fn(empty, empty).shape == (0, 0)


def test_iou_family_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 5.0, 2.0], [0.0, 0.0, 1.0, 2.0]])
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.5]]))
    # disjoint [3, 5] x [0, 2]: the enclosing box [0, 5] x [0, 2] has area 10, the union 8
    torch.testing.assert_close(B.generalized_box_iou(a, b)[0, 2], torch.tensor(-2 / 10))
    # DIoU of the disjoint pair: centres 3 apart, enclosing diagonal sqrt(25 + 4)
    torch.testing.assert_close(B.distance_box_iou(a, b)[0, 2], torch.tensor(-9 / 29))


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_iou_other_formats_bit_for_bit(gen, fmt):
    a, b = random_boxes(12, gen), random_boxes(8, gen)
    a2, b2 = B.box_convert(a, "xyxy", fmt), B.box_convert(b, "xyxy", fmt)
    assert_identical(B.box_iou(a2, b2, fmt=fmt), tvops.box_iou(a2, b2, fmt=fmt))
    torch.testing.assert_close(B.box_iou(a2, b2, fmt=fmt), B.box_iou(a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("out_fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_convert_matches_torchvision(gen, in_fmt, out_fmt):
    boxes = tvops.box_convert(random_boxes(40, gen), "xyxy", in_fmt)
    ours = B.box_convert(boxes, in_fmt, out_fmt)
    assert_identical(ours, tvops.box_convert(boxes, in_fmt, out_fmt))
    back = B.box_convert(ours, out_fmt, in_fmt)
    torch.testing.assert_close(back, boxes, rtol=1e-5, atol=1e-4)
    assert B.box_convert(torch.zeros((0, 4)), in_fmt, out_fmt).shape == (0, 4)
    batched = boxes.reshape(2, 20, 4).double()
    assert_identical(B.box_convert(batched, in_fmt, out_fmt), tvops.box_convert(batched, in_fmt, out_fmt))


def test_box_convert_known_values_and_copy():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert B.box_convert(box, "xyxy", "xywh").tolist() == [[10, 20, 20, 40]]
    assert B.box_convert(box, "xyxy", "cxcywh").tolist() == [[20, 40, 20, 40]]
    same = B.box_convert(box, "xyxy", "xyxy")
    same += 1
    assert box.tolist() == [[10.0, 20.0, 30.0, 60.0]]  # a copy, never a view


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_losses_match_torchvision_values_and_gradients(gen, name, dtype, reduction):
    pred = random_boxes(40, gen, dtype).requires_grad_()
    target = random_boxes(40, gen, dtype)
    pred_ref = pred.detach().clone().requires_grad_()
    ours = getattr(B, name)(pred, target, reduction=reduction)
    theirs = getattr(tvops, name)(pred_ref, target, reduction=reduction)
    assert_identical(ours.detach(), theirs.detach())
    ours.sum().backward()
    theirs.sum().backward()
    assert_identical(pred.grad, pred_ref.grad)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_degenerate_batched_empty_and_eps(degenerate, gen, name):
    fn, ref = getattr(B, name), getattr(tvops, name)
    shuffled = degenerate.flip(0)
    assert_identical(fn(degenerate, shuffled), ref(degenerate, shuffled))
    finite = torch.isfinite(fn(degenerate, shuffled))
    if name == "complete_box_iou_loss":  # a 0 x 0 box has no aspect ratio, atan(0 / 0): nan in both

        def is_point(b):
            return (b[:, 2] == b[:, 0]) & (b[:, 3] == b[:, 1])

        points = is_point(degenerate) | is_point(shuffled)
        assert finite.tolist() == (~points).tolist()
    else:
        assert finite.all()  # eps keeps zero-area boxes finite
    assert fn(degenerate[:1], degenerate[:1]).item() == pytest.approx(0.0, abs=1e-6)  # identical boxes
    assert_identical(fn(degenerate, shuffled, eps=1e-3), ref(degenerate, shuffled, eps=1e-3))
    a, b = random_boxes(24, gen).reshape(2, 3, 4, 4), random_boxes(24, gen).reshape(2, 3, 4, 4)
    assert_identical(fn(a, b), ref(a, b))
    assert_identical(fn(a[0, 0, 0], b[0, 0, 0]), ref(a[0, 0, 0], b[0, 0, 0]))  # a single box, Tensor[4]
    empty = torch.zeros((0, 4))
    for reduction in ("none", "mean", "sum"):
        assert_identical(fn(empty, empty, reduction=reduction), ref(empty, empty, reduction=reduction))
    ints = (a * 3).long()
    assert_identical(fn(ints, ints.flip(0)), ref(ints, ints.flip(0)))


def test_giou_loss_known_value():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([3.0, 0.0, 5.0, 2.0])
    assert B.generalized_box_iou_loss(a, b).item() == pytest.approx(1 + 2 / 10)


# --------------------------------------------------------------------------------------------
# clip, remove small, masks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES + [torch.int64])
def test_clip_boxes_to_image_matches_torchvision(gen, dtype):
    boxes = (random_boxes(60, gen, scale=140.0) - 20).to(dtype)  # some outside on every side
    ours = B.clip_boxes_to_image(boxes, (90, 110))
    assert_identical(ours, tvops.clip_boxes_to_image(boxes, (90, 110)))
    assert ours[:, 0::2].min() >= 0 and ours[:, 0::2].max() <= 110 and ours[:, 1::2].max() <= 90
    batched = boxes.reshape(3, 20, 4)
    assert_identical(B.clip_boxes_to_image(batched, (50, 70)), tvops.clip_boxes_to_image(batched, (50, 70)))
    assert B.clip_boxes_to_image(torch.zeros(0, 4), (5, 5)).shape == (0, 4)


def test_clip_known_values():
    box = torch.tensor([[-5.0, 3.0, 40.0, 80.0]])
    assert B.clip_boxes_to_image(box, (50, 30)).tolist() == [[0.0, 3.0, 30.0, 50.0]]  # (height, width)


@pytest.mark.parametrize("min_size", [0.0, 1.0, 10.0, 30.0])
def test_remove_small_boxes_matches_torchvision(gen, degenerate, min_size):
    boxes = torch.cat([random_boxes(50, gen), degenerate])
    ours = B.remove_small_boxes(boxes, min_size)
    assert_identical(ours, tvops.remove_small_boxes(boxes, min_size))
    assert ours.dtype == torch.int64
    assert B.remove_small_boxes(torch.zeros(0, 4), min_size).shape == (0,)
    side = torch.tensor([[0.0, 0.0, 2.0, 5.0]])
    assert B.remove_small_boxes(side, 2.0).tolist() == [0]  # a side equal to min_size is kept
    assert B.remove_small_boxes(side, 2.5).tolist() == []


def test_masks_to_boxes_matches_torchvision(gen):
    masks = torch.rand(40, 17, 23, generator=gen) > 0.97  # sparse: many masks are small
    masks[3] = False  # an empty mask
    masks[4] = False
    masks[4, 5, 7] = True  # one pixel: x1 == x2, y1 == y2
    masks[5] = True  # full frame
    ours = B.masks_to_boxes(masks)
    assert_identical(ours, tvops.masks_to_boxes(masks))
    assert ours[3].tolist() == [0, 0, 0, 0]
    assert ours[4].tolist() == [7, 5, 7, 5]  # pixel-inclusive: x2, y2 are the last pixel's indices
    assert ours[5].tolist() == [0, 0, 22, 16]
    # uint8 / float masks are treated as "non-zero is inside", as in torchvision
    torch.testing.assert_close(B.masks_to_boxes(masks.float()), ours)


def test_masks_to_boxes_known_rectangle_and_empty():
    mask = torch.zeros(1, 10, 12, dtype=torch.bool)
    mask[0, 2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert B.masks_to_boxes(mask).tolist() == [[3, 2, 8, 4]]
    empty = torch.zeros((0, 10, 12), dtype=torch.bool)
    assert B.masks_to_boxes(empty).shape == tvops.masks_to_boxes(empty).shape == (0, 4)


# --------------------------------------------------------------------------------------------
# errors and the deprecated module
# --------------------------------------------------------------------------------------------
def test_clear_errors_on_wrong_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.box_area(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="boxes2"):
        B.box_iou(torch.zeros(2, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="leading"):
        B.generalized_box_iou(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))
    with pytest.raises(ValueError, match="in_fmt"):
        B.box_convert(torch.zeros(2, 4), "xy", "xyxy")
    with pytest.raises(ValueError, match="out_fmt"):
        B.box_convert(torch.zeros(2, 4), "xyxy", "yxyx")
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        B.masks_to_boxes(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        B.box_area([[0, 0, 1, 1]])
    with pytest.raises(TypeError, match="real numbers"):
        B.box_iou(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        B.complete_box_iou_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        B.generalized_box_iou_loss(torch.zeros(3, 4), torch.zeros(3, 4), reduction="avg")
    with pytest.raises(ValueError, match="height, width"):
        B.clip_boxes_to_image(torch.zeros(3, 4), 10)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.remove_small_boxes(torch.zeros(2, 3, 4), 1.0)


def test_old_module_is_a_deprecated_alias():
    sys.modules.pop("utils.boxes", None)
    with pytest.warns(DeprecationWarning, match="utils.ops.boxes") as record:
        old = importlib.import_module("utils.boxes")
    assert len(record) == 1
    for name in ("box_area", "box_convert", "box_iou", "masks_to_boxes", "BOX_FORMATS", "complete_box_iou"):
        assert getattr(old, name) is getattr(B, name)
    import utils

    assert utils.boxes is old
