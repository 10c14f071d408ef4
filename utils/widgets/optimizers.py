"""Chapter 04's widget: move the learning rate and the momentum, and watch the optimizer's path.

:func:`trajectory_explorer` shows one optimizer (SGD with heavy-ball or Nesterov momentum, or Adam,
whose ``beta1`` plays the role of the momentum) on one of the 2-D surfaces of
:data:`utils.optim.SURFACES`, next to the loss along the way. A grey dashed path repeats the run
without momentum, so every change of the momentum knob shows what momentum adds. The picture is a
PNG drawn off-screen, so the page shows it even where no Python runs; on the website it shows the
state saved when the page was built: run the notebook to move the knobs.
"""

from __future__ import annotations

import io
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

from utils import optim

__all__ = ["OPTIMIZERS", "render_trajectory", "trajectory_explorer"]

OPTIMIZERS = ("SGD (heavy ball)", "SGD (Nesterov)", "Adam")
"""The optimizers the widget offers; for Adam the momentum knob sets ``beta1``."""

DEFAULT_LR = {"quadratic": 0.03, "rosenbrock": 1e-3, "saddle": 0.1}
"""A learning rate per surface at which SGD with momentum 0.8 converges (a sensible start)."""


def _optimizer(name: str, lr: float, momentum: float) -> tuple[type, dict[str, Any]]:
    if name == "SGD (heavy ball)":
        return optim.SGD, dict(lr=lr, momentum=momentum)
    if name == "SGD (Nesterov)":
        if momentum == 0:
            return optim.SGD, dict(lr=lr)  # Nesterov without momentum is plain SGD
        return optim.SGD, dict(lr=lr, momentum=momentum, nesterov=True)
    if name == "Adam":
        return optim.Adam, dict(lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def render_trajectory(
    surface: str = "quadratic",
    optimizer: str = "SGD (heavy ball)",
    lr: float = 0.03,
    momentum: float = 0.8,
    steps: int = 100,
    dpi: int = 80,
) -> tuple[bytes, str]:
    """Draw one run (and the same run without momentum) as a PNG; return ``(png_bytes, summary)``.

    The summary says where the run ended or at which step it diverged. This is what the widget's
    callback does on every change. Chapter 04 shows it.
    """
    if surface not in optim.SURFACES:
        raise ValueError(f"surface must be one of {sorted(optim.SURFACES)}, got {surface!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    s = optim.SURFACES[surface]
    cls, hp = _optimizer(optimizer, lr, momentum)
    path = optim.trajectory(surface, cls, steps, **hp)  # (T, 2)
    base_cls, base_hp = _optimizer(optimizer, lr, 0.0)
    baseline = optim.trajectory(surface, base_cls, steps, **base_hp)
    f_min = s.f_min

    fig = Figure(figsize=(10, 3.9), dpi=dpi)  # off-screen: no pyplot, nothing shown twice
    ax_path, ax_loss = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    fig.subplots_adjust(
        left=0.075, right=0.98, bottom=0.13, top=0.92, wspace=0.22
    )  # fixed: tight_layout is slow
    label = f"{optimizer}, momentum {momentum:.2f}" if optimizer != "Adam" else f"Adam, beta1 {momentum:.2f}"
    optim.plot_trajectories(s, {}, ax=ax_path, legend=False)
    b = baseline.numpy()
    ax_path.plot(
        b[:, 0], b[:, 1], "--", color="0.45", lw=1.2, label="momentum 0" if optimizer != "Adam" else "beta1 0"
    )
    p = path.numpy()
    ax_path.plot(p[:, 0], p[:, 1], ".-", color="C3", lw=1.5, ms=3, label=label)
    ax_path.legend(fontsize=8, loc="lower right")
    ax_path.set_title(f"{s.name}, lr = {lr:.3g}, {steps} steps", fontsize=10)

    for run, style, name in (
        (baseline, dict(color="0.45", ls="--"), "momentum 0"),
        (path, dict(color="C3"), label),
    ):
        gap = (s(run) - f_min).numpy()  # (T,) height above the minimum
        ax_loss.semilogy(np.arange(len(gap)), np.maximum(gap, 1e-16), label=name, **style)
    ax_loss.set(xlabel="step", ylabel="f - f_min (log scale)", xlim=(0, steps), title="loss along the path")
    ax_loss.title.set_fontsize(10)
    ax_loss.yaxis.set_major_locator(LogLocator(numticks=6))
    ax_loss.yaxis.set_minor_locator(NullLocator())
    ax_loss.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)

    if len(path) < steps + 1:
        summary = f"diverged after {len(path) - 1} steps: lower the learning rate (or the momentum)"
    else:
        summary = (
            f"after {steps} steps: f - f_min = {float(s(path[-1])) - f_min:.3g} "
            f"(without momentum: {float(s(baseline[-1])) - f_min:.3g}"
            f"{', diverged' if len(baseline) < steps + 1 else ''})"
        )
    return buffer.getvalue(), summary


def trajectory_explorer(
    surface: str = "quadratic",
    optimizer: str = "SGD (heavy ball)",
    lr: float | None = None,
    momentum: float = 0.8,
    steps: int = 100,
) -> widgets.VBox:
    """The widget of chapter 04: sliders for the learning rate (log scale), the momentum and the number
    of steps, menus for the surface and the optimizer; the picture updates on every change.

    Returns a ``VBox``; its ``controls`` attribute maps names (``surface``, ``optimizer``, ``lr``,
    ``momentum``, ``steps``) to the controls, and ``image`` and ``summary`` are the outputs.
    """
    lr = DEFAULT_LR.get(surface, 0.03) if lr is None else lr
    style = {"description_width": "80px"}
    controls = {
        "surface": widgets.Dropdown(
            options=list(optim.SURFACES), value=surface, description="surface", style=style
        ),
        "optimizer": widgets.Dropdown(
            options=list(OPTIMIZERS), value=optimizer, description="optimizer", style=style
        ),
        "lr": widgets.FloatLogSlider(
            value=lr,
            base=10,
            min=-4,
            max=0,
            step=0.05,
            description="learning rate",
            readout_format=".2g",
            continuous_update=False,
            style=style,
        ),
        "momentum": widgets.FloatSlider(
            value=momentum,
            min=0.0,
            max=0.99,
            step=0.01,
            description="momentum",
            continuous_update=False,
            style=style,
        ),
        "steps": widgets.IntSlider(
            value=steps, min=10, max=500, step=10, description="steps", continuous_update=False, style=style
        ),
    }
    image = widgets.Image(format="png", layout=widgets.Layout(width="800px"))
    summary = widgets.Label()

    def update(_change: Any = None) -> None:
        png, text = render_trajectory(
            controls["surface"].value,
            controls["optimizer"].value,
            controls["lr"].value,
            controls["momentum"].value,
            controls["steps"].value,
        )
        image.value = png
        summary.value = text

    def surface_changed(change: Any) -> None:
        # a new surface needs another scale of learning rate: start from one that works there
        controls["lr"].unobserve(update, "value")
        controls["lr"].value = DEFAULT_LR.get(change["new"], controls["lr"].value)
        controls["lr"].observe(update, "value")

    controls["surface"].observe(surface_changed, "value")  # registered first: runs before update
    for control in controls.values():
        control.observe(update, "value")
    update()
    box = widgets.VBox(
        [
            widgets.HBox([controls["surface"], controls["optimizer"]]),
            widgets.HBox([controls["lr"], controls["momentum"], controls["steps"]]),
            image,
            summary,
        ]
    )
    box.controls, box.image, box.summary = controls, image, summary
    return box
