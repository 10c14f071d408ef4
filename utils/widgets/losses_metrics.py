"""The threshold explorer of chapter 03: move a decision threshold over the scores of a binary
classifier and watch the confusion matrix, precision, recall and F1 change.

:func:`threshold_summary` computes the numbers for one threshold (predict positive when
``score >= threshold``, as ``utils.metrics.roc_curve`` does); :func:`threshold_explorer` builds the
widget: a slider, a line of numbers and a figure with three panels (the scores of each class with
the threshold, the 2x2 confusion matrix, and precision / recall / F1 against the threshold). On the
website the widget shows the state saved when the page was built; run the notebook to move it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from utils.metrics import _binary_problem

__all__ = ["threshold_explorer", "threshold_summary"]


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, false-positive rate and accuracy from counts (0 where undefined)."""

    def div(a, b):
        return np.divide(a, b, out=np.zeros(np.shape(a), dtype=np.float64), where=np.asarray(b) > 0)

    return {
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "false_positive_rate": div(fp, fp + tn),
        "accuracy": div(tp + tn, tp + fp + fn + tn),
    }


def threshold_summary(scores: Any, target: Any, threshold: float) -> dict[str, Any]:
    """Counts and rates when predicting positive for ``score >= threshold``. Chapter 03 uses it.

    Returns a dict with ``confusion`` (2, 2) int64 NumPy array (rows: true 0/1, columns: predicted
    0/1, as ``sklearn.metrics.confusion_matrix``), ``tp``, ``fp``, ``fn``, ``tn`` (ints) and
    ``precision``, ``recall``, ``f1``, ``false_positive_rate``, ``accuracy`` (floats; 0 where the
    denominator is 0, e.g. the precision when nothing is predicted positive).
    """
    s, t = _binary_problem(scores, target)
    pred = s >= float(threshold)
    pos = t == 1
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    fn, tn = int((~pred & pos).sum()), int((~pred & ~pos).sum())
    out: dict[str, Any] = {
        "confusion": np.array([[tn, fp], [fn, tp]], dtype=np.int64),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
    out.update(
        {k: float(v) for k, v in _rates(np.array(tp), np.array(fp), np.array(fn), np.array(tn)).items()}
    )
    return out


def threshold_explorer(
    scores: Any,
    target: Any,
    *,
    threshold: float | None = None,
    classes: tuple[str, str] = ("negative", "positive"),
    steps: int = 200,
    dpi: int = 80,
):
    """An ipywidgets box: a threshold slider, the resulting numbers, and a figure that follows it.

    ``scores`` (N,) are the classifier's scores of the positive class (probabilities or logits),
    ``target`` (N,) the 0/1 labels, both classes present. The slider spans the range of the scores
    in ``steps`` steps, starting at ``threshold`` (default: the middle of the range). The returned
    box has the attributes ``slider``, ``summary`` (an HTML line) and ``image`` (the PNG figure).
    Each move redraws in well under a second. Chapter 03 shows it.
    """
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    s, t = _binary_problem(scores, target)
    if t.sum() == 0 or t.sum() == t.numel():
        raise ValueError(
            "target must hold both classes (0 and 1) for a threshold to trade one error for the other"
        )
    if len(classes) != 2:
        raise ValueError(f"classes must name the negative and the positive class, got {classes!r}")
    s_np, pos = s.numpy(), t.numpy() == 1
    lo, hi = float(s_np.min()), float(s_np.max())
    if hi == lo:
        hi = lo + 1.0
    step = (hi - lo) / steps
    grid = lo + step * np.arange(steps + 1)  # (T,) candidate thresholds
    predicted = s_np[None, :] >= grid[:, None]  # (T, N)
    tp = (predicted & pos).sum(1)
    fp = (predicted & ~pos).sum(1)
    curves = _rates(tp, fp, pos.sum() - tp, (~pos).sum() - fp)  # each (T,)

    # ---- the figure, drawn once; a move of the slider only updates its artists
    fig = Figure(figsize=(12, 3.6), dpi=dpi)
    ax_hist, ax_cm, ax_curve = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 0.8, 1.2]})
    bins = np.linspace(lo, hi, 41)
    ax_hist.hist(s_np[~pos], bins=bins, alpha=0.6, color="tab:blue", label=f"{classes[0]} ({(~pos).sum()})")
    ax_hist.hist(s_np[pos], bins=bins, alpha=0.6, color="tab:orange", label=f"{classes[1]} ({pos.sum()})")
    ax_hist.set_yscale("log")
    ax_hist.set(
        xlabel="score", ylabel="samples (log scale)", title="scores; right of the line: predicted positive"
    )
    ax_hist.legend(loc="upper right", fontsize=8)
    hist_line = ax_hist.axvline(lo, color="k", lw=2)

    image = ax_cm.imshow(np.zeros((2, 2)), cmap="Blues", vmin=0, vmax=len(s_np))
    ax_cm.set_xticks([0, 1], [f"pred. {c}" for c in classes], fontsize=8)
    ax_cm.set_yticks([0, 1], [f"true {c}" for c in classes], fontsize=8, rotation=90, va="center")
    ax_cm.set_title("confusion matrix")
    names = [["TN", "FP"], ["FN", "TP"]]
    cells = [
        [ax_cm.text(j, i, "", ha="center", va="center", fontsize=11) for j in range(2)] for i in range(2)
    ]

    lines = (
        ("precision", "precision", "tab:green"),
        ("recall", "recall", "tab:red"),
        ("f1", "F1", "tab:purple"),
    )
    for key, label, color in lines:
        ax_curve.plot(grid, curves[key], color=color, label=label)
    curve_line = ax_curve.axvline(lo, color="k", lw=2)
    dots = ax_curve.scatter([lo] * 3, [0] * 3, c=["tab:green", "tab:red", "tab:purple"], zorder=3)
    ax_curve.set(xlabel="threshold", ylim=(-0.02, 1.02), title="precision, recall, F1")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(loc="lower left", fontsize=8)
    fig.tight_layout()

    slider = widgets.FloatSlider(
        value=float(np.clip((lo + hi) / 2 if threshold is None else threshold, lo, hi)),
        min=lo,
        max=hi,
        step=step,
        description="threshold",
        readout_format=".2f",
        continuous_update=False,
        layout=widgets.Layout(width="60%"),
    )
    summary = widgets.HTML()
    picture = widgets.Image(format="png")

    def update(change: Any = None) -> None:
        thr = float(slider.value)
        result = threshold_summary(s, t, thr)
        hist_line.set_xdata([thr, thr])
        curve_line.set_xdata([thr, thr])
        dots.set_offsets(np.c_[[thr] * 3, [result["precision"], result["recall"], result["f1"]]])
        cm = result["confusion"]
        image.set_data(cm)
        for i in range(2):
            for j in range(2):
                cells[i][j].set_text(f"{names[i][j]}\n{cm[i, j]}")
                cells[i][j].set_color("white" if cm[i, j] > len(s_np) / 2 else "black")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        picture.value = buffer.getvalue()
        summary.value = (
            f"<b>threshold {thr:.2f}</b>: TP {result['tp']}, FP {result['fp']}, FN {result['fn']}, TN "
            f"{result['tn']} "
            f"&nbsp;|&nbsp; precision {result['precision']:.3f}, recall {result['recall']:.3f}, "
            f"F1 {result['f1']:.3f}, false-positive rate {result['false_positive_rate']:.3f}, "
            f"accuracy {result['accuracy']:.3f}"
        )

    slider.observe(update, names="value")
    update()
    box = widgets.VBox([slider, summary, picture])
    box.slider, box.summary, box.image, box.figure = slider, summary, picture, fig
    return box
