"""Classification metrics: accuracy, top-k accuracy and the confusion matrix.

Each function takes PyTorch tensors (NumPy arrays and lists are converted), checks the shapes it
is given, and agrees with scikit-learn (``accuracy_score``, ``top_k_accuracy_score``,
``confusion_matrix``); the tests compare them. Chapter 02 builds accuracy and the confusion matrix
by hand before switching to these.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["accuracy", "confusion_matrix", "top_k_accuracy"]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor, a NumPy array or a list of numbers, got {type(x).__name__}") from err


def _labels(target: Any, name: str = "target") -> torch.Tensor:
    """Check that ``target`` is a 1-D tensor of integer class labels and return it."""
    target = _as_tensor(target, name)
    if target.ndim != 1:
        hint = " (one-hot targets: take target.argmax(1) first)" if target.ndim == 2 else ""
        raise ValueError(f"{name} must be a 1-D tensor of class labels (N,), got shape {tuple(target.shape)}{hint}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {target.dtype}")
    return target.long()


def _predicted_labels(output: Any, name: str = "output") -> torch.Tensor:
    """Logits or probabilities (N, C) become their argmax (N,); integer labels (N,) pass through."""
    output = _as_tensor(output, name)
    if output.ndim == 2:
        if not output.is_floating_point():
            raise TypeError(f"{name} of shape (N, C) must hold float scores (logits or probabilities), got {output.dtype}")
        return output.argmax(dim=1)
    if output.ndim == 1:
        if output.is_floating_point():
            raise TypeError(
                f"{name} of shape (N,) must hold integer predicted labels, got dtype {output.dtype}; "
                "for one logit per sample (binary classification) threshold it first: (output > 0).long()"
            )
        return _labels(output, name)
    raise ValueError(f"{name} must be logits (N, C) or predicted labels (N,), got shape {tuple(output.shape)}")


def _check_same_length(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"output and target hold different numbers of samples: {pred.shape[0]} and {target.shape[0]}")
    if pred.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined: output and target have 0 samples")


def accuracy(output: Any, target: Any) -> float:
    """Fraction of samples whose predicted class equals the target class, as a Python float.

    ``output`` is either logits / probabilities of shape (N, C), whose argmax is the prediction,
    or predicted integer labels of shape (N,); ``target`` holds the N true labels.
    Chapter 02 builds this by hand.
    """
    pred = _predicted_labels(output)
    target = _labels(target)
    _check_same_length(pred, target)
    return (pred == target.to(pred.device)).float().mean().item()


def top_k_accuracy(logits: Any, target: Any, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores in ``logits`` (N, C).

    ``k=1`` is plain accuracy. Chapter 02 uses it for datasets with many similar classes.
    """
    logits = _as_tensor(logits, "logits")
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be float scores of shape (N, C), got shape {tuple(logits.shape)} and dtype {logits.dtype}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be an int between 1 and the number of classes ({logits.shape[1]}), got {k!r}")
    target = _labels(target)
    _check_same_length(logits, target)
    top = logits.topk(k, dim=1).indices  # (N, k)
    return (top == target.to(top.device)[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(pred: Any, target: Any, num_classes: int | None = None) -> torch.Tensor:
    """Count matrix (C, C), int64 on the CPU: entry [i, j] counts samples of true class i predicted as j.

    Rows are true classes and columns are predicted classes, as in scikit-learn. ``pred`` is
    either predicted labels (N,) or logits (N, C). ``num_classes`` defaults to the width of the
    logits, else to the largest label seen plus one. Chapter 02 builds this by hand.
    """
    raw = _as_tensor(pred, "pred")
    pred = _predicted_labels(raw, "pred").cpu()
    target = _labels(target).cpu()
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"pred and target hold different numbers of samples: {pred.shape[0]} and {target.shape[0]}")
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
