"""Bounding-box helpers in plain PyTorch, written to match ``torchvision.ops``.

The detection and segmentation chapters build these by hand, then use this module; the tests check
every function against its ``torchvision.ops`` twin on random inputs, empty inputs included.

Conventions (the same as torchvision):

* boxes are float (or integer) tensors whose last dimension holds 4 numbers;
* ``"xyxy"`` is (x1, y1, x2, y2), the top-left and bottom-right corners;
  ``"xywh"`` is (x1, y1, width, height); ``"cxcywh"`` is (centre x, centre y, width, height);
* the area of an ``xyxy`` box is ``(x2 - x1) * (y2 - y1)``: coordinates are treated as continuous.
  :func:`masks_to_boxes` returns the index of the last pixel row and column as ``x2, y2``
  (pixel-inclusive), exactly as ``torchvision.ops.masks_to_boxes`` does, so a one-pixel mask has
  a box of area 0. Add 1 to ``x2`` and ``y2`` to get the pixel-exclusive box when you need it.
"""

from __future__ import annotations

import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

__all__ = ["BOX_FORMATS", "box_area", "box_convert", "box_iou", "masks_to_boxes"]


def _check_boxes(boxes: Tensor, name: str = "boxes", min_dim: int = 1) -> None:
    """Raise a clear error unless ``boxes`` is a tensor of shape (..., 4)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.dim() < min_dim or boxes.shape[-1] != 4:
        want = "(N, 4)" if min_dim <= 2 else "(..., N, 4)"
        raise ValueError(f"{name} must have shape {want} (the last dimension holds 4 coordinates), got {tuple(boxes.shape)}")
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {boxes.dtype}")


def _check_fmt(fmt: str, what: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{what} must be one of {BOX_FORMATS}, got {fmt!r}")


def _upcast(t: Tensor) -> Tensor:
    """Float16/bfloat16 -> float32 and small ints -> int32, so that products do not overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes (..., 4) between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Matches ``torchvision.ops.box_convert``. The object-detection chapter explains the formats.
    """
    _check_boxes(boxes)
    _check_fmt(in_fmt, "in_fmt")
    _check_fmt(out_fmt, "out_fmt")
    if in_fmt == out_fmt:
        return boxes.clone()
    # Everything goes through xyxy, as in torchvision, so results agree to the last bit.
    if in_fmt == "xywh":
        x, y, w, h = boxes.unbind(-1)
        boxes = torch.stack([x, y, x + w, y + h], dim=-1)
    elif in_fmt == "cxcywh":
        cx, cy, w, h = boxes.unbind(-1)
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    if out_fmt == "xywh":
        x1, y1, x2, y2 = boxes.unbind(-1)
        boxes = torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    elif out_fmt == "cxcywh":
        x1, y1, x2, y2 = boxes.unbind(-1)
        boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
    return boxes


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of each box: boxes (..., 4) -> areas (...).

    ``(x2 - x1) * (y2 - y1)`` for ``xyxy``, ``w * h`` otherwise. Matches ``torchvision.ops.box_area``.
    The object-detection chapter builds it by hand.
    """
    _check_boxes(boxes)
    _check_fmt(fmt, "fmt")
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection over union: boxes1 (N, 4), boxes2 (M, 4) -> IoU (N, M).

    Leading batch dimensions are allowed, as in ``torchvision.ops.box_iou``, which this matches
    (two boxes of zero area give 0/0 = nan there and here). The object-detection chapter builds it.
    """
    _check_boxes(boxes1, "boxes1", min_dim=2)
    _check_boxes(boxes2, "boxes2", min_dim=2)
    _check_fmt(fmt, "fmt")
    if fmt != "xyxy":
        boxes1, boxes2 = box_convert(boxes1, fmt, "xyxy"), box_convert(boxes2, fmt, "xyxy")
    area1 = box_area(boxes1)  # (..., N)
    area2 = box_area(boxes2)  # (..., M)
    top_left = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
    bottom_right = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # (..., N, M, 2)
    wh = _upcast(bottom_right - top_left).clamp(min=0)  # (..., N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (..., N, M)
    union = area1[..., :, None] + area2[..., None, :] - inter  # (..., N, M)
    return inter / union


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight ``xyxy`` box around each mask: masks (N, H, W) -> boxes (N, 4) float32.

    ``x2, y2`` are the indices of the last non-zero column and row (pixel-inclusive); an empty
    mask gives ``[0, 0, 0, 0]``. Matches ``torchvision.ops.masks_to_boxes``.
    The segmentation chapter uses it to turn instance masks into detection targets.
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, H, W), got {type(masks).__name__}")
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(masks.shape)}")
    if masks.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    n, h, w = masks.shape
    masks = masks.bool()
    rows = masks.any(dim=2)  # (N, H): which rows hold a pixel of the mask
    cols = masks.any(dim=1)  # (N, W): which columns do
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    x1 = torch.where(cols, xs, w).amin(dim=1)  # first column, or w when empty
    x2 = torch.where(cols, xs, -1).amax(dim=1)  # last column, or -1 when empty
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()  # (N, 4)
    boxes[~rows.any(dim=1)] = 0  # empty masks
    return boxes
