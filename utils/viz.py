"""Plots the chapters share: image grids, training curves, confusion matrices, boxes and masks.

Every function returns the matplotlib ``Figure`` it drew on and never calls ``plt.show()``.
Figures are made with pyplot, so a notebook shows them when the cell ends; as with any function
that returns a Figure, end the call with ``;`` (or assign the result) when it is the last line
of a cell, otherwise Jupyter shows the figure twice. Functions that take ``ax=`` draw into an
existing Axes instead and return its figure.

Images are PyTorch tensors or NumPy arrays of shape (C, H, W) with 1 or 3 channels (NumPy
arrays may also be (H, W, C)), or (H, W) for a single gray image; float values must lie in
[0, 1] and uint8 values in [0, 255]. Undo a normalisation before plotting.

Class labels index ``classes``: label ``i`` is named ``classes[i]``. Detection and segmentation
reserve label 0 for the background, so there ``classes[0]`` is the background's name.
Given the same ``classes``, a label gets the same colour in :func:`draw_boxes` and
:func:`overlay_masks` (colour ``i`` of :func:`palette`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

__all__ = ["draw_boxes", "overlay_masks", "palette", "plot_confusion_matrix", "plot_history", "show_images"]

MAX_IMAGES = 256  # show_images draws one Axes per image; more than this is slow and unreadable


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or an array, got {type(x).__name__}") from err


def _image(image: Any, name: str = "image") -> np.ndarray:
    """A displayable float image in [0, 1]: (H, W) for gray, (H, W, 3) for colour."""
    arr = _numpy(image, name)
    if arr.ndim == 3:
        if arr.shape[0] in (1, 3):  # (C, H, W), the PyTorch layout
            arr = arr.transpose(1, 2, 0)
        elif not (isinstance(image, np.ndarray) and arr.shape[-1] in (1, 3)):  # (H, W, C) NumPy layout
            raise ValueError(
                f"{name} must have 1 or 3 channels, as (C, H, W) (or (H, W, C) for a NumPy array), "
                f"got shape {tuple(arr.shape)}"
            )
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 2:
        raise ValueError(f"{name} must be (C, H, W) with C = 1 or 3, or (H, W), got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"float {name} values must lie in [0, 1], got values from {lo:.3g} to {hi:.3g}; "
            "undo the normalisation first (x * std + mean) or pass uint8"
        )
    return np.clip(arr, 0.0, 1.0)


def _imshow(ax: Axes, img: np.ndarray) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct RGB colours: tab10 up to 10, tab20 up to 20, evenly spaced hues beyond.

    Colour ``i`` is the colour of label ``i`` in :func:`draw_boxes` and :func:`overlay_masks`
    (the detection and segmentation chapters).
    """
    n = max(int(n), 1)
    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [tuple(float(c) for c in cmap(i)[:3]) for i in range(n)]
    cmap = plt.get_cmap("hsv")
    return [tuple(float(c) for c in cmap(i / n)[:3]) for i in range(n)]


def _label_name(label: Any, classes: Sequence[str] | None) -> str:
    if isinstance(label, str):
        return label
    value = int(label)
    if classes is None:
        return str(value)
    if not 0 <= value < len(classes):
        raise ValueError(
            f"label {value} has no name in classes ({len(classes)} names, labels 0..{len(classes) - 1}); "
            "where label 0 is the background, classes[0] must name it, e.g. ('background', *SHAPE_CLASSES)"
        )
    return str(classes[value])


def _as_list(values: Any, name: str, n: int) -> list:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().tolist()
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} must hold one entry per item ({n}), got {len(values)}")
    return values


def _figure_for(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.figure, ax


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def show_images(
    images: Any,
    labels: Any = None,
    *,
    classes: Sequence[str] | None = None,
    nrow: int = 8,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Show images in a grid of ``nrow`` per row, each titled by its label. Chapter 01 introduces it.

    ``images``: a batch (N, C, H, W), one image (C, H, W) or (H, W), or a list of images.
    ``labels``: one per image, ints (named by ``classes`` when given) or strings
    (e.g. ``"cat (pred dog)"``). Without ``ax`` every image gets its own Axes; with ``ax`` the
    images (of one size) are tiled into that Axes and the labels written on the tiles.
    """
    if isinstance(images, (list, tuple)):
        batch = [_image(img, f"images[{i}]") for i, img in enumerate(images)]
    else:
        if not isinstance(images, (torch.Tensor, np.ndarray)):
            raise TypeError(
                f"images must be a tensor, an array or a list of images, got {type(images).__name__}"
            )
        if images.ndim == 4:
            if len(images) > MAX_IMAGES:
                raise ValueError(
                    f"show_images draws at most {MAX_IMAGES} images, got {len(images)}: pass a slice such "
                    "as images[:64]"
                )
            batch = [_image(img, f"images[{i}]") for i, img in enumerate(images)]
        elif images.ndim in (2, 3):
            batch = [_image(images, "images")]
        else:
            raise ValueError(
                "images must be (N, C, H, W), (C, H, W) or (H, W) with C = 1 or 3, got shape "
                f"{tuple(images.shape)}"
            )
    n = len(batch)
    if n == 0:
        raise ValueError("images is empty: nothing to show")
    if n > MAX_IMAGES:
        raise ValueError(
            f"show_images draws at most {MAX_IMAGES} images, got {n}: pass a slice such as images[:64]"
        )
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow (images per row) must be a positive int, got {nrow!r}")
    names = [_label_name(v, classes) for v in _as_list(labels, "labels", n)] if labels is not None else None

    ncols = min(nrow, n)
    nrows = math.ceil(n / ncols)
    if ax is None:
        size = 1.6 if names is None else 1.8
        fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.6, nrows * size), squeeze=False)
        for i, a in enumerate(axes.flat):
            if i >= n:
                fig.delaxes(a)
                continue
            _imshow(a, batch[i])
            a.set_axis_off()
            if names is not None:
                a.set_title(names[i], fontsize=9)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig

    fig, ax = _figure_for(ax, (6, 6))
    shapes = {b.shape[:2] for b in batch}
    if len(shapes) != 1:
        raise ValueError(f"to tile images into one Axes they must share one size, got sizes {sorted(shapes)}")
    h, w = batch[0].shape[:2]
    pad = 2
    color = any(b.ndim == 3 for b in batch)
    mosaic = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), dtype=np.float32)
    for i, img in enumerate(batch):
        r, c = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        mosaic[y0 : y0 + h, x0 : x0 + w] = img if img.ndim == 3 else img[..., None]
        if names is not None:
            ax.text(
                x0,
                y0,
                names[i],
                fontsize=8,
                va="top",
                ha="left",
                color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )
    _imshow(ax, mosaic if color else mosaic[..., 0])
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# Training curves and confusion matrix
# --------------------------------------------------------------------------------------------
_HISTORY_SETTINGS = ("best_epoch", "stopped_early", "monitor", "mode")
_BOOKKEEPING = ("lr", "epoch_time")  # recorded every epoch, plotted only when asked for
_PANEL_LABELS = {"acc": "accuracy"}


def _series(history: Any) -> dict[str, Any]:
    d = history.as_dict() if hasattr(history, "as_dict") else history
    if not isinstance(d, dict):
        raise TypeError(
            f"history must be a utils.train.History or a dict of lists, got {type(history).__name__}"
        )
    return d


def _finite(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr if arr.size and np.isfinite(arr).any() else None


def _panels(d: dict[str, Any], metrics: Sequence[str] | None) -> dict[str, dict[str, np.ndarray]]:
    """``panel -> {curve label -> values}``: ``train_x`` and ``val_x`` share panel ``x``; loss first."""
    panels: dict[str, dict[str, np.ndarray]] = {}
    for key, values in d.items():
        if key in _HISTORY_SETTINGS or not isinstance(values, (list, tuple, np.ndarray)):
            continue
        split, _, rest = key.partition("_")
        panel, label = (rest, split) if split in ("train", "val") and rest else (key, key)
        if (metrics is None and panel in _BOOKKEEPING) or (metrics is not None and panel not in metrics):
            continue
        arr = _finite(values)
        if arr is not None:
            panels.setdefault(panel, {})[label] = arr
    order = list(metrics) if metrics is not None else ["loss"] + [p for p in panels if p != "loss"]
    return {p: panels[p] for p in order if p in panels}


def plot_history(
    history_or_dict: Any, *, metrics: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """One panel per metric of a training history, training and validation curves together. Chapter 01
    introduces it.

    Takes a :class:`utils.train.History` or a dict of per-epoch lists. ``train_<name>`` and
    ``val_<name>`` share the panel ``<name>`` (loss first, then the others in the order recorded:
    accuracy, ``map``, ``miou``, a VAE's ``kl``, a GAN's ``d_loss`` and ``g_loss``, ...); other lists
    get a panel of their own, except ``lr`` and ``epoch_time``, which are drawn only when named in
    ``metrics`` (e.g. ``metrics=["loss", "lr"]``, which also fixes the order). A curve without a
    finite value is left out, and so is a panel without curves. A dotted vertical line marks
    ``best_epoch``.
    """
    d = _series(history_or_dict)
    if isinstance(metrics, str):
        metrics = [metrics]
    panels = _panels(d, metrics)
    if not panels:
        raise ValueError(
            f"history holds no finite values to plot (keys {sorted(d)})"
            + (f" among the metrics {list(metrics)}" if metrics is not None else "")
        )
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.5 * nrows), squeeze=False)
    best = d.get("best_epoch")
    for ax, (what, curves) in zip(axes.flat, panels.items()):
        for label, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        if best is not None:
            ax.axvline(int(best) + 1, color="gray", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(_PANEL_LABELS.get(what, what))
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(panels) :]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: Any, classes: Sequence[str] | None = None, *, normalize: bool | str = False, ax: Axes | None = None
) -> Figure:
    """Draw a confusion matrix (rows: true class, columns: predicted class). Chapter 03 introduces it.

    Each cell shows its count (for up to 30 classes). ``normalize=True`` (or ``"true"``) divides
    each row by its total, so the diagonal is the recall of each class; ``"pred"`` divides each
    column, ``"all"`` the whole matrix (as in scikit-learn). Empty rows stay 0.
    """
    m = _numpy(cm, "cm")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"cm must be a square (C, C) matrix, got shape {tuple(m.shape)}")
    if not (np.issubdtype(m.dtype, np.number) and np.isfinite(m).all() and (m >= 0).all()):
        raise ValueError("cm must hold finite non-negative counts")
    c = m.shape[0]
    if classes is not None and len(classes) != c:
        raise ValueError(f"classes must name the {c} classes of cm, got {len(classes)} names")
    modes = {False: None, None: None, True: 1, "true": 1, "pred": 0, "all": "all"}
    if not isinstance(normalize, (bool, str)) or normalize not in modes:
        raise ValueError(f"normalize must be False, True, 'true', 'pred' or 'all', got {normalize!r}")
    how = modes[normalize]
    m = m.astype(np.float64)
    if how is not None:
        total = m.sum() if how == "all" else m.sum(axis=how, keepdims=True)
        m = np.divide(m, total, out=np.zeros_like(m), where=np.asarray(total) > 0)

    fig, ax = _figure_for(ax, (0.5 * c + 3, 0.5 * c + 2.5))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=max(m.max(), 1e-12))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    names = list(classes) if classes is not None else [str(i) for i in range(c)]
    ax.set_xticks(range(c), names, rotation=45 if c > 5 else 0, ha="right" if c > 5 else "center")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:
        threshold = m.max() / 2
        for i in range(c):
            for j in range(c):
                text = f"{m[i, j]:.2f}" if how is not None else f"{int(round(m[i, j]))}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if m[i, j] > threshold else "black",
                )
    return fig


# --------------------------------------------------------------------------------------------
# Detection and segmentation
# --------------------------------------------------------------------------------------------
def draw_boxes(
    image: Any,
    boxes: Any,
    labels: Any = None,
    *,
    classes: Sequence[str] | None = None,
    scores: Any = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw boxes (K, 4) in pixel ``xyxy`` format on ``image``, captioned ``name score``.

    ``labels`` (K,) pick each box's colour and name (``classes[label]``), ``scores`` (K,) are
    printed with two decimals. A box ``[0, 0, 10, 10]`` covers exactly the top-left 10x10 pixels.
    The object detection chapter introduces it.
    """
    img = _image(image)
    b = _numpy(boxes, "boxes").astype(np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4) in xyxy format, got shape {tuple(b.shape)}")
    if not np.isfinite(b).all():
        raise ValueError("boxes hold NaN or infinite coordinates")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(
            "boxes must be xyxy with x1 <= x2 and y1 <= y2; convert xywh / cxcywh boxes first "
            "(utils.ops.box_convert)"
        )
    k = b.shape[0]
    label_list = _as_list(labels, "labels", k) if labels is not None else None
    score_list = [float(s) for s in _as_list(scores, "scores", k)] if scores is not None else None
    if label_list is not None and any(isinstance(v, str) for v in label_list):
        raise TypeError("labels must be integer class labels; name them with classes=")
    if label_list is not None and any(int(v) < 0 for v in label_list):
        raise ValueError("labels must be non-negative")

    h, w = img.shape[:2]
    fig, ax = _figure_for(ax, (5, 5 * h / w))
    _imshow(ax, img)
    n_colors = max([int(v) + 1 for v in label_list] + [len(classes) if classes else 0]) if label_list else k
    colors = palette(n_colors)
    for i, (x1, y1, x2, y2) in enumerate(b):
        color = colors[int(label_list[i]) if label_list is not None else i]
        # Pixel (r, c) is drawn centred at (c, r): its edges are half a pixel away.
        ax.add_patch(
            Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2)
        )
        caption = []
        if label_list is not None:
            caption.append(_label_name(label_list[i], classes))
        if score_list is not None:
            caption.append(f"{score_list[i]:.2f}")
        if caption:
            ax.text(
                x1 - 0.5,
                y1 - 0.5,
                " ".join(caption),
                fontsize=8,
                color="white",
                va="bottom",
                ha="left",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0},
                clip_on=True,
            )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    return fig


def overlay_masks(
    image: Any,
    masks: Any,
    *,
    alpha: float = 0.5,
    classes: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Colour segmentation masks over ``image``. The segmentation chapter introduces it.

    ``masks`` is either a semantic mask (H, W) of integer class labels, 0 being the background
    (left uncoloured), or instance masks (K, H, W) of bools, one colour per instance (a single
    bool (H, W) mask is one instance). Each coloured pixel becomes
    ``(1 - alpha) * image + alpha * colour``. ``classes`` adds a legend: for a semantic mask
    ``classes[label]`` names each label, for instance masks it names each mask.
    """
    img = _image(image)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    m = _numpy(masks, "masks")
    h, w = img.shape[:2]
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img.copy()

    if m.dtype == bool and m.ndim in (2, 3):  # instance masks
        inst = m[None] if m.ndim == 2 else m
        if inst.shape[1:] != (h, w):
            raise ValueError(f"masks (K, H, W) must match the image size {(h, w)}, got {tuple(inst.shape)}")
        layers = [(i, inst[i]) for i in range(inst.shape[0])]
        colors = palette(len(layers))
        if classes is not None and len(classes) != len(layers):
            raise ValueError(
                f"classes must name each of the {len(layers)} instance masks, got {len(classes)} names"
            )
        names = list(classes) if classes is not None else None
    elif m.ndim == 2 and np.issubdtype(m.dtype, np.integer):  # semantic mask
        if m.shape != (h, w):
            raise ValueError(
                f"the semantic mask (H, W) must match the image size {(h, w)}, got {tuple(m.shape)}"
            )
        if m.size and m.min() < 0:
            raise ValueError("semantic mask labels must be non-negative (0 is the background)")
        present = [int(v) for v in np.unique(m) if v != 0]
        layers = [(v, m == v) for v in present]
        colors = palette(max(present + [len(classes) - 1 if classes else 0]) + 1)
        names = [_label_name(v, classes) for v in range(len(colors))] if classes is not None else None
    else:
        raise ValueError(
            "masks must be a semantic mask (H, W) of integer labels or instance masks (K, H, W) of bools, "
            f"got shape {tuple(m.shape)} and dtype {m.dtype}"
        )

    for key, mask in layers:
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colors[key], dtype=np.float32)
    fig, ax = _figure_for(ax, (5, 5 * h / w))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if names is not None and layers:
        ax.legend(
            handles=[Patch(color=colors[key], label=names[key]) for key, _ in layers],
            loc="upper right",
            fontsize=8,
            framealpha=0.8,
        )
    return fig
