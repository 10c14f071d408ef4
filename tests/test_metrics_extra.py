"""The metrics chapter 03 adds to utils.metrics, against scikit-learn: precision / recall / F1 with
every average (classes that never occur included), ROC and precision-recall curves with tied scores,
and calibration bins and the expected calibration error (confidences exactly on bin edges included).
Also the threshold explorer widget of chapter 03, whose numbers must agree with these metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from utils import metrics as M

AVERAGES = ["macro", "micro", "weighted", None]
ZERO_DIVISION = [0.0, 1.0, float("nan")]


def _sk_prfs(target, pred, num_classes, average, zero_division):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about undefined values, which is the point here
        p, r, f, _ = skm.precision_recall_fscore_support(
            np.asarray(target),
            np.asarray(pred),
            labels=np.arange(num_classes),
            average=average,
            zero_division=zero_division,
        )
    return p, r, f


def _assert_close(ours, theirs):
    if isinstance(ours, torch.Tensor):
        assert ours.dtype == torch.float64
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12, atol=1e-12, equal_nan=True)
    else:
        assert isinstance(ours, float)
        if math.isnan(theirs):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


# ---- precision, recall, F1 ---------------------------------------------------------------------


def _labels_with_gaps(seed, n=60, c=7):
    """Predictions and targets where class 5 is never predicted, class 6 never true, class 4 neither."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 6, (n,), generator=g)
    target[target == 4] = 0
    pred = torch.where(torch.rand(n, generator=g) < 0.6, target, torch.randint(0, 7, (n,), generator=g))
    pred[(pred == 5) | (pred == 4)] = 6
    assert (
        5 in target and 5 not in pred and 6 in pred and 6 not in target and 4 not in target and 4 not in pred
    )
    return pred, target, c


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("zero_division", ZERO_DIVISION)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_f1_match_sklearn_with_absent_classes(average, zero_division, seed):
    pred, target, c = _labels_with_gaps(seed)
    ours = M.precision_recall_f1(pred, target, c, average=average, zero_division=zero_division)
    theirs = _sk_prfs(target, pred, c, average, zero_division)
    for o, t in zip(ours, theirs):
        _assert_close(o, t)
    _assert_close(M.precision(pred, target, c, average=average, zero_division=zero_division), theirs[0])
    _assert_close(M.recall(pred, target, c, average=average, zero_division=zero_division), theirs[1])
    _assert_close(M.f1_score(pred, target, c, average=average, zero_division=zero_division), theirs[2])


def test_f1_matches_sklearn_on_random_labels_and_logits():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        c = int(torch.randint(2, 9, (1,), generator=g))
        n = int(torch.randint(1, 40, (1,), generator=g))
        logits = torch.randn(n, c, generator=g)
        target = torch.randint(0, c, (n,), generator=g)
        for average in AVERAGES:
            expected = _sk_prfs(target, logits.argmax(1), c, average, 0.0)[2]
            _assert_close(M.f1_score(logits, target, average=average), expected)  # C from the logits' width


def test_micro_average_is_accuracy_and_macro_recall_is_balanced_accuracy():
    pred, target, c = _labels_with_gaps(4)
    acc = M.accuracy(pred, target)
    for value in M.precision_recall_f1(pred, target, c, average="micro"):
        assert value == pytest.approx(acc)
    present = np.unique(target.numpy())  # balanced accuracy averages over the classes that occur
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": on purpose
        balanced = skm.balanced_accuracy_score(target.numpy(), pred.numpy())
    assert M.recall(pred, target, c, average="macro", zero_division=float("nan")) == pytest.approx(balanced)
    assert len(present) < c


def test_known_values_and_the_absent_class_convention():
    pred, target = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    p, r, f = M.precision_recall_f1(pred, target, 3, average=None)
    torch.testing.assert_close(p, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r, torch.tensor([1.0, 2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(f, torch.tensor([2 / 3, 0.8, 0.0], dtype=torch.float64))
    # class 2 never occurs: macro F1 counts it as 0 (zero_division=0) or leaves it out (NaN)
    assert M.f1_score(pred, target, 3) == pytest.approx((2 / 3 + 0.8) / 3)
    assert M.f1_score(pred, target, 3, zero_division=float("nan")) == pytest.approx((2 / 3 + 0.8) / 2)
    assert M.f1_score(target, target, 2) == 1.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(average="binary"), ValueError, "average must be"),
        (dict(zero_division=0.5), ValueError, "zero_division"),
        (dict(zero_division="warn"), ValueError, "zero_division"),
    ],
)
def test_prf_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        M.precision_recall_f1(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, **kwargs)


def test_prf_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        M.f1_score(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)


# ---- ROC and precision-recall curves --------------------------------------------------------------


def _binary_scores(seed, n=80, tied=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=g) < 0.3).long()
    scores = target * 0.8 + torch.randn(n, generator=g)
    if tied:
        scores = (scores * 2).round() / 2  # few distinct values: many ties, also across classes
    return scores.to(dtype), target


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(seed, tied, drop):
    scores, target = _binary_scores(seed, tied=tied)
    fpr, tpr, thr = M.roc_curve(scores, target, drop_intermediate=drop)
    e_fpr, e_tpr, e_thr = skm.roc_curve(target.numpy(), scores.numpy(), drop_intermediate=drop)
    for ours, theirs in ((fpr, e_fpr), (tpr, e_tpr), (thr, e_thr)):
        assert ours.dtype == torch.float64
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)
    assert M.roc_auc(scores, target) == pytest.approx(
        skm.roc_auc_score(target.numpy(), scores.numpy()), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("drop", [True, False])
def test_precision_recall_curve_matches_sklearn(seed, tied, drop):
    scores, target = _binary_scores(seed, tied=tied, dtype=torch.float64)
    prec, rec, thr = M.precision_recall_curve(scores, target, drop_intermediate=drop)
    e_prec, e_rec, e_thr = skm.precision_recall_curve(target.numpy(), scores.numpy(), drop_intermediate=drop)
    for ours, theirs in ((prec, e_prec), (rec, e_rec), (thr, e_thr)):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)
    assert M.average_precision(scores, target) == pytest.approx(
        skm.average_precision_score(target.numpy(), scores.numpy()), abs=1e-12
    )


def test_auc_is_the_probability_that_a_positive_outranks_a_negative():
    scores, target = _binary_scores(7, n=120)
    pos, neg = scores[target == 1], scores[target == 0]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert M.roc_auc(scores, target) == pytest.approx(wins.mean().item(), abs=1e-12)


def test_curves_known_values_and_all_tied_scores():
    scores, target = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    assert M.roc_auc(scores, target) == pytest.approx(0.75)
    assert M.average_precision(scores, target) == pytest.approx(0.8333333333)
    flat = torch.full((6,), 0.3)  # one threshold only: the diagonal, AUC 0.5
    assert M.roc_auc(flat, torch.tensor([0, 1, 0, 1, 0, 0])) == pytest.approx(0.5)
    assert M.average_precision(flat, torch.tensor([0, 1, 0, 1, 0, 0])) == pytest.approx(2 / 6)
    assert M.roc_auc(scores.numpy(), target.bool().numpy()) == pytest.approx(0.75)  # NumPy and bool work


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: M.roc_curve(torch.rand(5), torch.ones(5, dtype=torch.long)), "only one class"),
        (
            lambda: M.precision_recall_curve(torch.rand(5), torch.zeros(5, dtype=torch.long)),
            "at least one positive",
        ),
        (lambda: M.roc_auc(torch.rand(5, 2), torch.tensor([0, 1, 0, 1, 0])), r"one score per sample"),
        (lambda: M.roc_auc(torch.rand(5), torch.tensor([0, 1, 2, 1, 0])), "binary labels"),
        (lambda: M.roc_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1])), "finite"),
        (lambda: M.roc_auc(torch.rand(4), torch.tensor([0, 1, 1])), r"shape \(4,\)"),
    ],
)
def test_curves_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- calibration -------------------------------------------------------------------------------------


def _numpy_ece(conf, correct, n_bins):
    """An independent NumPy version of the binned ECE, with the bins of calibration_curve."""
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(bins[1:-1], conf)
    return sum(
        np.mean(ids == b) * abs(correct[ids == b].mean() - conf[ids == b].mean())
        for b in range(n_bins)
        if np.any(ids == b)
    )


def _probs_on_edges(seed, n=200, c=4):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, dim=1)
    # some confidences exactly on bin edges (as numpy.linspace computes them: 0.7 is 0.7000000000000001),
    # where torch.linspace would differ in the last bit and put the sample in the neighbouring bin
    edges = [
        *np.linspace(0, 1, 11)[[3, 5, 7, 10]],
        *np.linspace(0, 1, 16)[[5, 8, 13]],
        *np.linspace(0, 1, 6)[[2, 4]],
    ]
    for i, top in enumerate(edges * 2):
        rest = (1 - top) / (c - 1)
        probs[i] = torch.full((c,), rest, dtype=torch.float64)
        probs[i, i % c] = top
    probs[20] = 1.0 / c
    target = torch.where(
        torch.rand(n, generator=g) < 0.7, probs.argmax(1), torch.randint(0, c, (n,), generator=g)
    )
    return probs, target


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_reliability_bins_match_calibration_curve_on_top_label(n_bins, seed):
    probs, target = _probs_on_edges(seed)
    bins = M.reliability_bins(probs, target, n_bins)
    conf, pred = probs.max(1)
    correct = (pred == target).long().numpy()
    prob_true, prob_pred = calibration_curve(correct, conf.numpy(), n_bins=n_bins, strategy="uniform")
    nonempty = bins.counts > 0
    np.testing.assert_allclose(bins.accuracy[nonempty].numpy(), prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins.confidence[nonempty].numpy(), prob_pred, rtol=1e-12)
    assert bins.counts.sum().item() == len(target) and bins.counts.dtype == torch.int64
    np.testing.assert_array_equal(bins.edges.numpy(), np.linspace(0, 1, n_bins + 1))
    assert torch.isnan(bins.accuracy[~nonempty]).all()
    ece = M.expected_calibration_error(probs, target, n_bins)
    assert ece == pytest.approx(_numpy_ece(conf.numpy(), correct, n_bins), abs=1e-12)


def test_binary_reliability_matches_calibration_curve():
    g = torch.Generator().manual_seed(5)
    p = torch.rand(300, generator=g)
    p[:10] = torch.tensor(
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.2, 0.4, 0.6, 0.8]
    )  # exactly on the edges of 5 bins
    y = (torch.rand(300, generator=g) < p).long()
    bins = M.reliability_bins(p, y, 5)
    prob_true, prob_pred = calibration_curve(y.numpy(), p.double().numpy(), n_bins=5)
    np.testing.assert_allclose(bins.accuracy.numpy(), prob_true, rtol=1e-12)
    np.testing.assert_allclose(bins.confidence.numpy(), prob_pred, rtol=1e-12)


def test_ece_known_values():
    # 4 samples at confidence 0.9 with 2 correct, 4 at 0.6 with 3 correct: ECE = 0.5 * 0.4 + 0.5 * 0.15
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 4)
    target = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0])
    assert M.expected_calibration_error(probs, target, n_bins=10) == pytest.approx(0.275)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert M.expected_calibration_error(perfect, torch.tensor([0, 1])) == 0.0


@pytest.mark.parametrize(
    "probs, target, match",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), r"\[0, 1\]"),
        (torch.full((4, 3), 0.5), torch.tensor([0, 1, 2, 0]), "sum to 1"),
        (torch.full((2, 2), 0.5), torch.tensor([0, 1, 1]), "different numbers"),
        (torch.full((2, 2, 2), 0.5), torch.tensor([0, 1]), r"\(N, C\)"),
    ],
)
def test_calibration_rejects_bad_input(probs, target, match):
    with pytest.raises(ValueError, match=match):
        M.expected_calibration_error(probs, target)
    with pytest.raises(ValueError, match="n_bins"):
        M.reliability_bins(torch.full((2, 2), 0.5), torch.tensor([0, 1]), n_bins=0)


# ---- the threshold explorer of chapter 03 ---------------------------------------------------------


def test_threshold_summary_agrees_with_sklearn():
    from utils.widgets.losses_metrics import threshold_summary

    scores, target = _binary_scores(8, n=100, tied=True)
    for threshold in (-1.0, 0.0, 0.5, 1.0, 5.0):
        s = threshold_summary(scores, target, threshold)
        pred = (scores >= threshold).long().numpy()
        np.testing.assert_array_equal(
            s["confusion"], skm.confusion_matrix(target.numpy(), pred, labels=[0, 1])
        )
        assert s["precision"] == pytest.approx(skm.precision_score(target.numpy(), pred, zero_division=0.0))
        assert s["recall"] == pytest.approx(skm.recall_score(target.numpy(), pred))
        assert s["f1"] == pytest.approx(skm.f1_score(target.numpy(), pred, zero_division=0.0))
        assert s["false_positive_rate"] == pytest.approx(s["confusion"][0, 1] / (target == 0).sum().item())


def test_threshold_explorer_moves_with_its_slider():
    from utils.widgets.losses_metrics import threshold_explorer

    scores, target = _binary_scores(9, n=100, tied=False)
    widget = threshold_explorer(torch.sigmoid(scores), target, threshold=0.5)
    slider, text = widget.slider, widget.summary
    before = text.value
    slider.value = 0.9
    assert text.value != before and "0.90" in text.value
    assert len(widget.image.value) > 1000  # a PNG was drawn
    with pytest.raises(ValueError, match="target"):
        threshold_explorer(scores, torch.zeros(100, dtype=torch.long))
