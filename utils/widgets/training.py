"""Chapter 08's widget: pick an image, a class and an attack strength, and see what the CNN looks at.

:func:`interpretation_explorer` shows, for one image of a data set, the model's top predictions,
the Grad-CAM heat map and the saliency map of a chosen class, and the FGSM image for a chosen
``eps`` with the prediction it gets. Each update is one forward and two backward passes on one
image plus a small figure, well under a second on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from utils import interpret

__all__ = ["explorer_figure", "interpretation_explorer"]


def explorer_figure(
    model: nn.Module,
    target_layer: nn.Module,
    image: torch.Tensor,
    label: int,
    classes: Sequence[str],
    class_idx: int | None = None,
    eps: float = 0.1,
):
    """The figure the explorer shows for one image (C, H, W) in [0, 1]: returns the matplotlib Figure.

    Four panels: the image with its label and the top-3 probabilities; Grad-CAM and saliency of
    ``class_idx`` (None: the predicted class); the FGSM image of strength ``eps`` and its prediction.
    """
    x = image[None]  # (1, C, H, W)
    device = next(model.parameters()).device
    x = x.to(device)
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0].cpu()  # (K,)
    pred = int(probs.argmax())
    k = pred if class_idx is None else int(class_idx)
    cam = interpret.grad_cam(model, target_layer, x, k)[0].cpu()  # (H, W)
    sal = interpret.saliency(model, x, k)[0].cpu()  # (H, W)
    x_adv = interpret.fgsm(model, x, torch.tensor([int(label)], device=device), float(eps))
    with torch.no_grad():
        probs_adv = model(x_adv).softmax(dim=1)[0].cpu()
    adv = int(probs_adv.argmax())

    img = image.detach().cpu()
    show = (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy()
    cmap = "gray" if img.shape[0] == 1 else None
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
    top = probs.topk(min(3, len(classes)))
    axes[0].imshow(show, cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title(
        f"label: {classes[label]}\n"
        + "\n".join(f"{classes[int(i)]} {p:.0%}" for p, i in zip(top.values.tolist(), top.indices.tolist())),
        fontsize=8,
    )
    axes[1].imshow(show, cmap=cmap, vmin=0, vmax=1)
    axes[1].imshow(cam.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[1].set_title(f"Grad-CAM: {classes[k]}", fontsize=9)
    axes[2].imshow(sal.numpy(), cmap="hot")
    axes[2].set_title(f"saliency: {classes[k]}", fontsize=9)
    shown_adv = x_adv[0].detach().cpu()
    axes[3].imshow(
        (shown_adv[0] if shown_adv.shape[0] == 1 else shown_adv.permute(1, 2, 0)).numpy(),
        cmap=cmap,
        vmin=0,
        vmax=1,
    )
    axes[3].set_title(f"FGSM eps={eps:.2f}\n-> {classes[adv]} {probs_adv[adv]:.0%}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def interpretation_explorer(
    model: nn.Module,
    target_layer: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    max_eps: float = 0.3,
):
    """An ipywidgets box: an image slider, a class menu ("predicted" or a class) and an ``eps`` slider.

    ``model`` takes images in [0, 1] (normalization inside the model) and is put in eval mode;
    ``target_layer`` is the layer Grad-CAM reads (e.g. the last convolutional stage); ``images``
    (N, C, H, W) in [0, 1] and ``labels`` (N,). Chapter 08 shows it under its trained CNN.
    """
    import ipywidgets as widgets
    from IPython.display import clear_output

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(
            f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}"
        )
    if len(labels) != len(images):
        raise ValueError(f"labels must have one entry per image ({len(images)}), got {len(labels)}")
    model.eval()
    index = widgets.IntSlider(
        value=0, min=0, max=len(images) - 1, description="image", continuous_update=False
    )
    klass = widgets.Dropdown(
        options=[("predicted", -1)] + [(c, i) for i, c in enumerate(classes)], value=-1, description="class"
    )
    eps = widgets.FloatSlider(
        value=0.1,
        min=0.0,
        max=float(max_eps),
        step=0.01,
        description="FGSM eps",
        continuous_update=False,
        readout_format=".2f",
    )
    out = widgets.Output()

    def update(_=None):
        with out:
            clear_output(wait=True)
            fig = explorer_figure(
                model,
                target_layer,
                images[index.value],
                int(labels[index.value]),
                classes,
                None if klass.value < 0 else klass.value,
                eps.value,
            )
            plt.show()
            plt.close(fig)

    for w in (index, klass, eps):
        w.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([index, klass, eps]), out])
    box.update = update  # handy for tests and for redrawing by hand
    return box
