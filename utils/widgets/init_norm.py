"""Chapter 05's widget: the initialization scale, the depth and the activation, and what they do to
the activations of a deep network.

:func:`activation_figure` draws, for a deep MLP of square layers at initialization, histograms of
the activations at three depths and the root mean square of every layer's output (plus, with
``backward``, that of the gradient reaching it). :func:`init_explorer` puts knobs on it: the
activation, the gain ``g`` of the weights N(0, g^2 / width), the depth and batch normalization.
Each redraw costs about a tenth of a second. On the website the widget shows the state saved when
the page was built; run the notebook to move the knobs.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from utils.scratch.init import deep_forward

__all__ = ["PRESETS", "activation_figure", "init_explorer", "verdict"]

# Named gains: std = gain / sqrt(width) for square layers (fan_in = fan_out = width).
PRESETS = {
    "too small (std 0.01)": None,  # depends on the width: 0.01 * sqrt(width)
    "Xavier (gain 1)": 1.0,
    "tanh gain 5/3": 5.0 / 3.0,
    "He (gain sqrt 2)": math.sqrt(2.0),
    "too large (std 1)": None,  # sqrt(width)
}


def verdict(stats: dict, activation: str) -> str:
    """One phrase on what the signal does through the depth: vanishes, explodes, saturates or stays."""
    rms = stats["rms"]
    first, last = float(rms[0]), float(rms[-1])
    if not math.isfinite(last) or last > 1e2 * max(first, 1e-30):
        return "explodes"
    if last < 1e-2 * first or last == 0.0:
        return "vanishes"
    if activation == "tanh" and float(stats["saturated"][-1]) > 0.5:
        return "saturates"
    return "keeps its scale"


def activation_figure(
    activation: str = "relu",
    gain: float = math.sqrt(2.0),
    depth: int = 20,
    *,
    batchnorm: bool = False,
    backward: bool = True,
    width: int = 256,
    batch: int = 256,
    seed: int = 0,
) -> Figure:
    """Histograms of the activations at three depths and their size per layer, at initialization. Chapter 05.

    For ReLU the histograms leave out the exact zeros (about half of the values); the titles give
    their fraction.
    The weights of every layer are N(0, gain^2 / width); see :func:`utils.scratch.init.deep_forward`.
    Returns the Figure (end the call with ``;`` in a notebook).
    """
    shown = sorted({1, max(1, (depth + 1) // 2), depth})
    stats = deep_forward(
        depth,
        width,
        init=float(gain),
        activation=activation,
        batch=batch,
        batchnorm=batchnorm,
        backward=backward,
        keep=tuple(shown),
        seed=seed,
    )
    fig = plt.figure(figsize=(10, 5.2))
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.15), hspace=0.55, wspace=0.3)
    for i, layer in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        values = stats["layers"][layer].float()
        finite = values[values.isfinite()]
        shown_values = (
            finite[finite != 0] if activation == "relu" else finite
        )  # ReLU's exact zeros: in the title
        if shown_values.numel():
            ax.hist(shown_values.numpy(), bins=60, color=f"C{i}")
        else:
            ax.text(
                0.5,
                0.5,
                "all zero" if finite.numel() else "NaN / Inf",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        zeros = f", {float(stats['dead'][layer - 1]):.0%} zero" if activation == "relu" else ""
        ax.set_title(f"layer {layer}: rms {float(stats['rms'][layer - 1]):.2g}{zeros}", fontsize=10)
        ax.set_yticks([])
        ax.set_xlabel("activation value")
    ax = fig.add_subplot(grid[1, :])
    layers = range(1, depth + 1)
    rms = stats["rms"].clamp(min=1e-30)  # log axis: show a vanished signal at the bottom
    ax.semilogy(layers, rms.numpy(), marker="o", ms=3, label="activations (rms)")
    if backward:
        ax.semilogy(
            layers,
            stats["grad_std"].clamp(min=1e-30).numpy(),
            marker="s",
            ms=3,
            label="gradient reaching the layer (std)",
        )
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="layer", ylabel="size (log scale)", xlim=(0.5, depth + 0.5))
    ax.grid(alpha=0.3, which="major")
    ax.legend(loc="best", fontsize=9)
    norm = ", batch norm" if batchnorm else ""
    fig.suptitle(
        f"{activation}, weights N(0, {gain:.3g}² / {width}){norm}: the signal {verdict(stats, activation)}",
        fontsize=12,
    )
    return fig


def init_explorer(*, width: int = 256, batch: int = 256, seed: int = 0):
    """Knobs for :func:`activation_figure`: activation, gain (log slider and presets), depth, batch norm.
    Chapter 05.

    Returns an ``ipywidgets.VBox``; display it as the last line of a notebook cell. Its ``state``
    dict counts the redraws and keeps the title of the last figure.
    """
    import ipywidgets as widgets
    from IPython.display import display

    activation = widgets.ToggleButtons(options=["relu", "tanh"], value="relu", description="activation")
    gain = widgets.FloatLogSlider(
        value=math.sqrt(2.0),
        base=10,
        min=-2,
        max=1.5,
        step=0.01,
        description="gain g",
        readout_format=".3g",
        continuous_update=False,
    )
    preset = widgets.Dropdown(
        options=["(slider)"] + list(PRESETS), value="He (gain sqrt 2)", description="preset"
    )
    depth = widgets.IntSlider(value=30, min=1, max=50, description="depth", continuous_update=False)
    batchnorm = widgets.Checkbox(value=False, description="batch normalization")
    out = widgets.Output()
    state = {"redraws": 0, "title": ""}  # what the last redraw showed (read by the tests)

    def preset_gain(name: str) -> float | None:
        if name == "too small (std 0.01)":
            return 0.01 * math.sqrt(width)
        if name == "too large (std 1)":
            return math.sqrt(width)
        return PRESETS.get(name)

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = activation_figure(
                activation.value,
                gain.value,
                depth.value,
                batchnorm=batchnorm.value,
                width=width,
                batch=batch,
                seed=seed,
            )
            display(fig)
            plt.close(fig)
        state["redraws"] += 1
        state["title"] = fig.get_suptitle()

    def on_preset(change):
        g = preset_gain(change["new"])
        if g is not None:
            gain.value = g  # triggers redraw

    def on_gain(change):
        if preset.value != "(slider)" and not math.isclose(
            change["new"], preset_gain(preset.value) or -1, rel_tol=1e-2
        ):
            preset.value = "(slider)"
        redraw()

    preset.observe(on_preset, names="value")
    gain.observe(on_gain, names="value")
    for w in (activation, depth, batchnorm):
        w.observe(redraw, names="value")
    redraw()
    controls = widgets.VBox([widgets.HBox([activation, batchnorm]), widgets.HBox([preset, gain]), depth])
    box = widgets.VBox([controls, out])
    box.state = state
    return box
