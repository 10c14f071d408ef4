"""Box and region operations of the detection chapters, in plain PyTorch, each checked against torchvision.

* :mod:`utils.ops.boxes`: box formats, area, IoU / GIoU / DIoU / CIoU and their losses, clipping,
  small-box removal, boxes around masks (chapters 10-12);
* :mod:`utils.ops.nms`: greedy NMS, per-class NMS and Soft-NMS (chapters 10-11);
* :mod:`utils.ops.anchors`: anchors per cell, per feature map and per pyramid level (chapters 10-11);
* :mod:`utils.ops.coder`: the box coder, ``(tx, ty, tw, th)`` regression targets (chapters 10-11);
* :mod:`utils.ops.matcher`: matching anchors to ground truth by IoU, training labels (chapters 10-11);
* :mod:`utils.ops.roi`: RoI Pool and RoI Align (chapter 11).

Every public name is also importable from ``utils.ops`` itself (``utils.ops.nms`` is then the
function; ``import utils.ops.nms`` or ``from utils.ops.nms import ...`` reach the module).
"""

from __future__ import annotations

from . import anchors, boxes, coder, matcher, roi
from .anchors import AnchorGenerator, cell_anchors, grid_anchors
from .boxes import (
    BOX_FORMATS,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    masks_to_boxes,
    remove_small_boxes,
)
from .coder import BoxCoder, decode_boxes, encode_boxes
from .matcher import Matcher, assign_anchors
from .nms import batched_nms, nms, soft_nms
from .roi import RoIAlign, RoIPool, roi_align, roi_pool

__all__ = [
    "BOX_FORMATS",
    "AnchorGenerator",
    "BoxCoder",
    "Matcher",
    "RoIAlign",
    "RoIPool",
    "anchors",
    "assign_anchors",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "boxes",
    "cell_anchors",
    "clip_boxes_to_image",
    "coder",
    "complete_box_iou",
    "complete_box_iou_loss",
    "decode_boxes",
    "distance_box_iou",
    "distance_box_iou_loss",
    "encode_boxes",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "grid_anchors",
    "masks_to_boxes",
    "matcher",
    "nms",
    "remove_small_boxes",
    "roi",
    "roi_align",
    "roi_pool",
    "soft_nms",
]
