"""Chapter 03 (assignment ``03_losses_metrics``): losses and metrics the lesson names but does not
write, a classifier trained on imbalanced data, and review questions; checked against PyTorch and
scikit-learn.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch.nn.functional``, ``sklearn.metrics`` or a float64 reference here, computed in the grading
process. One point per implement question. Tolerances: float32 ``1e-5 + 1e-5 * |expected|`` (focal
loss: ``1e-6 + 1e-4 * |expected|``, since ``(1 - p_y)^gamma`` may be computed in several equally good
ways), float64 ``1e-10 + 1e-8 * |expected|``; the mean average precision within ``1e-6``, the
temperature within ``1e-4 * T``.

* q1 (new) ``weighted_bce_with_logits(logits, targets, pos_weight)``: the mean binary cross-entropy
  with the positives' term weighted by ``pos_weight`` (C,) or (1,), like
  ``F.binary_cross_entropy_with_logits(..., pos_weight=...)``, which the lesson names but does not
  write. Shapes (N,) and (N, C), soft targets, pos_weight 1 and below 1, float64; logits in the
  hundreds and thousands of either sign must give finite, correct values.
* q2 (new) ``softmax_focal_loss(logits, y, gamma, weight)``: the mean over the samples of
  ``-weight[y] (1 - p_y)^gamma log p_y`` with ``p = softmax(logits)`` (the lesson names it and uses
  ``utils.scratch.losses.softmax_focal_loss``); gamma 0 (``F.cross_entropy``), 0.5 to 3, class
  weights or None, C = 2, N = 1, logits in the thousands.
* q3 (variant) ``mean_average_precision(scores, targets)``: the mean over the C classes of a
  multi-label classifier of each class's average precision, like ``sklearn.metrics.
  average_precision_score(targets, scores, average="macro")``; tied scores, C = 1, perfect rankings,
  a class with a single positive, rare positives.
* q4 (variant) ``optimal_temperature(logits, y) -> float``: the temperature minimising the
  cross-entropy of ``softmax(logits / T)`` exactly (the lesson searches a grid); over- and
  underconfident logits, two classes, few samples, logits in the hundreds; against a float64 bisection.
* q5 (make it work, 2 points) ``predict(images (B, 1, 8, 8)) -> labels (B,)`` (or scores (B, 10)) of a
  classifier trained on :func:`imbalanced_digits` (classes 5-9 with 3 training images each): its
  macro-F1 on the 360 images of the digits' test split, which the exercise never loads; 2 points
  from 0.80, 1 from 0.70 (plain cross-entropy reaches about 0.72, class weights or oversampling
  about 0.83); 30 s for all predictions.
* r1-r6 (review, half a point each): a loss, macro-F1, F1, average precision, a confusion-matrix
  count (an int) and a multiple-choice diagnosis, in the notebook's ``answers`` dict.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the reference each question
reproduces (``F.binary_cross_entropy_with_logits`` and the softplus / log-sigmoid building blocks in
q1, ``F.cross_entropy`` in q2, scikit-learn in q3, SciPy in q4) and the course's own modules
(``utils.metrics``, ``utils.scratch``, the references of this module, ...).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

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


# --------------------------------------------------------------------------- q1 BCE with a positive weight

BCE_HINT = (
    "with w = pos_weight, the loss of an entry is -(w t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))); "
    "write both logarithms with the softplus, log(1 + e^x) = max(x, 0) + log1p(exp(-|x|)), and collect "
    "the terms: exp then only sees numbers <= 0; pos_weight broadcasts over the last dimension; return "
    "the mean over all entries as a 0-dim tensor"
)


def weighted_bce_cases(g: torch.Generator) -> list[Case]:
    def weight(c: int, dtype: torch.dtype = F32) -> torch.Tensor:
        return torch.rand(c, generator=g, dtype=dtype) * 9 + 0.5  # between 0.5 and 9.5

    inputs = [  # (label, logits, targets, pos_weight)
        ("N=8, 0/1 targets, pos_weight (1,)", _randn(g, 8), _binary(g, 8), weight(1)),
        ("multi-label (N, C) = (6, 4), pos_weight (C,)", _randn(g, 6, 4) * 2, _binary(g, 6, 4), weight(4)),
        ("pos_weight 1 (plain BCE)", _randn(g, 10), _binary(g, 10), torch.ones(1)),
        ("pos_weight 0.2 (positives count less)", _randn(g, 5, 3), _binary(g, 5, 3), torch.full((3,), 0.2)),
        ("soft targets in [0, 1]", _randn(g, 4, 5) * 3, torch.rand(4, 5, generator=g), weight(5)),
        ("float64", _randn(g, 12, 2, dtype=F64) * 2, _binary(g, 12, 2, dtype=F64), weight(2, F64)),
        ("logits in the hundreds (randn * 100)", _randn(g, 16) * 100, _binary(g, 16, p=0.5), weight(1)),
        (
            "logits in the thousands (randn * 1000), float64",
            _randn(g, 3, 5, dtype=F64) * 1000,
            _binary(g, 3, 5, dtype=F64, p=0.5),
            weight(5, F64),
        ),
        ("logits around -200 with positive targets", _randn(g, 5) - 200, torch.ones(5), weight(1)),
    ]
    cases = []
    for label, logits, targets, pos_weight in inputs:
        expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
        cases.append(
            Case(
                label,
                "weighted_bce_with_logits",
                {"logits": logits, "targets": targets, "pos_weight": pos_weight},
                expected,
                **TOL[logits.dtype],
                hint=BCE_HINT,
                unchanged=("logits", "targets", "pos_weight"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 softmax focal loss

FOCAL_HINT = (
    "per sample: -weight[y] (1 - p_y)^gamma log p_y with log p_y from a stable log-softmax (subtract the "
    "row's max) and p_y = exp(log p_y); the mean over the N samples (not divided by the sum of the "
    "weights); weight None means 1 for every class; gamma 0 without weights is the cross-entropy"
)


def softmax_focal_reference(logits: torch.Tensor, y: torch.Tensor, gamma: float, weight) -> torch.Tensor:
    """Mean over the samples of -w_y (1 - p_y)^gamma log p_y, computed in float64."""
    log_p_y = torch.log_softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1)  # (N,)
    focal = (-torch.expm1(log_p_y)).clamp(min=0) ** gamma  # 1 - p_y, accurate when p_y is near 1
    w = torch.ones_like(log_p_y) if weight is None else weight.double()[y]
    return (-(w * focal * log_p_y)).mean().to(logits.dtype)


def softmax_focal_cases(g: torch.Generator) -> list[Case]:
    def logits_and_labels(n: int, c: int, dtype: torch.dtype = F32, scale: float = 2.0, shift: float = 0.0):
        return _randn(g, n, c, dtype=dtype) * scale + shift, torch.randint(0, c, (n,), generator=g)

    def weight(c: int, dtype: torch.dtype = F32) -> torch.Tensor:
        return torch.rand(c, generator=g, dtype=dtype) * 2 + 0.1

    inputs = [  # (label, logits, y, gamma, weight)
        ("gamma 2, N=20, C=5, no weights", *logits_and_labels(20, 5), 2.0, None),
        ("gamma 0 without weights (the cross-entropy)", *logits_and_labels(8, 4), 0.0, None),
        ("gamma 2 with class weights", *logits_and_labels(10, 3), 2.0, weight(3)),
        ("fractional gamma 0.5, weights, float64", *logits_and_labels(9, 6, F64), 0.5, weight(6, F64)),
        ("gamma 1, C=2", *logits_and_labels(12, 2), 1.0, None),
        ("a single sample (N=1), gamma 3", *logits_and_labels(1, 4), 3.0, weight(4)),
        ("confident logits (randn * 20), gamma 2", *logits_and_labels(15, 5, scale=20.0), 2.0, None),
        (
            "logits in the thousands (randn * 1000), gamma 2, float64",
            *logits_and_labels(6, 4, F64, scale=1000.0),
            2.0,
            weight(4, F64),
        ),
    ]
    cases = []
    for label, logits, y, gamma, w in inputs:
        expected = (
            F.cross_entropy(logits, y)
            if gamma == 0 and w is None
            else softmax_focal_reference(logits, y, gamma, w)
        )
        cases.append(
            Case(
                label,
                "softmax_focal_loss",
                {"logits": logits, "y": y, "gamma": gamma, "weight": w},
                expected,
                **FOCAL_TOL[logits.dtype],
                hint=FOCAL_HINT,
                unchanged=("logits", "y", "weight"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 mean average precision

MAP_HINT = (
    "one column (class) at a time: sort its scores in decreasing order, count the positives and the "
    "negatives at or above each *distinct* score (tied scores are one threshold, as in the chapter), "
    "AP = sum over thresholds of (recall step) * precision; the result is the plain mean of the C "
    "average precisions, a Python float or a 0-dim tensor"
)


def _ap_reference(scores: torch.Tensor, targets: torch.Tensor) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(targets.numpy(), scores.double().numpy(), average="macro"))


def map_cases(g: torch.Generator) -> list[Case]:
    def data(n: int, c: int, p: float = 0.3, dtype: torch.dtype = F32, signal: float = 1.0):
        targets = _binary(g, n, c, p=p, dtype=torch.int64)
        targets[torch.randint(0, n, (c,), generator=g), torch.arange(c)] = 1  # every class has a positive
        scores = _randn(g, n, c, dtype=dtype) + signal * targets.to(dtype)
        return scores, targets

    s_ties, t_ties = data(40, 3)
    s_ties = (s_ties * 2).round() / 2  # many tied scores
    s_perfect, t_perfect = data(25, 4)
    s_perfect = (
        t_perfect.float() + torch.rand(25, 4, generator=g) * 0.5
    )  # every positive above every negative
    s_one, t_one = data(30, 3, p=0.05)
    t_one[:, 1] = 0
    t_one[7, 1] = 1  # class 1 has a single positive
    inputs = [
        ("N=50, C=4", *data(50, 4)),
        ("tied scores (rounded to 0.5)", s_ties, t_ties),
        ("a single class (C=1)", *data(20, 1)),
        ("perfect rankings (mAP = 1)", s_perfect, t_perfect),
        ("a class with a single positive", s_one, t_one),
        ("float64, N=300, C=6, weak scores", *data(300, 6, dtype=F64, signal=0.3)),
        ("rare positives (5%), N=400, C=5", *data(400, 5, p=0.05, signal=2.0)),
    ]
    return [
        Case(
            label,
            "mean_average_precision",
            {"scores": scores, "targets": targets},
            _ap_reference(scores, targets),
            atol=1e-6,
            hint=MAP_HINT,
            unchanged=("scores", "targets"),
        )
        for label, scores, targets in inputs
    ]


# --------------------------------------------------------------------------- q4 the optimal temperature


def optimal_temperature_reference(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The T > 0 minimising the mean cross-entropy of logits / T, in float64 (bisection on beta = 1 / T).

    With beta = 1 / T, the loss mean(logsumexp(beta z) - beta z_y) is convex in beta and its derivative
    is mean(E_p[z] - z_y), with p = softmax(beta z): it is negative at beta = 0 when the logits do better
    than chance and positive for large beta when a sample is misclassified, so the root is unique.
    """
    z = logits.double()
    z_y = z.gather(1, y[:, None]).squeeze(1)

    def slope(beta: float) -> float:
        p = torch.softmax(beta * z, dim=1)
        return float(((p * z).sum(dim=1) - z_y).mean())

    if slope(0.0) >= 0 or bool((z.argmax(dim=1) == y).all()):
        raise ValueError("no finite optimal temperature: chance-level or perfectly separated logits")
    low, high = 0.0, 1.0
    while slope(high) < 0:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if slope(middle) < 0:
            low = middle
        else:
            high = middle
    return 1 / ((low + high) / 2)


TEMPERATURE_HINT = (
    "write the mean cross-entropy of softmax(z / T) as a function of T (or of beta = 1 / T, where it is "
    "convex) and find where its derivative is zero: the derivative with respect to beta is the mean of "
    "(the average of z under p) - z_y, so bisection or Newton's method on it converges to machine "
    "precision; a grid of temperatures is not precise enough; return a Python float"
)


def temperature_cases(g: torch.Generator) -> list[Case]:
    def calibrated(n: int, c: int, dtype: torch.dtype = F32) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels drawn from their softmax: calibrated at T = 1."""
        z = _randn(g, n, c, dtype=F64) * 2.5
        y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
        return z.to(dtype), y

    inputs = []  # (label, logits, y)
    for label, n, c, scale, dtype in [
        ("overconfident: calibrated logits * 3, N=500, C=10", 500, 10, 3.0, F32),
        ("underconfident: calibrated logits * 0.4, N=400, C=5", 400, 5, 0.4, F32),
        ("calibrated logits, N=600, C=8", 600, 8, 1.0, F32),
        ("two classes, logits * 2, N=300", 300, 2, 2.0, F32),
        ("float64, logits * 1.7, N=2000, C=6", 2000, 6, 1.7, F64),
        ("few samples: N=25, C=4, logits * 1.5", 25, 4, 1.5, F32),
        ("logits in the hundreds: * 60, N=300, C=5", 300, 5, 60.0, F32),
    ]:
        z, y = calibrated(n, c, dtype)
        z = z * scale
        while (z.argmax(dim=1) == y).all():  # at least one mistake, else the optimum is T -> 0
            y[0] = (y[0] + 1) % c
        inputs.append((label, z, y))
    return [
        Case(
            label,
            "optimal_temperature",
            {"logits": z, "y": y},
            optimal_temperature_reference(z, y),
            rtol=1e-4,
            hint=TEMPERATURE_HINT,
            unchanged=("logits", "y"),
        )
        for label, z, y in inputs
    ]


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
        "Binary cross-entropy with a positive weight (stable)",
        ("weighted_bce_with_logits",),
        weighted_bce_cases,
        forbid=(
            "torch.nn.functional.binary_cross_entropy_with_logits",
            "torch.nn.functional.binary_cross_entropy",
            "torch.nn.BCEWithLogitsLoss",
            "torch.nn.functional.logsigmoid",
            "torch.nn.functional.softplus",
            *COURSE,
        ),
        why="q1 asks for the stable formula derived and written with tensor operations",
    ),
    Question(
        "q2",
        "Softmax focal loss with class weights",
        ("softmax_focal_loss",),
        softmax_focal_cases,
        forbid=(
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss",
            "torch.nn.CrossEntropyLoss",
            "torchvision.ops.sigmoid_focal_loss",
            "utils.grading.checks",  # softmax_focal_reference
            *COURSE,
        ),
        why="q2 asks for the focal loss written with tensor operations",
    ),
    Question(
        "q3",
        "Mean average precision of a multi-label classifier",
        ("mean_average_precision",),
        map_cases,
        forbid=("sklearn", *COURSE),
        why="q3 asks for the metric computed yourself",
    ),
    Question(
        "q4",
        "The optimal temperature",
        ("optimal_temperature",),
        temperature_cases,
        forbid=("scipy", "utils.grading.checks", *COURSE),  # optimal_temperature_reference
        why="q4 asks for the minimum found yourself",
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
