"""Chapter 13 (assignment ``13_autoencoders``): the pieces of a VAE and a VQ-VAE, and a denoiser.

Every case draws fresh random inputs from the generator it is given; the expected values come from
``torch.distributions.kl_divergence``, ``F.binary_cross_entropy``, brute-force distances and closed-form
gradients, computed in the grading process. Tolerances: float32 ``1e-5 + 1e-5 * |expected|``
(``1e-4`` relative for the sums of q3), float64 ``1e-10 + 1e-8 * |expected|``.

* q1 ``gaussian_kl(mu, logvar, prior_mu, prior_logvar) -> Tensor[B]``: the KL divergence between two
  diagonal Gaussians, ``KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar)))``, summed over every
  dimension after the first. The chapter wrote only the standard-normal prior. Cases: (B, D) and
  (B, C, H, W), the standard prior, identical distributions (zeros), B = 1, float64, log-variances
  far apart. ``torch.distributions`` and the course's generative modules are forbidden.
* q2 ``reparameterize(mu, logvar, eps) -> z``: ``mu + exp(logvar / 2) * eps``, with the gradients
  checked too (a harness backpropagates a random weighting of ``z`` to ``mu`` and ``logvar``): a
  detached standard deviation, or ``exp(logvar)`` for the standard deviation, fails. Cases: (B, D),
  (B, C, H, W), float64, ``eps = 0``, very negative log-variances.
* q3 ``vae_loss(x, x_hat, mu, logvar, beta) -> 0-dim tensor``: binary cross-entropy summed over the
  pixels of each image, plus ``beta`` times the standard-normal KL of each image, averaged over the
  batch (the negative ELBO for ``beta = 1``). The logs are clamped at -100 as in PyTorch, so
  predictions of exactly 0 or 1 give finite values. Cases: beta 0, 1, 4 and 0.5, grey targets,
  predictions of exactly 0 and 1 (right and wrong), B = 1, float64.
  ``F.binary_cross_entropy`` (and its relatives) and ``torch.distributions`` are forbidden.
* q4 ``vector_quantize(z_e, codebook) -> (z_q, indices)``: nearest code in Euclidean distance, for
  ``z_e`` (B, D, H, W) or (N, D); ``z_q`` has the codes' values, the gradient of the identity with
  respect to ``z_e`` and none with respect to the codebook (the straight-through estimator). Cases
  include codes of very different norms (the largest dot product is not the nearest code), a
  codebook of one code, vectors equal to a code. ``torch.cdist`` and the course's modules are forbidden.
* q5 (make it work, 2 points) ``predict(noisy (B, 1, 28, 28)) -> (B, 1, 28, 28)``: denoise MNIST
  digits corrupted by :func:`add_noise` (Gaussian noise of standard deviation 0.5, clipped to
  [0, 1]). Scored by the PSNR against the clean digits of the 1,000-image test split, which the
  exercise never loads: 2 points from 17 dB, 1 from 15 dB (returning the noisy input gives about
  9 dB); 60 s for all predictions.
* r1-r6 (review, half a point each).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from ..challenge import MakeItWork
from ..core import Case, Code, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "13_autoencoders"
TITLE = "Autoencoders and variational autoencoders"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-10, "rtol": 1e-8}}
SUM_TOL = {F32: {"atol": 1e-4, "rtol": 1e-4}, F64: {"atol": 1e-9, "rtol": 1e-8}}
GENERATIVE = ("torch.distributions", "utils.models.generative", "utils.train", *COURSE)


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _normal(mu: torch.Tensor, logvar: torch.Tensor) -> Independent:
    return Independent(Normal(mu, (0.5 * logvar).exp()), mu.dim() - 1)


# --------------------------------------------------------------------------- q1 KL between two Gaussians

KL_HINT = (
    "per coordinate, KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2; "
    "with log-variances: 0.5 * (lv2 - lv1 + (exp(lv1) + (m1 - m2)^2) / exp(lv2) - 1); sum it over every "
    "dimension after the first (flatten(1).sum(1)) and return one value per sample, shape (B,)"
)


def kl_cases(g: torch.Generator) -> list[Case]:
    def pair(*shape: int, dtype: torch.dtype = F32, spread: float = 1.0):
        return _randn(g, *shape, dtype=dtype), _randn(g, *shape, dtype=dtype) * spread

    mu, lv = pair(6, 4)
    inputs = [  # (label, mu, logvar, prior_mu, prior_logvar)
        ("(B, D) = (6, 4)", mu, lv, *pair(6, 4)),
        (
            "the standard normal prior (prior_mu = prior_logvar = 0)",
            *pair(5, 3),
            torch.zeros(5, 3),
            torch.zeros(5, 3),
        ),
        ("identical distributions (KL = 0)", mu, lv, mu.clone(), lv.clone()),
        ("feature maps (B, C, H, W) = (2, 3, 4, 4): sum over C, H, W", *pair(2, 3, 4, 4), *pair(2, 3, 4, 4)),
        ("a single sample (B = 1)", *pair(1, 7), *pair(1, 7)),
        ("float64", *pair(4, 5, dtype=F64), *pair(4, 5, dtype=F64)),
        ("log-variances far apart (spread 4)", *pair(3, 6, spread=4.0), *pair(3, 6, spread=4.0)),
    ]
    cases = []
    for label, m1, l1, m2, l2 in inputs:
        expected = kl_divergence(_normal(m1, l1), _normal(m2, l2))  # (B,)
        cases.append(
            Case(
                label,
                "gaussian_kl",
                {"mu": m1, "logvar": l1, "prior_mu": m2, "prior_logvar": l2},
                expected,
                **SUM_TOL[m1.dtype],
                hint=KL_HINT,
                unchanged=("mu", "logvar", "prior_mu", "prior_logvar"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 reparameterisation

REPARAM = Code(
    "lambda fn, mu, logvar, eps, w: (lambda m, lv: (lambda z: (z.detach().clone(), "
    "*[torch.zeros_like(t) if d is None else d for t, d in "
    "zip((m, lv), torch.autograd.grad((z * w).sum(), (m, lv), allow_unused=True))]))"
    "(fn(m, lv, eps)))(mu.detach().clone().requires_grad_(True), "
    "logvar.detach().clone().requires_grad_(True))"
)
REPARAM_HINT = (
    "z = mu + exp(logvar / 2) * eps: the standard deviation is exp(logvar / 2), not exp(logvar); build z "
    "from mu and logvar with differentiable operations (no .detach(), no torch.no_grad, no new tensor), "
    "so that dz/dmu = 1 and dz/dlogvar = exp(logvar / 2) * eps / 2"
)


def reparam_cases(g: torch.Generator) -> list[Case]:
    inputs = [
        ("(B, D) = (5, 3)", _randn(g, 5, 3), _randn(g, 5, 3), _randn(g, 5, 3)),
        ("feature maps (2, 4, 3, 3)", _randn(g, 2, 4, 3, 3), _randn(g, 2, 4, 3, 3), _randn(g, 2, 4, 3, 3)),
        ("float64", _randn(g, 4, 6, dtype=F64), _randn(g, 4, 6, dtype=F64), _randn(g, 4, 6, dtype=F64)),
        ("eps = 0 (z = mu, no gradient to logvar)", _randn(g, 3, 4), _randn(g, 3, 4), torch.zeros(3, 4)),
        ("very negative log-variances (-30)", _randn(g, 3, 2), torch.full((3, 2), -30.0), _randn(g, 3, 2)),
    ]
    cases = []
    for label, mu, logvar, eps in inputs:
        w = _randn(g, *mu.shape, dtype=mu.dtype)
        std = (0.5 * logvar).exp()
        expected = (mu + std * eps, w.clone(), w * 0.5 * std * eps)
        cases.append(
            Case(
                label,
                "reparameterize",
                {"mu": mu, "logvar": logvar, "eps": eps, "w": w},
                expected,
                **TOL[mu.dtype],
                hint=REPARAM_HINT,
                unchanged=("mu", "logvar", "eps"),
                harness=REPARAM,
                outputs=("z", "the gradient reaching mu", "the gradient reaching logvar"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 the VAE loss

VAE_HINT = (
    "BCE per pixel: -(x log x_hat + (1 - x) log(1 - x_hat)), each log clamped at -100 (torch.clamp(..., "
    "min=-100)) as PyTorch does, so x_hat = 0 or 1 stays finite; sum over the pixels of each image, add "
    "beta * the KL of q1 with a standard-normal prior (prior_mu = prior_logvar = 0), and average over the "
    "batch: a 0-dim tensor"
)


def vae_cases(g: torch.Generator) -> list[Case]:
    def batch(b: int, d: int = 4, dtype: torch.dtype = F32, binary: bool = True):
        x = (
            (torch.rand(b, 1, 6, 6, generator=g) < 0.3).to(dtype)
            if binary
            else torch.rand(b, 1, 6, 6, generator=g).to(dtype)
        )
        x_hat = torch.rand(b, 1, 6, 6, generator=g).to(dtype) * 0.98 + 0.01
        return x, x_hat, _randn(g, b, d, dtype=dtype), _randn(g, b, d, dtype=dtype)

    exact = batch(4)
    x, x_hat = exact[0], exact[1].clone()
    x_hat[0, 0, :2] = x[0, 0, :2]  # predictions of exactly 0 and 1 that are right: no loss
    x_hat[1, 0, 0, :3] = 1 - x[1, 0, 0, :3]  # and that are wrong: 100 per pixel
    inputs = [  # (label, x, x_hat, mu, logvar, beta)
        ("beta = 1 (the negative ELBO), B = 8", *batch(8), 1.0),
        ("beta = 0 (a plain autoencoder's BCE)", *batch(5), 0.0),
        ("beta = 4", *batch(6), 4.0),
        ("grey targets in [0, 1], beta = 0.5", *batch(5, binary=False), 0.5),
        ("predictions of exactly 0 and 1 (logs clamped at -100)", x, x_hat, exact[2], exact[3], 1.0),
        ("a single image (B = 1), 8-D codes", *batch(1, 8), 1.0),
        ("float64", *batch(4, dtype=F64), 2.0),
    ]
    cases = []
    for label, x, x_hat, mu, logvar, beta in inputs:
        recon = F.binary_cross_entropy(x_hat, x, reduction="sum") / len(x)
        zeros = torch.zeros_like(mu)
        expected = recon + beta * kl_divergence(_normal(mu, logvar), _normal(zeros, zeros)).mean()
        cases.append(
            Case(
                label,
                "vae_loss",
                {"x": x, "x_hat": x_hat, "mu": mu, "logvar": logvar, "beta": beta},
                expected,
                **SUM_TOL[x.dtype],
                hint=VAE_HINT,
                unchanged=("x", "x_hat", "mu", "logvar"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 vector quantisation

VQ = Code(
    "lambda fn, z_e, codebook, w: (lambda z, c: (lambda out: (out[0].detach().clone(), out[1], "
    "*[torch.zeros_like(t) if d is None else d for t, d in "
    "zip((z, c), torch.autograd.grad((out[0] * w).sum(), (z, c), allow_unused=True))]))"
    "(fn(z, c)))(z_e.detach().clone().requires_grad_(True), codebook.detach().clone().requires_grad_(True))"
)
VQ_HINT = (
    "put the vectors in rows (z_e.movedim(1, -1).reshape(-1, D) for (B, D, H, W)), compute squared distances "
    "|z|^2 - 2 z.e + |e|^2 to every code (the largest dot product alone is not the nearest code when the "
    "codes' norms differ), argmin over the codes; indices int64 of shape (B, H, W) (or (N,)); "
    "z_q = z_e + (e - z_e).detach(), with e the chosen codes moved back to z_e's layout, has the codes' "
    "values, the identity's gradient for z_e and no gradient for the codebook"
)


def vq_cases(g: torch.Generator) -> list[Case]:
    def spread_codebook(k: int, d: int) -> torch.Tensor:
        c = _randn(g, k, d)
        return c * torch.logspace(-1, 1, k)[:, None]  # norms from 0.1 to 10 times

    cb = _randn(g, 6, 3)
    on_codes = cb[torch.randint(0, 6, (2, 2, 2), generator=g)].movedim(-1, 1)  # (2, 3, 2, 2)
    inputs = [  # (label, z_e, codebook)
        ("feature maps (B, D, H, W) = (2, 4, 3, 3), K = 8", _randn(g, 2, 4, 3, 3), _randn(g, 8, 4)),
        ("vectors (N, D) = (10, 5), K = 16", _randn(g, 10, 5), _randn(g, 16, 5)),
        (
            "codes of very different norms (dot product is not distance)",
            _randn(g, 3, 4, 4, 4),
            spread_codebook(12, 4),
        ),
        ("a codebook of one code", _randn(g, 2, 3, 2, 2), _randn(g, 1, 3)),
        ("vectors equal to codes", on_codes, cb),
        (
            "non-square maps (1, 2, 2, 5), K = 4, float64",
            _randn(g, 1, 2, 2, 5, dtype=F64),
            _randn(g, 4, 2, dtype=F64),
        ),
    ]
    cases = []
    for label, z_e, codebook in inputs:
        d = codebook.shape[1]
        flat = z_e.movedim(1, -1).reshape(-1, d) if z_e.dim() == 4 else z_e
        idx = torch.cdist(flat.double(), codebook.double()).argmin(1)
        e = codebook[idx]
        if z_e.dim() == 4:
            b, _, h, w_ = z_e.shape
            e, idx = e.reshape(b, h, w_, d).movedim(-1, 1), idx.reshape(b, h, w_)
        w = _randn(g, *z_e.shape, dtype=z_e.dtype)
        expected = (e, idx, w.clone(), torch.zeros_like(codebook))
        cases.append(
            Case(
                label,
                "vector_quantize",
                {"z_e": z_e, "codebook": codebook, "w": w},
                expected,
                **TOL[z_e.dtype],
                hint=VQ_HINT,
                unchanged=("z_e", "codebook"),
                harness=VQ,
                outputs=("z_q", "indices", "the gradient reaching z_e", "the gradient reaching the codebook"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q5 make it work: a denoiser

NOISE_STD = 0.5
N_VALIDATION = 500


def add_noise(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The corruption of q5: Gaussian noise of standard deviation 0.5, clipped to [0, 1]."""
    return (images + NOISE_STD * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def denoising_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The data of q5: clean MNIST digits ``(x_fit (3500, 1, 28, 28), x_val (500, 1, 28, 28))``.

    A fixed random split of ``utils.data.mnist("train")``; the grader scores ``predict`` on the
    digits' test split, which the exercise never loads.
    """
    import utils.data

    train = utils.data.mnist("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.images[order[N_VALIDATION:]], train.images[order[:N_VALIDATION]]


def held_out_noisy_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q5: the 1,000 test digits with fresh noise, and the clean digits."""
    import utils.data

    clean = utils.data.mnist("test").images
    return add_noise(clean, torch.Generator().manual_seed(seed)), clean


def _preview(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, x_val = denoising_digits()
    return add_noise(x_val, torch.Generator().manual_seed(seed)), x_val


def psnr(outputs: list, targets: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)`` over all pixels of all images."""
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise ValueError("predict must return a tensor of denoised images (B, 1, 28, 28) for each batch")
    denoised = torch.cat([o.detach().float().cpu() for o in outputs]) if outputs else torch.empty(0)
    if denoised.shape != targets.shape:
        raise ValueError(
            f"expected denoised images of shape {tuple(targets.shape)} in all, got {tuple(denoised.shape)}"
        )
    mse = (denoised - targets).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-10)) if math.isfinite(mse) else 0.0


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "The KL of one posterior",
        0.9869,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Per dimension 0.5 (mu^2 + sigma^2 - 1 - log sigma^2): 0.5 (0.36 + 1 - 1 - 0) = 0.18 and "
        "0.5 (0 + 4 - 1 - ln 4) = 0.807 (sigma^2 = exp(ln 4) = 4); the KL adds them: 0.987 nats.",
    ),
    Review(
        "r2",
        "Parameters of a linear autoencoder",
        25888,
        points=0.5,
        explain="Encoder Linear(784, 16): 784 * 16 + 16 = 12,560; decoder Linear(16, 784): 16 * 784 + 784 "
        "= 13,328; together 25,888 (the biases differ: 16 in the encoder, 784 in the decoder).",
    ),
    Review(
        "r3",
        "Bits of a VQ-VAE code",
        441,
        points=0.5,
        explain="Each of the 7 * 7 = 49 positions holds one of 512 = 2^9 codes, i.e. 9 bits: 49 * 9 = 441 "
        "bits per image (the 16-D code vectors themselves are shared by all images, in the codebook).",
    ),
    Review(
        "r4",
        "AUROC from scores",
        0.75,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Count the (anomaly, normal) pairs where the anomaly scores higher: 0.9 beats all 4 "
        "normals, 0.4 beats 0.1 and 0.3 (2), 0.7 beats 0.1, 0.5 and 0.3 (3): 9 of 3 * 4 = 12 "
        "pairs, AUROC = 0.75.",
    ),
    Review(
        "r5",
        "A linear autoencoder at its optimum",
        {"b", "c"},
        points=0.5,
        explain="The loss only sees the product W_d W_e: any invertible mixing W_d A, A^-1 W_e gives the "
        "same reconstructions, so the columns span the principal subspace (b) with PCA's error (c) "
        "but need be neither the principal directions (a) nor orthonormal (d).",
    ),
    Review(
        "r6",
        "Raising beta in a beta-VAE",
        {"a", "c"},
        points=0.5,
        explain="A larger beta makes the KL (the rate) more expensive: it falls (a), and dimensions whose "
        "information is not worth its price collapse onto the prior and become inactive (c); the "
        "reconstruction error rises, not falls (b), and the beta = 1 ELBO gets worse, not better (d).",
    ),
]

QUESTIONS = [
    Question(
        "q1",
        "KL divergence between two diagonal Gaussians",
        ("gaussian_kl",),
        kl_cases,
        forbid=GENERATIVE,
        why="q1 asks for the closed form written with tensor operations",
    ),
    Question(
        "q2",
        "The reparameterisation trick (values and gradients)",
        ("reparameterize",),
        reparam_cases,
        forbid=GENERATIVE,
        why="q2 asks for the sample written with tensor operations",
    ),
    Question(
        "q3",
        "The VAE loss (negative ELBO with beta)",
        ("vae_loss",),
        vae_cases,
        points=1.5,
        forbid=(
            "torch.nn.functional.binary_cross_entropy",
            "torch.nn.functional.binary_cross_entropy_with_logits",
            "torch.nn.BCELoss",
            *GENERATIVE,
        ),
        why="q3 asks for the loss written with tensor operations",
    ),
    Question(
        "q4",
        "Vector quantisation with the straight-through gradient",
        ("vector_quantize",),
        vq_cases,
        points=1.5,
        forbid=("torch.cdist", *GENERATIVE),
        why="q4 asks for the distances and the straight-through estimator written by hand",
    ),
    MakeItWork(
        "q5",
        "Make it work: denoise digits you never see",
        held_out_noisy_digits,
        metric=psnr,
        steps=((17.0, 2), (15.0, 1)),
        budget=60,
        batch_size=250,
        preview=_preview,
    ),
    *REVIEW,
]
