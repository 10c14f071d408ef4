"""utils.ops.kmeans (chapter 10): IoU of centred shapes, anchor shapes, and k-means with the 1 - IoU and
Euclidean distances; the Euclidean variant against scikit-learn's KMeans from the same start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from torchvision.ops import box_iou

from utils.ops import cell_anchors
from utils.ops.kmeans import anchor_shapes, kmeans_anchors, mean_best_iou, wh_iou


def random_wh(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(n, 2, generator=g, dtype=dtype) * 0.6 + 3.0)  # sizes around 20 px


def centred(wh: torch.Tensor) -> torch.Tensor:
    return torch.cat([-wh / 2, wh / 2], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wh_iou_is_the_iou_of_boxes_sharing_their_centre(dtype):
    a, b = random_wh(30, 0, dtype), random_wh(7, 1, dtype)
    out = wh_iou(a, b)
    assert out.shape == (30, 7) and out.dtype == dtype
    torch.testing.assert_close(out, box_iou(centred(a), centred(b)))
    # the best any placement can give: shifting one box never raises the IoU
    shifted = centred(b) + torch.tensor([3.0, -2.0, 3.0, -2.0], dtype=dtype)
    assert (box_iou(centred(a), shifted) <= out + 1e-6).all()
    assert torch.equal(wh_iou(a[:3], a[:3]).diagonal(), torch.ones(3, dtype=dtype))


def test_wh_iou_accepts_integer_sizes_and_rejects_bad_input():
    out = wh_iou(torch.tensor([[4, 2]]), torch.tensor([[2, 4]]))
    torch.testing.assert_close(out, torch.tensor([[4 / 12]]))
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        wh_iou(torch.ones(3, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="positive"):
        wh_iou(torch.tensor([[0.0, 2.0]]), torch.ones(2, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        wh_iou([[1.0, 2.0]], torch.ones(2, 2))


def test_anchor_shapes_match_cell_anchors():
    sizes, ratios = (32.0, 64.0, 128.0), (0.5, 1.0, 2.0)
    shapes = anchor_shapes(sizes, ratios)
    boxes = cell_anchors(sizes, ratios, round=False, dtype=torch.float64)
    torch.testing.assert_close(shapes, boxes[:, 2:] - boxes[:, :2])
    torch.testing.assert_close(shapes.prod(1), torch.tensor(sizes, dtype=torch.float64).repeat(3) ** 2)
    with pytest.raises(ValueError, match="positive"):
        anchor_shapes((32.0,), (0.0,))


def test_mean_best_iou():
    wh = random_wh(50, 2)
    anchors = random_wh(4, 3)
    expected = box_iou(centred(wh), centred(anchors)).amax(1).mean().item()
    assert mean_best_iou(wh, anchors) == pytest.approx(expected, abs=1e-12)
    assert mean_best_iou(wh, wh) == pytest.approx(1.0)  # every box is its own anchor
    with pytest.raises(ValueError, match="no boxes"):
        mean_best_iou(torch.zeros(0, 2), anchors)


def lloyd_reference(wh: torch.Tensor, init: torch.Tensor, iterations: int = 300) -> torch.Tensor:
    """Lloyd's algorithm with 1 - IoU written out with NumPy loops, from a given start."""
    x, c = wh.numpy(), init.numpy().copy()
    labels = None
    for _ in range(iterations):
        d = np.array(
            [
                [
                    1
                    - min(a[0], b[0])
                    * min(a[1], b[1])
                    / (a.prod() + b.prod() - min(a[0], b[0]) * min(a[1], b[1]))
                    for b in c
                ]
                for a in x
            ]
        )
        new = d.argmin(1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        c = np.stack([x[labels == j].mean(0) for j in range(len(c))])
    return torch.from_numpy(c[np.argsort(c.prod(1), kind="stable")])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_kmeans_equals_a_plain_reference_from_the_same_start(seed):
    wh = random_wh(80, seed)
    init = wh[torch.randperm(80, generator=torch.Generator().manual_seed(seed))[:5]]
    result = kmeans_anchors(wh, 5, init=init)
    torch.testing.assert_close(result.anchors, lloyd_reference(wh, init))
    assert result.iterations < 300
    areas = result.anchors.prod(1)
    assert (areas[1:] >= areas[:-1]).all()  # sorted by area
    # each box is assigned to its best-fitting anchor, and the reported mean is that of those fits
    ious = wh_iou(wh, result.anchors)
    assert torch.equal(result.assignment, ious.argmax(1))
    assert result.mean_best_iou == pytest.approx(ious.amax(1).mean().item())


@pytest.mark.parametrize("seed", [0, 3])
def test_euclidean_kmeans_equals_scikit_learn(seed):
    wh = random_wh(120, seed)
    init = wh[torch.randperm(120, generator=torch.Generator().manual_seed(seed))[:4]]
    ours = kmeans_anchors(wh, 4, distance="euclidean", init=init)
    ref = KMeans(4, init=init.numpy(), n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(wh.numpy())
    centres = torch.from_numpy(ref.cluster_centers_)
    torch.testing.assert_close(ours.anchors, centres[torch.argsort(centres.prod(1))])


def test_iou_kmeans_fits_better_than_euclidean_kmeans_and_improves_with_k():
    wh = random_wh(400, 5)
    by_iou = [kmeans_anchors(wh, k, seed=0).mean_best_iou for k in (1, 3, 6, 9)]
    assert all(b > a for a, b in zip(by_iou, by_iou[1:]))
    euclid = kmeans_anchors(wh, 6, distance="euclidean", seed=0)
    assert by_iou[2] >= mean_best_iou(wh, euclid.anchors)


def test_seeding_is_reproducible_and_median_centres_work():
    wh = random_wh(60, 7)
    a, b = kmeans_anchors(wh, 3, seed=4), kmeans_anchors(wh, 3, seed=4)
    assert torch.equal(a.anchors, b.anchors)
    med = kmeans_anchors(wh, 3, seed=4, center="median")
    for j in range(3):  # each centre is the median of its boxes
        members = wh[med.assignment == j]
        assert len(members) > 0


def test_empty_clusters_are_refilled_and_k_equal_to_n_works():
    wh = torch.tensor([[10.0, 10.0]] * 5 + [[40.0, 20.0]] * 5 + [[12.0, 30.0]] * 2)
    out = kmeans_anchors(wh, 3, init=torch.tensor([[10.0, 10.0], [40.0, 20.0], [500.0, 500.0]]))
    assert torch.bincount(out.assignment, minlength=3).min() >= 1  # the far centre got a box
    assert out.mean_best_iou == pytest.approx(1.0) and out.iterations < 10
    # fewer distinct shapes than k: a duplicate centre, and no endless re-seeding
    two = kmeans_anchors(wh[:10], 3, init=torch.tensor([[10.0, 10.0], [40.0, 20.0], [500.0, 500.0]]))
    assert two.mean_best_iou == pytest.approx(1.0) and two.iterations < 10
    distinct = random_wh(4, 8)
    assert kmeans_anchors(distinct, 4, seed=0).mean_best_iou == pytest.approx(1.0)


def test_bad_arguments_are_named():
    wh = random_wh(10, 0)
    with pytest.raises(ValueError, match="k must be an int between 1 and the number of boxes"):
        kmeans_anchors(wh, 11)
    with pytest.raises(ValueError, match="distance"):
        kmeans_anchors(wh, 2, distance="manhattan")
    with pytest.raises(ValueError, match="init must have shape"):
        kmeans_anchors(wh, 2, init=wh[:3])
    with pytest.raises(ValueError, match="center"):
        kmeans_anchors(wh, 2, center="mode")
