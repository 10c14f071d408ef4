"""Sample photos and textures shipped with scikit-image and scikit-learn, offline.

:func:`photo` gives one as a (3, H, W) float tensor; chapter 06 (convolutions) filters them and the
photo scenes (:mod:`utils.data.photo_scenes`) paste objects on crops of them. :data:`CREDITS` names
the author and licence of each.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .sources import _frozen

__all__ = ["PHOTOS", "TEXTURES", "photo"]

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "china", "flower")
TEXTURES = ("brick", "grass", "gravel")  # grey 512x512 texture samples of skimage.data


def _check_name(name: str) -> str:
    key = name[:-4] if isinstance(name, str) and name in ("china.jpg", "flower.jpg") else name
    if key not in PHOTOS and key not in TEXTURES:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS + TEXTURES)}")
    return key


@functools.lru_cache(maxsize=None)
def photo_uint8(name: str) -> np.ndarray:
    """The photo or texture ``name`` as it is stored: a read-only (H, W) or (H, W, 3) uint8 or bool array."""
    key = _check_name(name)
    if key in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{key}.jpg")
    else:
        import skimage.data

        array = getattr(skimage.data, key)()
    return _frozen(np.asarray(array))


@functools.lru_cache(maxsize=None)
def _photo_array(name: str) -> np.ndarray:
    array = photo_uint8(name)
    if array.dtype == bool:  # horse: a black silhouette on white
        array = array.astype(np.float32)
    else:
        array = array.astype(np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return _frozen(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (3, H, W)


def photo(name: str) -> torch.Tensor:
    """A sample photo as a (3, H, W) float32 tensor in [0, 1]; grey images are repeated on 3 channels.

    ``name`` is one of :data:`PHOTOS` (``"china.jpg"`` and ``"flower.jpg"`` are accepted too) or of
    :data:`TEXTURES`; :data:`CREDITS` gives the author and licence of each. Each call returns a fresh
    tensor. Chapter 06 (convolutions) filters them.
    """
    return torch.from_numpy(_photo_array(_check_name(name)).copy())
