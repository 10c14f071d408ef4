"""The box coder: how a detector's regression outputs ``(tx, ty, tw, th)`` turn an anchor into a box.

For an anchor (or proposal) with centre ``(xa, ya)`` and size ``(wa, ha)`` and a target box with
centre ``(x, y)`` and size ``(w, h)`` (Girshick et al., R-CNN; Ren et al., Faster R-CNN)::

    tx = wx * (x - xa) / wa      ty = wy * (y - ya) / ha
    tw = ww * log(w / wa)        th = wh * log(h / ha)

``weights = (wx, wy, ww, wh)`` scale the targets to similar magnitudes (Faster R-CNN's box head
uses ``(10, 10, 5, 5)``). Decoding inverts this; ``tw`` and ``th`` are clipped to
``bbox_xform_clip`` (``log(1000 / 16)``) first so that ``exp`` cannot overflow. Chapter 10 builds
the coder by hand; chapter 11 trains detectors with it. Matches
``torchvision.models.detection._utils.BoxCoder`` to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import _check_boxes

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

DEFAULT_CLIP = math.log(1000.0 / 16)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4 or any(isinstance(w, bool) or not w > 0 for w in weights):
        raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)


def encode_boxes(
    reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Regression targets ``Tensor[..., 4]`` that move each of ``proposals`` onto its ``reference_boxes``.

    ``reference_boxes`` are the ground-truth boxes matched to each proposal (or anchor), both
    ``Tensor[..., 4]`` xyxy with the same shape. Matches torchvision's ``encode_boxes``.
    Chapter 10 builds it by hand.
    """
    _check_boxes(reference_boxes, "reference_boxes")
    _check_boxes(proposals, "proposals")
    if reference_boxes.shape != proposals.shape:
        raise ValueError(
            f"reference_boxes {tuple(reference_boxes.shape)} and proposals "
            f"{tuple(proposals.shape)} must have the same shape: one matched box per proposal"
        )
    wx, wy, ww, wh = torch.as_tensor(
        _check_weights(weights), dtype=reference_boxes.dtype, device=reference_boxes.device
    ).unbind()
    widths = proposals[..., 2] - proposals[..., 0]
    heights = proposals[..., 3] - proposals[..., 1]
    ctr_x = proposals[..., 0] + 0.5 * widths
    ctr_y = proposals[..., 1] + 0.5 * heights
    gt_widths = reference_boxes[..., 2] - reference_boxes[..., 0]
    gt_heights = reference_boxes[..., 3] - reference_boxes[..., 1]
    gt_ctr_x = reference_boxes[..., 0] + 0.5 * gt_widths
    gt_ctr_y = reference_boxes[..., 1] + 0.5 * gt_heights
    dx = wx * (gt_ctr_x - ctr_x) / widths
    dy = wy * (gt_ctr_y - ctr_y) / heights
    dw = ww * torch.log(gt_widths / widths)
    dh = wh * torch.log(gt_heights / heights)
    return torch.stack((dx, dy, dw, dh), dim=-1)


def decode_boxes(
    rel_codes: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_CLIP,
) -> Tensor:
    """Apply regression outputs ``rel_codes`` (N, 4 K) to ``boxes`` (N, 4): ``Tensor[N, 4 K]`` of xyxy boxes.

    ``K`` is the number of boxes predicted per reference box (one per class in Faster R-CNN's box
    head, 1 for anchors); ``boxes`` are cast to the dtype of ``rel_codes``. Matches torchvision's
    ``BoxCoder.decode_single``. Chapter 10 builds it by hand.
    """
    _check_boxes(boxes)
    if not isinstance(rel_codes, Tensor) or rel_codes.dim() != 2 or rel_codes.shape[1] % 4 != 0:
        shape = tuple(rel_codes.shape) if isinstance(rel_codes, Tensor) else type(rel_codes).__name__
        raise ValueError(f"rel_codes must have shape (N, 4 * K), got {shape}")
    if boxes.dim() != 2 or boxes.shape[0] != rel_codes.shape[0]:
        raise ValueError(
            f"boxes must have shape (N, 4) = ({rel_codes.shape[0]}, 4), one per row of "
            f"rel_codes, got {tuple(boxes.shape)}"
        )
    wx, wy, ww, wh = _check_weights(weights)
    boxes = boxes.to(rel_codes.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = rel_codes[:, 0::4] / wx  # (N, K)
    dy = rel_codes[:, 1::4] / wy
    dw = torch.clamp(rel_codes[:, 2::4] / ww, max=bbox_xform_clip)  # exp() must not overflow
    dh = torch.clamp(rel_codes[:, 3::4] / wh, max=bbox_xform_clip)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    half_w = 0.5 * (torch.exp(dw) * widths[:, None])
    half_h = 0.5 * (torch.exp(dh) * heights[:, None])
    corners = (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h)
    return torch.stack(corners, dim=2).flatten(1)  # (N, K, 4) -> (N, 4 * K)


class BoxCoder:
    """Encode boxes against reference boxes and decode regression outputs, with fixed ``weights``.

    ``encode(reference_boxes, proposals)`` and ``decode(rel_codes, boxes)`` accept tensors (see
    :func:`encode_boxes` and :func:`decode_boxes`) or, as torchvision's ``BoxCoder`` does, one
    tensor of boxes per image: ``encode`` then returns a tuple of ``Tensor[N_i, 4]`` and ``decode``
    a ``Tensor[sum N_i, K, 4]``. ``encode_single`` / ``decode_single`` are the tensor forms under
    torchvision's names, so an instance can stand in for torchvision's. Chapter 11 uses it.
    """

    def __init__(
        self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = DEFAULT_CLIP
    ) -> None:
        self.weights = _check_weights(weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4g})"

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)

    def encode(self, reference_boxes: Tensor | Sequence[Tensor], proposals: Tensor | Sequence[Tensor]):
        if isinstance(reference_boxes, Tensor):
            return self.encode_single(reference_boxes, proposals)
        per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals)))
        return targets.split(per_image, 0)

    def decode(self, rel_codes: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(boxes, Tensor):
            return self.decode_single(rel_codes, boxes)
        total = sum(b.shape[0] for b in boxes)
        if total > 0:
            rel_codes = rel_codes.reshape(total, -1)
        decoded = self.decode_single(rel_codes, torch.cat(list(boxes)))
        return decoded.reshape(total, -1, 4) if total > 0 else decoded
