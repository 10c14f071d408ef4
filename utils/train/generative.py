"""Tasks for generative models (chapters 13 and 14): autoencoders and VAEs, and GANs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.train.tasks import Task, full_precision, images_of

__all__ = ["GAN", "Reconstruction", "kl_divergence"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the latent dimensions, averaged over the batch.

    ``-1/2 sum(1 + logvar - mu^2 - exp(logvar))`` for ``mu``, ``logvar`` of shape (B, ...).
    Chapter 13 derives it.
    """
    per_sample = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(dim=1)  # (B,)
    return per_sample.mean()


class Reconstruction(Task):
    """Autoencoders: ``model(x)`` returns ``x_hat``, or ``(x_hat, mu, logvar)`` for a VAE. Chapter 13 uses it.

    ``loss``: ``"mse"``, ``"l1"`` or ``"bce"`` (``x_hat`` must then be probabilities in [0, 1], the
    output of a sigmoid; ``x`` in [0, 1]). ``reduction="sum"`` (default) sums the reconstruction error
    over the pixels of an image and averages over images, the scale of the ELBO;
    ``"mean"`` averages over every element (``F.mse_loss``'s default) and divides the KL term by the
    same number of elements, so both give the same optimum. A VAE's loss is ``recon + beta * kl``
    (:func:`kl_divergence`; ``beta`` > 1 is the beta-VAE); ``recon`` and ``kl`` are logged
    separately. Batches: image tensors, ``(images, labels)`` pairs (labels ignored) or dicts with ``image``.
    """

    LOSSES = ("mse", "bce", "l1")

    def __init__(self, loss: str = "mse", beta: float = 1.0, *, reduction: str = "sum") -> None:
        if loss not in self.LOSSES:
            raise ValueError(f"loss must be one of {self.LOSSES}, got {loss!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.loss, self.beta, self.reduction = loss, float(beta), reduction

    def _error(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x_hat, x = full_precision(x_hat), full_precision(x)
        if self.loss == "mse":
            err = F.mse_loss(x_hat, x, reduction="none")
        elif self.loss == "l1":
            err = F.l1_loss(x_hat, x, reduction="none")
        else:
            err = F.binary_cross_entropy(x_hat, x, reduction="none")
        per_sample = err.flatten(1).sum(dim=1)  # (B,)
        return per_sample.mean() if self.reduction == "sum" else per_sample.mean() / x[0].numel()

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        x = images_of(batch, f"each batch of {ctx.where}")
        with ctx.autocast():
            out = model(x)
        if isinstance(out, torch.Tensor):
            x_hat, mu, logvar = out, None, None
        elif isinstance(out, Sequence) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out):
            x_hat, mu, logvar = out
        else:
            raise TypeError(
                f"the model must return x_hat, or (x_hat, mu, logvar) for a VAE; got {type(out).__name__}"
                + (f" of {len(out)} items" if isinstance(out, Sequence) else "")
            )
        if x_hat.shape != x.shape:
            raise ValueError(
                f"the reconstruction must have the input's shape {tuple(x.shape)}, got {tuple(x_hat.shape)}"
            )
        recon = self._error(x_hat, x)
        if mu is None:
            return {"loss": recon}
        kl = kl_divergence(full_precision(mu), full_precision(logvar))
        if self.reduction == "mean":
            kl = kl / x[0].numel()
        return {"loss": recon + self.beta * kl, "recon": recon.detach(), "kl": kl.detach()}


class GAN(Task):
    """Generative adversarial networks: a discriminator step, then a generator step, on every batch.

    The model is one module with two submodules, ``model.generator`` (latent ``z`` (B, *latent_shape)
    -> images) and ``model.discriminator`` (images -> one score per image, (B,) or (B, 1)), e.g.
    ``nn.ModuleDict({"generator": G, "discriminator": D})``: one module, so that checkpoints, devices
    and ``fit``'s arguments work as for any model. Each batch of real images (a tensor, a pair or a dict
    with ``image``) gives ``z ~ N(0, I)`` and

    * ``loss="nonsaturating"`` (default; Goodfellow et al., 2014): D minimises
      ``BCE(D(x), 1) + BCE(D(G(z)), 0)``, G minimises ``BCE(D(G(z)), 1) = -log sigma(D(G(z)))``;
    * ``"saturating"``: G minimises ``log(1 - sigma(D(G(z))))`` instead (the original minimax game,
      whose gradient vanishes while D wins; chapter 14 shows it);
    * ``"wgan-gp"`` (Gulrajani et al., 2017): the critic minimises
      ``D(G(z)) - D(x) + gp_weight * (|grad D(x_mix)| - 1)^2``, G minimises ``-D(G(z))``.

    The generator steps on every ``n_critic``-th batch (default 1, and 5 for WGAN-GP); during its
    step D's parameters get no gradient. Logs ``d_loss``, ``g_loss`` and, for the two BCE losses,
    ``d_acc`` (real scored > 0 and fakes < 0); for WGAN-GP ``gp`` and ``wasserstein``
    (``D(x) - D(G(z))``). Optimizers: ``Adam(lr, betas)`` for each (names ``"generator"`` and
    ``"discriminator"``), ``betas=(0.5, 0.999)`` as in DCGAN; ``lr_g`` / ``lr_d`` override fit's ``lr``.
    Chapter 14 trains GANs with it.
    """

    automatic_optimization = False
    ddp = False  # G and D are called separately: the loop averages the gradients in ctx.step
    LOSSES = ("nonsaturating", "saturating", "wgan-gp")

    def __init__(
        self,
        latent_dim: int | Sequence[int],
        loss: str = "nonsaturating",
        *,
        n_critic: int | None = None,
        gp_weight: float = 10.0,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_g: float | None = None,
        lr_d: float | None = None,
    ) -> None:
        shape = (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"latent_dim must be a positive int or a shape of them, got {latent_dim!r}")
        if loss not in self.LOSSES:
            raise ValueError(f"loss must be one of {self.LOSSES}, got {loss!r}")
        n_critic = (5 if loss == "wgan-gp" else 1) if n_critic is None else n_critic
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"n_critic must be a positive int, got {n_critic!r}")
        self.latent_shape, self.loss, self.n_critic = shape, loss, n_critic
        self.gp_weight, self.betas, self.lr_g, self.lr_d = gp_weight, tuple(betas), lr_g, lr_d

    @staticmethod
    def parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
        g, d = getattr(model, "generator", None), getattr(model, "discriminator", None)
        if not (isinstance(g, nn.Module) and isinstance(d, nn.Module)):
            raise TypeError(
                "the GAN task trains a module with .generator and .discriminator submodules, e.g. "
                "nn.ModuleDict({'generator': G, 'discriminator': D})"
            )
        return g, d

    def configure_optimizers(self, model: nn.Module, lr: float = 2e-4) -> dict[str, torch.optim.Optimizer]:
        g, d = self.parts(model)
        return {
            "generator": torch.optim.Adam(g.parameters(), lr=self.lr_g or lr, betas=self.betas),
            "discriminator": torch.optim.Adam(d.parameters(), lr=self.lr_d or lr, betas=self.betas),
        }

    def _scores(self, d: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        with ctx.autocast():
            s = d(x)
        return full_precision(s).reshape(x.shape[0], -1).mean(dim=1)  # (B,): one score per image

    def _d_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor, ctx: Any) -> dict[str, Any]:
        s_real, s_fake = self._scores(d, real, ctx), self._scores(d, fake, ctx)
        if self.loss == "wgan-gp":
            out = {"wasserstein": (s_real.mean() - s_fake.mean()).detach()}
            loss = s_fake.mean() - s_real.mean()
            if torch.is_grad_enabled():  # (validation runs without gradients: no penalty there)
                gp = gradient_penalty(d, real, fake)
                loss = loss + self.gp_weight * gp
                out["gp"] = gp.detach()
            return {"d_loss": loss, **out}
        loss = F.binary_cross_entropy_with_logits(
            s_real, torch.ones_like(s_real)
        ) + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake))
        correct = (s_real > 0).sum() + (s_fake < 0).sum()
        return {"d_loss": loss, "d_acc": (correct.detach(), 2 * real.shape[0])}

    def _g_loss(self, s_fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "wgan-gp":
            return -s_fake.mean()
        if self.loss == "saturating":  # log(1 - sigmoid(s)) = -softplus(s)
            return -F.softplus(s_fake).mean()
        return F.binary_cross_entropy_with_logits(s_fake, torch.ones_like(s_fake))

    def _generate(self, g: nn.Module, real: torch.Tensor, ctx: Any) -> torch.Tensor:
        z = torch.randn(real.shape[0], *self.latent_shape, device=real.device)
        with ctx.autocast():
            fake = g(z)
        if fake.shape != real.shape:
            raise ValueError(
                f"the generator must give images of the real batch's shape {tuple(real.shape)}, "
                f"got {tuple(fake.shape)}"
            )
        return fake

    def training_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        g, d = self.parts(model)
        real = images_of(batch, f"each batch of {ctx.where}")
        fake = self._generate(g, real, ctx)
        out = self._d_loss(d, real, fake.detach(), ctx)
        ctx.backward(out["d_loss"], "discriminator")
        ctx.step("discriminator")
        out["d_loss"] = out["d_loss"].detach()
        if ctx.batch_idx % self.n_critic == 0:
            flags = [p.requires_grad for p in d.parameters()]
            d.requires_grad_(False)  # the generator's loss must not leave gradients in D
            try:
                g_loss = self._g_loss(self._scores(d, fake, ctx))
                ctx.backward(g_loss, "generator")
                ctx.step("generator")
            finally:
                for p, flag in zip(d.parameters(), flags):
                    p.requires_grad_(flag)
            out["g_loss"] = g_loss.detach()
        return out

    def validation_step(self, model: nn.Module, batch: Any, ctx: Any) -> dict[str, Any]:
        g, d = self.parts(model)
        real = images_of(batch, f"each batch of {ctx.where}")
        fake = self._generate(g, real, ctx)
        out = self._d_loss(d, real, fake, ctx)
        out["g_loss"] = self._g_loss(self._scores(d, fake, ctx))
        return out


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's ``mean((|grad_x D(x_mix)|_2 - 1)^2)`` at random mixes ``x_mix`` of real and fake images."""
    eps = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device)
    mix = (eps * full_precision(real) + (1 - eps) * full_precision(fake)).requires_grad_(True)
    scores = d(mix).reshape(real.shape[0], -1).sum()
    (grad,) = torch.autograd.grad(scores, mix, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
