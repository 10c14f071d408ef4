"""utils.data: load() by name, the registry, and the online datasets (never a silent substitute)."""

from __future__ import annotations

import socket
import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torchvision

from utils import data as D

REAL_SHAPE = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def unreachable(calls: list):
    class Unreachable:
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append(download)
            raise urllib.error.URLError("no route to host")

    return Unreachable


# ------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------


def test_load_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as err:
        D.load("imagenet")
    names = (
        "digits",
        "mnist",
        "animals",
        "animals_rgb",
        "fashion_mnist",
        "cifar10",
        "shapes",
        "photo_scenes",
    )
    assert all(name in str(err.value) for name in names)


@pytest.mark.parametrize("name", ["digits", "mnist", "animals", "animals_rgb", "shapes", "photo_scenes"])
def test_registered_shapes_and_classes_are_what_load_returns(name):
    info = D.dataset_info(name)
    if info.kind == "classification":
        ds = D.load(name, "test", subset=20)
        assert isinstance(ds, D.ImageDataset) and ds.image_shape == info.shape
        assert ds.num_classes == info.num_classes
        assert ds[0][0].shape == info.shape
    else:
        ds = D.load(name, "test", n=3)
        assert len(ds) == 3 and ds[0]["image"].shape == info.shape and len(ds.classes) == info.num_classes


def test_list_datasets_by_kind():
    names = [info.name for info in D.list_datasets()]
    assert names[: len(D.DATASETS)] == list(D.DATASETS)
    assert {i.name for i in D.list_datasets("scenes")} == {"shapes", "photo_scenes"}
    assert {i.name for i in D.list_datasets("classification") if i.online} == {"fashion_mnist", "cifar10"}
    with pytest.raises(ValueError, match="kind"):
        D.list_datasets("video")


def test_register_a_dataset_and_load_it(monkeypatch):
    from utils.data import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry alone
    seen = []

    def tiny(split, *, seed=0, **kw):
        seen.append((split, seed))
        images = torch.full((4, 1, 2, 2), 7, dtype=torch.uint8)
        return D.ImageDataset(images, [0, 1, 0, 1], ["a", "b"], name=f"tiny/{split}", **kw)

    info = D.register_dataset("tiny", tiny, shape=(1, 2, 2), num_classes=2, summary="four images")
    assert D.dataset_info("tiny") is info and info in D.list_datasets("classification")
    ds = D.load("tiny", "test", seed=3, flatten=True)
    x, y = ds[1]
    assert seen == [("test", 3)] and y == 1 and torch.equal(x, torch.full((4,), 7 / 255))
    with pytest.raises(ValueError, match="already registered"):
        D.register_dataset("tiny", tiny, shape=(1, 2, 2), num_classes=2, summary="again")
    D.register_dataset("tiny", tiny, shape=(1, 2, 2), num_classes=3, summary="again", replace=True)
    assert D.dataset_info("tiny").num_classes == 3
    with pytest.raises(ValueError, match="kind"):
        D.register_dataset("other", tiny, kind="video", shape=(1, 2, 2), num_classes=2, summary="")
    with pytest.raises(ValueError, match="shape"):
        D.register_dataset("other", tiny, shape=(2, 2), num_classes=2, summary="")
    with pytest.raises(TypeError, match="callable"):
        D.register_dataset("other", "tiny", shape=(1, 2, 2), num_classes=2, summary="")
    assert "tiny" not in D.DATASETS  # the built-in names


def test_load_scene_sets_by_name():
    train = D.load("shapes", "train", n=4, seed=2, size=32)
    test = D.load("shapes", "test", n=4, seed=2, size=32)
    reference = D.ShapesScenes(4, seed=2, size=32)
    assert all(torch.equal(train[i]["image"], reference[i]["image"]) for i in range(4))
    assert not any(torch.equal(test[i]["image"], reference[j]["image"]) for i in range(4) for j in range(4))
    photo = D.load("photo_scenes", "test", n=2, seed=1)
    assert isinstance(photo, D.PhotoScenes) and photo.split == "test"
    with pytest.raises(ValueError, match="split"):
        D.load("shapes", "val", n=2)


# ------------------------------------------------------------------------------------------
# online datasets: an error that says what to do, a substitute only when asked for
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls", [("fashion_mnist", "FashionMNIST"), ("cifar10", "CIFAR10")])
def test_failed_download_raises_a_clear_error(name, cls, monkeypatch, no_network, tmp_path):
    calls = []
    monkeypatch.setattr(torchvision.datasets, cls, unreachable(calls))
    with pytest.raises(D.DatasetUnavailableError) as err:
        D.load(name, "test", download=True, root=tmp_path, seed=2)
    message = str(err.value)
    assert calls == [True]
    assert "URLError" in message and str(tmp_path) in message and "substitute=True" in message
    assert isinstance(err.value.__cause__, urllib.error.URLError)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_offline_without_download_never_touches_the_network(name, no_network, tmp_path):
    # the real torchvision class, with an empty root and download=False: local files only
    with pytest.raises(D.DatasetUnavailableError) as err:
        D.load(name, "train", root=tmp_path, subset=50)
    message = str(err.value)
    shape = "x".join(map(str, REAL_SHAPE[name]))
    for hint in ("download=False", "download=True", "root=", "substitute=True", shape):
        assert hint in message, hint
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was downloaded


@pytest.mark.parametrize("name,stand_in", [("fashion_mnist", "animals"), ("cifar10", "animals_rgb")])
def test_substitute_only_when_asked_and_of_the_same_shape(name, stand_in, no_network, tmp_path):
    with pytest.warns(UserWarning, match=f"{name}.*{stand_in}"):
        ds = D.load(name, "test", root=tmp_path, substitute=True, subset=50, seed=2)
    assert D.SUBSTITUTES[name] == stand_in and D.dataset_info(name).shape == REAL_SHAPE[name]
    assert ds.image_shape == REAL_SHAPE[name] and ds[0][0].shape == REAL_SHAPE[name] and ds.num_classes == 10
    assert torch.equal(ds.data, D.load(stand_in, "test", subset=50, seed=2).data)
    assert f"substitute for {name}" in ds.name and stand_in in ds.name
    with pytest.raises(D.DatasetUnavailableError):  # the same call without substitute=True
        getattr(D, name)("test", root=tmp_path, subset=50, seed=2)


def fake_cifar(n: int = 30):
    class FakeCIFAR:
        def __init__(self, root, train=True, download=False):
            rng = np.random.default_rng(0 if train else 1)
            self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
            self.targets = [i % 3 for i in range(n)]
            self.classes = ["airplane", "automobile", "bird"]

    return FakeCIFAR


def test_torchvision_dataset_is_converted(monkeypatch, tmp_path):
    FakeCIFAR = fake_cifar()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real dataset: no substitute, no warning
        ds = D.load("cifar10", "train", download=True, root=tmp_path, flatten=False, substitute=True)
    fake = FakeCIFAR(tmp_path)
    assert ds.data.shape == (30, 3, 32, 32) and ds.data.dtype == torch.uint8
    assert torch.equal(ds.data[4, 1], torch.from_numpy(fake.data[4, :, :, 1]))
    assert ds.images.dtype == torch.float32
    assert torch.equal(ds.images[4, 1], torch.from_numpy(fake.data[4, :, :, 1]).float() / 255)
    assert ds.targets.tolist() == fake.targets and ds.classes == fake.classes and ds.name == "cifar10/train"
    small = D.cifar10("test", root=tmp_path, subset=9, seed=1)
    assert len(small) == 9 and np.bincount(small.targets.numpy()).tolist() == [3, 3, 3]


def test_online_rejects_unknown_options(tmp_path):
    with pytest.raises(TypeError, match="batch_size"):
        D.load("cifar10", root=tmp_path, batch_size=4)
    with pytest.raises(ValueError, match="split"):
        D.cifar10("validation", root=tmp_path)
