"""utils.ops.anchors against torchvision's AnchorGenerator: the same anchors bit for bit, and the same
detector outputs when ours replaces torchvision's inside a FasterRCNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from utils.ops import AnchorGenerator, cell_anchors, grid_anchors

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def feature_maps(batch: int, height: int, width: int, strides, dtype=torch.float32) -> list[torch.Tensor]:
    return [torch.zeros(batch, 4, height // s, width // s, dtype=dtype) for s in strides]


@pytest.mark.parametrize(
    "sizes, ratios, strides",
    [
        (FPN_SIZES, FPN_RATIOS, (4, 8, 16, 32, 64)),
        (((128, 256, 512),), ((0.5, 1.0, 2.0),), (16,)),
        (((16, 24), (48, 64, 96)), ((1.0,), (0.25, 0.5, 1.0, 2.0)), (8, 16)),
        ((32, 64, 128), (0.5, 1.0, 2.0), (8, 16, 32)),  # the flat forms torchvision also accepts
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_anchor_generator_matches_torchvision(sizes, ratios, strides, dtype):
    images = ImageList(torch.zeros(2, 3, 320, 448, dtype=dtype), [(320, 448), (300, 400)])
    maps = feature_maps(2, 320, 448, strides, dtype)
    ours, theirs = AnchorGenerator(sizes, ratios), TorchvisionAnchorGenerator(sizes, ratios)
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()
    out, ref = ours(images, maps), theirs(images, maps)
    assert len(out) == 2
    for a, b in zip(out, ref):
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
    assert out[0] is not out[1]  # one tensor per image, as torchvision
    # a plain batch tensor works as well as an ImageList
    assert torch.equal(ours(images.tensors, maps)[1], ref[1])


def test_cell_anchors_match_torchvision_and_keep_the_area():
    ref = TorchvisionAnchorGenerator().generate_anchors([128, 256, 512], [0.5, 1.0, 2.0])
    assert torch.equal(cell_anchors((128, 256, 512), (0.5, 1.0, 2.0)), ref)
    exact = cell_anchors((100,), (0.25, 1.0, 4.0), round=False, dtype=torch.float64)
    w, h = exact[:, 2] - exact[:, 0], exact[:, 3] - exact[:, 1]
    torch.testing.assert_close(w * h, torch.full((3,), 100.0**2, dtype=torch.float64))
    torch.testing.assert_close(h / w, torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64))  # ratio = h / w
    assert (exact[:, :2] == -exact[:, 2:]).all()  # centred on (0, 0)


def test_grid_anchors_function_matches_torchvision_and_offsets():
    theirs = TorchvisionAnchorGenerator(((16, 32),), ((0.5, 1.0),))
    ref = theirs.grid_anchors([[5, 7]], [[torch.tensor(8), torch.tensor(8)]])[0]
    ours = grid_anchors((5, 7), 8, sizes=(16, 32), aspect_ratios=(0.5, 1.0))
    assert ours.shape == (5 * 7 * 4, 4)
    assert torch.equal(ours, ref)
    # row by row, cell by cell, ratio-major within a cell: anchor 4 * (7 * i + j) + a
    centres = (ours[:, :2] + ours[:, 2:]) / 2
    assert centres[4 * (7 * 2 + 3)].tolist() == [3 * 8.0, 2 * 8.0]
    shifted = grid_anchors((5, 7), (8, 6), sizes=(16, 32), aspect_ratios=(0.5, 1.0), offset=0.5)
    c = (shifted[:, :2] + shifted[:, 2:]) / 2
    assert c[4 * (7 * 2 + 3)].tolist() == [3.5 * 6, 2.5 * 8]  # stride (8, 6) is (height, width)
    assert grid_anchors((0, 4), 8).shape == (0, 4)


def tiny_detector(sizes, ratios) -> FasterRCNN:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=16, padding=1), nn.ReLU())
    backbone.out_channels = 8
    return FasterRCNN(
        backbone,
        num_classes=3,
        rpn_anchor_generator=TorchvisionAnchorGenerator(sizes, ratios),
        min_size=128,
        max_size=128,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
    )


def test_drop_in_replacement_inside_torchvision_faster_rcnn():
    sizes, ratios = ((32, 64),), ((0.5, 1.0, 2.0),)
    ours, theirs = tiny_detector(sizes, ratios), tiny_detector(sizes, ratios)  # the same weights
    ours.rpn.anchor_generator = AnchorGenerator(sizes, ratios)
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])}]
    ours.eval(), theirs.eval()
    with torch.no_grad():
        out, ref = ours(images)[0], theirs(images)[0]
    assert out["boxes"].shape[0] > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(out[key], ref[key])
    ours.train(), theirs.train()
    torch.manual_seed(2)
    losses = ours(images, targets)
    torch.manual_seed(2)
    ref_losses = theirs(images, targets)
    assert losses.keys() == ref_losses.keys()
    for key in losses:
        assert torch.equal(losses[key], ref_losses[key])


def test_clear_errors():
    with pytest.raises(ValueError, match="one tuple per feature level"):
        AnchorGenerator(((32,), (64,)), ((1.0,), (1.0,), (1.0,)))
    gen = AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    with pytest.raises(ValueError, match="5 levels"):
        gen(torch.zeros(1, 3, 64, 64), feature_maps(1, 64, 64, (4, 8)))
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        gen(torch.zeros(3, 64, 64), feature_maps(1, 64, 64, (4, 8, 16, 32, 64)))
    with pytest.raises(ValueError, match="positive"):
        cell_anchors((32, -4), (1.0,))
    with pytest.raises(ValueError, match="grid_size"):
        grid_anchors((2.5, 3), 8)
