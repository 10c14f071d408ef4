"""utils.metrics.segmentation against scikit-learn: confusion_matrix, accuracy_score, jaccard_score and
f1_score (Dice), with ignored pixels, logits, classes absent from both sides, and batch accumulation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from utils.metrics import segmentation as S

C = 6


def random_masks(
    seed: int, shape=(3, 17, 19), ignore_index: int | None = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels in [0, C) where class 5 never occurs, class 4 only in the target, and
    (when ``ignore_index`` is given) about 10% of the target pixels ignored."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 5, shape, generator=g)
    right = (torch.rand(shape, generator=g) < 0.6) & (target != 4)
    pred = torch.where(right, target, torch.randint(0, 4, shape, generator=g))
    if ignore_index is not None:
        target[torch.rand(shape, generator=g) < 0.1] = ignore_index
    return pred, target


def sklearn_inputs(pred, target, ignore_index=255):
    keep = (target != ignore_index).reshape(-1)
    return target.reshape(-1)[keep].numpy(), pred.reshape(-1)[keep].numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    pred, target = random_masks(seed)
    y_true, y_pred = sklearn_inputs(pred, target)
    labels = list(range(C))
    cm = S.confusion_matrix(pred, target, C, ignore_index=255)
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(y_true, y_pred, labels=labels))
    accuracy = skm.accuracy_score(y_true, y_pred)
    assert S.pixel_accuracy(pred, target, C, 255) == pytest.approx(accuracy, abs=1e-15)

    iou = S.iou_per_class(pred, target, C, 255)
    assert math.isnan(iou[5]) and iou[4] == 0.0  # absent from both: NaN; only in the target: 0
    present = [c for c in labels if c != 5]
    # jaccard_score has no NaN option: compare on the classes that occur
    jaccard = skm.jaccard_score(y_true, y_pred, labels=present, average=None)
    np.testing.assert_allclose(iou[present].numpy(), jaccard, rtol=1e-15)
    assert S.mean_iou(pred, target, C, 255) == pytest.approx(
        skm.jaccard_score(y_true, y_pred, labels=present, average="macro"), abs=1e-15
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about the absent class
        f1 = skm.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
        macro_f1 = skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=np.nan)
    dice = S.dice_per_class(pred, target, C, 255).numpy()
    np.testing.assert_allclose(dice, f1, rtol=1e-15)  # nan where scikit-learn has nan
    assert S.mean_dice(pred, target, C, 255) == pytest.approx(macro_f1, abs=1e-15)


def test_logits_and_single_images_give_the_same_as_labels():
    pred, target = random_masks(3)
    logits = torch.randn(3, C, 17, 19, generator=torch.Generator().manual_seed(0))
    logits.scatter_(1, pred[:, None], 10.0)  # the argmax over classes is pred
    assert torch.equal(S.confusion_matrix(logits, target, C, 255), S.confusion_matrix(pred, target, C, 255))
    single = sum(S.confusion_matrix(logits[i], target[i], C, 255) for i in range(3))
    assert torch.equal(single, S.confusion_matrix(pred, target, C, 255))
    assert S.mean_iou(logits.softmax(1), target, C, 255) == S.mean_iou(pred, target, C, 255)


def test_ignore_index_excludes_pixels_and_none_keeps_all():
    pred, target = random_masks(4, ignore_index=None)
    assert S.confusion_matrix(pred, target, C).sum() == target.numel()
    target[0] = 0
    ignored = target.clone()
    ignored[0] = C  # any value can be the ignore index, even one just past the classes
    cm = S.confusion_matrix(pred, ignored, C, ignore_index=C)
    assert torch.equal(cm, S.confusion_matrix(pred[1:], target[1:], C))


def test_known_values_and_all_absent():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    iou = S.iou_per_class(pred, target, 3)
    torch.testing.assert_close(iou[:2], torch.tensor([1 / 2, 2 / 3], dtype=torch.float64))
    assert math.isnan(iou[2])
    assert S.mean_iou(pred, target, 3) == pytest.approx((1 / 2 + 2 / 3) / 2)
    dice = S.dice_per_class(pred, target, 3)
    torch.testing.assert_close(dice[:2], torch.tensor([2 / 3, 4 / 5], dtype=torch.float64))
    assert S.pixel_accuracy(pred, target, 3) == 0.75
    only_ignored = torch.full((1, 4), 255)
    with pytest.raises(ValueError, match="no pixel"):
        S.pixel_accuracy(pred, only_ignored, 3, ignore_index=255)
    assert math.isnan(S.mean_iou(pred, only_ignored, 3, ignore_index=255))  # every class absent: undefined


def test_accumulator_equals_all_at_once_and_resets():
    pred, target = random_masks(5, shape=(8, 12, 12))
    metrics = S.SegmentationMetrics(C, ignore_index=255)
    with pytest.raises(ValueError, match="update"):
        metrics.compute()
    for i in range(0, 8, 3):
        metrics.update(pred[i : i + 3], target[i : i + 3])
    result = metrics.compute()
    assert set(result) == {"pixel_accuracy", "miou", "mdice", "iou_per_class", "dice_per_class"}
    assert result["pixel_accuracy"] == S.pixel_accuracy(pred, target, C, 255)
    assert result["miou"] == S.mean_iou(pred, target, C, 255)
    assert result["mdice"] == S.mean_dice(pred, target, C, 255)
    torch.testing.assert_close(result["iou_per_class"], S.iou_per_class(pred, target, C, 255), equal_nan=True)
    dice = S.dice_per_class(pred, target, C, 255)
    torch.testing.assert_close(result["dice_per_class"], dice, equal_nan=True)
    assert torch.equal(metrics.confusion, S.confusion_matrix(pred, target, C, 255))
    metrics.reset()
    metrics.update(pred[:1], target[:1])
    assert metrics.compute()["miou"] == S.mean_iou(pred[:1], target[:1], C, 255)


def test_clear_errors():
    pred, target = random_masks(6, ignore_index=None)
    with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
        S.confusion_matrix(pred, target + 3, C)
    with pytest.raises(ValueError, match=r"or ignore_index=255"):
        S.confusion_matrix(pred, torch.full_like(target, 7), C, ignore_index=255)
    with pytest.raises(ValueError, match=r"pred labels must lie"):
        S.confusion_matrix(pred + C, target, C)
    with pytest.raises(ValueError, match="same shape"):
        S.confusion_matrix(pred[:, :-1], target, C)
    with pytest.raises(ValueError, match="threshold it first"):
        S.confusion_matrix(torch.randn(3, 1, 17, 19), target, 2)
    with pytest.raises(ValueError, match="scores for 4 classes"):
        S.confusion_matrix(torch.randn(3, 4, 17, 19), target, C)
    with pytest.raises(ValueError, match=r"scores \(N, C, H, W\)"):
        S.confusion_matrix(torch.randn(3, 17, 19), target, C)
    with pytest.raises(TypeError, match="integer class labels"):
        S.confusion_matrix(pred, target.float(), C)
    with pytest.raises(ValueError, match="num_classes"):
        S.SegmentationMetrics(0)
