"""RoI Pool and RoI Align: a fixed-size feature map for each region of interest, whatever its size.

The second stage of a two-stage detector classifies each proposal from the features inside it;
these ops cut that region out of the feature map and resample it to ``output_size`` (e.g. 7 x 7).
Chapter 11 builds both by hand and explains why RoI Align (no rounding, bilinear sampling) beats
RoI Pool (coordinates rounded to whole cells, max over each bin). The implementations below are
plain PyTorch, differentiable through autograd, and follow torchvision's CPU kernels step by step:
``roi_pool`` gives the same values as ``torchvision.ops.roi_pool`` bit for bit, ``roi_align`` the
same as ``torchvision.ops.roi_align`` bit for bit on CPU (tests allow 1e-6 relative, for compilers
that fuse multiply-adds).

Boxes are given as torchvision takes them: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``,
or a list with one ``Tensor[L_i, 4]`` of ``xyxy`` boxes per image. Coordinates are in the input
image's pixels; ``spatial_scale`` (e.g. 1/16 for a stride-16 feature map) maps them onto the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["RoIAlign", "RoIPool", "roi_align", "roi_pool"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"output_size must be a positive int or a pair (height, width), got {size!r}")
    return pair


def _as_rois(features: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
    """Check the inputs; return the regions as rows (batch index, x1, y1, x2, y2), ``Tensor[K, 5]``."""
    if not isinstance(features, Tensor) or features.dim() != 4 or not features.is_floating_point():
        raise ValueError("features must be a float tensor of shape (N, C, H, W)")
    if isinstance(boxes, (list, tuple)):
        for b in boxes:
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                raise ValueError("boxes given as a list must hold one Tensor[L, 4] of xyxy boxes per image")
        ids = [torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
        boxes = (
            torch.cat([torch.cat(ids), torch.cat(list(boxes))], dim=1) if boxes else features.new_zeros(0, 5)
        )
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError("boxes must be Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4]")
    batch = boxes[:, 0]
    if boxes.shape[0] and (
        batch.min() < 0 or batch.max() >= features.shape[0] or (batch != batch.round()).any()
    ):
        raise ValueError(
            f"the batch indices of boxes (column 0) must be integers in [0, {features.shape[0] - 1}]"
        )
    return boxes.to(features.dtype)


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    trunc = x.trunc()
    return torch.where((x - trunc).abs() == 0.5, trunc + x.sign(), x.round())


def roi_pool(
    features: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI Pool (Girshick, Fast R-CNN): the maximum over each of ``output_size`` bins of each region.

    ``features`` ``Tensor[N, C, H, W]``, ``boxes`` as described in the module docstring. Region
    corners are rounded to whole feature cells (``x2, y2`` inclusive), the region is split into
    ``PH x PW`` bins of whole cells (``floor`` / ``ceil`` of the fractional bin edges) and each bin
    keeps its maximum; an empty bin gives 0. Returns ``Tensor[K, C, PH, PW]``. Matches
    ``torchvision.ops.roi_pool``. Chapter 11 builds it by hand.
    """
    rois = _as_rois(features, boxes)
    pooled_h, pooled_w = _pair(output_size)
    _, channels, height, width = features.shape
    num_rois, dtype = rois.shape[0], features.dtype
    x1, y1, x2, y2 = _round_half_away(rois[:, 1:] * spatial_scale).long().unbind(1)  # (K,) each, in cells
    roi_w = (x2 - x1 + 1).clamp(min=1)  # malformed regions become 1 x 1
    roi_h = (y2 - y1 + 1).clamp(min=1)
    bin_w = roi_w.to(dtype)[:, None] / pooled_w  # (K, 1) cells per bin, fractional
    bin_h = roi_h.to(dtype)[:, None] / pooled_h
    pw = torch.arange(pooled_w, dtype=dtype, device=features.device)[None, :]  # (1, PW)
    ph = torch.arange(pooled_h, dtype=dtype, device=features.device)[None, :]  # (1, PH)
    # bin edges in cells of the feature map, clipped to it: (K, PW) and (K, PH)
    w_start = (torch.floor(pw * bin_w).long() + x1[:, None]).clamp(0, width)
    w_end = (torch.ceil((pw + 1) * bin_w).long() + x1[:, None]).clamp(0, width)
    h_start = (torch.floor(ph * bin_h).long() + y1[:, None]).clamp(0, height)
    h_end = (torch.ceil((ph + 1) * bin_h).long() + y1[:, None]).clamp(0, height)
    out = features.new_zeros(num_rois, channels, pooled_h, pooled_w)
    cols = torch.arange(width, device=features.device)
    rows = torch.arange(height, device=features.device)
    for k in range(num_rois):
        image = features[int(rois[k, 0])]  # (C, H, W)
        in_col_bin = (cols >= w_start[k, :, None]) & (cols < w_end[k, :, None])  # (PW, W)
        in_row_bin = (rows >= h_start[k, :, None]) & (rows < h_end[k, :, None])  # (PH, H)
        # the maximum over a rectangle is the maximum over its rows of the maximum over its columns
        col_max = image[:, :, None, :].masked_fill(~in_col_bin, float("-inf")).amax(dim=3)  # (C, H, PW)
        bin_max = col_max[:, None, :, :].masked_fill(~in_row_bin[:, :, None], float("-inf")).amax(dim=2)
        empty = (h_end[k] <= h_start[k])[:, None] | (w_end[k] <= w_start[k])[None, :]  # (PH, PW)
        out[k] = bin_max.masked_fill(empty, 0.0)  # (C, PH, PW)
    return out


def _bilinear_axis(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sample positions along one axis -> (low index, high index, weight of low, weight of high, inside).

    A position more than one cell outside the map contributes nothing; one within a cell of the
    border is clamped onto it, as torchvision's kernel does.
    """
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    frac = coord - low
    return low, high, 1 - frac, frac, inside


def _align_same_grid(
    features: Tensor,
    batch: Tensor,
    start_y: Tensor,
    start_x: Tensor,
    bin_h: Tensor,
    bin_w: Tensor,
    grid: tuple[int, int],
    pooled: tuple[int, int],
) -> Tensor:
    """RoI Align of K regions that share the sampling grid ``(gh, gw)`` per bin: ``Tensor[K, C, PH, PW]``."""
    (grid_h, grid_w), (pooled_h, pooled_w) = grid, pooled
    _, channels, height, width = features.shape
    ph = torch.arange(pooled_h, dtype=features.dtype, device=features.device)[None, :]  # (1, PH)
    pw = torch.arange(pooled_w, dtype=features.dtype, device=features.device)[None, :]  # (1, PW)
    b = batch[:, None, None]  # (K, 1, 1)
    total = features.new_zeros(batch.shape[0], pooled_h, pooled_w, channels)
    for iy in range(grid_h):  # sample points in the same order as the kernel, so the sums agree
        y = start_y[:, None] + ph * bin_h[:, None] + ((iy + 0.5) * bin_h / grid_h)[:, None]  # (K, PH)
        y_low, y_high, hy, ly, y_in = (t[:, :, None] for t in _bilinear_axis(y, height))  # (K, PH, 1)
        for ix in range(grid_w):
            x = start_x[:, None] + pw * bin_w[:, None] + ((ix + 0.5) * bin_w / grid_w)[:, None]  # (K, PW)
            x_low, x_high, hx, lx, x_in = (t[:, None, :] for t in _bilinear_axis(x, width))  # (K, 1, PW)
            inside = (y_in & x_in)[..., None]  # (K, PH, PW, 1)
            w1, w2, w3, w4 = (
                (wy * wx)[..., None] * inside  # (K, PH, PW, 1) each
                for wy, wx in ((hy, hx), (hy, lx), (ly, hx), (ly, lx))
            )
            # features[b, :, y, x] gathers (K, PH, PW, C): the four neighbours of every sample point
            value = (
                w1 * features[b, :, y_low, x_low]
                + w2 * features[b, :, y_low, x_high]
                + w3 * features[b, :, y_high, x_low]
                + w4 * features[b, :, y_high, x_high]
            )
            total = total + value
    count = max(grid_h * grid_w, 1)
    return (total / count).permute(0, 3, 1, 2)  # (K, C, PH, PW)


def roi_align(
    features: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align (He et al., Mask R-CNN): the average of bilinear samples in each of ``output_size`` bins.

    The region (not rounded) is split into ``PH x PW`` equal bins; in each bin a regular grid of
    ``sampling_ratio x sampling_ratio`` points (or, when ``sampling_ratio <= 0``,
    ``ceil(region height / PH) x ceil(region width / PW)``, per region) is sampled by bilinear
    interpolation of the four nearest cells and averaged. ``aligned=True`` shifts the region by
    half a cell so that cell centres sit at half-integer coordinates (Detectron2's convention);
    ``aligned=False`` is the original, which also stretches regions smaller than one cell to one
    cell. Returns ``Tensor[K, C, PH, PW]``. Matches ``torchvision.ops.roi_align``.
    Chapter 11 builds it by hand.
    """
    rois = _as_rois(features, boxes)
    pooled = _pair(output_size)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise TypeError(f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}")
    offset = 0.5 if aligned else 0.0
    start_x, start_y, end_x, end_y = (rois[:, 1:] * spatial_scale - offset).unbind(1)  # (K,) each
    roi_w, roi_h = end_x - start_x, end_y - start_y
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pooled[1], roi_h / pooled[0]
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
    else:  # adaptive: about one sample per cell
        grid_h, grid_w = torch.ceil(roi_h / pooled[0]).long(), torch.ceil(roi_w / pooled[1]).long()
    out = features.new_zeros(rois.shape[0], features.shape[1], *pooled)
    batch = rois[:, 0].long()
    grids = torch.stack([grid_h, grid_w], dim=1)  # (K, 2)
    for gh, gw in torch.unique(grids, dim=0).tolist():  # regions with the same grid go together
        k = torch.where((grid_h == gh) & (grid_w == gw))[0]
        out[k] = _align_same_grid(
            features, batch[k], start_y[k], start_x[k], bin_h[k], bin_w[k], (gh, gw), pooled
        )
    return out


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`, as ``torchvision.ops.RoIPool``."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, features: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(features, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`, as ``torchvision.ops.RoIAlign``."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, features: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_align(
            features, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
