"""Chapter 03 (assignment ``03_losses_metrics``): losses and metrics, checked against PyTorch,
torchvision and scikit-learn.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch.nn.functional``, ``torchvision.ops`` and ``sklearn.metrics``, computed in the grading
process. One point per question. Tolerances: float32 ``1e-5 + 1e-5 * |expected|`` (focal loss:
``1e-6 + 1e-4 * |expected|``, since ``(1 - p_t)^gamma`` may be computed in several equally good ways),
float64 ``1e-10 + 1e-8 * |expected|``; the confusion matrix must match exactly, macro-F1 within
``1e-6``.

* q1 ``bce_with_logits(logits, targets)``: the mean binary cross-entropy of ``sigmoid(logits)``, a
  0-dim tensor, like ``F.binary_cross_entropy_with_logits``. Shapes (N,) and (N, C), a single
  logit, soft targets, float64; logits in the hundreds and thousands (either sign) must give
  finite, correct values: the form "sigmoid, then log" gives Inf there.
* q2 ``cross_entropy_label_smoothing(logits, y, smoothing)``: like ``F.cross_entropy(logits, y,
  label_smoothing=smoothing)``; smoothing 0, 0.05 to 0.5 and 1; C = 2; N = 1; float64; logits in the
  thousands and around +-3000 (float32 logits around +3000 are spaced 2.4e-4 apart, so that case
  allows ``5e-4``: ``logits - logsumexp(logits)`` is stable there but rounds). Spreading
  ``smoothing / (C - 1)`` over the wrong classes only is a different loss and fails.
* q3 ``focal_loss(logits, targets, alpha, gamma)``: like ``torchvision.ops.sigmoid_focal_loss(...,
  reduction="mean")``; gamma 0 to 3 (0.5 included), alpha 0.25 to 0.9 and -1 (no weighting, the
  torchvision convention); shapes (N,) and (N, C); float64; logits in the hundreds.
* q4 ``confusion_matrix(pred, y, num_classes)`` (int64 (C, C), rows true, columns predicted, like
  ``sklearn.metrics.confusion_matrix(y, pred, labels=range(C))``) and ``macro_f1(pred, y,
  num_classes)`` (like ``sklearn.metrics.f1_score(y, pred, labels=range(C), average="macro",
  zero_division=0)``): classes never predicted, never true, or absent from both (they count with
  F1 = 0), N = 1, two classes, perfect and all-wrong predictions. Both must leave their inputs unchanged.
* q5 (make it work, 2 points) ``predict(images (B, 1, 8, 8)) -> labels (B,)`` (or scores (B, 10)) of a
  classifier trained on :func:`imbalanced_digits` (classes 5-9 with 3 training images each): its
  macro-F1 on the 360 images of the digits' test split, which the exercise never loads; 2 points
  from 0.80, 1 from 0.70 (plain cross-entropy reaches about 0.72, class weights or oversampling
  about 0.83); 30 s for all predictions.
* r1-r6 (review, half a point each): a loss, macro-F1, F1, average precision, a confusion-matrix
  count (an int) and a multiple-choice diagnosis, in the notebook's ``answers`` dict.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the reference each question
reproduces (``F.binary_cross_entropy_with_logits`` in q1, ``F.cross_entropy`` in q2, torchvision's
focal loss in q3, scikit-learn in q4; building blocks such as ``F.logsigmoid`` stay allowed) and the
course's own modules (``utils.metrics``, ``utils.scratch``, ...).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score
from torchvision.ops import sigmoid_focal_loss

from ..challenge import MakeItWork
from ..core import Case, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "03_losses_metrics"
TITLE = "Losses and metrics"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-10, "rtol": 1e-8}}
FOCAL_TOL = {F32: {"atol": 1e-6, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _binary(g: torch.Generator, *shape: int, dtype: torch.dtype = F32, p: float = 0.4) -> torch.Tensor:
    return (torch.rand(*shape, generator=g) < p).to(dtype)


# --------------------------------------------------------------------------- q1 BCE with logits

BCE_HINT = (
    "use the stable form max(z, 0) - z * t + log(1 + exp(-|z|)) (torch.log1p), averaged over all "
    "entries and returned as a 0-dim tensor; sigmoid followed by log gives log(0) = -inf once "
    "sigmoid(z) rounds to 0 or 1 (|z| above about 17 in float32)"
)


def bce_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("N=8, 0/1 targets", _randn(g, 8), _binary(g, 8)),
        ("a single logit (N=1)", _randn(g, 1), _binary(g, 1, p=0.5)),
        ("multi-label (N, C) = (6, 4)", _randn(g, 6, 4) * 2, _binary(g, 6, 4)),
        ("soft targets in [0, 1]", _randn(g, 10) * 3, torch.rand(10, generator=g)),
        ("float64", _randn(g, 12, dtype=F64) * 2, _binary(g, 12, dtype=F64)),
        ("logits in the hundreds (randn * 100), float32", _randn(g, 16) * 100, _binary(g, 16, p=0.5)),
        ("logits around -200 with positive targets", _randn(g, 5) - 200, torch.ones(5)),
        (
            "logits in the thousands (randn * 1000), float64",
            _randn(g, 3, 5, dtype=F64) * 1000,
            _binary(g, 3, 5, dtype=F64, p=0.5),
        ),
    ]
    cases = []
    for label, logits, targets in inputs:
        expected = F.binary_cross_entropy_with_logits(logits, targets)
        cases.append(
            Case(
                label,
                "bce_with_logits",
                {"logits": logits, "targets": targets},
                expected,
                **TOL[logits.dtype],
                hint=BCE_HINT,
                unchanged=("logits", "targets"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 label smoothing

SMOOTH_HINT = (
    "the target distribution is q = (1 - smoothing) * one_hot(y) + smoothing / C, with smoothing / C on "
    "every class including the true one; loss = mean over the batch of -sum_c q_c log_softmax(logits)_c, "
    "a 0-dim tensor; compute log_softmax stably (subtract each row's max, or torch.logsumexp)"
)


def smoothing_cases(g: torch.Generator) -> list[Case]:
    def logits_and_labels(n: int, c: int, dtype: torch.dtype = F32, scale: float = 1.0, shift: float = 0.0):
        return _randn(g, n, c, dtype=dtype) * scale + shift, torch.randint(0, c, (n,), generator=g)

    inputs = [
        ("N=6, C=5, smoothing 0.1", *logits_and_labels(6, 5), 0.1),
        ("smoothing 0 (plain cross-entropy)", *logits_and_labels(5, 4), 0.0),
        ("smoothing 0.3, C=2", *logits_and_labels(7, 2), 0.3),
        ("N=1 (a single example), smoothing 0.2", *logits_and_labels(1, 6), 0.2),
        ("smoothing 0.5, float64", *logits_and_labels(8, 10, F64, scale=3.0), 0.5),
        ("smoothing 1 (uniform targets)", *logits_and_labels(4, 3), 1.0),
        (
            "logits in the thousands (randn * 1000), smoothing 0.1",
            *logits_and_labels(6, 5, scale=1000.0),
            0.1,
        ),
        ("logits around +3000, smoothing 0.05", *logits_and_labels(5, 4, shift=3000.0), 0.05),
        ("logits around -3000, float64, smoothing 0.2", *logits_and_labels(5, 3, F64, shift=-3000.0), 0.2),
    ]
    cases = []
    for label, logits, y, smoothing in inputs:
        expected = F.cross_entropy(logits, y, label_smoothing=smoothing)
        tol = TOL[logits.dtype]
        if (
            "+3000" in label
        ):  # float32 spacing near 3000 is 2.4e-4: logits - logsumexp(logits) is stable but rounds
            tol = {"atol": 5e-4, "rtol": 1e-5}
        cases.append(
            Case(
                label,
                "cross_entropy_label_smoothing",
                {"logits": logits, "y": y, "smoothing": smoothing},
                expected,
                **tol,
                hint=SMOOTH_HINT,
                unchanged=("logits", "y"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 focal loss

FOCAL_HINT = (
    "with p = sigmoid(z): ce = BCE-with-logits per entry (stable, no reduction), p_t = p t + (1 - p)(1 - t), "
    "loss = ce * (1 - p_t) ** gamma, then multiply by alpha t + (1 - alpha)(1 - t) only when alpha >= 0; "
    "return the mean over all entries as a 0-dim tensor"
)


def focal_cases(g: torch.Generator) -> list[Case]:
    inputs = [  # (label, logits, targets, alpha, gamma)
        ("alpha 0.25, gamma 2, N=20", _randn(g, 20) * 3, _binary(g, 20, p=0.2), 0.25, 2.0),
        ("gamma 0 (alpha-weighted BCE), alpha 0.5", _randn(g, 10) * 2, _binary(g, 10), 0.5, 0.0),
        ("alpha -1 (no weighting), gamma 2", _randn(g, 12) * 2, _binary(g, 12), -1.0, 2.0),
        (
            "fractional gamma 0.5, alpha 0.75, (N, C) = (5, 3)",
            _randn(g, 5, 3) * 2,
            _binary(g, 5, 3),
            0.75,
            0.5,
        ),
        ("gamma 3, alpha 0.9, a single logit", _randn(g, 1), torch.ones(1), 0.9, 3.0),
        (
            "float64, gamma 1, alpha 0.25",
            _randn(g, 4, 6, dtype=F64) * 4,
            _binary(g, 4, 6, dtype=F64),
            0.25,
            1.0,
        ),
        (
            "logits in the hundreds (randn * 100), alpha 0.25, gamma 2",
            _randn(g, 16) * 100,
            _binary(g, 16, p=0.5),
            0.25,
            2.0,
        ),
    ]
    cases = []
    for label, logits, targets, alpha, gamma in inputs:
        expected = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="mean")
        cases.append(
            Case(
                label,
                "focal_loss",
                {"logits": logits, "targets": targets, "alpha": alpha, "gamma": gamma},
                expected,
                **FOCAL_TOL[logits.dtype],
                hint=FOCAL_HINT,
                unchanged=("logits", "targets"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 confusion matrix and macro-F1

CM_HINT = (
    "entry [i, j] counts the samples of true class i predicted as class j (rows: true, columns: predicted), "
    "an int64 tensor of shape (num_classes, num_classes) even for classes that never occur; e.g. "
    "torch.bincount(y * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)"
)
F1_HINT = (
    "per class c: F1_c = 2 TP / (2 TP + FP + FN), and 0 when 2 TP + FP + FN = 0 (a class that never occurs); "
    "macro-F1 is the plain mean over all num_classes classes, including the absent ones; "
    "read TP (the diagonal), FP (column sums minus TP) and FN (row sums minus TP) off the confusion matrix; "
    "2 P R / (P + R) gives 0/0 = NaN for a class never predicted or never present, the counts form does not"
)


def _sklearn_reference(pred: torch.Tensor, y: torch.Tensor, c: int) -> tuple[torch.Tensor, float]:
    labels = np.arange(c)
    cm = torch.from_numpy(confusion_matrix(y.numpy(), pred.numpy(), labels=labels).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # undefined precision / recall of absent classes: zero_division=0 is the answer
        f1 = float(f1_score(y.numpy(), pred.numpy(), labels=labels, average="macro", zero_division=0.0))
    return cm, f1


def classification_cases(g: torch.Generator) -> list[Case]:
    def noisy(n: int, c: int, correct: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (n,), generator=g)
        pred = torch.where(torch.rand(n, generator=g) < correct, y, torch.randint(0, c, (n,), generator=g))
        return pred, y

    pred_a, y_a = noisy(50, 5)
    pred_b, y_b = noisy(40, 4)
    pred_b[pred_b == 3] = 0  # class 3 is never predicted
    y_c = torch.randint(0, 3, (30,), generator=g)  # class 3 never true, but predicted
    pred_c = torch.where(torch.rand(30, generator=g) < 0.5, y_c, torch.randint(0, 4, (30,), generator=g))
    pred_c[:2] = 3
    pred_d, y_d = noisy(25, 3)  # num_classes 6: classes 3, 4, 5 occur nowhere
    y_e = torch.randint(0, 6, (20,), generator=g)
    inputs = [  # (label, pred, y, num_classes)
        ("N=50, C=5", pred_a, y_a, 5),
        ("class 3 is never predicted", pred_b, y_b, 4),
        ("class 3 is predicted but never true", pred_c, y_c, 4),
        ("num_classes=6 but only classes 0-2 occur", pred_d, y_d, 6),
        ("two classes", *noisy(15, 2, correct=0.7), 2),
        ("a single sample (N=1), C=3", torch.tensor([2]), torch.tensor([1]), 3),
        ("perfect predictions", y_e.clone(), y_e, 6),
        ("every prediction wrong", (y_e + 1) % 6, y_e.clone(), 6),
    ]
    cm_cases, f1_cases = [], []
    for label, pred, y, c in inputs:
        cm, f1 = _sklearn_reference(pred, y, c)
        args = {"pred": pred, "y": y, "num_classes": c}
        cm_cases.append(
            Case(
                f"confusion matrix, {label}",
                "confusion_matrix",
                dict(args),
                cm,
                hint=CM_HINT,
                unchanged=("pred", "y"),
            )
        )
        f1_cases.append(
            Case(
                f"macro-F1, {label}",
                "macro_f1",
                dict(args),
                f1,
                atol=1e-6,
                hint=F1_HINT,
                unchanged=("pred", "y"),
            )
        )
    return cm_cases + f1_cases


# --------------------------------------------------------------------------- q5 make it work

IMBALANCE = 40  # classes 5-9 keep 1 training image in IMBALANCE
N_VALIDATION = 300


def imbalanced_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data of q5: ``(x_fit (N, 1, 8, 8), y_fit (N,), x_val (300, 1, 8, 8), y_val (300,))``.

    From the training split of ``utils.data.digits``: 300 random images make a balanced validation
    set; of the rest, classes 0-4 keep every image and classes 5-9 one in 40 (3 each). The grader
    scores ``predict`` on the digits' test split, which the exercise never loads.
    """
    import utils.data

    train = utils.data.digits("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val, fit = order[:N_VALIDATION], order[N_VALIDATION:]
    keep = []
    for c in range(10):
        idx = fit[train.targets[fit] == c]
        keep.append(idx[: max(1, round(len(idx) / IMBALANCE))] if c >= 5 else idx)
    keep = torch.cat(keep)
    return train.images[keep], train.targets[keep], train.images[val], train.targets[val]


def held_out_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q5: the 360 images of the digits' test split (balanced), and their labels."""
    del seed  # a fixed split: the exercise never loads it
    import utils.data

    test = utils.data.digits("test")
    return test.images, test.targets


def _validation_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = imbalanced_digits()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Loss of a uniform prediction",
        2.302585,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="The probability of the true class is 1/10 whatever the label, so the cross-entropy is "
        "-log(1/10) = ln 10 = 2.303: the loss to expect from a freshly initialised 10-class "
        "network.",
    ),
    Review(
        "r2",
        "Macro-F1 of a constant classifier",
        0.4737,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Negatives: TP = 90, FP = 10, FN = 0, so F1 = 2*90 / (2*90 + 10 + 0) = 0.947; positives: "
        "TP = 0, so F1 = 0; macro-F1 is their plain mean, 0.474 (its accuracy, 0.9, hides the "
        "failure).",
    ),
    Review(
        "r3",
        "F1 from counts",
        0.6667,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Precision = 30/40 = 0.75, recall = 30/50 = 0.6, F1 = 2PR / (P + R) = 0.9 / 1.35 = 0.667 "
        "(the same as 2TP / (2TP + FP + FN) = 60/90).",
    ),
    Review(
        "r4",
        "Average precision of a ranking",
        0.6042,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Precision at each correct detection: 1/1, 2/3, 3/4; the fourth positive is never found "
        "and counts 0. AP = (1 + 0.667 + 0.75 + 0) / 4 = 0.604 (not the mean over the 3 found, "
        "0.806).",
    ),
    Review(
        "r5",
        "Misclassified samples of a class",
        4,
        points=0.5,
        explain="Row 1 holds the samples of true class 1: 2 + 6 + 2 = 10, of which 6 on the diagonal are "
        "right, so 10 - 6 = 4 are misclassified (the column, 1 + 6 + 1, counts predictions "
        "instead).",
    ),
    Review(
        "r6",
        "Metrics with 1% positives",
        {"b", "c"},
        points=0.5,
        explain="(a) accuracy is 0.99 for the constant detector and (d) the fraction of negatives "
        "predicted negative is 1.0 for it: both look perfect. (b) recall of the positives is 0 "
        "for it and (c) average precision ranks the positives: those two tell the detectors "
        "apart.",
    ),
]

QUESTIONS = [
    Question(
        "q1",
        "Binary cross-entropy from logits (stable)",
        ("bce_with_logits",),
        bce_cases,
        forbid=(
            "torch.nn.functional.binary_cross_entropy_with_logits",
            "torch.nn.BCEWithLogitsLoss",
            *COURSE,
        ),
        why="q1 asks for the stable formula written with tensor operations",
    ),
    Question(
        "q2",
        "Cross-entropy with label smoothing",
        ("cross_entropy_label_smoothing",),
        smoothing_cases,
        forbid=(
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss",
            "torch.nn.CrossEntropyLoss",
            *COURSE,
        ),
        why="q2 asks for the smoothed loss written with tensor operations",
    ),
    Question(
        "q3",
        "Binary focal loss",
        ("focal_loss",),
        focal_cases,
        forbid=("torchvision.ops.sigmoid_focal_loss", *COURSE),
        why="q3 asks for the focal loss written with tensor operations",
    ),
    Question(
        "q4",
        "Confusion matrix and macro-F1",
        ("confusion_matrix", "macro_f1"),
        classification_cases,
        forbid=("sklearn", *COURSE),
        why="q4 asks for the counts and the metric computed yourself",
    ),
    MakeItWork(
        "q5",
        "Make it work: imbalanced digits",
        held_out_digits,
        metric="macro_f1",
        num_classes=10,
        steps=((0.80, 2), (0.70, 1)),
        budget=30,
        batch_size=128,
        preview=_validation_digits,
    ),
    *REVIEW,
]
