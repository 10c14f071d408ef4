"""utils.data: embedded datasets, splits, the animals checksum, load() fallback, photos and scenes."""

from __future__ import annotations

import shutil
import socket
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
import torchvision.ops as tvops
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from utils import data as D

EMBEDDED = {"digits": (1797, (1, 8, 8)), "mnist": (5000, (1, 28, 28)), "animals": (10000, (1, 28, 28))}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def rows(images: torch.Tensor) -> list[bytes]:
    """Each image as bytes, to compare sets of images."""
    return [r.tobytes() for r in images.reshape(len(images), -1).numpy()]


# ------------------------------------------------------------------------------------------
# embedded datasets
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_shapes_dtypes_ranges_and_stratification(name):
    total, shape = EMBEDDED[name]
    train, test = D.load(name, "train"), D.load(name, "test")
    assert isinstance(train, D.ImageDataset)
    assert len(train) + len(test) == total
    # animals keeps identical images on one side of the split, so its sizes move by a few images
    assert len(test) == pytest.approx(0.2 * total, abs=1 if name != "animals" else 0.002 * total)
    for ds in (train, test):
        assert ds.images.shape == (len(ds), *shape) and ds.images.dtype == torch.float32
        assert ds.targets.shape == (len(ds),) and ds.targets.dtype == torch.int64
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
        assert ds.images.max() == 1.0  # scaled by the right constant (16 or 255), not squashed
        assert len(ds.classes) == 10 and set(ds.targets.tolist()) == set(range(10))
    whole = np.bincount(np.concatenate([train.targets.numpy(), test.targets.numpy()]), minlength=10) / total
    for ds in (train, test):  # every class within one percentage point of its share of the whole
        share = np.bincount(ds.targets.numpy(), minlength=10) / len(ds)
        assert np.abs(share - whole).max() < 0.01
    image, label = train[0]
    assert image.shape == shape and isinstance(label, int) and label == train.targets[0]


def test_class_counts_and_names():
    assert np.bincount(D.mnist("train").targets.numpy()).tolist() == [400] * 10
    assert np.bincount(D.mnist("test").targets.numpy()).tolist() == [100] * 10
    both = np.concatenate([D.animals("train").targets.numpy(), D.animals("test").targets.numpy()])
    assert np.bincount(both).tolist() == [1000] * 10
    assert D.animals().classes == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert D.digits().classes == [str(d) for d in range(10)]


@pytest.mark.parametrize("name", ["digits", "animals"])
def test_train_and_test_partition_the_dataset(name):
    train, test = D.load(name, "train"), D.load(name, "test")
    full_images, _ = {"digits": D._digits_arrays, "animals": D._animal_arrays}[name]()
    # the two splits together hold each image of the dataset exactly once
    assert sorted(rows(train.images) + rows(test.images)) == sorted(rows(torch.from_numpy(full_images.copy())))
    # no image of the test split is also in the training split (animals has identical pairs)
    assert not set(rows(train.images)) & set(rows(test.images))
    assert not set(rows(D.load(name, "train", seed=5).images)) & set(rows(D.load(name, "test", seed=5).images))


def test_animals_has_duplicates_that_stay_together():
    groups = D._duplicate_groups("animals")
    assert groups is not None and (groups != np.arange(len(groups))).sum() == 284
    assert D._duplicate_groups("digits") is None and D._duplicate_groups("mnist") is None


def test_split_is_deterministic_and_depends_on_seed():
    a, b, c = D.digits("test", seed=0), D.digits("test", seed=0), D.digits("test", seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert len(D.digits("test", test_size=0.5)) == pytest.approx(1797 / 2, abs=1)


def test_flatten_and_subset():
    ds = D.digits("train", flatten=True)
    x, _ = ds[3]
    assert x.shape == (64,) and torch.equal(x, ds.images[3].reshape(-1))
    loader = DataLoader(ds, batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 64) and yb.dtype == torch.int64
    small = D.animals("train", subset=200, seed=3)
    assert len(small) == 200 and np.bincount(small.targets.numpy()).tolist() == [20] * 10
    again = D.animals("train", subset=200, seed=3)
    assert torch.equal(small.images, again.images)
    assert set(rows(small.images)) <= set(rows(D.animals("train", seed=3).images))  # a subset of its split
    assert len(D.digits("test", subset=5)) == 5  # fewer than the classes: still deterministic
    assert torch.equal(D.digits("test", subset=5).targets, D.digits("test", subset=5).targets)


def test_cache_is_reused_and_protected():
    assert D._mnist_arrays() is D._mnist_arrays()
    ds = D.mnist("test")
    before = ds.images[0].clone()
    ds.images[0] += 0.5  # a learner changes their copy...
    assert torch.equal(D.mnist("test").images[0], before)  # ...the cache is unchanged


def test_dataloader_with_transforms_v2():
    transform = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Normalize(mean=[0.5], std=[0.25])])
    ds = D.mnist("test", transform=transform)
    loader = DataLoader(ds, batch_size=32, shuffle=False)
    xb, yb = next(iter(loader))
    assert xb.shape == (32, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    expected = (ds.images[:32].flip(-1) - 0.5) / 0.25
    torch.testing.assert_close(xb, expected)
    torch.testing.assert_close(yb, ds.targets[:32])
    resized = D.animals("test", transform=v2.Resize((32, 32), antialias=True), flatten=True)
    assert resized[0][0].shape == (32 * 32,)


def test_imagedataset_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        D.ImageDataset(torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        D.ImageDataset(torch.full((2, 1, 4, 4), 255.0), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="targets"):
        D.ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 3]), ["a", "b"])
    with pytest.raises(ValueError, match="split"):
        D.digits("validation")


# ------------------------------------------------------------------------------------------
# animals: checksum before unpickling
# ------------------------------------------------------------------------------------------


def test_animal_files_match_the_expected_sha256():
    folder = D._animal_folder()
    for name, digest in D.ANIMAL_SHA256.items():
        assert D._sha256(folder / name) == digest


def test_tampered_file_is_detected_before_unpickling(tmp_path, monkeypatch):
    folder = D._animal_folder()
    for name in D.ANIMAL_SHA256:
        shutil.copy(folder / name, tmp_path / name)
    images, labels = D._read_animal_files(tmp_path)  # an untouched copy reads fine
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)

    with open(tmp_path / "animal_label_version_3.gz", "ab") as f:
        f.write(b"\x00")  # one extra byte
    tampered = D._sha256(tmp_path / "animal_label_version_3.gz")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a file was unpickled before its checksum was verified")

    monkeypatch.setattr(D.pickle, "load", no_unpickling)
    with pytest.raises(D.ChecksumError) as err:
        D._read_animal_files(tmp_path)
    message = str(err.value)
    assert "animal_label_version_3.gz" in message
    assert D.ANIMAL_SHA256["animal_label_version_3.gz"] in message and tampered in message


def test_changed_expected_hash_is_detected(monkeypatch):
    monkeypatch.setitem(D.ANIMAL_SHA256, "animal_data_version_3.gz", "0" * 64)
    with pytest.raises(D.ChecksumError, match="animal_data_version_3.gz.*0{64}.*68a30346"):
        D._read_animal_files(D._animal_folder())


# ------------------------------------------------------------------------------------------
# load(): names and the offline fallback
# ------------------------------------------------------------------------------------------


def test_load_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as err:
        D.load("imagenet")
    for name in ("digits", "mnist", "animals", "fashion_mnist", "cifar10"):
        assert name in str(err.value)


@pytest.mark.parametrize("name,cls", [("fashion_mnist", "FashionMNIST"), ("cifar10", "CIFAR10")])
def test_failed_download_prints_one_line_and_falls_back(name, cls, monkeypatch, capsys, no_network, tmp_path):
    calls = []

    class Unreachable:
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append(download)
            raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, cls, Unreachable)
    ds = D.load(name, "test", download=True, root=tmp_path, seed=2)
    out = capsys.readouterr().out
    assert calls == [True]
    assert out.count("\n") == 1 and name in out and "animals" in out and "URLError" in out
    assert torch.equal(ds.targets, D.animals("test", seed=2).targets)
    assert ds.classes == D.ANIMAL_CLASSES


def test_no_download_never_touches_the_network(monkeypatch, capsys, no_network, tmp_path):
    # the real torchvision class, with an empty root and download=False: local files only
    ds = D.load("fashion_mnist", "train", root=tmp_path, subset=50)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "download=False" in out and "animals" in out
    assert len(ds) == 50 and ds.classes == D.ANIMAL_CLASSES
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was downloaded


def test_torchvision_dataset_is_converted(monkeypatch, capsys, tmp_path):
    class FakeCIFAR:
        def __init__(self, root, train=True, download=False):
            rng = np.random.default_rng(0)
            self.data = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
            self.targets = [i % 3 for i in range(30)]
            self.classes = ["airplane", "automobile", "bird"]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR)
    ds = D.load("cifar10", "train", download=True, root=tmp_path, flatten=False)
    assert capsys.readouterr().out == ""
    fake = FakeCIFAR(tmp_path)
    assert ds.images.shape == (30, 3, 32, 32) and ds.images.dtype == torch.float32
    torch.testing.assert_close(ds.images[4, 1], torch.from_numpy(fake.data[4, :, :, 1]).float() / 255)
    assert ds.targets.tolist() == fake.targets and ds.classes == fake.classes


# ------------------------------------------------------------------------------------------
# photos and credits
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.PHOTOS)
def test_photos(name):
    img = D.photo(name)
    assert img.dim() == 3 and img.shape[0] == 3 and min(img.shape[1:]) >= 256
    assert img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1 and img.max() > 0.5
    if name in ("camera", "coins", "horse"):  # grey images repeated on 3 channels
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    else:
        assert not torch.equal(img[0], img[1])
    if name == "horse":
        assert set(img.unique().tolist()) == {0.0, 1.0}


def test_photo_details():
    assert D.photo("china").shape == (3, 427, 640)
    assert torch.equal(D.photo("flower.jpg"), D.photo("flower"))
    img = D.photo("camera")
    img.zero_()
    assert D.photo("camera").max() > 0  # each call gives a fresh tensor
    with pytest.raises(ValueError, match="astronaut"):
        D.photo("lena")


def test_credits_cover_every_dataset_and_photo():
    for name in (*D.DATASETS, "shapes", *D.PHOTOS):
        assert len(D.CREDITS.get(name, "")) > 20, name
    assert "CC BY 2.0" in D.CREDITS["china"] and "CC BY 2.0" in D.CREDITS["flower"]
    assert "Sina Mohammadi" in D.CREDITS["animals"] and "MIT" in D.CREDITS["animals"]
    assert all(author in D.CREDITS["mnist"] for author in ("LeCun", "Cortes", "Burges"))
    assert "UCI" in D.CREDITS["digits"]


# ------------------------------------------------------------------------------------------
# scenes
# ------------------------------------------------------------------------------------------


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
    scene = D.make_scene(7, size=96, min_objects=3, max_objects=3, classes=("circle", "triangle"), background="plain")
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
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)


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
