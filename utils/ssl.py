"""Self-supervised and metric learning: SimCLR's augmentations and loss, InfoNCE, the triplet and
contrastive losses, and a SimCLR task for :func:`utils.train.fit` (chapter 09).

* :class:`SimCLRAugment`: two random *views* of every image of a batch, in one batched call (a
  random resized crop, flip and small rotation done as one affine warp per image, then brightness /
  contrast jitter, colour jitter and random greyscale for RGB images, and blur). It runs on the
  batch's device, so the augmentation of a GPU run happens on the GPU.
* :func:`nt_xent`: the normalised temperature-scaled cross-entropy of SimCLR {cite}`chen2020simple`:
  for 2N views, each view's positive is the other view of its image and the 2N - 2 other views are
  its negatives. :func:`info_nce`: the one-directional form (queries against keys, positives on the
  diagonal), as in CPC and MoCo.
* :func:`triplet_loss` and :func:`contrastive_loss`: the losses of metric learning on labelled pairs
  and triplets (FaceNet's triplet loss, Hadsell et al.'s contrastive loss).
* :class:`ProjectionHead` and :class:`SimCLR`: the MLP on top of the encoder and the task that makes
  ``fit(nn.Sequential(encoder, head), loader, task=SimCLR(augment))`` train SimCLR.

Every loss takes embeddings of any scale: the cosine-based ones normalise them first. The random
numbers come from PyTorch's global generator (``utils.seed_everything`` makes a run reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.train.tasks import Task, images_of

__all__ = [
    "ProjectionHead",
    "SimCLR",
    "SimCLRAugment",
    "contrastive_loss",
    "info_nce",
    "nt_xent",
    "resized_crop_grid",
    "triplet_loss",
]


# --------------------------------------------------------------------------------------------
# Augmentations
# --------------------------------------------------------------------------------------------


def _check_images(x: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor (N, C, H, W) with values in [0, 1], got {shape}")
    return x


def resized_crop_grid(
    boxes: torch.Tensor,
    size: tuple[int, int],
    in_size: tuple[int, int],
    *,
    flip: torch.Tensor | None = None,
    angle: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sampling grid (N, h, w, 2) for ``F.grid_sample`` that crops ``boxes`` (N, 4) given as
    ``(top, left, height, width)`` in pixels of an ``in_size`` = (H, W) image and resizes each crop to
    ``size`` = (h, w); ``flip`` (N,) bool mirrors a crop left-right, ``angle`` (N,) rotates it (radians)
    about its centre. With ``align_corners=False`` and bilinear sampling a crop equals
    ``torchvision.transforms.functional.resized_crop(..., antialias=False)`` when it is enlarged.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes must have shape (N, 4) as (top, left, height, width), got {tuple(boxes.shape)}"
        )
    n = len(boxes)
    H, W = in_size
    top, left, bh, bw = boxes.to(torch.float32).unbind(1)  # (N,) each
    # centre and half-size of the crop in normalised coordinates [-1, 1] (align_corners=False)
    cx = (left + bw / 2) / W * 2 - 1
    cy = (top + bh / 2) / H * 2 - 1
    sx, sy = bw / W, bh / H
    if flip is not None:
        sx = torch.where(flip.to(sx.device), -sx, sx)
    cos = torch.ones(n, device=boxes.device) if angle is None else torch.cos(angle)
    sin = torch.zeros(n, device=boxes.device) if angle is None else torch.sin(angle)
    # output (u, v) in [-1, 1] -> input: centre + R(angle) @ diag(sx, sy) @ (u, v); rotation in pixel units
    aspect = W / H
    theta = torch.stack(
        [
            torch.stack([cos * sx, -sin * sy / aspect, cx], dim=1),
            torch.stack([sin * sx * aspect, cos * sy, cy], dim=1),
        ],
        dim=1,
    )  # (N, 2, 3)
    return F.affine_grid(theta, [n, 1, size[0], size[1]], align_corners=False)


class SimCLRAugment(nn.Module):
    """Random views of a batch of images (N, C, H, W) in [0, 1], every image with its own random
    draw (chapter 09). SimCLR {cite}`chen2020simple` found the composition of cropping and colour
    distortion the most important; on grey silhouettes the colour becomes brightness and contrast.

    Per image, in this order: a random resized crop of ``scale`` of the area with aspect ratio in
    ``ratio``, resized to ``size`` (default: the input size), flipped left-right with probability
    ``flip`` and rotated by up to ``degrees``, all in one bilinear warp (zeros outside the image);
    with probability ``jitter``, brightness, contrast (and for RGB saturation) scaled by a factor in
    ``[1 - strength, 1 + strength]`` and, for RGB, the hue channels shuffled away by random greyscale
    with probability ``grayscale``; a 3x3 Gaussian blur with probability ``blur``. Output: float in
    [0, 1], (N, C, size, size). ``forward(x)`` gives one view; :meth:`two_views` two of the same batch.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        degrees: float = 15.0,
        jitter: float = 0.8,
        strength: float = 0.4,
        grayscale: float = 0.2,
        blur: float = 0.5,
    ):
        super().__init__()
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"expected 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}"
            )
        for name, p in (("flip", flip), ("jitter", jitter), ("grayscale", grayscale), ("blur", blur)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        if degrees < 0 or not 0 <= strength < 1:
            raise ValueError(f"expected degrees >= 0 and 0 <= strength < 1, got {degrees}, {strength}")
        self.size = size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.flip, self.degrees, self.jitter, self.strength = flip, degrees, jitter, strength
        self.grayscale, self.blur = grayscale, blur

    def boxes(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Random crop boxes (n, 4) as (top, left, height, width): area fraction uniform in ``scale``,
        log aspect ratio uniform in ``log(ratio)``, clipped to the image, position uniform."""
        area = height * width * torch.empty(n, device=device).uniform_(*self.scale)
        log_r = torch.empty(n, device=device).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(1, width)
        h = torch.sqrt(area / r).clamp(1, height)
        top = torch.rand(n, device=device) * (height - h)
        left = torch.rand(n, device=device) * (width - w)
        return torch.stack([top, left, h, w], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_images(x)
        n, c, H, W = x.shape
        size = (self.size, self.size) if self.size else (H, W)
        dev = x.device
        flips = torch.rand(n, device=dev) < self.flip
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.degrees)
        grid = resized_crop_grid(self.boxes(n, H, W, dev), size, (H, W), flip=flips, angle=angle)
        out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.jitter > 0 and self.strength > 0:
            on = (torch.rand(n, 1, 1, 1, device=dev) < self.jitter).to(x.dtype)

            def factor() -> torch.Tensor:
                f = 1 + (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) * 2 - 1) * self.strength
                return on * f + (1 - on)  # 1 where no jitter

            out = out * factor()  # brightness
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * factor() + mean  # contrast
            if c == 3:
                grey = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
                out = (out - grey) * factor() + grey  # saturation
        if c == 3 and self.grayscale > 0:
            grey = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            to_grey = torch.rand(n, 1, 1, 1, device=dev) < self.grayscale
            out = torch.where(to_grey, grey.expand_as(out), out)
        if self.blur > 0:
            k = out.new_tensor([0.25, 0.5, 0.25])
            kernel = (k[:, None] * k[None, :]).expand(c, 1, 3, 3)
            blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
            out = torch.where(torch.rand(n, 1, 1, 1, device=dev) < self.blur, blurred, out)
        return out.clamp(0, 1)

    def two_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views of every image: ``(view1, view2)``, each (N, C, size, size)."""
        return self(x), self(x)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={self.scale}, flip={self.flip}, degrees={self.degrees}, "
            f"jitter={self.jitter}, strength={self.strength}, grayscale={self.grayscale}, blur={self.blur}"
        )


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _check_pair(a: Any, b: Any, names: Sequence[str]) -> None:
    for t, name in zip((a, b), names):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float tensor (N, D), got {shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same width D, got {a.shape[1]} and {b.shape[1]}"
        )


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss for two views z1, z2 (N, D) of the same N images: a 0-dim tensor.

    The 2N embeddings are L2-normalised; ``s_ij`` is the cosine similarity of views i and j. For view
    i with positive p(i) (the other view of the same image), ``l_i = -log(exp(s_ip / t) /
    sum_{k != i} exp(s_ik / t))``: a softmax cross-entropy over the 2N - 1 other views whose target is
    the positive. The loss is the mean of ``l_i`` over all 2N views (chapter 09).
    """
    _check_pair(z1, z2, ("z1", "z2"))
    _check_temperature(temperature)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = len(z1)
    if n < 2:
        raise ValueError("nt_xent needs at least 2 images (a view with no negative has no loss)")
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.T / temperature  # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # no self-pair
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(sim, positive)


def info_nce(
    query: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """InfoNCE (CPC, MoCo): ``keys[i]`` is the positive of ``query[i]`` (N, D) and every other key, and
    each row of ``negatives`` (M, D) when given (MoCo's queue), is a negative. Cosine similarities
    over ``temperature``, softmax cross-entropy with the positive as target, mean over the N queries.
    :func:`nt_xent` is its symmetric form over both views with the self-pairs masked (chapter 09).
    """
    _check_pair(query, keys, ("query", "keys"))
    _check_temperature(temperature)
    if len(query) != len(keys):
        raise ValueError(f"query and keys must pair up: {len(query)} queries, {len(keys)} keys")
    q, k = F.normalize(query, dim=1), F.normalize(keys, dim=1)
    logits = q @ k.T  # (N, N)
    if negatives is not None:
        _check_pair(query, negatives, ("query", "negatives"))
        logits = torch.cat([logits, q @ F.normalize(negatives, dim=1).T], dim=1)  # (N, N + M)
    return F.cross_entropy(logits / temperature, torch.arange(len(q), device=q.device))


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """FaceNet's triplet loss: ``mean(max(0, d(a, p) - d(a, n) + margin))`` with Euclidean distances
    ``d(x, y) = ||x - y + eps||`` (the ``eps`` as in ``F.triplet_margin_loss``, whose value it equals).
    Inputs (N, D). An anchor must be closer to its positive than to its negative by ``margin``."""
    _check_pair(anchor, positive, ("anchor", "positive"))
    _check_pair(anchor, negative, ("anchor", "negative"))
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    d_pos = (anchor - positive + eps).norm(dim=1)  # (N,)
    d_neg = (anchor - negative + eps).norm(dim=1)  # (N,)
    return F.relu(d_pos - d_neg + margin).mean()


def contrastive_loss(
    x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """The contrastive loss of Hadsell, Chopra and LeCun (2006) on pairs x1[i], x2[i] (N, D):
    ``mean(same * d^2 + (1 - same) * max(0, margin - d)^2) / 2`` with ``d`` the Euclidean distance and
    ``same`` (N,) 1 for a pair of the same class, 0 otherwise. Similar pairs are pulled together,
    dissimilar ones pushed apart until they are ``margin`` away (then they cost nothing)."""
    _check_pair(x1, x2, ("x1", "x2"))
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    same = torch.as_tensor(same, device=x1.device)
    if same.shape != (len(x1),):
        raise ValueError(f"same must have shape ({len(x1)},), got {tuple(same.shape)}")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    same = same.to(x1.dtype)
    d = (x1 - x2).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()  # (N,); clamped: a finite gradient at d = 0
    return 0.5 * (same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)).mean()


# --------------------------------------------------------------------------------------------
# SimCLR: the projection head and the task
# --------------------------------------------------------------------------------------------


class ProjectionHead(nn.Sequential):
    """SimCLR's projection g(h): ``Linear(in, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, out)``.

    The loss is computed on g(h); the representation kept for downstream tasks is h, before the head,
    which SimCLR found to transfer better (chapter 09)."""

    def __init__(self, in_features: int, hidden: int = 128, out_features: int = 64):
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features),
        )


class SimCLR(Task):
    """The SimCLR step for :func:`utils.train.fit`: two views of every image of the batch (labels, if
    the batch has any, are ignored), the model's embeddings of both, :func:`nt_xent`. Logs the loss and
    ``acc``, the fraction of views whose most similar other view is their positive (chapter 09)."""

    history_names: dict[str, str] = {"accuracy": "acc"}

    def __init__(self, augment: nn.Module, temperature: float = 0.5):
        _check_temperature(temperature)
        if not callable(augment):
            raise TypeError(f"augment must be callable on a batch of images, got {type(augment).__name__}")
        self.augment, self.temperature = augment, float(temperature)

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        x = images_of(batch, "each batch")
        n = len(x)
        views = torch.cat(
            self.augment.two_views(x)
            if hasattr(self.augment, "two_views")
            else (self.augment(x), self.augment(x))
        )  # (2N, C, h, w)
        with ctx.autocast():
            z = model(views)  # (2N, D)
        z = z.float()
        loss = nt_xent(z[:n], z[n:], self.temperature)
        with torch.no_grad():
            zn = F.normalize(z, dim=1)
            sim = (zn @ zn.T).fill_diagonal_(float("-inf"))
            positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
            accuracy = (sim.argmax(dim=1) == positive).float().mean()
        return {"loss": loss, "accuracy": accuracy}
