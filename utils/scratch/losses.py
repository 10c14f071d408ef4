"""Loss functions written from their formulas, each one matching its PyTorch / torchvision reference.

Chapter 03 builds every one of them by hand, checks it against the reference and explains when to
use which. They take logits or predictions as PyTorch tensors and are differentiable with autograd.

Regression (``pred`` and ``target`` of the same shape):

* :func:`mse_loss` (``F.mse_loss``), :func:`mae_loss` (``F.l1_loss``), :func:`huber_loss`
  (``F.huber_loss``).

Binary and multi-label classification (one logit per output, ``targets`` in [0, 1]):

* :func:`bce` from probabilities (``F.binary_cross_entropy``, whose logs PyTorch clamps at -100);
* :func:`bce_with_logits`, the numerically stable form (``F.binary_cross_entropy_with_logits``);
* :func:`focal_loss`, the binary focal loss (``torchvision.ops.sigmoid_focal_loss``).

Single-label classification (logits (N, C), integer labels (N,)):

* :func:`cross_entropy` with class weights and label smoothing (``F.cross_entropy``) and its
  special case :func:`cross_entropy_label_smoothing`;
* :func:`softmax_focal_loss`, the focal loss for C classes (no PyTorch reference: with
  ``gamma=0`` and no weights it is ``F.cross_entropy``);
* :func:`class_weights`, the "balanced" weights ``N / (C * n_c)`` of scikit-learn.

Every function takes ``reduction="mean" | "sum" | "none"`` like its reference, except the two that
the chapter 03 exercise asks for under the same names (:func:`bce_with_logits` also has it;
:func:`cross_entropy_label_smoothing` always averages).
"""

from __future__ import annotations

import torch

__all__ = [
    "bce",
    "bce_with_logits",
    "class_weights",
    "cross_entropy",
    "cross_entropy_label_smoothing",
    "focal_loss",
    "huber_loss",
    "mae_loss",
    "mse_loss",
    "softmax_focal_loss",
]

REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Checks shared by the losses
# --------------------------------------------------------------------------------------------
def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _float_tensor(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _binary_targets(logits: torch.Tensor, targets: torch.Tensor, first: str = "logits") -> torch.Tensor:
    _float_tensor(logits, first)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    _same_shape(logits, targets, f"{first} and targets")
    targets = targets.to(logits.dtype)
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(
            f"targets must lie in [0, 1] (0/1 labels or soft targets), got values from "
            f"{targets.min().item():.3g} to {targets.max().item():.3g}"
        )
    return targets


def _class_targets(logits: torch.Tensor, y: torch.Tensor) -> None:
    _float_tensor(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != logits.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of {logits.shape[0]} class labels (N,), got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(
            f"y must hold integer class labels (int64), got dtype {y.dtype}; "
            "for probabilities per class use soft targets with a loss written for them"
        )
    c = logits.shape[1]
    if y.numel() and (y.min() < 0 or y.max() >= c):
        raise ValueError(
            f"labels in y must lie in [0, {c - 1}] for {c} classes, got {y.min().item()} to {y.max().item()}"
        )


def _weight_vector(weight: torch.Tensor | None, c: int, like: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor) or weight.shape != (c,):
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor of one weight per class, shape ({c},), got {shape}")
    return weight.to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------
def mse_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error ``(pred - target)^2``, like ``F.mse_loss``. Chapter 03 builds it.

    Its minimiser over a constant prediction is the mean of the targets; a residual ``r`` pulls
    on the prediction with a gradient ``2 r``, so outliers dominate.
    """
    _float_tensor(pred, "pred")
    _same_shape(pred, target, "pred and target")
    return _reduce((pred - target) ** 2, reduction)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean absolute error ``|pred - target|``, like ``F.l1_loss``. Chapter 03 builds it.

    Its minimiser over a constant prediction is the median; every residual pulls with the same
    force (gradient ``sign(r)``), however large.
    """
    _float_tensor(pred, "pred")
    _same_shape(pred, target, "pred and target")
    return _reduce((pred - target).abs(), reduction)


def huber_loss(
    pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """Huber's loss, like ``F.huber_loss``: quadratic for ``|r| <= delta``, linear beyond. Chapter 03 builds
    it.

    ``0.5 r^2`` if ``|r| <= delta`` else ``delta (|r| - 0.5 delta)``, with ``r = pred - target``:
    the gradient is ``r`` near zero and capped at ``delta`` for outliers. ``F.smooth_l1_loss`` with
    ``beta`` is the same loss divided by ``beta``.
    """
    _float_tensor(pred, "pred")
    _same_shape(pred, target, "pred and target")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    r = (pred - target).abs()
    loss = torch.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# Binary cross-entropy
# --------------------------------------------------------------------------------------------
def bce(probs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy from probabilities, like ``F.binary_cross_entropy``. Chapter 03 builds it.

    ``-(t log p + (1 - t) log(1 - p))`` with each log clamped at -100, as PyTorch does, so that a
    probability of exactly 0 or 1 gives a large finite loss instead of infinity. The clamp is
    also why this form is wrong for confident mistakes: ``sigmoid(z)`` rounds to 1 for logits
    above about 17 (float32), and the loss of such a sample is stuck at 100 whatever ``z`` is.
    Use :func:`bce_with_logits` on logits.
    """
    targets = _binary_targets(probs, targets, "probs")
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("probs must be probabilities in [0, 1]; for logits use bce_with_logits")
    log_p = probs.log().clamp(min=-100)
    log_not_p = (1 - probs).log().clamp(min=-100)
    return _reduce(-(targets * log_p + (1 - targets) * log_not_p), reduction)


def bce_with_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy of ``sigmoid(logits)``, computed stably from the logits. Chapter 03 builds it.

    Like ``F.binary_cross_entropy_with_logits``. With ``log sigmoid(z) = -softplus(-z)`` and
    ``log(1 - sigmoid(z)) = -softplus(z)`` the loss is ``softplus(z) - t z``, and
    ``softplus(z) = max(z, 0) + log(1 + exp(-|z|))`` never overflows: exp only sees numbers <= 0.
    ``pos_weight`` (broadcast over the last dimension) multiplies the loss of the positive term.
    logits, targets: same shape (any), targets in [0, 1].
    """
    targets = _binary_targets(logits, targets)
    softplus_neg = logits.clamp(max=0).neg() + torch.log1p(
        torch.exp(-logits.abs())
    )  # softplus(-z) = -log sigmoid(z)
    if pos_weight is None:
        loss = (
            softplus_neg + (1 - targets) * logits
        )  # softplus(z) - t z, since softplus(z) = softplus(-z) + z
    else:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        loss = (1 - targets) * logits + (1 + (pos_weight - 1) * targets) * softplus_neg
    return _reduce(loss, reduction)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary focal loss of Lin et al., like ``torchvision.ops.sigmoid_focal_loss``. Chapter 03 builds it.

    ``alpha_t (1 - p_t)^gamma * BCE`` with ``p = sigmoid(logits)``, ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``; a negative ``alpha`` turns the weighting off
    (torchvision's convention). ``gamma = 0`` and ``alpha < 0`` give :func:`bce_with_logits`.
    Note the default ``reduction="mean"``, where torchvision's default is ``"none"``.
    """
    targets = _binary_targets(logits, targets)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to turn the weighting off), got {alpha!r}")
    p = torch.sigmoid(logits)
    ce = bce_with_logits(logits, targets, reduction="none")  # -log p_t, stable
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma  # easy examples (p_t near 1) are down-weighted
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------------
# Categorical cross-entropy
# --------------------------------------------------------------------------------------------
def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    shifted = logits - logits.max(dim=1, keepdim=True).values  # (N, C), each row's max is 0
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()  # (N, C)


def cross_entropy(
    logits: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy with class weights and label smoothing, like ``F.cross_entropy``. Chapter 03
    builds it.

    logits: (N, C), y: (N,) int64. The target distribution is ``(1 - eps) onehot(y) + eps / C``.
    With ``weight`` (C,), sample n's term ``-sum_c q_c log p_c`` becomes ``-sum_c w_c q_c log p_c``
    and the ``"mean"`` divides the sum by ``sum_n w[y_n]``, not by N (PyTorch's convention), so
    that the loss is a weighted average.
    """
    _class_targets(logits, y)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    n, c = logits.shape
    log_p = _log_softmax(logits)  # (N, C)
    w = _weight_vector(weight, c, logits)
    w_all = torch.ones(c, dtype=logits.dtype, device=logits.device) if w is None else w  # (C,)
    nll = -log_p.gather(1, y[:, None]).squeeze(1) * w_all[y]  # (N,) -w_y log p_y
    smooth = -(log_p * w_all).sum(dim=1) / c  # (N,) -sum_c w_c log p_c / C
    loss = (1 - label_smoothing) * nll + label_smoothing * smooth  # (N,)
    if reduction == "mean" and w is not None:
        return loss.sum() / w[y].sum()
    return _reduce(loss, reduction)


def cross_entropy_label_smoothing(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against smoothed targets ``(1 - smoothing) onehot(y) + smoothing / C``. Chapter 03.

    Equal to ``F.cross_entropy(logits, y, label_smoothing=smoothing)``; stable for any logits.
    """
    return cross_entropy(logits, y, label_smoothing=smoothing)


def softmax_focal_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss for C classes: ``-w_y (1 - p_y)^gamma log p_y`` with ``p = softmax(logits)``. Chapter 03
    builds it.

    logits: (N, C), y: (N,) int64. ``gamma = 0`` without ``weight`` is ``F.cross_entropy``. The
    ``"mean"`` averages over the N samples (as Lin et al. normalise by the number of anchors),
    also when ``weight`` is given.
    """
    _class_targets(logits, y)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    log_p_y = _log_softmax(logits).gather(1, y[:, None]).squeeze(1)  # (N,)
    loss = -((1 - log_p_y.exp()) ** gamma) * log_p_y  # (N,)
    w = _weight_vector(weight, logits.shape[1], logits)
    if w is not None:
        loss = w[y] * loss
    return _reduce(loss, reduction)


def class_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """ "Balanced" class weights ``N / (C * n_c)`` as float32 (C,), like scikit-learn's
    ``compute_class_weight``.

    A rare class gets a large weight, so that every class contributes the same total weight to a
    weighted loss. Every class must occur at least once in ``targets``. Chapter 03 uses them.
    """
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1 or targets.is_floating_point():
        raise ValueError("targets must be a 1-D tensor of integer class labels")
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got {targets.min().item()} to {targets.max().item()}"
        )
    counts = torch.bincount(targets.long().cpu(), minlength=num_classes).to(torch.float64)  # (C,)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().squeeze(1).tolist()
        raise ValueError(f"classes {missing} never occur in targets: their balanced weight would be infinite")
    return (targets.numel() / (num_classes * counts)).float()
