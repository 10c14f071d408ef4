"""Chapter 09's widget: how many labelled images does a classifier on frozen features need?

:func:`label_budget_figure` picks ``per_class`` labelled images of each class from a pool of
embeddings, fits a linear probe or a k-nearest-neighbour classifier on them
(:mod:`utils.transfer`) and draws the validation embeddings in the plane of their first two
principal components, the labelled images ringed, with the validation accuracy in the title.
:func:`label_budget_explorer` puts knobs on it: the number of labels per class, the classifier, ``k``
and the draw of the labelled images. Each redraw costs a fraction of a second (the embeddings are
computed once). On the website the widget shows the state saved when the page was built; run the
notebook to move the knobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from utils.transfer import knn_predict, linear_probe

__all__ = ["label_budget_explorer", "label_budget_figure", "per_class_indices"]


def per_class_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices (<= C * per_class,) of ``per_class`` random items of each class of ``labels`` (N,)
    (all of a class that has fewer), drawn with ``seed``, in increasing order."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picked).sort().values


def label_budget_figure(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    classes: Sequence[str],
    per_class: int = 5,
    method: str = "linear probe",
    k: int = 5,
    seed: int = 0,
) -> tuple[Figure, float]:
    """The validation embeddings (M, D) projected on the two principal components of the pool
    (N, D), coloured by class, the ``per_class`` labelled images per class ringed in black, and the
    validation accuracy of ``method`` ("linear probe" or "kNN") fitted on those labels. Chapter 09.
    Returns ``(figure, accuracy)``."""
    if method not in ("linear probe", "kNN"):
        raise ValueError(f"method must be 'linear probe' or 'kNN', got {method!r}")
    idx = per_class_indices(train_labels, per_class, seed)
    x, y = train_features[idx], torch.as_tensor(train_labels)[idx]
    if method == "kNN":
        pred = knn_predict(x, y, val_features, k=min(k, len(x)))
    else:
        pred = linear_probe(x, y, l2=1e-2, num_classes=len(classes))(val_features).argmax(dim=1)
    accuracy = (pred == torch.as_tensor(val_labels)).float().mean().item()
    mean = train_features.mean(0)
    _, _, v = torch.pca_lowrank(train_features - mean, q=2, center=False, niter=4)  # v: (D, 2)
    pv, px = (val_features - mean) @ v, (x - mean) @ v  # (M, 2), (n, 2)
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(classes):
        sel = torch.as_tensor(val_labels) == c
        ax.scatter(pv[sel, 0], pv[sel, 1], s=6, color=cmap(c % 10), alpha=0.5, label=name)
    ax.scatter(px[:, 0], px[:, 1], s=40, facecolors=[cmap(int(c) % 10) for c in y], edgecolors="black")
    ax.set(
        xlabel="PC 1",
        ylabel="PC 2",
        title=f"{method}, {per_class} labels per class: validation accuracy {accuracy:.1%}",
    )
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    fig.tight_layout()
    return fig, accuracy


def label_budget_explorer(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    classes: Sequence[str],
):
    """Sliders for :func:`label_budget_figure`: labels per class (1-50), the classifier, k, the draw."""
    import ipywidgets as widgets
    from IPython.display import display

    per_class = widgets.IntSlider(value=5, min=1, max=50, description="labels/class")
    method = widgets.ToggleButtons(options=["linear probe", "kNN"], value="linear probe")
    k = widgets.IntSlider(value=5, min=1, max=25, description="k (kNN)")
    seed = widgets.IntSlider(value=0, min=0, max=9, description="draw")
    out = widgets.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, _ = label_budget_figure(
                train_features,
                train_labels,
                val_features,
                val_labels,
                classes,
                per_class=per_class.value,
                method=method.value,
                k=k.value,
                seed=seed.value,
            )
            display(fig)
            plt.close(fig)

    for w in (per_class, method, k, seed):
        w.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([per_class, method]), widgets.HBox([k, seed]), out])
    display(box)
    return box
