"""Looking inside a trained CNN: saliency maps, Grad-CAM, adversarial examples, feature maps, filters.

Chapter 08 builds each of these by hand and then uses the versions here:

* :func:`saliency`: the gradient map ``|d score / d input|`` of Simonyan et al. (2014);
* :func:`grad_cam`: Grad-CAM (Selvaraju et al., 2017), a class heat map from the activations of a
  convolutional layer weighted by their average gradient, upsampled to the input and scaled to [0, 1];
* :func:`fgsm`: the fast gradient sign method (Goodfellow et al., 2015), one step of size ``eps``
  that increases the loss, kept in the valid pixel range;
* :func:`feature_maps`: the outputs of chosen layers, captured with forward hooks;
* :func:`most_confused`: the largest off-diagonal entries of a confusion matrix;
* plots: :func:`plot_filters`, :func:`plot_feature_maps`, :func:`plot_heatmaps`.

Images are float tensors of shape (N, C, H, W). The models take the images as they are: when a
model expects normalized inputs but the images are in [0, 1], put the normalization inside the
model (chapter 08 wraps it as a first layer) so that gradients and the [0, 1] range of FGSM refer
to real pixels. Call ``model.eval()`` first: these functions do not change the model's mode, and
they never touch the ``.grad`` of its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from utils.common import check_model

__all__ = [
    "feature_maps",
    "fgsm",
    "grad_cam",
    "most_confused",
    "plot_feature_maps",
    "plot_filters",
    "plot_heatmaps",
    "saliency",
]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _check_images(x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch dimension with x[None]"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no images (batch size 0)")
    return x


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return class scores of shape (N, num_classes) = ({x.shape[0]}, C), got {got}"
        )
    return out


def _class_indices(class_idx: Any, logits: torch.Tensor) -> torch.Tensor:
    """(N,) int64 class indices: None -> predicted class, int -> the same class for every image."""
    n, c = logits.shape
    if class_idx is None:
        return logits.detach().argmax(dim=1)
    if isinstance(class_idx, bool):
        raise TypeError("class_idx must be None, an int or a sequence of N ints, got a bool")
    if isinstance(class_idx, (int, np.integer)):
        idx = torch.full((n,), int(class_idx), dtype=torch.long, device=logits.device)
    else:
        idx = torch.as_tensor(class_idx, device=logits.device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"class_idx must hold integers, got dtype {idx.dtype}")
        idx = idx.long().expand(n) if idx.dim() == 0 else idx.long()  # a 0-dim tensor acts as an int
        if idx.shape != (n,):
            raise ValueError(
                f"class_idx must be None, an int or hold one class per image, shape ({n},), got "
                f"{tuple(idx.shape)}"
            )
    if idx.numel() and (idx.min() < 0 or idx.max() >= c):
        raise ValueError(
            f"class_idx must lie in [0, {c - 1}] for a model with {c} classes, got {idx.tolist()}"
        )
    return idx


# --------------------------------------------------------------------------------------------
# Saliency
# --------------------------------------------------------------------------------------------
def saliency(model: nn.Module, x: torch.Tensor, class_idx: Any = None) -> torch.Tensor:
    """Vanilla gradient saliency: ``max_c |d score_k / d x_c|``, shape (N, H, W). Chapter 08 explains it.

    ``score_k`` is the logit (not the probability) of class ``class_idx`` (None: the predicted class;
    an int: that class for every image; a sequence: one class per image). The absolute gradient is
    reduced over the colour channels with a maximum, as in Simonyan et al. (2014).
    """
    check_model(model)
    x = _check_images(x)
    x = x.detach().clone().requires_grad_(True)  # (N, C, H, W) a leaf we can differentiate against
    with torch.enable_grad():
        logits = _logits(model, x)  # (N, K)
        idx = _class_indices(class_idx, logits)  # (N,)
        score = logits.gather(1, idx[:, None]).sum()  # images are independent: the sum separates them
        (grad,) = torch.autograd.grad(score, x)  # (N, C, H, W)
    return grad.abs().amax(dim=1)  # (N, H, W)


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------
def grad_cam(
    model: nn.Module, target_layer: nn.Module, x: torch.Tensor, class_idx: Any = None
) -> torch.Tensor:
    """Grad-CAM heat maps of shape (N, H, W), non-negative, each scaled so that its maximum is 1.

    Chapter 08 builds it by hand. With ``A`` (N, K, h, w) the output of ``target_layer`` (a module
    inside ``model``) and ``y`` the logit of class ``class_idx`` (None: the predicted class; an int;
    or one class per image):

    1. ``alpha_k = mean_{i,j} dy / dA_k[i, j]``: one weight per channel (global-average-pooled gradient);
    2. ``cam = relu(sum_k alpha_k A_k)``: shape (N, h, w);
    3. bilinear upsampling (``align_corners=False``) to the input's (H, W);
    4. each map divided by its maximum; a map that is zero everywhere stays zero.

    The target layer's output must not be modified in place by the layer after it (hook a block's
    output, not a convolution followed by ``ReLU(inplace=True)``).
    """
    check_model(model)
    if not isinstance(target_layer, nn.Module):
        raise TypeError(
            "target_layer must be a torch.nn.Module inside the model (e.g. model.layer4), got "
            f"{type(target_layer).__name__}"
        )
    if not any(m is target_layer for m in model.modules()):
        raise ValueError(
            "target_layer is not a submodule of model: pass the layer object itself, e.g. model.layer4"
        )
    x = _check_images(x)
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        captured.append(output)

    handle = target_layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x_in = (
                x.detach().clone().requires_grad_(True)
            )  # so that A needs a gradient even if the model is frozen
            logits = _logits(model, x_in)  # (N, K)
    finally:
        handle.remove()  # never leave a hook behind
    if len(captured) != 1:
        raise RuntimeError(
            f"target_layer ran {len(captured)} times in one forward pass; Grad-CAM needs a layer that runs "
            "once"
        )
    act = captured[0]
    if not isinstance(act, torch.Tensor) or act.dim() != 4:
        got = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
        raise ValueError(f"target_layer must output feature maps of shape (N, K, h, w), got {got}")
    idx = _class_indices(class_idx, logits)  # (N,)
    with torch.enable_grad():
        score = logits.gather(1, idx[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)  # (N, K, h, w)
    act, grad = act.detach(), grad.detach()
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    cam = F.relu((alpha * act).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    cam = cam.clamp_min(0)  # interpolation of non-negative values is non-negative; guard rounding
    peak = cam.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    return torch.where(
        peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam)
    )


# --------------------------------------------------------------------------------------------
# FGSM
# --------------------------------------------------------------------------------------------
def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    loss_fn=F.cross_entropy,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Fast gradient sign method: ``clamp(x + eps * sign(d loss(model(x), y) / dx), 0, 1)``. Chapter 08.

    One step that increases the loss, with every pixel changed by at most ``eps``; the result stays
    in the range ``clamp`` (``None``: no clamping). ``x`` (N, C, H, W) must lie in that range. Returns
    a new tensor, detached; ``x`` is left as it was.
    """
    check_model(model)
    x = _check_images(x)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 (the largest change of a pixel), got {eps!r}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        got = f"shape {tuple(y.shape)}, dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of labels with shape ({x.shape[0]},), got {got}")
    if clamp is not None:
        lo, hi = clamp
        if x.min() < lo or x.max() > hi:
            raise ValueError(
                f"x must lie in the clamp range [{lo}, {hi}], got values from {x.min().item():.3g} "
                f"to {x.max().item():.3g}; pass images before normalization and normalize inside the model"
            )
    x_in = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(_logits(model, x_in), y.to(x.device))
        (grad,) = torch.autograd.grad(loss, x_in)  # (N, C, H, W)
    x_adv = x.detach() + eps * grad.sign()
    if clamp is not None:
        x_adv = x_adv.clamp(lo, hi)
    return x_adv


# --------------------------------------------------------------------------------------------
# Feature maps
# --------------------------------------------------------------------------------------------
def _resolve_layers(model: nn.Module, layers: Any) -> dict[str, nn.Module]:
    if isinstance(layers, Mapping):
        resolved = dict(layers)
    elif isinstance(layers, (str, nn.Module)):
        return _resolve_layers(model, [layers])
    elif isinstance(layers, Sequence):
        resolved = {}
        names = {id(m): n for n, m in model.named_modules()}
        for layer in layers:
            if isinstance(layer, str):
                try:
                    resolved[layer] = model.get_submodule(layer)
                except AttributeError as err:
                    raise ValueError(
                        f"model has no submodule {layer!r}; named children: "
                        f"{[n for n, _ in model.named_children()]}"
                    ) from err
            elif isinstance(layer, nn.Module):
                resolved[names.get(id(layer), type(layer).__name__)] = layer
            else:
                raise TypeError(f"layers must be names or modules, got {type(layer).__name__}")
    else:
        raise TypeError(
            "layers must be a dict name -> module, or a list of names or modules, got "
            f"{type(layers).__name__}"
        )
    for name, module in resolved.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"layer {name!r} must be an nn.Module, got {type(module).__name__}")
    if not resolved:
        raise ValueError("layers is empty: name at least one layer")
    return resolved


def feature_maps(model: nn.Module, layers: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for input ``x``, captured with forward hooks: ``{name: tensor}``.

    ``layers`` is a dict ``name -> module``, or a list of submodule names (``"layer1"``,
    ``"features.3"``) or modules. Runs one forward pass under ``torch.no_grad()``; every hook is
    removed afterwards. The tensors are detached, on the model's device. Chapter 08 shows the
    maps of a CNN at several depths.
    """
    check_model(model)
    x = _check_images(x)
    resolved = _resolve_layers(model, layers)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in resolved.items():

        def hook(module, inputs, output, name=name):
            captured[name] = output.detach() if isinstance(output, torch.Tensor) else output

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in resolved if n not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} did not run in the forward pass of the model")
    return {name: captured[name] for name in resolved}


# --------------------------------------------------------------------------------------------
# Confusions
# --------------------------------------------------------------------------------------------
def most_confused(cm: Any, k: int = 5, classes: Sequence[str] | None = None) -> list[tuple[Any, Any, int]]:
    """The ``k`` largest off-diagonal entries of a confusion matrix (rows: true, cols: predicted).

    Returns ``[(true, predicted, count), ...]`` sorted by count (ties: by row, then column), with
    class names when ``classes`` is given (else indices); entries with count 0 are left out.
    Chapter 08 lists the pairs of classes the model mixes up most.
    """
    cm = torch.as_tensor(cm)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (C, C) matrix, got shape {tuple(cm.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if classes is not None and len(classes) != cm.shape[0]:
        raise ValueError(f"classes must name all {cm.shape[0]} classes, got {len(classes)} names")
    n = cm.shape[0]
    entries = [(int(cm[i, j]), i, j) for i in range(n) for j in range(n) if i != j and cm[i, j] > 0]
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    name = (lambda i: classes[i]) if classes is not None else (lambda i: i)
    return [(name(i), name(j), count) for count, i, j in entries[:k]]


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------
def _gray_or_rgb(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> an array imshow can draw, and the colour map for a gray image."""
    img = image.detach().float().cpu()
    if img.dim() == 2:
        return img.numpy(), "gray"
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"an image must be (C, H, W) with C = 1 or 3, or (H, W), got {tuple(img.shape)}")
    if img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img.permute(1, 2, 0).clamp(0, 1).numpy(), None


def plot_filters(weight: torch.Tensor, *, ncols: int = 8, title: str | None = None) -> Figure:
    """Draw convolution filters ``weight`` (O, I, kh, kw), one small image per output channel.

    Gray inputs (I = 1) use a diverging colour map centred on zero (red positive, blue negative),
    each filter on its own symmetric scale; colour inputs (I = 3) are drawn as RGB, each filter
    min-max scaled. Other I: the mean over input channels. Chapter 08 draws the first layer.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a conv weight of shape (O, I, kh, kw), got {got}")
    w = weight.detach().float().cpu()
    n = w.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.1 * ncols, 1.1 * nrows + (0.4 if title else 0)), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        f = w[i]  # (I, kh, kw)
        if f.shape[0] == 3:
            f = (f - f.min()) / (f.max() - f.min() + 1e-12)
            ax.imshow(f.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            f = f.mean(dim=0)
            vmax = float(f.abs().max()) or 1.0
            ax.imshow(f.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_maps(
    maps: Mapping[str, torch.Tensor], *, channels: int = 8, image: torch.Tensor | None = None
) -> Figure:
    """One row per layer: the first ``channels`` feature maps of one image. Chapter 08.

    ``maps`` is the dict of :func:`feature_maps` (tensors (N, C, h, w): the first image is drawn, or
    (C, h, w)). Each map has its own colour scale (viridis); the row title gives the layer name and
    the shape. ``image`` (C, H, W), if given, is drawn on the left of every row.
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("maps must be a non-empty dict name -> tensor (the output of feature_maps)")
    rows = []
    for name, t in maps.items():
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4):
            raise ValueError(
                f"maps[{name!r}] must be (N, C, h, w) or (C, h, w), got "
                f"{getattr(t, 'shape', type(t).__name__)}"
            )
        rows.append((name, (t[0] if t.dim() == 4 else t).detach().float().cpu()))
    ncols = min(channels, max(r.shape[0] for _, r in rows)) + (image is not None)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.3 * ncols, 1.5 * len(rows)), squeeze=False)
    for r, (name, fmap) in enumerate(rows):
        offset = 0
        if image is not None:
            arr, cmap = _gray_or_rgb(image)
            axes[r, 0].imshow(arr, cmap=cmap, vmin=0, vmax=1)
            offset = 1
        for c in range(ncols - offset):
            ax = axes[r, c + offset]
            if c < fmap.shape[0]:
                ax.imshow(fmap[c].numpy(), cmap="viridis")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{name}\n{tuple(fmap.shape)}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_heatmaps(
    images: torch.Tensor,
    heatmaps: Mapping[str, torch.Tensor],
    *,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Figure:
    """The images in the first row, and one row per heat map drawn over them. Chapter 08.

    ``images`` (N, C, H, W) in [0, 1]; ``heatmaps`` maps a row label (``"saliency"``,
    ``"Grad-CAM"``) to (N, H, W) maps, each drawn on its own scale. ``titles``: one per column.
    """
    images = _check_images(images, "images")
    n = images.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    for name, h in heatmaps.items():
        if not isinstance(h, torch.Tensor) or tuple(h.shape) != (n, *images.shape[-2:]):
            raise ValueError(
                f"heatmaps[{name!r}] must have shape {(n, *images.shape[-2:])}, got "
                f"{getattr(h, 'shape', None)}"
            )
    rows = 1 + len(heatmaps)
    fig, axes = plt.subplots(rows, n, figsize=(1.7 * n, 1.8 * rows), squeeze=False)
    for j in range(n):
        arr, gray = _gray_or_rgb(images[j])
        axes[0, j].imshow(arr, cmap=gray, vmin=0, vmax=1)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
        for r, (name, h) in enumerate(heatmaps.items(), start=1):
            axes[r, j].imshow(arr, cmap=gray, vmin=0, vmax=1)
            axes[r, j].imshow(h[j].detach().float().cpu().numpy(), cmap=cmap, alpha=alpha)
    for r, name in enumerate(["image", *heatmaps]):
        axes[r, 0].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
