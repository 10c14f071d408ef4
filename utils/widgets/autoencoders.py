"""Chapter 13's widget: walk through a 2-D latent space and see what the decoder draws there.

:func:`latent_explorer` shows, side by side, where the training images' codes lie (one colour per
class) with a cross at the chosen point ``z = (z1, z2)``, and the image each model decodes from that
point. With a plain autoencoder and a VAE trained on the same images, moving the cross to where no
training code lies (or to a draw from the prior, near the origin) shows why one can be sampled from
and the other cannot. Each update is one decoder pass per model and a small figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils.viz import palette

__all__ = ["latent_explorer", "latent_figure"]


def _check(decoders: Mapping, codes: Mapping, labels: torch.Tensor) -> None:
    if not decoders or set(decoders) != set(codes):
        raise ValueError(
            f"decoders and codes must name the same models, got {list(decoders)} and {list(codes)}"
        )
    for name, z in codes.items():
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != 2 or len(z) != len(labels):
            raise ValueError(
                f"codes[{name!r}] must be a ({len(labels)}, 2) tensor (one 2-D code per label), "
                f"got {getattr(z, 'shape', type(z).__name__)}"
            )


@torch.no_grad()
def latent_figure(
    decoders: Mapping[str, torch.nn.Module],
    codes: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    z: tuple[float, float],
):
    """The explorer's figure for the point ``z``: per model, its codes (N, 2) and the decoded image.

    ``decoders`` maps a name to a module taking codes (B, 2) to images (B, C, H, W) in [0, 1];
    ``codes`` maps the same names to the codes of some images, whose integer ``labels`` (N,) colour
    the scatter. Returns the matplotlib Figure (one row per model).
    """
    _check(decoders, codes, labels)
    n = len(decoders)
    fig, axes = plt.subplots(n, 2, figsize=(6.4, 3.0 * n), squeeze=False, width_ratios=(1.6, 1))
    colours = np.array(palette(int(labels.max()) + 1))[labels.numpy()]
    for row, (name, decoder) in zip(axes, decoders.items()):
        c = codes[name].cpu().numpy()
        row[0].scatter(c[:, 0], c[:, 1], s=3, c=colours, alpha=0.6)
        row[0].plot(*z, marker="x", color="black", markersize=12, mew=2.5)
        row[0].set_title(f"{name}: codes of {len(c)} images", fontsize=9)
        device = next(decoder.parameters()).device
        image = decoder(torch.tensor([z], dtype=torch.float32, device=device))[0].cpu()  # (C, H, W)
        row[1].imshow(image.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        row[1].set_title(f"decoded at z = ({z[0]:.1f}, {z[1]:.1f})", fontsize=9)
        row[1].set_xticks([])
        row[1].set_yticks([])
    fig.tight_layout()
    return fig


def latent_explorer(
    decoders: Mapping[str, torch.nn.Module],
    codes: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    limit: float = 4.0,
):
    """An ipywidgets box with two sliders, ``z1`` and ``z2`` in [-limit, limit], above :func:`latent_figure`.

    Chapter 13 shows it with a plain autoencoder and a VAE of 2-D codes trained on the same digits.
    """
    import ipywidgets as widgets
    from IPython.display import clear_output

    _check(decoders, codes, labels)
    for decoder in decoders.values():
        decoder.eval()
    sliders = [
        widgets.FloatSlider(
            value=0.0, min=-limit, max=limit, step=0.1, description=name, continuous_update=False
        )
        for name in ("z1", "z2")
    ]
    out = widgets.Output()

    def update(_=None):
        with out:
            clear_output(wait=True)
            fig = latent_figure(decoders, codes, labels, (sliders[0].value, sliders[1].value))
            plt.show()
            plt.close(fig)

    for s in sliders:
        s.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox(sliders), out])
    box.update = update  # handy for tests and for redrawing by hand
    return box
