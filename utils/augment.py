"""Data augmentation for the classification chapters: a ``torchvision.transforms.v2`` pipeline,
MixUp and CutMix written out by hand, and a collate function that applies them to batches (chapter 05).

* :func:`train_augmentation`: the per-image pipeline (random flip, small affine jitter, optional
  random erasing) for an :class:`utils.data.ImageDataset`'s ``transform``.
* :func:`mixup` and :func:`cutmix`: mix a batch with itself rolled by one position (the pairing
  torchvision uses; the loader has already shuffled the batch). Labels become probability
  vectors (N, num_classes), which ``torch.nn.functional.cross_entropy`` accepts as targets.
  Given the same random state they return exactly what ``torchvision.transforms.v2.MixUp`` and
  ``CutMix`` return.
* :class:`MixCollate`: a DataLoader ``collate_fn`` that stacks a batch and then applies MixUp or
  CutMix, chosen at random for each batch.

Every function works on any device; the random numbers come from PyTorch's global generator, like
torchvision's, so ``utils.seed_everything`` makes them reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

__all__ = ["MixCollate", "cutmix", "mixup", "one_hot", "sample_lambda", "train_augmentation"]


def train_augmentation(
    *,
    flip: bool = True,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    erase: float = 0.0,
) -> v2.Compose:
    """A ``torchvision.transforms.v2`` pipeline for one training image (C, H, W) in [0, 1]. Chapter 05.

    Random horizontal flip (``flip``: an animal facing left is still the same animal), a random
    affine map (rotation up to ``degrees``, shifts up to ``translate`` of the size, zoom within
    ``scale``) and, with ``erase > 0``, random erasing of a rectangle with probability ``erase``.
    Use it as the training set's ``transform``; never on the validation or test set.
    """
    if degrees < 0 or not 0 <= translate < 1 or not 0 < scale[0] <= scale[1] or not 0 <= erase <= 1:
        raise ValueError(
            f"expected degrees >= 0, translate in [0, 1), 0 < scale[0] <= scale[1], erase in [0, 1]; "
            f"got degrees={degrees}, translate={translate}, scale={scale}, erase={erase}"
        )
    steps: list[Any] = []
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if degrees or translate or tuple(scale) != (1.0, 1.0):
        steps.append(v2.RandomAffine(degrees=degrees, translate=(translate, translate), scale=tuple(scale)))
    if erase:
        steps.append(v2.RandomErasing(p=erase, scale=(0.02, 0.15), value=0.0))
    return v2.Compose(steps or [v2.Identity()])  # all off: the identity


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer labels (N,) -> one-hot float rows (N, num_classes); probability rows (N, C) pass through."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a tensor, got {type(labels).__name__}")
    if labels.dim() == 2 and labels.is_floating_point():
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"probability labels must have {num_classes} columns, got shape {tuple(labels.shape)}"
            )
        return labels.to(dtype)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"labels must be integer class indices (N,) or probabilities (N, {num_classes}), "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got min {int(labels.min())}, max {int(labels.max())}"
        )
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype)


def sample_lambda(alpha: float) -> float:
    """One draw of the mixing weight from Beta(alpha, alpha), with PyTorch's global generator. Chapter 05.

    alpha = 1 is uniform on [0, 1]; small alpha puts most weight near 0 and 1 (mostly one image).
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    beta = torch.distributions.Beta(torch.tensor([float(alpha)]), torch.tensor([float(alpha)]))
    return float(beta.sample(()))


def _check_batch(images: Any, labels: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch of shape (N, C, H, W), got {got}")
    if not isinstance(labels, torch.Tensor) or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must be a tensor with one row per image ({images.shape[0]}), "
            f"got {tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}"
        )


def mixup(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    alpha: float = 1.0,
    lam: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp: ``lam * x_i + (1 - lam) * x_{i-1}`` and the same mix of their one-hot labels. Chapter 05.

    images (N, C, H, W), labels (N,) integers (or (N, num_classes) probabilities) ->
    (mixed images (N, C, H, W), soft labels (N, num_classes)). Each image is paired with the one
    before it in the batch (``roll(1, 0)``), so the loader must shuffle. ``lam`` is drawn from
    Beta(alpha, alpha) unless given.
    """
    _check_batch(images, labels)
    lam = sample_lambda(alpha) if lam is None else float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    targets = one_hot(labels, num_classes)  # (N, K)
    mixed = lam * images + (1.0 - lam) * images.roll(1, 0)
    soft = lam * targets + (1.0 - lam) * targets.roll(1, 0)
    return mixed, soft


def cutmix(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    alpha: float = 1.0,
    lam: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix: paste a rectangle of the previous image of the batch; labels mixed by area. Chapter 05.

    A box of about ``(1 - lam)`` of the image area (side ``sqrt(1 - lam)`` times the image side,
    centred at a uniformly random pixel, clipped at the border) is copied from the image before
    each one in the batch (``roll(1, 0)``). The label weight of the pasted image is the fraction of
    pixels it actually covers after clipping. images (N, C, H, W), labels (N,) ->
    (images (N, C, H, W), soft labels (N, num_classes)).
    """
    _check_batch(images, labels)
    lam = sample_lambda(alpha) if lam is None else float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    h, w = images.shape[-2:]
    cx = int(torch.randint(w, size=(1,)))  # the box centre (same order of draws as torchvision)
    cy = int(torch.randint(h, size=(1,)))
    r = 0.5 * math.sqrt(1.0 - lam)  # half side, as a fraction of the image side
    half_w, half_h = int(r * w), int(r * h)
    x1, x2 = max(cx - half_w, 0), min(cx + half_w, w)
    y1, y2 = max(cy - half_h, 0), min(cy + half_h, h)
    out = images.clone()
    out[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
    kept = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)  # fraction of the image's own pixels
    targets = one_hot(labels, num_classes)
    return out, kept * targets + (1.0 - kept) * targets.roll(1, 0)


class MixCollate:
    """A DataLoader ``collate_fn``: stack the batch, then apply MixUp or CutMix to it. Chapter 05.

    ``MixCollate(num_classes=10)`` picks MixUp with probability ``p_mixup`` and CutMix otherwise
    (``p_mixup=1``: MixUp only, ``0``: CutMix only), with their own ``alpha``. With probability
    ``p_off`` the batch is left unmixed (labels still one-hot). Targets come out as probabilities
    (N, num_classes): ``F.cross_entropy`` takes them, and ``utils.train.fit`` then records the
    training accuracy as NaN (there is no single right class), so measure it on clean data.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        p_mixup: float = 0.5,
        p_off: float = 0.0,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not (0 <= p_mixup <= 1 and 0 <= p_off <= 1):
            raise ValueError(f"p_mixup and p_off must lie in [0, 1], got {p_mixup}, {p_off}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.p_mixup, self.p_off = p_mixup, p_off

    def __call__(self, batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(batch)
        if self.p_off and float(torch.rand(())) < self.p_off:
            return images, one_hot(labels, self.num_classes)
        if float(torch.rand(())) < self.p_mixup:
            return mixup(images, labels, num_classes=self.num_classes, alpha=self.mixup_alpha)
        return cutmix(images, labels, num_classes=self.num_classes, alpha=self.cutmix_alpha)

    def __repr__(self) -> str:
        return (
            f"MixCollate(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
            f"cutmix_alpha={self.cutmix_alpha}, p_mixup={self.p_mixup}, p_off={self.p_off})"
        )
