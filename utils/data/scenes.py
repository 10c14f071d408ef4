"""Procedural scenes of coloured shapes for detection and segmentation, with exact annotations.

:func:`make_scene` draws one scene, :class:`ShapesScenes` is a dataset of them and
:func:`collate_scenes` batches scenes of any scene set (this one or :mod:`utils.data.photo_scenes`)
for a ``DataLoader``. Every scene is a dict with the keys ``image`` (3, S, S) float in [0, 1],
``boxes`` (K, 4) xyxy, ``labels`` (K,) int64 in 1..C, ``semantic_mask`` (S, S) int64 and
``instance_masks`` (K, S, S) bool. The object-detection and segmentation chapters train on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SHAPE_CLASSES", "SceneDataset", "ShapesScenes", "collate_scenes", "make_scene"]


SHAPE_CLASSES = ("circle", "square", "triangle", "cross")

# Saturated colours, far from each other and from the dark background; one per object in a scene.
PALETTE = np.array(
    [
        [0.90, 0.10, 0.10],  # red
        [0.10, 0.80, 0.20],  # green
        [0.20, 0.35, 1.00],  # blue
        [0.95, 0.85, 0.10],  # yellow
        [0.90, 0.20, 0.85],  # magenta
        [0.10, 0.85, 0.90],  # cyan
        [1.00, 0.55, 0.05],  # orange
        [0.95, 0.95, 0.95],  # white
    ],
    dtype=np.float32,
)
BACKGROUNDS = ("noise", "plain")


def _shape_mask(shape: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one shape of half-extent ``r`` centred at (cx, cy) in pixels."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.85 * r  # about the area of the circle
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "cross":
        arm = r / 3.0
        return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if shape == "triangle":  # equilateral, circumradius r, rotated by angle
        turns = angle + np.arange(3) * 2 * np.pi / 3
        corners = list(zip(cx + r * np.cos(turns), cy + r * np.sin(turns)))
        signs = []
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            signs.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
        s = np.stack(signs)
        return np.all(s >= 0, axis=0) | np.all(s <= 0, axis=0)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPE_CLASSES}")


def check_int(value: Any, name: str, low: int = 0) -> int:
    """``value`` as an int, or a ValueError naming ``name`` unless it is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        what = "a non-negative int" if low == 0 else f"an int >= {low}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_layout(size: int, min_objects: int, max_objects: int, min_visible: float) -> None:
    """The checks every scene set makes on its size, object counts and visible fraction."""
    check_int(size, "size", 16)
    counts = (min_objects, max_objects)
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in counts)
    if not ints or not 0 <= min_objects <= max_objects:
        raise ValueError(
            "need 0 <= min_objects <= max_objects (ints), "
            f"got min_objects={min_objects!r}, max_objects={max_objects!r}"
        )
    if not isinstance(min_visible, (int, float, np.floating)) or not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min_visible must be a fraction in (0, 1], got {min_visible!r}")


def check_classes(classes: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple of distinct names from ``allowed``, or a clear error."""
    if isinstance(classes, str):
        raise TypeError(
            f"classes must be a sequence of names such as {tuple(allowed)}, got the string {classes!r}"
        )
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes) or any(c not in allowed for c in classes):
        raise ValueError(f"classes must be distinct names from {tuple(allowed)}, got {classes!r}")
    return classes


def _check_scene_args(
    size: int, min_objects: int, max_objects: int, classes: Sequence[str], background: str, min_visible: float
) -> tuple[str, ...]:
    check_layout(size, min_objects, max_objects, min_visible)
    classes = check_classes(classes, SHAPE_CLASSES)
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    return classes


def make_scene(
    seed: int,
    *,
    size: int = 64,
    max_objects: int = 4,
    min_objects: int = 1,
    classes: Sequence[str] = SHAPE_CLASSES,
    background: str = "noise",
    min_visible: float = 0.5,
    scale: tuple[float, float] = (0.15, 0.4),
) -> dict[str, torch.Tensor]:
    """Draw a scene of coloured shapes, the same for the same ``seed``, with exact annotations.

    Between ``min_objects`` and ``max_objects`` shapes (diameter a fraction ``scale`` of ``size``),
    each a different colour, are painted in turn; later shapes lie on top of earlier ones. A new
    shape that would leave less than ``min_visible`` of an earlier one visible is redrawn elsewhere
    (and dropped after 50 tries), so every object in the scene is at least that visible.

    Returns a dict:

    * ``image`` (3, size, size) float32 in [0, 1];
    * ``boxes`` (K, 4) float32, ``xyxy`` in pixels, the tight box of each instance mask with
      ``x2, y2`` the last pixel column and row (pixel-inclusive), i.e. exactly
      ``torchvision.ops.masks_to_boxes(instance_masks)``;
    * ``labels`` (K,) int64 in 1..len(classes): label ``k`` is ``classes[k - 1]``, 0 is background;
    * ``semantic_mask`` (size, size) int64: 0 for background, else the label of the visible object;
    * ``instance_masks`` (K, size, size) bool: the visible pixels of each object (disjoint).

    The object-detection and segmentation chapters train on these.
    """
    classes = _check_scene_args(size, min_objects, max_objects, classes, background, min_visible)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"scale must be (low, high) fractions of size with 0 < low <= high <= 1, got {scale!r}"
        )
    rng = np.random.default_rng(check_int(seed, "seed"))  # local generator: global RNG state is never touched

    # background
    base = rng.uniform(0.05, 0.3) + rng.uniform(-0.03, 0.03, size=3)
    image = np.broadcast_to(base.astype(np.float32)[:, None, None], (3, size, size)).copy()

    n_objects = int(rng.integers(min_objects, max_objects + 1))
    colours = rng.permutation(len(PALETTE))
    min_pixels = 12
    full: list[np.ndarray] = []  # each object's whole mask
    visible: list[np.ndarray] = []  # what is left of it after the objects above
    shapes: list[int] = []
    for _ in range(n_objects):
        for _attempt in range(50):
            cls = int(rng.integers(len(classes)))
            r = rng.uniform(*scale) * size / 2
            cx, cy = rng.uniform(r, size - r, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            mask = _shape_mask(classes[cls], cx, cy, r, angle, size)
            if mask.sum() < min_pixels:
                continue
            left = [v & ~mask for v in visible]
            if all(lv.sum() >= max(min_pixels, min_visible * f.sum()) for lv, f in zip(left, full)):
                visible = left + [mask]
                full.append(mask)
                shapes.append(cls)
                break
        # no room for this object after 50 tries: the scene keeps the ones it has
    if len(shapes) < min_objects:
        raise ValueError(
            f"could not place {min_objects} objects in a {size}x{size} scene (seed {seed}); "
            "lower min_objects or min_visible, or raise size"
        )

    labels = np.array([c + 1 for c in shapes], dtype=np.int64)  # (K,)
    semantic = np.zeros((size, size), dtype=np.int64)  # (H, W)
    for k, (mask, cls_label) in enumerate(zip(visible, labels)):
        colour = PALETTE[colours[k % len(PALETTE)]]
        image[:, mask] = colour[:, None]
        semantic[mask] = cls_label
    if background == "noise":
        image = image + rng.normal(0.0, 0.04, size=image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)

    instance_masks = torch.from_numpy(np.stack(visible) if visible else np.zeros((0, size, size), dtype=bool))
    from ..ops.boxes import masks_to_boxes

    return {
        "image": torch.from_numpy(image),
        "boxes": masks_to_boxes(instance_masks),
        "labels": torch.from_numpy(labels),
        "semantic_mask": torch.from_numpy(semantic),
        "instance_masks": instance_masks,
    }


class SceneDataset(Dataset):
    """The common part of the scene sets: ``n`` scenes, scene ``i`` drawn on demand by
    ``draw(seed * 1_000_003 + i)`` (nothing is stored), so two datasets with different seeds never
    share a scene. ``classes`` names the objects (label ``k`` is ``classes[k - 1]``), ``label_names``
    is ``("background", *classes)``, indexed by label; ``transform``, if given, maps each scene dict.
    """

    def __init__(
        self, n: int, seed: int, classes: tuple[str, ...], transform: Callable[[dict], dict] | None
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.n, self.seed = check_int(n, "n"), check_int(seed, "seed")
        self.classes = classes
        self.label_names = ("background", *classes)
        self.transform = transform

    def draw(self, seed: int) -> dict[str, torch.Tensor]:
        """The scene of ``seed``; each scene set says how it draws one."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """Number of classes including background (``len(classes) + 1``)."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.n <= index < self.n:
            raise IndexError(f"scene index {index} out of range for {self.n} scenes")
        scene = self.draw(self.seed * 1_000_003 + index % self.n)
        return self.transform(scene) if self.transform is not None else scene


class ShapesScenes(SceneDataset):
    """``n`` scenes of :func:`make_scene`; scene ``i`` is ``make_scene(seed * 1_000_003 + i, ...)``.

    Use ``DataLoader(..., collate_fn=collate_scenes)``. ``classes`` holds the shape names (label
    ``k`` is ``classes[k - 1]``); ``label_names`` is ``("background", *classes)``, indexed by label
    directly. ``transform``, if given, is applied to each scene dict (see :class:`SceneDataset`).
    The object-detection and segmentation chapters use it.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        size: int = 64,
        max_objects: int = 4,
        min_objects: int = 1,
        classes: Sequence[str] = SHAPE_CLASSES,
        background: str = "noise",
        min_visible: float = 0.5,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        classes = _check_scene_args(size, min_objects, max_objects, classes, background, min_visible)
        super().__init__(n, seed, classes, transform)
        self.size = int(size)
        self.scene_kwargs = {
            "size": size,
            "max_objects": max_objects,
            "min_objects": min_objects,
            "classes": self.classes,
            "background": background,
            "min_visible": min_visible,
        }

    def draw(self, seed: int) -> dict[str, torch.Tensor]:
        return make_scene(seed, **self.scene_kwargs)


def collate_scenes(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Batch scenes for a ``DataLoader``: images and semantic masks stacked, the rest kept as lists.

    Returns ``{"image": (B, 3, H, W), "semantic_mask": (B, H, W), "boxes": [(K_i, 4)],
    "labels": [(K_i,)], "instance_masks": [(K_i, H, W)]}`` (the number of objects varies).
    The object-detection chapter uses it.
    """
    if len(batch) == 0:
        raise ValueError("collate_scenes got an empty batch")
    stacked = ("image", "semantic_mask")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [scene[key] for scene in batch]
        if key in stacked:
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise ValueError(
                    f"collate_scenes needs scenes of one size, got {key} shapes {sorted(shapes)}"
                )
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
