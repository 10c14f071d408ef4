"""Metrics of the course, one module per task; every name of the former ``utils.metrics`` module still
works from here.

* :mod:`utils.metrics.classification`: accuracy, top-k, confusion matrix, precision / recall / F1,
  ROC and precision-recall curves, calibration (chapters 01, 03, 08);
* :mod:`utils.metrics.detection`: COCO's mAP and mAR (equal to pycocotools), VOC's AP,
  precision-recall curves of detections (chapters 10-11); the evaluation itself is in
  :mod:`utils.metrics.coco_eval`;
* :mod:`utils.metrics.segmentation`: confusion matrix, pixel accuracy, IoU and Dice per class and
  their means (chapter 12).

``utils.metrics.confusion_matrix`` is the classification one (``pred`` and ``target`` of shape
(N,)); the segmentation one is ``utils.metrics.segmentation.confusion_matrix``.
"""

from __future__ import annotations

from . import classification, coco_eval, detection, segmentation  # noqa: F401
from .classification import *  # noqa: F403 (the names of the former module, see classification.__all__)
from .classification import __all__ as _classification_names
from .classification import _binary_problem  # noqa: F401 (used by utils.widgets.losses_metrics)
from .detection import MeanAveragePrecision, coco_map, precision_recall, voc_ap
from .segmentation import SegmentationMetrics, mean_dice, mean_iou, pixel_accuracy

__all__ = [
    *_classification_names,
    "MeanAveragePrecision",
    "SegmentationMetrics",
    "classification",
    "coco_map",
    "detection",
    "mean_dice",
    "mean_iou",
    "pixel_accuracy",
    "precision_recall",
    "segmentation",
    "voc_ap",
]
