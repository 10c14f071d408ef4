"""Anchor boxes: a fixed set of reference boxes tiled over every cell of a feature map.

A detector predicts, for each anchor, whether an object is there and how to move the anchor onto
it (:mod:`utils.ops.coder`). Chapter 10 builds anchors by hand with :func:`cell_anchors` and
:func:`grid_anchors`; chapter 11 uses :class:`AnchorGenerator`, which produces, for feature maps
at several strides, exactly the anchors of ``torchvision.models.detection.anchor_utils.AnchorGenerator``
(and can replace it inside a torchvision detector).

Conventions (torchvision's): an aspect ratio is ``height / width``; an anchor of size ``s`` and
ratio ``r`` has width ``s / sqrt(r)`` and height ``s * sqrt(r)`` (area ``s²``); the anchors of one
cell are ordered ratio-major (all sizes of the first ratio, then the next ratio); cells are visited
row by row, and the anchors of the cell in row ``i``, column ``j`` are centred on
``((j + offset) * stride_x, (i + offset) * stride_y)`` with ``offset = 0`` in torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator", "cell_anchors", "grid_anchors"]


def _as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (Sequence, torch.Size)) and len(value) == 2:
        return value[0], value[1]
    raise ValueError(f"{name} must be a number or a pair (height, width), got {value!r}")


def cell_anchors(
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    round: bool = True,
) -> Tensor:
    """The ``A = len(aspect_ratios) * len(sizes)`` anchors of one cell, centred on (0, 0): ``Tensor[A, 4]``.

    Ordered ratio-major. ``round=True`` rounds the corners to integers, as torchvision does.
    Matches ``AnchorGenerator.generate_anchors``. Chapter 10 builds it by hand.
    """
    if len(sizes) == 0 or len(aspect_ratios) == 0:
        raise ValueError("sizes and aspect_ratios must each hold at least one value")
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)  # (S,)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # (R,)
    if scales.dim() != 1 or ratios.dim() != 1 or (scales <= 0).any() or (ratios <= 0).any():
        raise ValueError(
            f"sizes and aspect_ratios must be flat sequences of positive numbers, "
            f"got {sizes!r} and {aspect_ratios!r}"
        )
    h_ratios = torch.sqrt(ratios)  # height grows with the ratio ...
    w_ratios = 1 / h_ratios  # ... and width shrinks, so the area stays size²
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)  # (R * S,)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)  # (R * S,)
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2  # (A, 4)
    return anchors.round() if round else anchors


def _tile(base: Tensor, grid_size: tuple[int, int], stride: tuple[float, float], offset: float) -> Tensor:
    """Copies of ``base`` (A, 4) centred on every cell of a (H, W) grid: ``Tensor[H * W * A, 4]``."""
    (height, width), (stride_y, stride_x) = grid_size, stride
    # cell positions in float64 (exact for integer strides), then in the anchors' dtype
    cols = torch.arange(width, dtype=torch.float64, device=base.device)
    rows = torch.arange(height, dtype=torch.float64, device=base.device)
    shifts_x = ((cols + offset) * stride_x).to(base.dtype)  # (W,)
    shifts_y = ((rows + offset) * stride_y).to(base.dtype)  # (H,)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H * W, 4) cell centres
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # (H * W * A, 4)


def grid_anchors(
    grid_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    sizes: Sequence[float] = (32.0,),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    offset: float = 0.0,
    round: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """All anchors of a feature map of ``grid_size = (H, W)`` cells, ``stride`` apart: ``Tensor[H W A, 4]``.

    Cell by cell, row by row, the :func:`cell_anchors` of ``sizes`` and ``aspect_ratios`` centred on
    ``((j + offset) * stride_x, (i + offset) * stride_y)``: ``offset=0`` is torchvision's choice
    (the cell's top-left pixel), ``offset=0.5`` centres anchors in their cells. Chapter 10 builds it by hand.
    """
    height, width = _as_pair(grid_size, "grid_size")
    if height < 0 or width < 0 or int(height) != height or int(width) != width:
        raise ValueError(f"grid_size must be non-negative integers (H, W), got {grid_size!r}")
    base = cell_anchors(sizes, aspect_ratios, dtype=dtype, device=device, round=round)
    return _tile(base, (int(height), int(width)), _as_pair(stride, "stride"), offset)


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps: ``sizes[l] x aspect_ratios[l]`` per cell of level ``l``.

    ``sizes`` and ``aspect_ratios`` hold one tuple per feature level, e.g. for an FPN with five
    levels ``sizes=((32,), (64,), (128,), (256,), (512,))`` and ``aspect_ratios=((0.5, 1.0, 2.0),) * 5``.
    ``forward(images, feature_maps)`` takes the batch (a ``Tensor[N, C, H, W]`` or torchvision's
    ``ImageList``) and the feature maps ``list[Tensor[N, C_l, H_l, W_l]]``; the stride of level
    ``l`` is ``(H // H_l, W // W_l)``. It returns one ``Tensor[sum_l H_l * W_l * A_l, 4]`` per
    image. Same arguments, attributes and output as torchvision's ``AnchorGenerator``, so it can
    replace it in a torchvision detector (``model.rpn.anchor_generator = AnchorGenerator(...)``).
    Chapter 11 builds a detector with it.
    """

    def __init__(
        self, sizes: Sequence = ((128, 256, 512),), aspect_ratios: Sequence = ((0.5, 1.0, 2.0),)
    ) -> None:
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):  # one size per level, as torchvision accepts
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):  # the same ratios at every level
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                "sizes and aspect_ratios must give one tuple per feature level, got "
                f"{len(sizes)} and {len(aspect_ratios)}"
            )
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per cell at each level, ``len(sizes[l]) * len(aspect_ratios[l])``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(
        self, grid_sizes: Sequence[Sequence[int]], strides: Sequence[Sequence[int]]
    ) -> list[Tensor]:
        """Anchors of each level: ``Tensor[H_l * W_l * A_l, 4]`` for the grid sizes and strides given."""
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError(
                f"got {len(grid_sizes)} feature maps for {len(self.cell_anchors)} levels of "
                "anchors: give one (sizes, aspect_ratios) tuple per feature map"
            )
        return [
            _tile(base, (int(g[0]), int(g[1])), (int(s[0]), int(s[1])), 0.0)
            for g, s, base in zip(grid_sizes, strides, self.cell_anchors)
        ]

    def forward(self, images, feature_maps: Sequence[Tensor]) -> list[Tensor]:
        batch = images.tensors if hasattr(images, "tensors") else images  # an ImageList or a tensor
        if not isinstance(batch, Tensor) or batch.dim() != 4:
            raise ValueError("images must be a batch Tensor[N, C, H, W] or an ImageList")
        if not isinstance(feature_maps, (list, tuple)) or not all(
            isinstance(f, Tensor) for f in feature_maps
        ):
            raise TypeError("feature_maps must be a list of tensors (N, C, H_l, W_l), one per level")
        grid_sizes = [f.shape[-2:] for f in feature_maps]
        height, width = batch.shape[-2:]
        strides = [(height // g[0], width // g[1]) for g in grid_sizes]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        self.cell_anchors = [base.to(dtype=dtype, device=device) for base in self.cell_anchors]
        levels = self.grid_anchors(grid_sizes, strides)  # (H_l W_l A_l, 4) each
        num_images = len(images.image_sizes) if hasattr(images, "image_sizes") else batch.shape[0]
        return [torch.cat(levels) for _ in range(num_images)]  # (sum_l H_l W_l A_l, 4), one copy per image
