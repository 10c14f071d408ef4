"""Generative models (part IV): autoencoders, VAEs and VQ-VAEs (chapter 13).

* :mod:`~utils.models.generative.autoencoders`: :class:`MLPAutoencoder` (the linear autoencoder
  with ``hidden=()``), :class:`ConvAutoencoder`, :class:`VAE` and :class:`ConditionalVAE`;
* :mod:`~utils.models.generative.vq`: :func:`quantize`, :class:`VectorQuantizer` and :class:`VQVAE`;
* :mod:`~utils.models.generative.losses`: :func:`gaussian_kl`, :func:`reparameterize`,
  :func:`active_units`, :func:`codebook_usage`.

``utils.train.fit(model, ..., task=utils.train.Reconstruction(...))`` trains them.
"""

from __future__ import annotations

from .autoencoders import UPSAMPLING, VAE, ConditionalVAE, ConvAutoencoder, MLPAutoencoder
from .losses import active_units, codebook_usage, gaussian_kl, reparameterize
from .vq import VQVAE, Quantized, VectorQuantizer, VQVAEOutput, quantize

__all__ = [
    "UPSAMPLING",
    "VAE",
    "VQVAE",
    "ConditionalVAE",
    "ConvAutoencoder",
    "MLPAutoencoder",
    "Quantized",
    "VQVAEOutput",
    "VectorQuantizer",
    "active_units",
    "codebook_usage",
    "gaussian_kl",
    "quantize",
    "reparameterize",
]
