"""utils.metrics against scikit-learn's accuracy_score, top_k_accuracy_score and confusion_matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from utils.metrics import accuracy, confusion_matrix, top_k_accuracy


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g)  # continuous scores: no ties
    target = torch.randint(0, 7, (200,), generator=g)
    target[:60] = logits[:60].argmax(1)  # make accuracy well above chance
    return logits, target


def test_accuracy_matches_sklearn_for_logits_and_labels(scores):
    logits, target = scores
    expected = skm.accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert 0.3 < expected < 1.0
    assert accuracy(logits, target) == pytest.approx(expected, abs=1e-7)
    assert accuracy(logits.argmax(1), target) == pytest.approx(expected, abs=1e-7)
    assert accuracy(logits.numpy(), target.numpy()) == pytest.approx(expected, abs=1e-7)  # NumPy works too
    assert isinstance(accuracy(logits, target), float)


def test_accuracy_known_values():
    assert accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([1, 1])) == 0.5


@pytest.mark.parametrize(
    "output, target, error, match",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2]), ValueError, "different numbers"),
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), ValueError, "empty"),
        (torch.randn(4), torch.tensor([0, 1, 0, 1]), TypeError, "threshold"),
        (torch.randn(4, 3), torch.randn(4, 3), ValueError, "one-hot"),
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]), TypeError, "integer"),
        (torch.randn(2, 3, 4), torch.tensor([0, 1]), ValueError, r"\(N, C\)"),
    ],
)
def test_accuracy_rejects_bad_input(output, target, error, match):
    with pytest.raises(error, match=match):
        accuracy(output, target)


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_top_k_accuracy_matches_sklearn(scores, k):
    logits, target = scores
    expected = skm.top_k_accuracy_score(target.numpy(), logits.numpy(), k=k, labels=np.arange(7))
    assert top_k_accuracy(logits, target, k) == pytest.approx(expected, abs=1e-7)


def test_top_k_accuracy_is_monotone_and_k1_is_accuracy(scores):
    logits, target = scores
    values = [top_k_accuracy(logits, target, k) for k in range(1, 8)]
    assert values == sorted(values) and values[-1] == 1.0
    assert values[0] == pytest.approx(accuracy(logits, target))
    with pytest.raises(ValueError, match="between 1 and"):
        top_k_accuracy(logits, target, k=8)


def test_confusion_matrix_matches_sklearn(scores):
    logits, target = scores
    pred = logits.argmax(1)
    expected = skm.confusion_matrix(target.numpy(), pred.numpy(), labels=np.arange(7))
    cm = confusion_matrix(pred, target, 7)
    assert cm.dtype == torch.int64 and cm.shape == (7, 7)
    np.testing.assert_array_equal(cm.numpy(), expected)
    np.testing.assert_array_equal(
        confusion_matrix(logits, target).numpy(), expected
    )  # logits: C from the width
    assert cm.sum().item() == 200
    assert cm.diagonal().sum().item() / 200 == pytest.approx(accuracy(logits, target))


def test_confusion_matrix_rows_are_true_classes_and_absent_classes_count_zero():
    cm = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 1] = expected[1, 1] = expected[0, 0] = 1  # true 0 predicted 1 sits in row 0, column 1
    np.testing.assert_array_equal(cm.numpy(), expected)
    # num_classes inferred from the largest label
    assert confusion_matrix(torch.tensor([2, 0]), torch.tensor([0, 0])).shape == (3, 3)


def test_confusion_matrix_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.randn(2, 4), torch.tensor([0, 1]), num_classes=3)
