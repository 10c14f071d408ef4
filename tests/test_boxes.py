"""utils.boxes agrees with torchvision.ops on random, degenerate and empty inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvops

from utils import boxes as B


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32, scale: float = 100.0) -> torch.Tensor:
    """n valid xyxy boxes (x1 <= x2, y1 <= y2) with positive area."""
    xy = torch.rand(n, 2, generator=generator) * scale
    wh = torch.rand(n, 2, generator=generator) * scale / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_area_matches_torchvision(gen, fmt):
    boxes = tvops.box_convert(random_boxes(50, gen), "xyxy", fmt)
    ours = B.box_area(boxes, fmt) if fmt != "xyxy" else B.box_area(boxes)
    torch.testing.assert_close(ours, tvops.box_area(boxes, fmt=fmt), rtol=0, atol=0)
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


def test_box_iou_matches_torchvision(gen):
    a, b = random_boxes(30, gen), random_boxes(20, gen)
    ours = B.box_iou(a, b)
    assert ours.shape == (30, 20)
    torch.testing.assert_close(ours, tvops.box_iou(a, b), rtol=0, atol=0)
    assert ours.min() >= 0 and ours.max() <= 1
    assert (ours > 0).any() and (ours == 0).any()  # the random boxes do and do not overlap


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 2.0]])
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.5]]))


def test_box_iou_batched_and_formats(gen):
    a, b = random_boxes(24, gen).reshape(2, 12, 4), random_boxes(16, gen).reshape(2, 8, 4)
    torch.testing.assert_close(B.box_iou(a, b), tvops.box_iou(a, b))
    a2, b2 = a[0], b[0]
    for fmt in ("xywh", "cxcywh"):
        ours = B.box_iou(B.box_convert(a2, "xyxy", fmt), B.box_convert(b2, "xyxy", fmt), fmt=fmt)
        torch.testing.assert_close(ours, tvops.box_iou(a2, b2), rtol=1e-5, atol=1e-6)


def test_box_iou_empty_inputs(gen):
    a = random_boxes(5, gen)
    empty = torch.zeros((0, 4))
    assert B.box_iou(empty, a).shape == tvops.box_iou(empty, a).shape == (0, 5)
    assert B.box_iou(a, empty).shape == (5, 0)
    assert B.box_iou(empty, empty).shape == (0, 0)


def test_box_iou_degenerate_is_nan_like_torchvision():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert torch.isnan(tvops.box_iou(point, point)).all()
    assert torch.isnan(B.box_iou(point, point)).all()


@pytest.mark.parametrize("in_fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("out_fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_convert_matches_torchvision(gen, in_fmt, out_fmt):
    boxes = tvops.box_convert(random_boxes(40, gen), "xyxy", in_fmt)
    ours = B.box_convert(boxes, in_fmt, out_fmt)
    torch.testing.assert_close(ours, tvops.box_convert(boxes, in_fmt, out_fmt), rtol=0, atol=0)
    back = B.box_convert(ours, out_fmt, in_fmt)
    torch.testing.assert_close(back, boxes, rtol=1e-5, atol=1e-4)
    empty = torch.zeros((0, 4))
    assert B.box_convert(empty, in_fmt, out_fmt).shape == (0, 4)


def test_box_convert_known_values_and_copy():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert B.box_convert(box, "xyxy", "xywh").tolist() == [[10, 20, 20, 40]]
    assert B.box_convert(box, "xyxy", "cxcywh").tolist() == [[20, 40, 20, 40]]
    same = B.box_convert(box, "xyxy", "xyxy")
    same += 1
    assert box.tolist() == [[10.0, 20.0, 30.0, 60.0]]  # a copy, never a view


def test_masks_to_boxes_matches_torchvision(gen):
    masks = torch.rand(40, 17, 23, generator=gen) > 0.97  # sparse: many masks are small
    masks[3] = False  # an empty mask
    masks[4] = False
    masks[4, 5, 7] = True  # one pixel: x1 == x2, y1 == y2
    masks[5] = True  # full frame
    ours = B.masks_to_boxes(masks)
    torch.testing.assert_close(ours, tvops.masks_to_boxes(masks), rtol=0, atol=0)
    assert ours.dtype == torch.float32
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


def test_clear_errors_on_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.box_area(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="boxes2"):
        B.box_iou(torch.zeros(2, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="in_fmt"):
        B.box_convert(torch.zeros(2, 4), "xy", "xyxy")
    with pytest.raises(ValueError, match="out_fmt"):
        B.box_convert(torch.zeros(2, 4), "xyxy", "yxyx")
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        B.masks_to_boxes(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        B.box_area([[0, 0, 1, 1]])
