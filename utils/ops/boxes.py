"""Bounding-box operations in plain PyTorch, written to match ``torchvision.ops`` to the last bit.

Chapter 10 builds these by hand (formats, area, IoU and its relatives), then uses this module;
chapter 11 trains detectors with the IoU losses. The tests check every function against its
``torchvision.ops`` twin on random, degenerate and empty inputs, in float32 and float64.

Conventions (the same as torchvision):

* boxes are float (or integer) tensors whose last dimension holds 4 numbers; pairwise functions
  take ``Tensor[..., N, 4]`` and ``Tensor[..., M, 4]`` (leading batch dimensions allowed) and
  return ``Tensor[..., N, M]``; the losses compare boxes one to one, ``Tensor[..., 4]`` each;
* ``"xyxy"`` is (x1, y1, x2, y2), the top-left and bottom-right corners;
  ``"xywh"`` is (x1, y1, width, height); ``"cxcywh"`` is (centre x, centre y, width, height);
* the area of an ``xyxy`` box is ``(x2 - x1) * (y2 - y1)``: coordinates are treated as continuous.
  Two boxes of zero area have IoU ``0 / 0 = nan`` (as in torchvision); the losses add ``eps``.
  :func:`masks_to_boxes` returns the index of the last pixel row and column as ``x2, y2``
  (pixel-inclusive), exactly as ``torchvision.ops.masks_to_boxes`` does, so a one-pixel mask has
  a box of area 0. Add 1 to ``x2`` and ``y2`` to get the pixel-exclusive box when you need it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
REDUCTIONS = ("none", "mean", "sum")

__all__ = [
    "BOX_FORMATS",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "complete_box_iou_loss",
    "distance_box_iou",
    "distance_box_iou_loss",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "masks_to_boxes",
    "remove_small_boxes",
]


def _check_boxes(boxes: Tensor, name: str = "boxes", min_dim: int = 1) -> None:
    """Raise a clear error unless ``boxes`` is a real tensor of shape (..., 4)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.dim() < min_dim or boxes.shape[-1] != 4:
        want = "(N, 4)" if min_dim <= 2 else "(..., N, 4)"
        raise ValueError(
            f"{name} must have shape {want} (the last dimension holds 4 coordinates), "
            f"got {tuple(boxes.shape)}"
        )
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {boxes.dtype}")


def _check_pair(boxes1: Tensor, boxes2: Tensor) -> None:
    """Pairwise functions: (..., N, 4) and (..., M, 4) with the same leading dimensions."""
    _check_boxes(boxes1, "boxes1", min_dim=2)
    _check_boxes(boxes2, "boxes2", min_dim=2)
    if boxes1.shape[:-2] != boxes2.shape[:-2]:
        raise ValueError(
            f"boxes1 {tuple(boxes1.shape)} and boxes2 {tuple(boxes2.shape)} must have the same "
            "leading (batch) dimensions"
        )


def _check_fmt(fmt: str, what: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{what} must be one of {BOX_FORMATS}, got {fmt!r}")


def _upcast(t: Tensor) -> Tensor:
    """Float16/bfloat16 -> float32 and small ints -> int32, so that products do not overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _upcast_non_float(t: Tensor) -> Tensor:
    """Anything but float32/float64 -> float32 (the losses need floats)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes ``Tensor[..., 4]`` between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Always returns a new tensor. Matches ``torchvision.ops.box_convert``. Chapter 10 explains the formats.
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
    """Area of each box: ``Tensor[..., 4]`` -> ``Tensor[...]``.

    ``(x2 - x1) * (y2 - y1)`` for ``xyxy``, ``w * h`` otherwise; small integer and half types are
    upcast so the product cannot overflow. Matches ``torchvision.ops.box_area``.
    Chapter 10 builds it by hand.
    """
    _check_boxes(boxes)
    _check_fmt(fmt, "fmt")
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _corners(boxes: Tensor, fmt: str) -> tuple[Tensor, Tensor]:
    """Top-left and bottom-right corners ``Tensor[..., 2]`` each, computed as torchvision does."""
    if fmt == "xyxy":
        return boxes[..., :2], boxes[..., 2:]
    if fmt == "xywh":
        return boxes[..., :2], boxes[..., :2] + boxes[..., 2:]
    return boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2


def _inter_union(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas, ``Tensor[..., N, M]`` each."""
    area1 = box_area(boxes1, fmt)  # (..., N)
    area2 = box_area(boxes2, fmt)  # (..., M)
    tl1, br1 = _corners(boxes1, fmt)
    tl2, br2 = _corners(boxes2, fmt)
    top_left = torch.max(tl1[..., :, None, :], tl2[..., None, :, :])  # (..., N, M, 2)
    bottom_right = torch.min(br1[..., :, None, :], br2[..., None, :, :])  # (..., N, M, 2)
    wh = _upcast(bottom_right - top_left).clamp(min=0)  # (..., N, M, 2): no overlap -> 0
    inter = wh[..., 0] * wh[..., 1]  # (..., N, M)
    union = area1[..., :, None] + area2[..., None, :] - inter  # (..., N, M)
    return inter, union


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Width and height of the smallest box enclosing each pair: ``Tensor[..., N, M, 2]``."""
    top_left = torch.min(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.max(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    return _upcast(bottom_right - top_left).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection over union of boxes (..., N, 4) and (..., M, 4): ``Tensor[..., N, M]``.

    ``|A ∩ B| / |A ∪ B|``, in [0, 1]; two boxes of zero area give ``0 / 0 = nan``.
    Matches ``torchvision.ops.box_iou`` (all three formats). Chapter 10 builds it by hand.
    """
    _check_pair(boxes1, boxes2)
    _check_fmt(fmt, "fmt")
    inter, union = _inter_union(boxes1, boxes2, fmt)
    return inter / union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU of ``xyxy`` boxes (..., N, 4) and (..., M, 4): ``Tensor[..., N, M]``.

    ``IoU - |C \\ (A ∪ B)| / |C|`` with ``C`` the smallest box enclosing both (Rezatofighi et al.,
    2019): in [-1, 1], and still informative when the boxes do not overlap.
    Matches ``torchvision.ops.generalized_box_iou``. Chapter 10 builds it by hand.
    """
    _check_pair(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / union
    wh = _enclosing_wh(boxes1, boxes2)  # (..., N, M, 2)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def _diou_and_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Pairwise distance IoU and IoU, ``Tensor[..., N, M]`` each (boxes already upcast)."""
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / union
    wh = _enclosing_wh(boxes1, boxes2)
    diagonal_sq = (wh[..., 0] ** 2) + (wh[..., 1] ** 2) + eps  # squared diagonal of the enclosing box
    cx1, cy1 = (boxes1[..., 0] + boxes1[..., 2]) / 2, (boxes1[..., 1] + boxes1[..., 3]) / 2  # (..., N)
    cx2, cy2 = (boxes2[..., 0] + boxes2[..., 2]) / 2, (boxes2[..., 1] + boxes2[..., 3]) / 2  # (..., M)
    centre_sq = (_upcast(cx1[..., :, None] - cx2[..., None, :]) ** 2) + (
        _upcast(cy1[..., :, None] - cy2[..., None, :]) ** 2
    )  # (..., N, M)
    return iou - centre_sq / diagonal_sq, iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU of ``xyxy`` boxes (..., N, 4) and (..., M, 4): ``Tensor[..., N, M]``.

    ``IoU - d² / c²`` with ``d`` the distance between the centres and ``c`` the diagonal of the
    enclosing box (Zheng et al., 2020). Matches ``torchvision.ops.distance_box_iou``.
    Chapter 10 builds it by hand.
    """
    _check_pair(boxes1, boxes2)
    return _diou_and_iou(_upcast(boxes1), _upcast(boxes2), eps)[0]


def _aspect_term(boxes: Tensor) -> Tensor:
    """``atan(w / h)`` of each box, the aspect-ratio term of complete IoU."""
    return torch.atan((boxes[..., 2] - boxes[..., 0]) / (boxes[..., 3] - boxes[..., 1]))


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU of ``xyxy`` boxes (..., N, 4) and (..., M, 4): ``Tensor[..., N, M]``.

    Distance IoU minus ``alpha * v``, where ``v = 4 / pi² (atan(w1/h1) - atan(w2/h2))²`` compares the
    aspect ratios and ``alpha = v / (1 - IoU + v)`` (treated as a constant for the gradient).
    Matches ``torchvision.ops.complete_box_iou``. Chapter 10 builds it by hand.
    """
    _check_pair(boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    diou, iou = _diou_and_iou(boxes1, boxes2, eps)
    aspect_gap = _aspect_term(boxes1)[..., :, None] - _aspect_term(boxes2)[..., None, :]  # (..., N, M)
    v = (4 / (math.pi**2)) * torch.pow(aspect_gap, 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# --------------------------------------------------------------------------------------------
# Losses: one prediction against one target, Tensor[..., 4] each (chapter 11)
# --------------------------------------------------------------------------------------------
def _check_loss_inputs(boxes1: Tensor, boxes2: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"the losses compare boxes one to one: boxes1 {tuple(boxes1.shape)} and boxes2 "
            f"{tuple(boxes2.shape)} must have the same shape"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return _upcast_non_float(boxes1), _upcast_non_float(boxes2)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss.sum() if reduction == "sum" else loss


def _inter_union_elementwise(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union area of each pair of boxes, ``Tensor[...]`` each."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xi1, yi1, xi2, yi2 = torch.max(x1, x1g), torch.max(y1, y1g), torch.min(x2, x2g), torch.min(y2, y2g)
    inter = torch.zeros_like(x1)
    overlap = (yi2 > yi1) & (xi2 > xi1)
    inter[overlap] = (xi2[overlap] - xi1[overlap]) * (yi2[overlap] - yi1[overlap])
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def _enclosing_elementwise(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Corners ``(x1, y1, x2, y2)`` of the smallest box enclosing each pair, ``Tensor[...]`` each."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    return torch.min(x1, x1g), torch.min(y1, y1g), torch.max(x2, x2g), torch.max(y2, y2g)


def _diou_loss_and_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``1 - DIoU`` and IoU of each pair (the operations in torchvision's order, so gradients agree too)."""
    inter, union = _inter_union_elementwise(boxes1, boxes2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1, yc1, xc2, yc2 = torch.min(x1, x1g), torch.min(y1, y1g), torch.max(x2, x2g), torch.max(y2, y2g)
    diagonal_sq = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps  # squared diagonal of the enclosing box
    centre_sq = (((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2) + (((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2)
    return 1 - iou + centre_sq / diagonal_sq, iou


def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - GIoU`` of each pair of ``xyxy`` boxes, ``Tensor[..., 4]`` each -> ``Tensor[...]`` (or a scalar).

    ``reduction`` is ``"none"``, ``"mean"`` or ``"sum"``; ``eps`` keeps degenerate boxes finite.
    Matches ``torchvision.ops.generalized_box_iou_loss``. Chapter 11 trains box regression with it.
    """
    boxes1, boxes2 = _check_loss_inputs(boxes1, boxes2, reduction)
    inter, union = _inter_union_elementwise(boxes1, boxes2)
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = _enclosing_elementwise(boxes1, boxes2)
    enclosing = (xc2 - xc1) * (yc2 - yc1)
    return _reduce(1 - (iou - ((enclosing - union) / (enclosing + eps))), reduction)


def distance_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - DIoU`` of each pair of ``xyxy`` boxes, ``Tensor[..., 4]`` each -> ``Tensor[...]`` (or a scalar).

    Matches ``torchvision.ops.distance_box_iou_loss``. Chapter 11 trains box regression with it.
    """
    boxes1, boxes2 = _check_loss_inputs(boxes1, boxes2, reduction)
    return _reduce(_diou_loss_and_iou(boxes1, boxes2, eps)[0], reduction)


def complete_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - CIoU`` of each pair of ``xyxy`` boxes, ``Tensor[..., 4]`` each -> ``Tensor[...]`` (or a scalar).

    A box of zero width and height has no aspect ratio (``atan(0 / 0)``): its loss is nan, as in torchvision.
    Matches ``torchvision.ops.complete_box_iou_loss``. Chapter 11 trains box regression with it.
    """
    boxes1, boxes2 = _check_loss_inputs(boxes1, boxes2, reduction)
    diou_loss, iou = _diou_loss_and_iou(boxes1, boxes2, 1e-7)  # torchvision uses the default eps here
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    aspect_gap = torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))
    v = (4 / (math.pi**2)) * torch.pow(aspect_gap, 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(diou_loss + alpha * v, reduction)


# --------------------------------------------------------------------------------------------
# Cleaning up boxes
# --------------------------------------------------------------------------------------------
def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``xyxy`` boxes ``Tensor[..., 4]`` to an image of ``size = (height, width)``.

    x coordinates go to [0, width], y coordinates to [0, height]. Matches
    ``torchvision.ops.clip_boxes_to_image``. Chapter 11 clips decoded proposals with it.
    """
    _check_boxes(boxes)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2)
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2)
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, increasing) of the boxes ``Tensor[N, 4]`` (xyxy) whose sides are both ``>= min_size``.

    Matches ``torchvision.ops.remove_small_boxes``. Chapter 11 drops degenerate proposals with it.
    """
    _check_boxes(boxes)
    if boxes.dim() != 2:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight ``xyxy`` box around each mask: ``Tensor[N, H, W]`` -> ``Tensor[N, 4]`` float32.

    ``x2, y2`` are the indices of the last non-zero column and row (pixel-inclusive); an empty
    mask gives ``[0, 0, 0, 0]``. Matches ``torchvision.ops.masks_to_boxes``.
    Chapter 12 uses it to turn instance masks into detection targets.
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, H, W), got {type(masks).__name__}")
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(masks.shape)}")
    if masks.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    _, h, w = masks.shape
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
