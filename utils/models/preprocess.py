"""The preprocessing of a pretrained classifier: what ``Weights.transforms()`` returns (chapter 09).

A network pretrained on ImageNet saw 3-channel float images, resized so that the shorter side is
``resize_size``, centre-cropped to ``crop_size`` and normalised with the training set's per-channel
``mean`` and ``std``. :class:`Preprocess` does the same to any image the course handles: uint8
(0..255) or float (0..1), one image (C, H, W) or a batch (N, C, H, W), grey or RGB, as tensors,
NumPy arrays (H, W[, C], as scikit-image and PIL give them) or PIL images. The steps are
torchvision's ``ImageClassification`` (same functions, same order), so the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

__all__ = ["Preprocess"]


def _as_tensor(image: Any) -> torch.Tensor:
    """A tensor (C, H, W) / (N, C, H, W) from a tensor, a NumPy array (H, W[, C]) / (N, H, W, C) or a
    PIL image."""
    if isinstance(image, torch.Tensor):
        return image
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            return torch.from_numpy(image.copy())[None]  # grey (H, W) -> (1, H, W)
        if image.ndim in (3, 4) and image.shape[-1] in (1, 3):
            # channels last -> channels first
            return torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, -3)))
        raise ValueError(
            f"NumPy images must be (H, W), (H, W, C) or (N, H, W, C) with C = 1 or 3, got shape {image.shape}"
        )
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return TF.pil_to_tensor(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    raise TypeError(
        f"expected an image as a torch.Tensor, a NumPy array or a PIL image, got {type(image).__name__}"
    )


class Preprocess(nn.Module):
    """Resize the shorter side to ``resize_size`` (``interpolation``, antialiased), centre crop
    ``crop_size``, scale to floats in [0, 1] (uint8 / 255), repeat a grey channel to RGB, normalise
    ``(x - mean) / std``.

    Input: uint8 in 0..255 or float in [0, 1], (C, H, W) or (N, C, H, W) with C = 1 or 3 (or a NumPy
    array / PIL image, see the module docstring). Output: float32 (3, crop, crop) or
    (N, 3, crop, crop) on the input's device. Anything else (4 channels, int64, floats outside
    [0, 1] such as an image already normalised) raises a ``ValueError`` that says what was expected.
    """

    def __init__(
        self,
        *,
        resize_size: int,
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
    ):
        super().__init__()
        self.resize_size, self.crop_size = int(resize_size), int(crop_size)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.interpolation = TF.InterpolationMode(interpolation)

    def forward(self, image: Any) -> torch.Tensor:
        x = _as_tensor(image)
        if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
            raise ValueError(
                f"expected an image (C, H, W) or a batch (N, C, H, W) with C = 1 (grey) or 3 "
                f"(RGB), got shape {tuple(x.shape)}"
            )
        if x.dtype != torch.uint8:
            if not x.is_floating_point():
                raise ValueError(f"expected uint8 (0..255) or float (0..1) images, got {x.dtype}")
            low, high = float(x.min()), float(x.max())
            if low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(
                    f"float images must be in [0, 1], got values in [{low:.3g}, {high:.3g}] "
                    f"(uint8 images in 0..255 are welcome as they are; this one may be "
                    f"normalised already)"
                )
        x = TF.resize(x, [self.resize_size], interpolation=self.interpolation, antialias=True)
        x = TF.center_crop(x, [self.crop_size, self.crop_size])
        x = TF.convert_image_dtype(x, torch.float32)  # uint8 / 255, floats as they are
        if x.shape[-3] == 1:
            x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])  # grey -> RGB
        return TF.normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return (
            f"resize_size={self.resize_size}, crop_size={self.crop_size}, mean={self.mean}, "
            f"std={self.std}, interpolation={self.interpolation.value}"
        )
