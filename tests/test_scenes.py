"""utils.data scenes: the coloured-shapes scene set (make_scene, ShapesScenes) and collate_scenes.
The photo scene set is tested in test_scenes_photo.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from torch.utils.data import DataLoader

from utils import data as D


def check_scene(scene: dict, size: int, n_classes: int) -> None:
    image, boxes, labels = scene["image"], scene["boxes"], scene["labels"]
    semantic, masks = scene["semantic_mask"], scene["instance_masks"]
    k = len(labels)
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert boxes.shape == (k, 4) and boxes.dtype == torch.float32
    assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= n_classes)).all()
    assert semantic.shape == (size, size) and semantic.dtype == torch.int64
    assert masks.shape == (k, size, size) and masks.dtype == torch.bool
    # boxes are exactly the tight, pixel-inclusive boxes of the visible masks
    assert torch.equal(boxes, tvops.masks_to_boxes(masks))
    # masks are disjoint, non-trivial, and paint the semantic mask with their labels
    assert (masks.sum(0) <= 1).all()
    assert (masks.flatten(1).sum(1) >= 12).all()
    painted = (masks.long() * labels[:, None, None]).sum(0) if k else torch.zeros_like(semantic)
    assert torch.equal(painted, semantic)


def test_scene_invariants():
    counts = []
    for seed in range(60):
        scene = D.make_scene(seed)
        check_scene(scene, 64, len(D.SHAPE_CLASSES))
        counts.append(len(scene["labels"]))
        masks = scene["instance_masks"]
        colours = [scene["image"][:, m].mean(1) for m in masks]  # distinct colours per object
        for i in range(len(colours)):
            for j in range(i):
                assert (colours[i] - colours[j]).abs().max() > 0.1
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1


def test_scene_options():
    scene = D.make_scene(
        7, size=96, min_objects=3, max_objects=3, classes=("circle", "triangle"), background="plain"
    )
    check_scene(scene, 96, 2)
    assert len(scene["labels"]) == 3
    bg = scene["image"][:, scene["semantic_mask"] == 0]
    assert torch.allclose(bg, bg[:, :1].expand_as(bg))  # a plain background is one colour
    empty = D.make_scene(0, min_objects=0, max_objects=0)
    check_scene(empty, 64, len(D.SHAPE_CLASSES))
    assert empty["boxes"].shape == (0, 4) and (empty["semantic_mask"] == 0).all()
    with pytest.raises(ValueError, match="classes"):
        D.make_scene(0, classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="background"):
        D.make_scene(0, background="stripes")
    with pytest.raises(ValueError, match="min_objects"):
        D.make_scene(0, min_objects=3, max_objects=2)


def test_scene_occlusion_keeps_annotations_consistent():
    # crowded scenes force overlaps: later objects cover earlier ones, yet every object stays visible
    overlapped = 0
    for seed in range(20):
        scene = D.make_scene(seed, size=48, min_objects=5, max_objects=6, min_visible=0.3)
        check_scene(scene, 48, len(D.SHAPE_CLASSES))
        boxes = scene["boxes"]
        iou = tvops.box_iou(boxes + torch.tensor([0, 0, 1, 1]), boxes + torch.tensor([0, 0, 1, 1]))
        overlapped += int((iou.triu(1) > 0).any())
    assert overlapped > 5


def test_scenes_are_deterministic_and_leave_global_rng_alone():
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a, b, c = D.make_scene(11), D.make_scene(11), D.make_scene(12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["image"], c["image"])
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_shapes_scenes_dataset_and_collate():
    ds = D.ShapesScenes(10, seed=3, size=32, max_objects=3)
    assert len(ds) == 10 and ds.label_names[0] == "background" and ds.num_classes == len(D.SHAPE_CLASSES) + 1
    expected = D.make_scene(3 * 1_000_003 + 4, size=32, max_objects=3)
    assert all(torch.equal(ds[4][k], expected[k]) for k in expected)
    assert torch.equal(ds[-1]["image"], ds[9]["image"])
    with pytest.raises(IndexError):
        ds[10]
    other = D.ShapesScenes(10, seed=4, size=32, max_objects=3)
    assert not torch.equal(ds[0]["image"], other[0]["image"])
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=D.collate_scenes)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["semantic_mask"].shape == (4, 32, 32)
    assert len(batch["boxes"]) == len(batch["labels"]) == len(batch["instance_masks"]) == 4
    for i in range(4):
        assert torch.equal(batch["boxes"][i], ds[i]["boxes"])
