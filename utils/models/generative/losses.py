"""The pieces of a VAE's and a VQ-VAE's objective, and the numbers that say how the latent space is used.

Chapter 13 derives each of them:

* :func:`gaussian_kl`: ``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per sample, the ELBO's regulariser;
* :func:`reparameterize`: ``z = mu + exp(logvar / 2) * eps``, a sample that gradients flow through;
* :func:`active_units`: the latent dimensions a VAE uses (Burda et al., 2016), which a collapsed
  posterior leaves idle;
* :func:`codebook_usage`: how many codes of a VQ-VAE's codebook are used, and their perplexity.

``utils.train.Reconstruction`` trains VAEs with the batch mean of :func:`gaussian_kl`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["active_units", "codebook_usage", "gaussian_kl", "reparameterize"]


def _check_pair(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if not (isinstance(mu, torch.Tensor) and isinstance(logvar, torch.Tensor)):
        raise TypeError(f"mu and logvar must be tensors, got {type(mu).__name__} and {type(logvar).__name__}")
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if mu.dim() < 2:
        raise ValueError(
            f"mu and logvar must be (B, ...) with a batch dimension first, got {tuple(mu.shape)}"
        )
    if not mu.is_floating_point() or not logvar.is_floating_point():
        raise TypeError(f"mu and logvar must be floating point, got {mu.dtype} and {logvar.dtype}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""``KL(N(mu, diag(exp(logvar))) || N(0, I))`` of each sample: Tensor[B].

    ``mu`` and ``logvar`` (the log-variance) are Tensor[B, ...] of one shape; the KL of the
    independent coordinates adds up over every dimension after the first:
    :math:`\frac{1}{2}\sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)`. Zero exactly when
    ``mu = 0`` and ``logvar = 0``. Chapter 13 derives it and checks it against
    ``torch.distributions.kl_divergence``.
    """
    _check_pair(mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)  # (B,)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None, *, generator=None
) -> torch.Tensor:
    """A sample ``z = mu + exp(logvar / 2) * eps`` of ``N(mu, diag(exp(logvar)))``, shaped like ``mu``.

    ``eps`` (shaped like ``mu``) is the standard normal noise; drawn with ``generator`` when None.
    The noise is an input, not a function of ``mu`` and ``logvar``, so gradients reach both:
    ``dz/dmu = 1`` and ``dz/dlogvar = exp(logvar / 2) * eps / 2`` (the reparameterisation trick of
    Kingma and Welling, 2014). Chapter 13 explains it.
    """
    _check_pair(mu, logvar)
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    elif eps.shape != mu.shape:
        raise ValueError(f"eps must have mu's shape {tuple(mu.shape)}, got {tuple(eps.shape)}")
    return mu + (0.5 * logvar).exp() * eps


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Which latent dimensions a VAE uses: Tensor[d] of bools, from the posterior means ``mu`` Tensor[N, d].

    A dimension is *active* when its posterior mean changes with the input: the variance over the
    data set of ``mu[:, j]`` exceeds ``threshold`` (Burda et al., 2016, use 0.01). An inactive
    dimension has collapsed onto the prior: the decoder ignores it. Chapter 13 counts them.
    """
    if not isinstance(mu, torch.Tensor) or mu.dim() != 2 or len(mu) < 2:
        raise ValueError(
            "mu must be a (N, d) tensor of posterior means with N >= 2, "
            f"got {getattr(mu, 'shape', type(mu).__name__)}"
        )
    return mu.double().var(dim=0) > threshold


def codebook_usage(indices: torch.Tensor, num_codes: int) -> tuple[float, float]:
    """``(fraction of the codes used, perplexity)`` of VQ-VAE code indices (any shape, ints in [0, K)).

    The perplexity ``exp(H)`` of the codes' frequencies is the number of equally used codes that
    would give the same entropy: ``K`` when every code is used equally often, 1 when a single code
    is. Chapter 13 watches it for dead codes.
    """
    if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.numel() == 0:
        raise ValueError("indices must be a non-empty integer tensor of code indices")
    flat = indices.reshape(-1).long().cpu()
    if int(flat.min()) < 0 or int(flat.max()) >= num_codes:
        raise ValueError(
            f"indices must lie in [0, {num_codes - 1}], "
            f"got values from {int(flat.min())} to {int(flat.max())}"
        )
    p = torch.bincount(flat, minlength=num_codes).double() / flat.numel()  # (K,)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return float((p > 0).double().mean()), math.exp(entropy)
