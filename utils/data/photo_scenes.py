"""Photo scenes: MNIST digits and animal silhouettes pasted on crops of real photos and textures.

A harder scene set than the flat shapes of :mod:`utils.data.scenes`, for detection and segmentation:
objects at several scales and aspect ratios, occluding each other, each tinted with a random colour
and textured, so that neither colour nor a flat outline gives the class away, on crops of the
embedded photos and textures at several zoom levels. Annotations are exact: an object's mask is
where its alpha (the digit's ink, the silhouette) is at least 1/2, and the image is composed with
that alpha. A scene of the training split only holds digits and silhouettes of the training split
of :func:`utils.data.mnist` and :func:`utils.data.animals`; the test split only those of theirs.

:func:`make_photo_scene` draws one scene, :class:`PhotoScenes` is a dataset of them (batch them with
:func:`utils.data.collate_scenes`). The object-detection and segmentation chapters train on them.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .photos import photo_uint8
from .scenes import SceneDataset, check_classes, check_int, check_layout
from .sources import ANIMAL_CLASSES, ARRAYS, DIGIT_CLASSES, _frozen, check_split, split_indices

__all__ = ["BACKGROUND_SOURCES", "PHOTO_SCENE_CLASSES", "PhotoScenes", "make_photo_scene"]

PHOTO_SCENE_CLASSES = (*DIGIT_CLASSES, *ANIMAL_CLASSES)  # labels 1..10 the digits 0..9, 11..20 the animals
# Photos without an animal in them (chelsea is a cat), and the grey textures; see utils.data.CREDITS.
BACKGROUND_SOURCES = ("astronaut", "camera", "coffee", "coins", "china", "flower", "brick", "grass", "gravel")
ZOOMS = (1.25, 2.0, 3.0)  # a background is a crop of a source shrunk to ZOOM * size pixels on its short side
MIN_PIXELS = 12  # an object keeps at least this many visible pixels
LUMA = np.array([0.299, 0.587, 0.114])  # brightness of an RGB colour (ITU-R BT.601)


# --------------------------------------------------------------------------------------------
# Per-process caches: shrunk backgrounds, resize matrices, the objects of each split
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _background(name: str, short_side: int) -> np.ndarray:
    """Source ``name`` shrunk (antialiased) to ``short_side`` pixels on its short side: (H, W, 3) float32."""
    array = photo_uint8(name)
    image = torch.from_numpy(np.array(array, dtype=np.float32)).div(255.0)  # a writable copy
    image = image[None, None] if image.dim() == 2 else image.permute(2, 0, 1)[None]  # (1, C, H, W)
    h, w = image.shape[-2:]
    factor = short_side / min(h, w)  # below 1 (shrinking) but for scenes larger than the sources
    shape = (round(h * factor), round(w * factor))
    image = torch.nn.functional.interpolate(
        image, size=shape, mode="bilinear", antialias=True, align_corners=False
    )
    image = image[0].clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0)  # (H, W, 3)
    return _frozen(np.ascontiguousarray(image.numpy()))


@functools.lru_cache(maxsize=None)
def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) linear-interpolation weights, antialiased when shrinking: ``out = R @ x``."""
    scale = src / dst
    support = max(1.0, scale)  # a triangle filter as wide as one output pixel in input pixels
    centres = (np.arange(dst) + 0.5) * scale - 0.5  # output pixel centres in input coordinates
    weights = np.clip(1.0 - np.abs(np.arange(src)[None, :] - centres[:, None]) / support, 0.0, None)
    return _frozen((weights / weights.sum(1, keepdims=True)).astype(np.float32))


@functools.lru_cache(maxsize=8)
def _objects(split: str, test_size: float, split_seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """For each class name, (source, indices of that class's images in ``split`` of the source)."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for source, names in (("mnist", DIGIT_CLASSES), ("animals", ANIMAL_CLASSES)):
        _, targets = ARRAYS[source]()
        idx = split_indices(source, split, test_size, split_seed)
        for k, name in enumerate(names):
            out[name] = (source, _frozen(idx[targets[idx] == k]))
    return out


# --------------------------------------------------------------------------------------------
# Drawing one object
# --------------------------------------------------------------------------------------------


def _glyph(source: str, index: int) -> np.ndarray:
    """The alpha of one digit or silhouette, (h, w) float32 in [0, 1], cropped to its ink.

    Faint pixels (< 0.1) become transparent and the rest is stretched to [0, 1], which keeps the
    1/2 level (the mask) where it was.
    """
    image = ARRAYS[source]()[0][index, 0]  # (28, 28) uint8
    alpha = np.clip((image.astype(np.float32) / 255.0 - 0.1) / 0.8, 0.0, 1.0)
    rows, cols = np.flatnonzero((alpha >= 0.5).any(1)), np.flatnonzero((alpha >= 0.5).any(0))
    if len(rows) == 0:  # no ink at all: never the case in these sources
        return alpha
    y1, y2 = max(rows[0] - 1, 0), min(rows[-1] + 2, 28)
    x1, x2 = max(cols[0] - 1, 0), min(cols[-1] + 2, 28)
    return alpha[y1:y2, x1:x2]


def _scaled(alpha: np.ndarray, long_side: float, aspect: float) -> np.ndarray:
    """``alpha`` resized so that its long side is ``long_side`` pixels, its width stretched by ``aspect``."""
    h, w = alpha.shape
    f = long_side / max(h, w * aspect)
    out_h, out_w = max(3, round(h * f)), max(3, round(w * f * aspect))
    return _resize_matrix(h, out_h) @ alpha @ _resize_matrix(w, out_w).T  # (out_h, out_w)


def _colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    """A random colour (3,) whose brightness differs from ``background_luma`` by at least 0.25."""
    for _ in range(8):
        colour = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.15, 1.0)))
        if abs(colour @ LUMA - background_luma) >= 0.25:
            return colour
    # no luck: darken it or lighten it until it contrasts
    return colour * 0.3 if background_luma > 0.5 else colour + 0.75 * (1.0 - colour)


def _fill(rng: np.random.Generator, shape: tuple[int, int], background_luma: float) -> np.ndarray:
    """An (h, w, 3) colour for an object: a random hue, contrasting in brightness with what lies under it,
    modulated by a texture crop or a gradient so that it is not flat."""
    colour = _colour(rng, background_luma)
    h, w = shape
    if rng.random() < 0.5:  # a texture
        texture = _background(("brick", "grass", "gravel")[rng.integers(3)], max(256, h, w))[..., 0]
        y, x = rng.integers(0, texture.shape[0] - h + 1), rng.integers(0, texture.shape[1] - w + 1)
        patch = texture[y : y + h, x : x + w]
        shade = 1.0 + 0.8 * (patch - patch.mean())
    else:  # a linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:h, 0:w]
        ramp = (np.cos(angle) * xs / max(w - 1, 1) + np.sin(angle) * ys / max(h - 1, 1)) / 1.5
        shade = 1.0 + 0.4 * (ramp - ramp.mean())
    return np.clip(colour[None, None, :] * shade[..., None], 0.0, 1.0).astype(np.float32)


def _crop(rng: np.random.Generator, size: int, zooms: Sequence[float]) -> np.ndarray:
    """A random (size, size, 3) crop of a random background source at a random zoom, tinted when grey."""
    name = BACKGROUND_SOURCES[rng.integers(len(BACKGROUND_SOURCES))]
    source = _background(name, round(size * zooms[rng.integers(len(zooms))]))
    y = rng.integers(0, source.shape[0] - size + 1)
    x = rng.integers(0, source.shape[1] - size + 1)
    crop = source[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = crop * rng.uniform(0.7, 1.15)  # brightness
    if photo_uint8(name).ndim == 2:  # a grey source: give it a colour cast
        crop = crop * rng.uniform(0.55, 1.0, size=3)
    return np.clip(crop, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _noise(size: int) -> np.ndarray:
    """A fixed field of Gaussian noise (std 0.015), (2 * size, 2 * size, 3) float32, to crop from."""
    noise = np.random.default_rng(size).normal(0.0, 0.015, size=(2 * size, 2 * size, 3))
    return _frozen(noise.astype(np.float32))


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, 4) float32 xyxy pixel-inclusive boxes of non-empty masks (K, H, W), as ``masks_to_boxes``."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes[k] = cols[0], rows[0], cols[-1], rows[-1]
    return boxes


def _luma(pixels: np.ndarray) -> float:
    return float(pixels.reshape(-1, 3).mean(0) @ LUMA)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def _check_args(
    split: str,
    size: int,
    min_objects: int,
    max_objects: int,
    classes: Sequence[str],
    min_visible: float,
    scale: tuple[float, float],
    test_size: float,
    split_seed: int,
) -> tuple[tuple[str, ...], dict[str, tuple[str, np.ndarray]]]:
    """The checked ``classes``, and the objects of each class in ``split``."""
    check_split(split)
    check_layout(size, min_objects, max_objects, min_visible)
    classes = check_classes(classes, PHOTO_SCENE_CLASSES)
    if isinstance(scale, str) or len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"scale must be (low, high) fractions of size with 0 < low <= high <= 1, got {scale!r}"
        )
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, got {test_size!r}")
    return classes, _objects(split, test_size, check_int(split_seed, "split_seed"))


def make_photo_scene(
    seed: int,
    *,
    split: str = "train",
    size: int = 64,
    max_objects: int = 4,
    min_objects: int = 1,
    classes: Sequence[str] = PHOTO_SCENE_CLASSES,
    min_visible: float = 0.5,
    scale: tuple[float, float] = (0.3, 0.6),
    test_size: float = 0.2,
    split_seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Draw a photo scene, the same for the same ``seed`` and ``split``, with exact annotations.

    Between ``min_objects`` and ``max_objects`` objects of ``classes`` (digits ``"0"``..``"9"``
    and the animals of :data:`utils.data.ANIMAL_CLASSES`) are pasted in turn on a crop of a photo or
    texture; the longer side of each is a fraction ``scale`` of ``size``. Later objects lie on top of
    earlier ones; a new object that would leave less than ``min_visible`` of an earlier one visible
    is drawn elsewhere (and dropped after 50 tries). The digits and silhouettes come from ``split``
    (``"train"`` or ``"test"``) of :func:`utils.data.mnist` / :func:`utils.data.animals` with the same
    ``test_size`` and seed ``split_seed``, so test scenes never show a training object.

    Returns the dict of :func:`utils.data.make_scene`: ``image`` (3, size, size) float32 in [0, 1],
    ``boxes`` (K, 4) float32 xyxy equal to ``masks_to_boxes(instance_masks)``, ``labels`` (K,) int64 in
    1..len(classes) (label ``k`` is ``classes[k - 1]``), ``semantic_mask`` (size, size) int64 (0 is
    background) and ``instance_masks`` (K, size, size) bool, the visible pixels of each object.
    The object-detection and segmentation chapters train on these.
    """
    classes, objects = _check_args(
        split, size, min_objects, max_objects, classes, min_visible, scale, test_size, split_seed
    )
    seed = check_int(seed, "seed")
    image, visible, _, labels = _draw(
        seed, split, size, min_objects, max_objects, classes, objects, min_visible, scale
    )
    semantic = np.zeros((size, size), dtype=np.int64)
    for mask, label in zip(visible, labels):
        semantic[mask] = label
    instance_masks = np.stack(visible) if visible else np.zeros((0, size, size), dtype=bool)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "boxes": torch.from_numpy(_tight_boxes(instance_masks)),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "semantic_mask": torch.from_numpy(semantic),
        "instance_masks": torch.from_numpy(instance_masks),
    }


def _draw(
    seed: int,
    split: str,
    size: int,
    min_objects: int,
    max_objects: int,
    classes: tuple[str, ...],
    objects: dict[str, tuple[str, np.ndarray]],
    min_visible: float,
    scale: tuple[float, float],
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[int]]:
    """The scene of :func:`make_photo_scene` (checked arguments): image (size, size, 3) float32, the
    visible and the whole (size, size) mask of each object, bottom first, and their labels."""
    rng = np.random.default_rng([seed, int(split == "test")])  # local: global RNG state is never touched
    image = _crop(rng, size, ZOOMS)  # (size, size, 3)
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    full: list[np.ndarray] = []  # each object's whole mask
    visible: list[np.ndarray] = []  # what is left of it after the objects above
    labels: list[int] = []
    for _ in range(n_objects):
        for _attempt in range(50):
            k = int(rng.integers(len(classes)))
            source, pool = objects[classes[k]]
            glyph = _glyph(source, int(pool[rng.integers(len(pool))]))
            if source == "animals" and rng.random() < 0.5:
                glyph = glyph[:, ::-1]  # an animal facing the other way (digits are never mirrored)
            alpha = _scaled(glyph, rng.uniform(*scale) * size, float(np.exp(rng.uniform(-0.2, 0.2))))
            h, w = alpha.shape
            if h > size or w > size:
                continue
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            mask = np.zeros((size, size), dtype=bool)
            mask[y : y + h, x : x + w] = alpha >= 0.5
            if mask.sum() < MIN_PIXELS:
                continue
            left = [v & ~mask for v in visible]
            if all(lv.sum() >= max(MIN_PIXELS, min_visible * f.sum()) for lv, f in zip(left, full)):
                region = image[y : y + h, x : x + w]
                fill = _fill(rng, (h, w), _luma(region))
                region += alpha[..., None] * (fill - region)  # alpha compositing, in place
                visible = left + [mask]
                full.append(mask)
                labels.append(k + 1)
                break
        # no room for this object after 50 tries: the scene keeps the ones it has
    if len(labels) < min_objects:
        raise ValueError(
            f"could not place {min_objects} objects in a {size}x{size} photo scene (seed {seed}); "
            "lower min_objects or min_visible, or raise size"
        )
    noise = _noise(size)  # sensor noise: a random crop of one noise field
    dy, dx = rng.integers(0, noise.shape[0] - size + 1, size=2)
    image = np.clip(image + noise[dy : dy + size, dx : dx + size], 0.0, 1.0)
    return image, visible, full, labels


class PhotoScenes(SceneDataset):
    """``n`` scenes of :func:`make_photo_scene`: scene ``i`` is ``make_photo_scene(seed * 1_000_003 + i)``.

    ``split="train"`` or ``"test"`` chooses which digits and silhouettes the scenes hold (never
    both), so a train and a test set never share an object image. Scenes are drawn on demand.
    Use ``DataLoader(..., collate_fn=collate_scenes)``. ``classes`` holds the object names (label
    ``k`` is ``classes[k - 1]``); ``label_names`` is ``("background", *classes)``, indexed by label.
    ``transform``, if given, is applied to each scene dict. The detection and segmentation chapters use it.
    """

    def __init__(
        self,
        n: int,
        *,
        split: str = "train",
        seed: int = 0,
        size: int = 64,
        max_objects: int = 4,
        min_objects: int = 1,
        classes: Sequence[str] = PHOTO_SCENE_CLASSES,
        min_visible: float = 0.5,
        scale: tuple[float, float] = (0.3, 0.6),
        test_size: float = 0.2,
        split_seed: int = 0,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        checked, _ = _check_args(
            split, size, min_objects, max_objects, classes, min_visible, scale, test_size, split_seed
        )
        super().__init__(n, seed, checked, transform)
        self.split, self.size = split, int(size)
        self.scene_kwargs = {
            "split": split,
            "size": size,
            "max_objects": max_objects,
            "min_objects": min_objects,
            "classes": self.classes,
            "min_visible": min_visible,
            "scale": tuple(scale),
            "test_size": test_size,
            "split_seed": split_seed,
        }

    def draw(self, seed: int) -> dict[str, torch.Tensor]:
        return make_photo_scene(seed, **self.scene_kwargs)


# --------------------------------------------------------------------------------------------
# One animal per 32x32 photo: the images of utils.data.animals_rgb
# --------------------------------------------------------------------------------------------


def animal_tiles(indices: Sequence[int], seed: int = 0) -> np.ndarray:
    """The silhouettes ``indices`` of the animals source, each pasted on a 32x32 photo crop.

    Returns (N, 3, 32, 32) uint8; tile ``i`` depends only on its silhouette and ``seed``, so a subset
    draws only its own tiles. :func:`utils.data.animals_rgb` serves them.
    """
    out = np.empty((len(indices), 32, 32, 3), dtype=np.uint8)
    for row, i in enumerate(indices):
        rng = np.random.default_rng([seed, 2, int(i)])
        tile = _crop(rng, 32, (1.5, 3.0, 6.0))
        glyph = _glyph("animals", int(i))
        alpha = _scaled(glyph[:, ::-1] if rng.random() < 0.5 else glyph, rng.uniform(20, 30), 1.0)
        h, w = alpha.shape
        y, x = int(rng.integers(0, 32 - h + 1)), int(rng.integers(0, 32 - w + 1))
        region = tile[y : y + h, x : x + w]
        region += alpha[..., None] * (_fill(rng, (h, w), _luma(region)) - region)
        out[row] = np.round(np.clip(tile, 0.0, 1.0) * 255.0)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
