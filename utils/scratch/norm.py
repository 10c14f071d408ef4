"""Normalization layers and dropout from scratch: the layers that behave differently in training and
evaluation mode, or that normalize over different axes (chapter 05).

* :func:`batchnorm_forward` / :func:`batchnorm_backward`: batch normalization of (N, C, *) tensors
  with running statistics, and its hand-written backward pass; :class:`BatchNorm2d` wraps them in a
  module with the parameters and buffers of ``torch.nn.BatchNorm2d`` (their state dicts load into
  each other).
* :func:`layer_norm`, :func:`instance_norm`, :func:`group_norm`: the same standardization over
  other axes; :data:`NORM_AXES` names them.
* :func:`dropout` (inverted dropout) and :func:`dropout2d` (spatial dropout, whole channels).

Conventions (those of PyTorch): the batch statistics normalize with the *biased* variance
(divide by n), the running variance is updated with the *unbiased* one (divide by n - 1), and
``running = (1 - momentum) * running + momentum * batch_statistic``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = [
    "NORM_AXES",
    "BatchNorm2d",
    "batchnorm_backward",
    "batchnorm_forward",
    "dropout",
    "dropout2d",
    "group_norm",
    "instance_norm",
    "layer_norm",
]

# Which axes of an (N, C, H, W) tensor share one mean and one variance.
NORM_AXES = {
    "BatchNorm": "(N, H, W) for each channel: statistics across the batch",
    "LayerNorm": "(C, H, W) for each sample",
    "InstanceNorm": "(H, W) for each sample and channel",
    "GroupNorm": "(C / G, H, W) for each sample and group of C / G channels",
}


def _check_nc(x: Any, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")


def _check_channel_vector(t: Any, name: str, c: int) -> None:
    if not isinstance(t, torch.Tensor) or t.shape != (c,):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a tensor of shape ({c},), one value per channel, got {got}")


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) so that it broadcasts over an (N, C, *) tensor of ``ndim`` dims."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


# --------------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------------
def batchnorm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    momentum: float = 0.1,
    eps: float = 1e-5,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch normalization of x (N, C, *): returns ``(out, running_mean, running_var, cache)``. Chapter 05.

    Training mode: standardize each channel with the mean and the biased variance of the batch,
    over every axis but the channel axis (N, H, W for images); return *new* running statistics
    ``(1 - momentum) * running + momentum * batch`` (the variance unbiased: times n / (n - 1),
    n = N * H * W). Evaluation mode: standardize with the running statistics, returned unchanged.
    Then scale by ``gamma`` and shift by ``beta`` (both (C,)). The arguments are not modified.

    ``cache = (x_hat, gamma, inv_std)``: the standardized input (N, C, *), gamma (C,) and
    1 / sqrt(var + eps) (C,), all that :func:`batchnorm_backward` needs.
    Same values as ``torch.nn.functional.batch_norm``, which updates the running statistics in place.
    """
    _check_nc(x)
    c = x.shape[1]
    for name, t in (
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        _check_channel_vector(t, name, c)
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
    dims = [0, *range(2, x.dim())]  # every axis but the channels
    if training:
        n = x.numel() // c  # values per channel: N * H * W
        if n < 2:
            raise ValueError(
                "batch normalization in training mode needs more than 1 value per channel, got input of "
                "shape "
                f"{tuple(x.shape)} (a batch of one with no spatial extent has no variance)"
            )
        mean = x.mean(dim=dims)  # (C,)
        var = x.var(dim=dims, unbiased=False)  # (C,) biased: the batch is standardized with it
        running_mean = (1 - momentum) * running_mean + momentum * mean.detach()
        running_var = (1 - momentum) * running_var + momentum * var.detach() * n / (n - 1)  # unbiased
    else:
        mean, var = running_mean, running_var
        running_mean, running_var = running_mean.clone(), running_var.clone()
    inv_std = torch.rsqrt(var + eps)  # (C,)
    x_hat = (x - _per_channel(mean, x.dim())) * _per_channel(inv_std, x.dim())  # (N, C, *)
    out = _per_channel(gamma, x.dim()) * x_hat + _per_channel(beta, x.dim())
    return out, running_mean, running_var, (x_hat, gamma, inv_std)


def batchnorm_backward(
    dout: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward pass of :func:`batchnorm_forward` in training mode: ``(dx, dgamma, dbeta)``. Chapter 05.

    With m = N * H * W values per channel and ``cache = (x_hat, gamma, inv_std)``:
    dbeta = sum(dout), dgamma = sum(dout * x_hat) (sums over every axis but the channels) and

        dx = gamma * inv_std / m * (m * dout - dbeta - x_hat * dgamma),

    which accounts for the mean and the variance depending on every x of the batch.
    """
    x_hat, gamma, inv_std = cache
    _check_nc(dout, "dout")
    if dout.shape != x_hat.shape:
        raise ValueError(
            f"dout must have the shape of the forward output {tuple(x_hat.shape)}, got {tuple(dout.shape)}"
        )
    dims = [0, *range(2, dout.dim())]
    m = dout.numel() // dout.shape[1]
    dbeta = dout.sum(dim=dims)  # (C,)
    dgamma = (dout * x_hat).sum(dim=dims)  # (C,)
    k = dout.dim()
    dx = _per_channel(gamma * inv_std / m, k) * (
        m * dout - _per_channel(dbeta, k) - x_hat * _per_channel(dgamma, k)
    )
    return dx, dgamma, dbeta


class BatchNorm2d(nn.Module):
    """Batch normalization as a module, built on :func:`batchnorm_forward`. Chapter 05.

    Same constructor arguments, parameters (``weight`` = gamma, ``bias`` = beta) and buffers
    (``running_mean``, ``running_var``, ``num_batches_tracked``) as ``torch.nn.BatchNorm2d``, so
    their state dicts load into each other and both give the same outputs in both modes.
    ``momentum=None`` uses the cumulative average (momentum 1 / number of batches seen).
    The backward pass is left to autograd.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(
                f"num_features must be a positive int (the number of channels), got {num_features!r}"
            )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BatchNorm2d expects an input of shape (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}) got an input with {x.shape[1]} channels")
        c = self.num_features
        gamma = self.weight if self.affine else torch.ones(c, device=x.device, dtype=x.dtype)
        beta = self.bias if self.affine else torch.zeros(c, device=x.device, dtype=x.dtype)
        use_batch = self.training or not self.track_running_stats
        if not self.track_running_stats:  # always batch statistics, nothing to remember
            dummy_mean, dummy_var = torch.zeros(c, device=x.device), torch.ones(c, device=x.device)
            return batchnorm_forward(x, gamma, beta, dummy_mean, dummy_var, 0.0, self.eps, True)[0]
        momentum = self.momentum
        if use_batch:
            self.num_batches_tracked += 1
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        out, new_mean, new_var, _ = batchnorm_forward(
            x,
            gamma,
            beta,
            self.running_mean,
            self.running_var,
            momentum if momentum is not None else 0.0,
            self.eps,
            use_batch,
        )
        if use_batch:
            with torch.no_grad():
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


# --------------------------------------------------------------------------------------------
# Layer, instance and group normalization
# --------------------------------------------------------------------------------------------
def _standardize(x: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _affine(x_hat: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    if weight is not None:
        x_hat = x_hat * _per_channel(weight, x_hat.dim())
    if bias is not None:
        x_hat = x_hat + _per_channel(bias, x_hat.dim())
    return x_hat


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Group normalization of x (N, C, *): statistics over each sample's groups of C / G channels. Chapter 05.

    Split the C channels into ``num_groups`` groups of consecutive channels and standardize each
    (sample, group) over its channels and positions; then the per-channel affine ``weight``,
    ``bias`` (C,). ``num_groups = 1`` is layer normalization, ``num_groups = C`` instance
    normalization. Same values as ``torch.nn.functional.group_norm``.
    """
    _check_nc(x)
    n, c = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(
            f"num_groups must be a positive int that divides the {c} channels, got {num_groups!r}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_channel_vector(t, name, c)
    grouped = x.reshape(n, num_groups, -1)  # (N, G, C/G * H * W)
    x_hat = _standardize(grouped, [2], eps).reshape(x.shape)
    return _affine(x_hat, weight, bias)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Layer normalization of x (N, C, *): each sample standardized over all its values. Chapter 05.

    ``weight`` and ``bias`` have the shape of one sample, ``x.shape[1:]`` (elementwise affine), as in
    ``torch.nn.functional.layer_norm(x, x.shape[1:], weight, bias, eps)``, whose values it matches.
    """
    _check_nc(x)
    x_hat = _standardize(x, list(range(1, x.dim())), eps)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != x.shape[1:]:
            raise ValueError(
                f"{name} must have the shape of one sample {tuple(x.shape[1:])}, got {tuple(t.shape)}"
            )
    if weight is not None:
        x_hat = x_hat * weight
    if bias is not None:
        x_hat = x_hat + bias
    return x_hat


def instance_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Instance normalization of x (N, C, H, W): each (sample, channel) over its positions. Chapter 05.

    Same values as ``torch.nn.functional.instance_norm`` (without running statistics).
    """
    _check_nc(x)
    if x.dim() < 3:
        raise ValueError(f"instance normalization needs spatial axes, (N, C, H, W); got {tuple(x.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_channel_vector(t, name, x.shape[1])
    return _affine(_standardize(x, list(range(2, x.dim())), eps), weight, bias)


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------
def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"dropout probability p must be a number in [0, 1], got {p!r}")
    return float(p)


def dropout(
    x: torch.Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Inverted dropout: zero each value with probability p, scale the rest by 1 / (1 - p). Chapter 05.

    The scaling keeps the expected value of every output equal to its input, so that evaluation
    mode needs no correction: there the input comes back unchanged. ``p = 1`` gives zeros.
    Same distribution as ``torch.nn.functional.dropout``.
    """
    p = _check_p(p)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)  # 1 with probability 1 - p
    return x * keep.div_(1.0 - p)  # the mask holds 0 or 1 / (1 - p)


def dropout2d(
    x: torch.Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Spatial dropout of x (N, C, H, W): zero whole channels with probability p. Chapter 05.

    One coin per (sample, channel), shared by all H * W positions, since neighbouring pixels of a
    feature map are strongly correlated and dropping single pixels removes little information.
    Kept channels are scaled by 1 / (1 - p). Same distribution as ``torch.nn.functional.dropout2d``.
    """
    p = _check_p(p)
    _check_nc(x)
    if x.dim() != 4:
        raise ValueError(f"dropout2d expects (N, C, H, W), got {tuple(x.shape)}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.empty(x.shape[0], x.shape[1], 1, 1, dtype=x.dtype, device=x.device)  # (N, C, 1, 1)
    keep.bernoulli_(1.0 - p, generator=generator)
    return x * keep.div_(1.0 - p)  # broadcast over H, W
