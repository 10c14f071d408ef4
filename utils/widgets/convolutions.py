"""Edit a 3x3 kernel and see the filtered photo (chapter 06).

:func:`kernel_explorer` builds the widget: nine number boxes hold the kernel, a menu loads the
classic kernels of :data:`PRESETS` (blur, sharpen, Sobel, ...), and the photo is filtered again
after every change. :func:`filter_image` and :func:`to_display` do the work and can be used
without a display.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DISPLAY_MODES", "PRESETS", "filter_image", "kernel_explorer", "to_display"]

# Classic 3x3 kernels and the display that suits their output.
PRESETS: dict[str, tuple[list[list[float]], str]] = {
    "identity": ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], "clip"),
    "box blur": ([[1 / 9] * 3] * 3, "clip"),
    "Gaussian blur": ([[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]], "clip"),
    "sharpen": ([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "clip"),
    "Sobel x (vertical edges)": ([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "signed"),
    "Sobel y (horizontal edges)": ([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "signed"),
    "Laplacian": ([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "abs"),
    "emboss": ([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], "clip"),
}
DISPLAY_MODES = {
    "clip": "clip to [0, 1]",
    "abs": "|output|, scaled to its maximum",
    "signed": "signed: grey = 0, white > 0, black < 0",
}


def filter_image(image: torch.Tensor, kernel: Any) -> torch.Tensor:
    """Convolve every channel of ``image`` with the same 2-D ``kernel``, keeping the size (chapter 06).

    Like every deep-learning library, this is a cross-correlation (the kernel is not flipped);
    the border is zero-padded. image: (C, H, W) or (H, W); kernel: (k, k) with k odd -> same shape as image.
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (2, 3) or not image.is_floating_point():
        raise ValueError(
            f"image must be a float tensor of shape (C, H, W) or (H, W), got "
            f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}"
        )
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float32)).to(image.device, image.dtype)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be a square (k, k) array with k odd, got shape {tuple(k.shape)}")
    x = image if image.ndim == 3 else image[None]  # (C, H, W)
    c = x.shape[0]
    weight = k.expand(c, 1, *k.shape)  # (C, 1, k, k): one copy of the kernel per channel (groups=C)
    out = F.conv2d(x[None], weight, padding=k.shape[0] // 2, groups=c)[0]  # (C, H, W)
    return out if image.ndim == 3 else out[0]


def to_display(filtered: torch.Tensor, mode: str = "clip") -> np.ndarray:
    """Map a filter's output to [0, 1] for showing it (chapter 06); ``mode`` is a key of
    :data:`DISPLAY_MODES`.

    ``clip`` keeps the values of a kernel that preserves brightness (blur, sharpen); ``abs`` shows
    the strength of a response whatever its sign; ``signed`` maps 0 to grey, positive values to
    white and negative ones to black, each scaled by the largest absolute value.
    Returns a float32 array (H, W) or (H, W, C).
    """
    if mode not in DISPLAY_MODES:
        raise ValueError(f"mode must be one of {', '.join(DISPLAY_MODES)}, got {mode!r}")
    x = filtered.detach().float().cpu()
    scale = x.abs().max().clamp_min(1e-12)
    if mode == "clip":
        x = x.clamp(0, 1)
    elif mode == "abs":
        x = x.abs() / scale
    else:
        x = 0.5 + 0.5 * x / scale
    array = x.numpy()
    return array.transpose(1, 2, 0) if array.ndim == 3 else array


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    data = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    return buffer.getvalue()


def _prepare(photo: str | torch.Tensor, size: int, gray: bool) -> torch.Tensor:
    import utils.data

    image = utils.data.photo(photo) if isinstance(photo, str) else photo.detach().float().cpu()
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"photo must be a name of utils.data.PHOTOS or a (C, H, W) tensor, got shape {tuple(image.shape)}"
        )
    if gray:
        image = (
            (image * torch.tensor([0.299, 0.587, 0.114][: image.shape[0]]).reshape(-1, 1, 1)).sum(
                0, keepdim=True
            )
            if image.shape[0] == 3
            else image
        )
    factor = max(image.shape[1:]) / size
    if factor > 1:  # shrink so that every update stays fast
        new = (round(image.shape[1] / factor), round(image.shape[2] / factor))
        image = F.interpolate(image[None], size=new, mode="area")[0]
    return image.clamp(0, 1)


def kernel_explorer(
    photo: str | torch.Tensor = "camera", *, preset: str = "sharpen", size: int = 256, gray: bool = True
):
    """A widget to edit a 3x3 kernel and see the filtered photo next to the original (chapter 06).

    ``photo`` is a name of ``utils.data.PHOTOS`` or a (C, H, W) tensor in [0, 1]; it is shrunk to
    at most ``size`` pixels and, with ``gray``, converted to grey levels. Pick a kernel from the
    menu or type any numbers into the nine boxes; the display menu says how the output is mapped
    to grey levels. Returns an ``ipywidgets.VBox``; its attributes ``kernel_boxes`` (the nine
    ``FloatText``), ``preset``, ``display_mode``, ``filtered`` (the ``Image``) and ``info`` (the caption)
    let code drive it.
    """
    import ipywidgets as widgets

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    image = _prepare(photo, size, gray)  # (C, h, w)
    shown = image[0] if image.shape[0] == 1 else image
    original = widgets.Image(
        value=_png(to_display(shown)), format="png", layout=widgets.Layout(width="300px")
    )
    filtered = widgets.Image(format="png", layout=widgets.Layout(width="300px"))
    boxes = [widgets.FloatText(step=0.1, layout=widgets.Layout(width="72px")) for _ in range(9)]
    grid = widgets.GridBox(boxes, layout=widgets.Layout(grid_template_columns="repeat(3, 76px)"))
    menu = widgets.Dropdown(options=list(PRESETS), value=preset, description="kernel")
    mode = widgets.Dropdown(
        options=[(text, key) for key, text in DISPLAY_MODES.items()],
        value=PRESETS[preset][1],
        description="display",
    )
    info = widgets.HTML()
    state = {"loading": False}

    def kernel() -> np.ndarray:
        return np.array([b.value for b in boxes], dtype=np.float32).reshape(3, 3)

    def redraw(*_: Any) -> None:
        if state["loading"]:
            return
        k = kernel()
        out = filter_image(shown, k)
        filtered.value = _png(to_display(out, mode.value))
        total = float(k.sum())
        meaning = (
            "keeps the mean brightness"
            if abs(total - 1) < 1e-6
            else "flat regions become 0: it responds to changes only"
            if abs(total) < 1e-6
            else f"scales flat regions by {total:.2f}"
        )
        low, high = float(out.min()), float(out.max())
        info.value = f"kernel sum = {total:.3g} ({meaning}); output range [{low:.2f}, {high:.2f}]"

    def load(change: Any = None) -> None:
        values, display = PRESETS[menu.value]
        state["loading"] = True
        for box, value in zip(boxes, np.asarray(values, dtype=np.float64).ravel()):
            box.value = round(float(value), 4)
        mode.value = display
        state["loading"] = False
        redraw()

    menu.observe(load, names="value")
    mode.observe(redraw, names="value")
    for box in boxes:
        box.observe(redraw, names="value")
    load()

    captions = widgets.HBox(
        [
            widgets.Label("original", layout=widgets.Layout(width="300px")),
            widgets.Label("filtered", layout=widgets.Layout(width="300px")),
        ]
    )
    ui = widgets.VBox(
        [widgets.HBox([widgets.VBox([menu, mode]), grid]), info, captions, widgets.HBox([original, filtered])]
    )
    ui.kernel_boxes, ui.preset, ui.display_mode, ui.filtered, ui.info = boxes, menu, mode, filtered, info
    return ui
