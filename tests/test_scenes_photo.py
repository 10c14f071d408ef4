"""utils.data photo scenes: digits and animal silhouettes pasted on photo crops (make_photo_scene,
PhotoScenes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_scenes import check_scene as check_shapes_scene  # the checks every scene set passes
from torch.utils.data import DataLoader

from utils import data as D
from utils.data import photo_scenes as P
from utils.data import sources as S

KEYS = set(D.make_scene(0))  # every scene set returns exactly the keys of make_scene
N_CLASSES = len(D.PHOTO_SCENE_CLASSES)


def check_scene(scene: dict, size: int, n_classes: int = N_CLASSES) -> None:
    assert set(scene) == KEYS
    check_shapes_scene(scene, size, n_classes)  # dtypes, ranges, boxes, instance and semantic masks


@pytest.fixture
def drawn(monkeypatch):
    """Record (source, index) of every digit or silhouette that a scene pastes."""
    used: list[tuple[str, int]] = []
    glyph = P._glyph

    def recording(source, index):
        used.append((source, index))
        return glyph(source, index)

    monkeypatch.setattr(P, "_glyph", recording)
    return used


@pytest.mark.parametrize("size", [64, 96])
def test_annotations_are_exact(size):
    counts = []
    for seed in range(40):
        scene = D.make_photo_scene(seed, size=size)
        check_scene(scene, size)
        counts.append(len(scene["labels"]))
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1


def test_occluded_objects_keep_the_visible_fraction():
    overlapped = 0
    for seed in range(30):
        for min_visible in (0.3, 0.7):
            args = P._check_args("train", 64, 4, 6, D.PHOTO_SCENE_CLASSES, min_visible, (0.3, 0.6), 0.2, 0)
            _, visible, full, labels = P._draw(seed, "train", 64, 4, 6, *args, min_visible, (0.3, 0.6))
            assert len(visible) == len(full) == len(labels) >= 4
            for k, (v, f) in enumerate(zip(visible, full)):
                above = np.any(full[k + 1 :], axis=0) if k + 1 < len(full) else np.zeros_like(f)
                assert np.array_equal(v, f & ~above)  # visible = whole minus what the objects above cover
                assert v.sum() >= min_visible * f.sum() and v.sum() >= P.MIN_PIXELS
                overlapped += int(v.sum() < f.sum())
            scene = D.make_photo_scene(seed, min_objects=4, max_objects=6, min_visible=min_visible)
            assert all(torch.equal(torch.from_numpy(v), m) for v, m in zip(visible, scene["instance_masks"]))
    assert overlapped > 20  # crowded scenes do occlude


def test_deterministic_by_seed_and_split_and_leaves_global_rng_alone():
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a, b = D.make_photo_scene(5), D.make_photo_scene(5)
    assert all(torch.equal(a[k], b[k]) for k in KEYS)
    assert not torch.equal(a["image"], D.make_photo_scene(6)["image"])
    assert not torch.equal(a["image"], D.make_photo_scene(5, split="test")["image"])
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_objects_come_from_the_matching_split_with_their_labels(drawn):
    for split in ("train", "test"):
        drawn.clear()
        for seed in range(60):
            scene = D.make_photo_scene(seed, split=split, max_objects=3)
        assert {source for source, _ in drawn} == {"mnist", "animals"}
        for source in ("mnist", "animals"):
            used = {i for s, i in drawn if s == source}
            allowed = set(S.split_indices(source, split).tolist())
            assert used <= allowed, f"{split} scenes used another split's {source}"
    # the training and test splits of each source share no image, identical copies included
    for source in ("mnist", "animals"):
        images = S.ARRAYS[source]()[0].reshape(-1, 28 * 28)
        train = {images[i].tobytes() for i in S.split_indices(source, "train")}
        test = {images[i].tobytes() for i in S.split_indices(source, "test")}
        assert not train & test
    # each label names the class of the pasted image: one object per scene to pair them
    drawn.clear()
    for seed in range(40):
        scene = D.make_photo_scene(seed, min_objects=1, max_objects=1)
        source, index = drawn[-1]  # the last image drawn is the one that was placed
        target = int(S.ARRAYS[source]()[1][index])
        name = (S.DIGIT_CLASSES if source == "mnist" else S.ANIMAL_CLASSES)[target]
        assert D.PHOTO_SCENE_CLASSES[int(scene["labels"][0]) - 1] == name


def test_class_subset(drawn):
    classes = ("3", "zebra")
    for seed in range(15):
        scene = D.make_photo_scene(seed, classes=classes, size=80, max_objects=3)
        check_scene(scene, 80, n_classes=2)
    targets = {"mnist": S.ARRAYS["mnist"]()[1], "animals": S.ARRAYS["animals"]()[1]}
    assert {(s, int(targets[s][i])) for s, i in drawn} == {("mnist", 3), ("animals", 9)}


def test_colour_does_not_give_the_class_away():
    from sklearn.linear_model import LogisticRegression

    colours, labels = [], []
    for seed in range(400):
        scene = D.make_photo_scene(seed, classes=("1", "7", "bird", "giraffe"))
        for mask, label in zip(scene["instance_masks"], scene["labels"]):
            colours.append(scene["image"][:, mask].mean(1).numpy())
            labels.append(int(label))
    x, y = np.array(colours), np.array(labels)
    half = len(y) // 2
    accuracy = LogisticRegression(max_iter=1000).fit(x[:half], y[:half]).score(x[half:], y[half:])
    majority = np.bincount(y[half:]).max() / (len(y) - half)
    assert accuracy < majority + 0.1, (accuracy, majority)  # chance is 1/4: the mean colour says nothing
    # while the shapes scenes' colour is no clue either, a photo scene's pixels are not flat
    scene = D.make_photo_scene(0)
    assert all(scene["image"][:, m].std(1).mean() > 0.02 for m in scene["instance_masks"])


def test_dataset_and_collate():
    ds = D.PhotoScenes(8, split="test", seed=2, size=72, max_objects=3)
    assert len(ds) == 8 and ds.classes == D.PHOTO_SCENE_CLASSES and ds.label_names[0] == "background"
    assert ds.label_names[11] == "bear" and ds.num_classes == 21
    expected = D.make_photo_scene(2 * 1_000_003 + 5, split="test", size=72, max_objects=3)
    assert all(torch.equal(ds[5][k], expected[k]) for k in KEYS)
    assert torch.equal(ds[-1]["image"], ds[7]["image"])
    with pytest.raises(IndexError):
        ds[8]
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=D.collate_scenes)))
    assert batch["image"].shape == (4, 3, 72, 72) and batch["semantic_mask"].shape == (4, 72, 72)
    for i in range(4):
        assert torch.equal(batch["boxes"][i], ds[i]["boxes"])
        assert torch.equal(batch["labels"][i], ds[i]["labels"])
    flipped = D.PhotoScenes(2, transform=lambda s: {**s, "image": s["image"].flip(-1)})
    assert torch.equal(flipped[1]["image"], D.PhotoScenes(2)[1]["image"].flip(-1))


def test_bad_arguments_raise_clear_errors():
    cases = [
        (dict(split="val"), "split"),
        (dict(classes=("3", "unicorn")), "classes"),
        (dict(classes=("3", "3")), "classes"),
        (dict(size=8), "size"),
        (dict(min_objects=3, max_objects=2), "min_objects"),
        (dict(min_visible=0.0), "min_visible"),
        (dict(scale=(0.5, 0.2)), "scale"),
        (dict(scale=(0.0, 0.5)), "scale"),
        (dict(test_size=1.5), "test_size"),
        (dict(test_size="a"), "test_size"),
        (dict(split_seed=-1), "split_seed"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            D.make_photo_scene(0, **kwargs)
        if "seed" not in kwargs:
            with pytest.raises(ValueError, match=match):
                D.PhotoScenes(3, **kwargs)
    with pytest.raises(TypeError, match="string"):
        D.make_photo_scene(0, classes="zebra")
    with pytest.raises(ValueError, match="seed"):
        D.make_photo_scene(-1)
    with pytest.raises(ValueError, match="n must"):
        D.PhotoScenes(-1)
    with pytest.raises(TypeError, match="transform"):
        D.PhotoScenes(2, transform="flip")
    with pytest.raises(ValueError, match="could not place"):
        D.make_photo_scene(0, size=16, min_objects=6, max_objects=6, scale=(0.9, 1.0), min_visible=0.9)
