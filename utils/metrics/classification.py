"""Classification metrics: accuracy, top-k accuracy, the confusion matrix, precision / recall / F1,
ROC and precision-recall curves, and calibration.

Each function takes PyTorch tensors (NumPy arrays and lists are converted), checks the shapes it
is given, and agrees with scikit-learn; the tests compare them. Chapter 01 computes accuracy by hand;
chapter 03 builds the confusion matrix and the rest before switching to these:

* from the confusion matrix: :func:`precision_recall_f1`, :func:`precision`, :func:`recall`,
  :func:`f1_score` with ``average="macro" | "micro" | "weighted" | None``
  (``precision_recall_fscore_support`` with ``labels=range(num_classes)``);
* from scores of a binary problem: :func:`roc_curve`, :func:`roc_auc`,
  :func:`precision_recall_curve`, :func:`average_precision` (``roc_curve``, ``roc_auc_score``,
  ``precision_recall_curve``, ``average_precision_score``; tied scores form one threshold);
* from probabilities: :func:`reliability_bins` and :func:`expected_calibration_error`
  (``sklearn.calibration.calibration_curve`` with ``strategy="uniform"``, bins closed on the right).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "average_precision",
    "confusion_matrix",
    "expected_calibration_error",
    "f1_score",
    "precision",
    "precision_recall_curve",
    "precision_recall_f1",
    "recall",
    "reliability_bins",
    "roc_auc",
    "roc_curve",
    "top_k_accuracy",
]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{name} must be a tensor, a NumPy array or a list of numbers, got {type(x).__name__}"
        ) from err


def _labels(target: Any, name: str = "target") -> torch.Tensor:
    """Check that ``target`` is a 1-D tensor of integer class labels and return it."""
    target = _as_tensor(target, name)
    if target.ndim != 1:
        hint = " (one-hot targets: take target.argmax(1) first)" if target.ndim == 2 else ""
        raise ValueError(
            f"{name} must be a 1-D tensor of class labels (N,), got shape {tuple(target.shape)}{hint}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {target.dtype}")
    return target.long()


def _predicted_labels(output: Any, name: str = "output") -> torch.Tensor:
    """Logits or probabilities (N, C) become their argmax (N,); integer labels (N,) pass through."""
    output = _as_tensor(output, name)
    if output.ndim == 2:
        if not output.is_floating_point():
            raise TypeError(
                f"{name} of shape (N, C) must hold float scores (logits or probabilities), got {output.dtype}"
            )
        return output.argmax(dim=1)
    if output.ndim == 1:
        if output.is_floating_point():
            raise TypeError(
                f"{name} of shape (N,) must hold integer predicted labels, got dtype {output.dtype}; "
                "for one logit per sample (binary classification) threshold it first: (output > 0).long()"
            )
        return _labels(output, name)
    raise ValueError(
        f"{name} must be logits (N, C) or predicted labels (N,), got shape {tuple(output.shape)}"
    )


def _check_same_length(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"output and target hold different numbers of samples: {pred.shape[0]} and {target.shape[0]}"
        )
    if pred.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined: output and target have 0 samples")


def accuracy(output: Any, target: Any) -> float:
    """Fraction of samples whose predicted class equals the target class, as a Python float.

    ``output`` is either logits / probabilities of shape (N, C), whose argmax is the prediction,
    or predicted integer labels of shape (N,); ``target`` holds the N true labels.
    Chapter 01 computes this by hand.
    """
    pred = _predicted_labels(output)
    target = _labels(target)
    _check_same_length(pred, target)
    return (pred == target.to(pred.device)).float().mean().item()


def top_k_accuracy(logits: Any, target: Any, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores in ``logits`` (N, C).

    ``k=1`` is plain accuracy. Chapter 03 explains it.
    """
    logits = _as_tensor(logits, "logits")
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be float scores of shape (N, C), got shape {tuple(logits.shape)} and dtype "
            f"{logits.dtype}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= logits.shape[1]:
        raise ValueError(
            f"k must be an int between 1 and the number of classes ({logits.shape[1]}), got {k!r}"
        )
    target = _labels(target)
    _check_same_length(logits, target)
    top = logits.topk(k, dim=1).indices  # (N, k)
    return (top == target.to(top.device)[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(pred: Any, target: Any, num_classes: int | None = None) -> torch.Tensor:
    """Count matrix (C, C), int64 on the CPU: entry [i, j] counts samples of true class i predicted as j.

    Rows are true classes and columns are predicted classes, as in scikit-learn. ``pred`` is
    either predicted labels (N,) or logits (N, C). ``num_classes`` defaults to the width of the
    logits, else to the largest label seen plus one. Chapter 03 builds this by hand.
    """
    raw = _as_tensor(pred, "pred")
    pred = _predicted_labels(raw, "pred").cpu()
    target = _labels(target).cpu()
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"pred and target hold different numbers of samples: {pred.shape[0]} and {target.shape[0]}"
        )
    if num_classes is None:
        if raw.ndim == 2:
            num_classes = raw.shape[1]
        elif pred.numel():
            num_classes = int(max(pred.max().item(), target.max().item())) + 1
        else:
            raise ValueError("num_classes is needed when pred and target are empty")
    elif raw.ndim == 2 and raw.shape[1] != num_classes:
        raise ValueError(f"pred holds scores for {raw.shape[1]} classes but num_classes={num_classes}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    for name, labels in (("pred", pred), ("target", target)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                f"got values from {labels.min().item()} to {labels.max().item()}"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.int64)


# --------------------------------------------------------------------------------------------
# Precision, recall and F1 (chapter 03)
# --------------------------------------------------------------------------------------------
AVERAGES = ("macro", "micro", "weighted", None)


def _zero_division(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value in (0, 1) or math.isnan(value))
    ):
        raise ValueError(
            f"zero_division must be 0.0, 1.0 or float('nan') (as in scikit-learn), got {value!r}"
        )
    return float(value)


def _divide(num: torch.Tensor, den: torch.Tensor, zero_division: float) -> torch.Tensor:
    """num / den, with ``zero_division`` where den == 0 (the metric is undefined there)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, zero_division))


def _nanaverage(values: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """Weighted mean of the entries that are not NaN (NaN when all are), as scikit-learn averages."""
    keep = ~torch.isnan(values)
    if not keep.any():
        return float("nan")
    values = values[keep]
    if weights is not None and weights[keep].sum() > 0:
        w = weights[keep]
        return (values * w).sum().item() / w.sum().item()
    return values.mean().item()


def precision_recall_f1(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    *,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> tuple[Any, Any, Any]:
    """Precision, recall and F1 of predicted labels (N,) or logits (N, C) against ``target`` (N,).

    Per class ``c`` (one-vs-rest, read off the confusion matrix): precision ``TP / (TP + FP)``,
    recall ``TP / (TP + FN)``, F1 ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of the two).
    ``average`` combines the classes ``0 .. num_classes - 1``, including classes that never occur:

    * ``"macro"``: the plain mean over classes (each class counts the same);
    * ``"weighted"``: the mean weighted by each class's support (its number of true samples);
    * ``"micro"``: pool the counts of all classes first; for single-label data all three equal
      the accuracy;
    * ``None``: the per-class values as three float64 tensors (C,).

    A value whose denominator is 0 (a class never predicted has no precision, a class absent from
    ``target`` no recall) is ``zero_division``: 0.0, 1.0, or NaN to leave it out of the averages.
    Matches ``sklearn.metrics.precision_recall_fscore_support(target, pred,
    labels=range(num_classes), average=average, zero_division=zero_division)``. Chapter 03 builds it.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of 'macro', 'micro', 'weighted' or None, got {average!r}")
    zd = _zero_division(zero_division)
    cm = confusion_matrix(pred, target, num_classes).to(torch.float64)  # (C, C), rows: true class
    if cm.sum() == 0:
        raise ValueError(
            "precision, recall and F1 of an empty batch are undefined: pred and target have 0 samples"
        )
    tp = cm.diagonal()  # (C,)
    predicted = cm.sum(dim=0)  # (C,) TP + FP
    support = cm.sum(dim=1)  # (C,) TP + FN
    if average == "micro":
        tp, predicted, support = tp.sum(), predicted.sum(), support.sum()
    p = _divide(tp, predicted, zd)
    r = _divide(tp, support, zd)
    f = _divide(2 * tp, predicted + support, zd)
    if average == "micro":
        return p.item(), r.item(), f.item()
    if average is None:
        return p, r, f
    weights = support if average == "weighted" else None
    return _nanaverage(p, weights), _nanaverage(r, weights), _nanaverage(f, weights)


def precision(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    *,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> Any:
    """Precision ``TP / (TP + FP)``: of the samples predicted as a class, the fraction that are.

    Same arguments as :func:`precision_recall_f1`; matches ``sklearn.metrics.precision_score``
    with ``labels=range(num_classes)``. Chapter 03 builds it.
    """
    return precision_recall_f1(pred, target, num_classes, average=average, zero_division=zero_division)[0]


def recall(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    *,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> Any:
    """Recall ``TP / (TP + FN)``: of the samples of a class, the fraction found.

    Same arguments as :func:`precision_recall_f1`; matches ``sklearn.metrics.recall_score`` with
    ``labels=range(num_classes)``. ``average="macro"`` is the balanced accuracy. Chapter 03 builds it.
    """
    return precision_recall_f1(pred, target, num_classes, average=average, zero_division=zero_division)[1]


def f1_score(
    pred: Any,
    target: Any,
    num_classes: int | None = None,
    *,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> Any:
    """F1 ``2 TP / (2 TP + FP + FN)``, the harmonic mean of precision and recall.

    Same arguments as :func:`precision_recall_f1`; matches ``sklearn.metrics.f1_score`` with
    ``labels=range(num_classes)``. Chapter 03 builds it.
    """
    return precision_recall_f1(pred, target, num_classes, average=average, zero_division=zero_division)[2]


# --------------------------------------------------------------------------------------------
# Scores of a binary problem: ROC and precision-recall curves (chapter 03)
# --------------------------------------------------------------------------------------------
def _binary_problem(scores: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N,) as float64 and targets (N,) as float64 0/1, both on the CPU."""
    scores = _as_tensor(scores, "scores").cpu()
    if scores.ndim != 1:
        hint = (
            " (for logits (N, 2) take logits[:, 1] - logits[:, 0]; for one class of many, that column)"
            if scores.ndim == 2
            else ""
        )
        raise ValueError(
            "scores must be a 1-D tensor with one score per sample (N,), got shape "
            f"{tuple(scores.shape)}{hint}"
        )
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.to(torch.float64)
    if not torch.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or Inf)")
    target = _as_tensor(target, "target").cpu()
    if target.ndim != 1 or target.shape[0] != scores.shape[0]:
        raise ValueError(
            f"target must hold one 0/1 label per score, shape ({scores.shape[0]},), got {tuple(target.shape)}"
        )
    if target.is_floating_point() and not ((target == 0) | (target == 1)).all():
        raise ValueError("target must hold binary labels 0 (negative) and 1 (positive)")
    target = target.to(torch.float64)
    if not ((target == 0) | (target == 1)).all():
        raise ValueError(
            "target must hold binary labels 0 (negative) and 1 (positive); for class k of many use (y == k)"
        )
    if scores.numel() == 0:
        raise ValueError("scores and target are empty")
    return scores, target


def _counts_at_thresholds(
    scores: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """False and true positives when predicting positive for ``score >= threshold``, for every distinct score.

    Returns ``fps``, ``tps`` (float64, increasing) and the thresholds (decreasing). Tied scores
    give one threshold: a classifier cannot separate samples with the same score.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    s, t = scores[order], target[order]  # (N,) sorted by decreasing score
    last_of_group = torch.nonzero(s[1:] != s[:-1]).squeeze(1)  # where the next score differs
    idx = torch.cat([last_of_group, torch.tensor([s.numel() - 1])])
    tps = torch.cumsum(t, dim=0)[idx]  # positives with score >= s[idx]
    fps = (idx + 1).to(torch.float64) - tps  # the others are negatives
    return fps, tps, s[idx]


def roc_curve(
    scores: Any, target: Any, *, drop_intermediate: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Receiver operating characteristic: ``(fpr, tpr, thresholds)`` as float64 tensors.

    For each distinct score ``s`` (decreasing), predicting positive for ``score >= s`` gives the
    false-positive rate ``FP / negatives`` and the true-positive rate (recall) ``TP / positives``;
    the curve starts at (0, 0) with the threshold ``inf``. ``drop_intermediate`` drops points that
    lie on a straight segment (they change neither the plot nor the area). Matches
    ``sklearn.metrics.roc_curve`` (same default). Needs both classes in ``target``. Chapter 03 builds it.
    """
    scores, target = _binary_problem(scores, target)
    if target.sum() == 0 or target.sum() == target.numel():
        raise ValueError("the ROC curve needs positive and negative samples; target holds only one class")
    fps, tps, thresholds = _counts_at_thresholds(scores, target)
    if drop_intermediate and fps.numel() > 2:
        corner = (fps.diff(n=2) != 0) | (tps.diff(n=2) != 0)
        keep = torch.cat([torch.tensor([True]), corner, torch.tensor([True])])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    zero = torch.zeros(1, dtype=torch.float64)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), thresholds])
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(scores: Any, target: Any) -> float:
    """Area under the ROC curve (trapezoids), as a Python float; matches ``sklearn.metrics.roc_auc_score``.

    It equals the probability that a random positive scores higher than a random negative
    (a tie counts one half): 0.5 is chance, 1.0 a perfect ranking. Chapter 03 builds it.
    """
    fpr, tpr, _ = roc_curve(scores, target, drop_intermediate=True)
    return torch.trapezoid(tpr, fpr).item()


def precision_recall_curve(
    scores: Any, target: Any, *, drop_intermediate: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision and recall for every threshold: ``(precision, recall, thresholds)``, float64 tensors.

    Thresholds increase; ``precision`` and ``recall`` have one more entry than ``thresholds``: the
    last point is (recall 0, precision 1) with no threshold. A threshold that nothing scores above
    has precision 0 by convention. Matches ``sklearn.metrics.precision_recall_curve`` (same
    default ``drop_intermediate=False``). Needs at least one positive. Chapter 03 builds it.
    """
    scores, target = _binary_problem(scores, target)
    if target.sum() == 0:
        raise ValueError("the precision-recall curve needs at least one positive sample in target")
    fps, tps, thresholds = _counts_at_thresholds(scores, target)
    if drop_intermediate and fps.numel() > 2:
        changes = (tps[:-1].diff() != 0) | (tps[1:].diff() != 0)
        keep = torch.cat([torch.tensor([True]), changes, torch.tensor([True])])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    predicted = tps + fps
    prec = torch.where(predicted > 0, tps / predicted.clamp(min=1), torch.zeros_like(tps))
    rec = tps / tps[-1]
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    return torch.cat([prec.flip(0), one]), torch.cat([rec.flip(0), zero]), thresholds.flip(0)


def average_precision(scores: Any, target: Any) -> float:
    """Average precision: ``sum_k (R_k - R_{k-1}) P_k`` over the thresholds, as a Python float.

    The area under the precision-recall curve drawn as a staircase (no interpolation); the
    score of a random ranking is the fraction of positives. Matches
    ``sklearn.metrics.average_precision_score``. Chapter 03 builds it.
    """
    prec, rec, _ = precision_recall_curve(scores, target)
    return max(0.0, -(rec.diff() * prec[:-1]).sum().item())


# --------------------------------------------------------------------------------------------
# Calibration (chapter 03)
# --------------------------------------------------------------------------------------------
class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (chapter 03); tensors on the CPU.

    ``edges`` (B + 1,) float64; ``counts`` (B,) int64; ``confidence`` (B,) float64, the mean
    predicted probability in each bin; ``accuracy`` (B,) float64, the fraction of correct
    predictions (binary: of positives) in each bin. Empty bins have NaN confidence and accuracy.
    """

    edges: torch.Tensor
    counts: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor


def _confidence_and_outcome(probs: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence and correctness for probabilities (N, C); probability and label for (N,)."""
    probs = _as_tensor(probs, "probs").cpu()
    if not probs.is_floating_point():
        raise TypeError(f"probs must hold float probabilities, got dtype {probs.dtype}")
    probs = probs.to(torch.float64)
    if probs.numel() == 0:
        raise ValueError("probs is empty")
    if not torch.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError(
            "probs must be probabilities in [0, 1]: apply softmax (or sigmoid) to the logits first"
        )
    if probs.ndim == 2:
        if not torch.allclose(probs.sum(dim=1), torch.ones(probs.shape[0], dtype=torch.float64), atol=1e-3):
            raise ValueError(
                "each row of probs (N, C) must sum to 1: pass softmax(logits, dim=1), not logits"
            )
        target = _labels(target)
        _check_same_length(probs, target)
        confidence, pred = probs.max(dim=1)  # (N,), (N,)
        return confidence, (pred == target.cpu()).to(torch.float64)
    if probs.ndim == 1:
        scores, target = _binary_problem(probs, target)
        return scores, target
    raise ValueError(
        f"probs must have shape (N, C) (class probabilities) or (N,) (probability of the positive class), "
        f"got {tuple(probs.shape)}"
    )


def reliability_bins(probs: Any, target: Any, n_bins: int = 15) -> ReliabilityBins:
    """Bin the predictions by confidence and compare, per bin, the mean confidence with the accuracy.

    ``probs`` (N, C) holds class probabilities (the top-label confidence is binned, as in Guo et
    al.); ``probs`` (N,) holds the probability of the positive class of a binary problem, then
    ``accuracy`` is the fraction of positives. ``n_bins`` equal-width bins ``((b-1)/B, b/B]`` (the
    first also holds 0). The non-empty bins match ``sklearn.calibration.calibration_curve``
    (``strategy="uniform"``). Chapter 03 draws reliability diagrams with it.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    confidence, outcome = _confidence_and_outcome(probs, target)
    edges = torch.arange(n_bins + 1, dtype=torch.float64) * (1.0 / n_bins)  # as numpy.linspace computes them
    edges[-1] = 1.0
    bins = torch.searchsorted(edges[1:-1].contiguous(), confidence, right=False)  # (N,) in [0, B)
    counts = torch.bincount(bins, minlength=n_bins)  # (B,)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, confidence)
    sum_outcome = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, outcome)
    nan = torch.full((n_bins,), math.nan, dtype=torch.float64)
    nonempty = counts > 0
    mean_conf = torch.where(nonempty, sum_conf / counts.clamp(min=1), nan)
    mean_outcome = torch.where(nonempty, sum_outcome / counts.clamp(min=1), nan)
    return ReliabilityBins(edges, counts, mean_conf, mean_outcome)


def expected_calibration_error(probs: Any, target: Any, n_bins: int = 15) -> float:
    """Expected calibration error ``sum_b (n_b / N) |accuracy_b - confidence_b|``, as a Python float.

    The gap between confidence and accuracy, averaged over equal-width confidence bins weighted by
    their number of samples (Naeini et al.; Guo et al. use 15 bins). 0 means calibrated in every
    bin. Same inputs and bins as :func:`reliability_bins`. Chapter 03 builds it.
    """
    bins = reliability_bins(probs, target, n_bins)
    nonempty = bins.counts > 0
    gaps = (bins.accuracy[nonempty] - bins.confidence[nonempty]).abs()
    weights = bins.counts[nonempty].to(torch.float64) / bins.counts.sum()
    return (weights * gaps).sum().item()
