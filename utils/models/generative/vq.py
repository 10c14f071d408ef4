"""Vector quantisation and the VQ-VAE (van den Oord et al., 2017), chapter 13.

A VQ-VAE's encoder gives a grid of vectors; each is replaced by the nearest of ``K`` learned code
vectors, so that an image becomes a grid of integers in [0, K). :func:`quantize` does the snapping
with the straight-through gradient, :class:`VectorQuantizer` holds the codebook and the two losses,
:class:`VQVAE` puts a small convolutional encoder and decoder around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoders import _positive

__all__ = ["VQVAE", "Quantized", "VQVAEOutput", "VectorQuantizer", "quantize"]


class Quantized(NamedTuple):
    """What :class:`VectorQuantizer` returns."""

    z_q: torch.Tensor  # the quantised codes, shaped like z_e; gradients pass straight through to z_e
    indices: torch.Tensor  # (B, H, W) or (N,): the index of each vector's nearest code
    codebook_loss: torch.Tensor  # |sg(z_e) - e|^2: moves the chosen codes towards the encoder's outputs
    commitment_loss: torch.Tensor  # |z_e - sg(e)|^2: keeps the encoder's outputs near their codes


def quantize(z_e: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-code quantisation: ``(z_q, indices)`` with the straight-through gradient (chapter 13).

    ``z_e`` is Tensor[B, D, H, W] (a feature map, one D-vector per position) or Tensor[N, D];
    ``codebook`` is Tensor[K, D]. Each vector is replaced by its nearest code in Euclidean distance
    (``|z|^2 - 2 z.e + |e|^2``, without the (M, K, D) tensor of differences); ``indices`` has shape
    (B, H, W) or (N,). ``z_q = z_e + (e - z_e).detach()`` has the values of the codes and the
    gradient of the identity with respect to ``z_e`` (van den Oord et al., 2017); no gradient
    reaches the codebook through it.
    """
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2:
        raise ValueError(
            f"codebook must be (K, D), got {getattr(codebook, 'shape', type(codebook).__name__)}"
        )
    d = codebook.shape[1]
    if not isinstance(z_e, torch.Tensor) or z_e.dim() not in (2, 4) or z_e.shape[1] != d:
        raise ValueError(
            f"z_e must be (B, {d}, H, W) or (N, {d}) for a codebook of {d}-dim codes, "
            f"got {getattr(z_e, 'shape', type(z_e).__name__)}"
        )
    flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e  # (M, D)
    dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)  # (M, K)
    idx = dist.argmin(dim=1)  # (M,)
    e = codebook[idx]  # (M, D)
    if z_e.dim() == 4:
        b, _, h, w = z_e.shape
        e = e.reshape(b, h, w, d).movedim(-1, 1)  # (B, D, H, W)
        idx = idx.reshape(b, h, w)
    return z_e + (e - z_e).detach(), idx


class VectorQuantizer(nn.Module):
    """A learned codebook of ``num_codes`` vectors of size ``code_dim`` (chapter 13).

    ``forward(z_e)`` quantises ``z_e`` (B, code_dim, H, W) or (N, code_dim) with :func:`quantize` and
    returns :class:`Quantized` with the two losses of the VQ-VAE: the codebook loss (trains the
    codes) and the commitment loss (trains the encoder; weight it by beta, 0.25 in the paper).
    The codes start uniform in ``[-1/K, 1/K]``, as in the reference implementation.
    """

    def __init__(self, num_codes: int, code_dim: int) -> None:
        super().__init__()
        self.num_codes = _positive("num_codes", num_codes)
        self.code_dim = _positive("code_dim", code_dim)
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes))

    def forward(self, z_e: torch.Tensor) -> Quantized:
        z_q, idx = quantize(z_e, self.codebook)
        e = self.codebook[idx].movedim(-1, 1) if z_e.dim() == 4 else self.codebook[idx]  # shaped like z_e
        codebook_loss = F.mse_loss(e, z_e.detach())
        commitment_loss = F.mse_loss(z_e, e.detach())
        return Quantized(z_q, idx, codebook_loss, commitment_loss)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, H, W) -> code vectors (B, code_dim, H, W)."""
        return self.codebook[indices].movedim(-1, 1)


class VQVAEOutput(NamedTuple):
    """What :class:`VQVAE` returns: the reconstruction, the code indices and the two VQ losses."""

    x_hat: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class VQVAE(nn.Module):
    """A VQ-VAE (van den Oord et al., 2017; chapter 13): a grid of discrete codes per image.

    The encoder (two 4x4 stride-2 convolutions and a 1x1 projection to ``code_dim`` channels) maps
    (N, C, H, W) to (N, code_dim, H/4, W/4); each position is snapped to one of ``num_codes``
    codebook vectors; the decoder (a 3x3 convolution and two 4x4 transposed convolutions) maps the
    quantised grid back to pixel probabilities. ``forward`` returns :class:`VQVAEOutput`; the loss
    to train is ``reconstruction + codebook_loss + beta * commitment_loss``. H and W must be
    divisible by 4.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 32),
        code_dim: int = 16,
        num_codes: int = 32,
    ) -> None:
        super().__init__()
        c1, c2 = (_positive("each entry of channels", c) for c in channels)
        self.in_channels = _positive("in_channels", in_channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, code_dim, 1),
        )
        self.quantizer = VectorQuantizer(num_codes, code_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, c2, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, in_channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> continuous codes z_e (N, code_dim, H/4, W/4)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"VQVAE takes images (N, {self.in_channels}, H, W), "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"H and W must be divisible by 4, got {x.shape[2]}x{x.shape[3]}")
        return self.encoder(x)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """A grid of code indices (N, h, w) -> images (N, C, 4h, 4w)."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        q = self.quantizer(self.encode(x))
        return VQVAEOutput(self.decoder(q.z_q), q.indices, q.codebook_loss, q.commitment_loss)
