"""utils.metrics became a package: every name of the former module still works from utils.metrics."""

from __future__ import annotations

import importlib

import utils.metrics
from utils.metrics import classification, detection, segmentation

FORMER_NAMES = [
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


def test_former_names_are_the_classification_functions():
    assert sorted(classification.__all__) == FORMER_NAMES
    for name in FORMER_NAMES:
        assert getattr(utils.metrics, name) is getattr(classification, name)
    assert utils.metrics._binary_problem is classification._binary_problem  # utils.widgets imports it
    assert utils.metrics.confusion_matrix is not segmentation.confusion_matrix


def test_task_modules_and_their_main_names():
    assert utils.metrics.MeanAveragePrecision is detection.MeanAveragePrecision
    assert utils.metrics.SegmentationMetrics is segmentation.SegmentationMetrics
    assert utils.metrics.coco_map is detection.coco_map and utils.metrics.voc_ap is detection.voc_ap
    assert utils.metrics.mean_iou is segmentation.mean_iou
    for name in utils.metrics.__all__:
        assert hasattr(utils.metrics, name), name
    importlib.import_module("utils.widgets.losses_metrics")  # still imports what it needs
