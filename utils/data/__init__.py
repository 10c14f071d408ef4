"""Data for the course: embedded offline image datasets, sample photos and generated scenes.

Everything here works with no network unless asked otherwise. The modules:

* :mod:`~utils.data.classification`: :class:`ImageDataset` and the image-classification datasets,
  embedded (:func:`digits`, :func:`mnist`, :func:`animals`, :func:`animals_rgb`) or through
  torchvision (:func:`fashion_mnist`, :func:`cifar10`: raise :class:`DatasetUnavailableError` when
  they cannot be had; an embedded stand-in of the same shape only with ``substitute=True``).
  ``preprocess=weights`` feeds a pretrained network; 8-bit images stay uint8 in memory.
* :mod:`~utils.data.registry`: :func:`load` by name, :func:`list_datasets`, :func:`register_dataset`.
* :mod:`~utils.data.photos`: :func:`photo`, the scikit-image and scikit-learn sample photos and textures.
* :mod:`~utils.data.scenes`: :func:`make_scene`, :class:`ShapesScenes` (coloured shapes) and
  :func:`collate_scenes`; :mod:`~utils.data.photo_scenes`: :func:`make_photo_scene`,
  :class:`PhotoScenes` (digits and animal silhouettes on photos). Both with exact boxes, labels,
  semantic and instance masks, for detection and segmentation.
* :mod:`~utils.data.credits`: :data:`CREDITS`, the source, author and licence of every dataset and photo.
"""

from __future__ import annotations

from .classification import (
    DEFAULT_ROOT,
    FALLBACK,
    SUBSTITUTES,
    DatasetUnavailableError,
    ImageDataset,
    animals,
    animals_rgb,
    cifar10,
    digits,
    fashion_mnist,
    mnist,
)
from .credits import CREDITS
from .photo_scenes import BACKGROUND_SOURCES, PHOTO_SCENE_CLASSES, PhotoScenes, make_photo_scene
from .photos import PHOTOS, TEXTURES, photo
from .registry import DATASETS, DatasetInfo, dataset_info, list_datasets, load, register_dataset
from .scenes import (
    BACKGROUNDS,
    PALETTE,
    SHAPE_CLASSES,
    SceneDataset,
    ShapesScenes,
    collate_scenes,
    make_scene,
)
from .sources import ANIMAL_CLASSES, ANIMAL_SHA256, DIGIT_CLASSES, ChecksumError

__all__ = [
    "ANIMAL_CLASSES",
    "ANIMAL_SHA256",
    "BACKGROUNDS",
    "BACKGROUND_SOURCES",
    "CREDITS",
    "DATASETS",
    "DEFAULT_ROOT",
    "DIGIT_CLASSES",
    "FALLBACK",
    "PALETTE",
    "PHOTOS",
    "PHOTO_SCENE_CLASSES",
    "SHAPE_CLASSES",
    "SUBSTITUTES",
    "TEXTURES",
    "ChecksumError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "ImageDataset",
    "PhotoScenes",
    "SceneDataset",
    "ShapesScenes",
    "animals",
    "animals_rgb",
    "cifar10",
    "collate_scenes",
    "dataset_info",
    "digits",
    "fashion_mnist",
    "list_datasets",
    "load",
    "make_photo_scene",
    "make_scene",
    "mnist",
    "photo",
    "register_dataset",
]
