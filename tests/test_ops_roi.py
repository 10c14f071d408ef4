"""utils.ops.roi against torchvision.ops.roi_pool / roi_align: values (bit for bit on the CPU, checked
with 1e-6 relative tolerance), gradients, both box formats, regions outside the map, tiny and empty
regions, float32 and float64."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvops
from test_boxes import random_boxes

from utils.ops import RoIAlign, RoIPool, roi_align, roi_pool

DTYPES = [torch.float32, torch.float64]


def tolerance(dtype: torch.dtype) -> dict:
    return {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


def regions(
    gen: torch.Generator, dtype: torch.dtype, n: int = 40, images: int = 2, scale: float = 130.0
) -> torch.Tensor:
    """Rows (batch index, x1, y1, x2, y2): random boxes, some partly or wholly outside a 23 x 31 map at
    stride 4, plus boxes smaller than a cell, of zero size and on the borders."""
    boxes = random_boxes(n, gen, torch.float64, scale) - 10
    special = torch.tensor(
        [
            [5.0, 5.0, 5.5, 5.3],
            [7.0, 7.0, 7.0, 7.0],
            [0.0, 0.0, 124.0, 92.0],
            [-40.0, -40.0, -20.0, -10.0],
            [200.0, 10.0, 260.0, 50.0],
            [120.0, 88.0, 123.9, 91.9],
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat([boxes, special])
    ids = torch.randint(0, images, (boxes.shape[0], 1), generator=gen).to(torch.float64)
    return torch.cat([ids, boxes], dim=1).to(dtype)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.25, 0.5])
@pytest.mark.parametrize("output_size", [(7, 7), (3, 5), 1])
def test_roi_pool_matches_torchvision(gen, dtype, scale, output_size):
    features = torch.randn(2, 6, 23, 31, generator=gen).to(dtype)
    rois = regions(gen, dtype)
    ours = roi_pool(features, rois, output_size, scale)
    theirs = tvops.roi_pool(features, rois, output_size, scale)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_torchvision(gen, dtype, scale, sampling_ratio, aligned):
    features = torch.randn(2, 6, 23, 31, generator=gen).to(dtype)
    rois = regions(gen, dtype)
    ours = roi_align(features, rois, (7, 6), scale, sampling_ratio, aligned)
    theirs = tvops.roi_align(features, rois, (7, 6), scale, sampling_ratio, aligned)
    assert ours.shape == theirs.shape == (rois.shape[0], 6, 7, 6)
    torch.testing.assert_close(ours, theirs, **tolerance(dtype))
    assert (ours != 0).any()


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_gradients_match_torchvision(gen, aligned):
    features = torch.randn(2, 3, 23, 31, generator=gen, dtype=torch.float64, requires_grad=True)
    reference = features.detach().clone().requires_grad_()
    rois = regions(gen, torch.float64, n=20)
    weights = torch.randn(rois.shape[0], 3, 5, 5, generator=gen, dtype=torch.float64)
    (roi_align(features, rois, 5, 0.25, -1, aligned) * weights).sum().backward()
    (tvops.roi_align(reference, rois, 5, 0.25, -1, aligned) * weights).sum().backward()
    torch.testing.assert_close(features.grad, reference.grad, rtol=1e-10, atol=1e-12)


def test_roi_pool_gradients_match_torchvision(gen):
    features = torch.randn(2, 3, 23, 31, generator=gen, dtype=torch.float64, requires_grad=True)
    reference = features.detach().clone().requires_grad_()
    rois = regions(gen, torch.float64, n=20)
    weights = torch.randn(rois.shape[0], 3, 4, 4, generator=gen, dtype=torch.float64)
    (roi_pool(features, rois, 4, 0.25) * weights).sum().backward()
    (tvops.roi_pool(reference, rois, 4, 0.25) * weights).sum().backward()
    torch.testing.assert_close(features.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_list_of_boxes_and_modules(gen):
    features = torch.randn(3, 4, 20, 20, generator=gen)
    per_image = [random_boxes(5, gen, scale=70.0), random_boxes(0, gen), random_boxes(3, gen, scale=70.0)]
    for ours, theirs in (
        (
            roi_align(features, per_image, 4, 0.25, 2, True),
            tvops.roi_align(features, per_image, 4, 0.25, 2, True),
        ),
        (
            RoIAlign((4, 4), 0.25, 2, True)(features, per_image),
            tvops.RoIAlign((4, 4), 0.25, 2, True)(features, per_image),
        ),
        (roi_pool(features, per_image, 4, 0.25), tvops.roi_pool(features, per_image, 4, 0.25)),
        (RoIPool(4, 0.25)(features, per_image), tvops.RoIPool(4, 0.25)(features, per_image)),
    ):
        assert ours.shape == (8, 4, 4, 4)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert "sampling_ratio=2" in repr(RoIAlign((4, 4), 0.25, 2, True))


def test_empty_regions_and_known_values():
    features = torch.arange(16.0).reshape(1, 1, 4, 4)  # value 4 * row + column
    none = torch.zeros(0, 5)
    assert roi_align(features, none, 2).shape == tvops.roi_align(features, none, 2).shape == (0, 1, 2, 2)
    assert roi_pool(features, none, 2).shape == (0, 1, 2, 2)
    whole = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    assert roi_pool(features, whole, 2).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]  # max of each quadrant
    # aligned RoI Align over [0.5, 2.5]^2 samples cell centres: bilinear = the linear ramp itself
    centre = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
    torch.testing.assert_close(
        roi_align(features, centre, 1, sampling_ratio=1, aligned=True).flatten(),
        torch.tensor([4 * 1.5 + 1.5]),
    )


def test_clear_errors(gen):
    features = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        roi_align(features[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match=r"Tensor\[K, 5\]"):
        roi_align(features, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"Tensor\[L, 4\]"):
        roi_pool(features, [torch.zeros(3, 5)], 2)
    with pytest.raises(ValueError, match=r"batch indices"):
        roi_align(features, torch.tensor([[2.0, 0.0, 0.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(features, torch.zeros(1, 5), (2, 0))
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_align(features, torch.zeros(1, 5), 2, sampling_ratio=1.5)
