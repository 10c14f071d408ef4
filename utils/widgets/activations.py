"""The activation explorer of chapter 02: pick an activation and the scale and shift of its inputs.

Pre-activations are drawn as ``z ~ N(shift, scale**2)``, the distribution a hidden unit sees; the
explorer plots the activation with that distribution behind it, the histogram of the outputs
``f(z)`` and the histogram of the local gradients ``f'(z)``, the factor by which the unit scales
every gradient that flows back through it. Knobs to try: a large scale saturates sigmoid and tanh
(the gradients pile up at 0), a negative shift switches ReLU units off (their gradient is exactly
0), while Leaky ReLU, ELU and the smooth rectifiers keep a small gradient.

:func:`activation_stats` computes the numbers, :func:`plot_activation_stats` draws the three panels
and :func:`activation_explorer` wires them to ipywidgets controls. On the website the explorer
shows the state saved when the page was built; run the notebook to move the knobs.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from utils.scratch import activations as A

__all__ = ["SMALL_GRADIENT", "activation_explorer", "activation_stats", "plot_activation_stats"]

SMALL_GRADIENT = 0.01  # a unit whose local gradient is below this passes less than 1% of the gradient
_SAMPLES = 20_000


def _check(name: str, scale: float, shift: float, n: int) -> None:
    A.get(name)  # a clear error for unknown names
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"scale must be a positive number (the standard deviation of the pre-activations), got {scale!r}"
        )
    if not (isinstance(shift, (int, float)) and math.isfinite(shift)):
        raise ValueError(f"shift must be a finite number (the mean of the pre-activations), got {shift!r}")
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an int >= 2 (the number of samples), got {n!r}")


def _samples(scale: float, shift: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, generator=g, dtype=torch.float64)  # (n,)


def activation_stats(
    name: str, scale: float = 1.0, shift: float = 0.0, *, n: int = _SAMPLES, seed: int = 0
) -> dict[str, float]:
    """Statistics of ``f(z)`` and ``f'(z)`` for ``z ~ N(shift, scale**2)`` (chapter 02).

    Returns a dict: ``out_mean``, ``out_std`` (of the outputs), ``grad_mean`` (the average local
    gradient), ``small_grad`` (the fraction of inputs whose local gradient is below
    :data:`SMALL_GRADIENT` in absolute value: saturated or switched-off units) and ``zero_grad``
    (the fraction whose gradient is exactly 0).
    """
    _check(name, scale, shift, n)
    act = A.get(name)
    z = _samples(scale, shift, n, seed)
    y, d = act.fn(z), act.grad(z)
    return {
        "out_mean": y.mean().item(),
        "out_std": y.std().item(),
        "grad_mean": d.mean().item(),
        "small_grad": (d.abs() < SMALL_GRADIENT).double().mean().item(),
        "zero_grad": (d == 0).double().mean().item(),
    }


def plot_activation_stats(
    name: str, scale: float = 1.0, shift: float = 0.0, *, n: int = _SAMPLES, seed: int = 0, axes=None
) -> Figure:
    """Three panels for ``z ~ N(shift, scale**2)`` (chapter 02): the activation and its derivative
    over the likely range of z (the input density shaded), the histogram of the outputs and the
    histogram of the local gradients. ``axes``: three existing Axes to draw into. Returns the Figure.
    """
    _check(name, scale, shift, n)
    act = A.get(name)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    else:
        if len(axes) != 3:
            raise ValueError(f"plot_activation_stats draws three panels: pass three Axes, got {len(axes)}")
        fig = axes[0].figure
    ax_f, ax_y, ax_d = axes
    z = _samples(scale, shift, n, seed)
    y, d = act.fn(z), act.grad(z)
    stats = activation_stats(name, scale, shift, n=n, seed=seed)

    lo, hi = shift - 3.5 * scale, shift + 3.5 * scale
    grid = torch.linspace(min(lo, -3.0), max(hi, 3.0), 600, dtype=torch.float64)
    density = torch.exp(-0.5 * ((grid - shift) / scale) ** 2)  # the density of z, scaled to a peak of 1
    ax_f.fill_between(grid, 0, density, color="tab:gray", alpha=0.25, label="density of z")
    ax_f.plot(grid, act.fn(grid), color="tab:blue", label="f(z)")
    ax_f.plot(grid, act.grad(grid), color="tab:orange", linestyle="--", label="f'(z)")
    ax_f.set(title=act.label, xlabel="pre-activation z")
    ax_f.set_ylim(-1.5, 3.0)
    ax_f.grid(alpha=0.3)
    ax_f.legend(fontsize=8, loc="upper left")

    ax_y.hist(y.numpy(), bins=60, color="tab:blue", alpha=0.8)
    ax_y.set(
        title=f"outputs f(z)\nmean {stats['out_mean']:.2f}, std {stats['out_std']:.2f}",
        xlabel="f(z)",
        ylabel="count",
    )
    ax_d.hist(d.numpy(), bins=60, color="tab:orange", alpha=0.8)
    ax_d.set(
        title=f"gradients f'(z): mean {stats['grad_mean']:.3f}\n|f'(z)| < {SMALL_GRADIENT:g} for "
        f"{stats['small_grad']:.0%} of the inputs",
        xlabel="f'(z)",
    )
    fig.suptitle(f"z ~ N({shift:g}, {scale:g}²)", y=1.02)
    fig.tight_layout()
    return fig


def activation_explorer(name: str = "sigmoid", scale: float = 1.0, shift: float = 0.0, *, n: int = _SAMPLES):
    """The chapter 02 widget: a dropdown for the activation and sliders for the scale and the shift of
    the pre-activations, above the panels of :func:`plot_activation_stats`. Returns an ipywidgets
    ``VBox``; display it (or leave it as the last line of a cell). Each update takes a fraction of a second.
    """
    import ipywidgets as widgets
    from IPython.display import display

    _check(name, scale, shift, n)
    choice = widgets.Dropdown(
        options=[(a.label, key) for key, a in A.ACTIVATIONS.items()], value=name, description="activation"
    )
    scale_slider = widgets.FloatLogSlider(
        value=scale,
        base=10,
        min=-1,
        max=1.5,
        step=0.05,
        description="scale",
        readout_format=".2f",
        continuous_update=False,
    )
    shift_slider = widgets.FloatSlider(
        value=shift,
        min=-4.0,
        max=4.0,
        step=0.25,
        description="shift",
        readout_format=".2f",
        continuous_update=False,
    )
    out = widgets.Output()

    def update(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = plot_activation_stats(choice.value, scale_slider.value, shift_slider.value, n=n)
            display(fig)
            plt.close(fig)  # shown once, in the output area

    for control in (choice, scale_slider, shift_slider):
        control.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox([choice, scale_slider, shift_slider]), out])
