"""Optimizers and learning-rate schedules written from scratch (chapter 04).

Chapter 04 derives each update rule and checks it against ``torch.optim`` step for step. This
module holds the tidied-up versions:

* **Optimizers**, each a ``torch.optim.Optimizer`` subclass that follows the update of its
  ``torch.optim`` namesake exactly (same hyperparameters, same defaults, same state names):
  :class:`SGD` (momentum, Nesterov, weight decay), :class:`Adagrad`, :class:`RMSprop` (momentum,
  centered), :class:`Adam` (bias correction, L2 weight decay, AMSGrad) and :class:`AdamW`
  (decoupled weight decay). :data:`TORCH_EQUIVALENT` maps each to its reference.
* **Schedules** as closed-form functions of the step: :func:`step_decay`,
  :func:`exponential_decay`, :func:`cosine_annealing`, :func:`warmup_cosine` and
  :func:`one_cycle`, each equal to a ``torch.optim.lr_scheduler`` schedule;
  :func:`warmup_cosine_scheduler` wraps :func:`warmup_cosine` in a ``LambdaLR``.
* **Tools**: :func:`clip_grad_norm` (gradient clipping by the global norm),
  :func:`lr_range_test` with :func:`plot_lr_range` (Smith's learning-rate range test; it restores
  the model and the optimizer afterwards), and the 2-D test surfaces :data:`SURFACES` with
  :func:`trajectory` and :func:`plot_trajectories` to watch optimizers move.

A typical use::

    from utils.optim import AdamW, warmup_cosine_scheduler
    optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps=1000, warmup_steps=50)
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from utils.common import (
    check_loader,
    check_model,
    keep_modes,
    model_device,
    move_to,
    optimizer_step,
    unpack_batch,
)

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "TORCH_EQUIVALENT",
    "step_decay",
    "exponential_decay",
    "cosine_annealing",
    "warmup_cosine",
    "warmup_cosine_scheduler",
    "one_cycle",
    "clip_grad_norm",
    "lr_range_test",
    "plot_lr_range",
    "Surface",
    "SURFACES",
    "trajectory",
    "plot_trajectories",
]


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------
def _number(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}, {hi}, got {value!r}")
    return value


def _integer(name: str, value: Any, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return int(value)


def _betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (
        _number("betas[0]", betas[0], high=1.0, high_open=True),
        _number("betas[1]", betas[1], high=1.0, high_open=True),
    )


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad.is_sparse:
        raise RuntimeError(
            "the optimizers of utils.optim take dense gradients only (this parameter has a sparse one)"
        )
    return p.grad


def _closure_loss(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# --------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------
class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    For each parameter $\theta$ with gradient $g$ (plus ``weight_decay`` $\cdot\,\theta$):

    * without momentum: $\theta \leftarrow \theta - \eta\, g$;
    * with momentum $\mu$: $v \leftarrow \mu v + (1 - \text{dampening})\, g$ ($v = g$ on the first
      step), then $\theta \leftarrow \theta - \eta\, v$, or with ``nesterov=True``
      $\theta \leftarrow \theta - \eta\,(g + \mu v)$.

    The same update, defaults and state name (``momentum_buffer``) as ``torch.optim.SGD``.
    Chapter 04 builds this by hand.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(
            lr=_number("lr", lr),
            momentum=_number("momentum", momentum),
            dampening=_number("dampening", dampening, high=1.0),
            weight_decay=_number("weight_decay", weight_decay),
            nesterov=bool(nesterov),
        )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs a momentum > 0 and dampening = 0")
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _grad(p)
                if wd != 0:
                    g = g.add(p, alpha=wd)  # L2 penalty wd/2 |p|^2 folded into the gradient
                if mu != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # first step: the velocity is the gradient
                        buf = state["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(mu).add_(g, alpha=1 - damp)  # v = mu v + (1 - dampening) g
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
                p.add_(g, alpha=-lr)
        return loss


class Adagrad(torch.optim.Optimizer):
    r"""AdaGrad: divide each coordinate's step by the root of its summed squared gradients.

    $s \leftarrow s + g^2$, $\theta \leftarrow \theta - \eta_t\, g / (\sqrt{s} + \epsilon)$ with
    $\eta_t = \eta / (1 + (t - 1)\,\text{lr\_decay})$. The same update, defaults and state names
    (``step``, ``sum``) as ``torch.optim.Adagrad``. Chapter 04 builds this by hand.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        defaults = dict(
            lr=_number("lr", lr),
            lr_decay=_number("lr_decay", lr_decay),
            weight_decay=_number("weight_decay", weight_decay),
            initial_accumulator_value=_number("initial_accumulator_value", initial_accumulator_value),
            eps=_number("eps", eps),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _grad(p)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["sum"] = torch.full_like(p, group["initial_accumulator_value"])
                state["step"] += 1
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
                state["sum"].addcmul_(g, g)  # s += g^2, per coordinate
                p.addcdiv_(g, state["sum"].sqrt().add_(group["eps"]), value=-clr)
        return loss


class RMSprop(torch.optim.Optimizer):
    r"""RMSprop: divide by a running root-mean-square of recent gradients.

    $s \leftarrow \alpha s + (1 - \alpha)\, g^2$; with ``centered=True`` also
    $\bar g \leftarrow \alpha \bar g + (1 - \alpha) g$ and $s$ is replaced by $s - \bar g^2$ (a
    variance); then $\theta \leftarrow \theta - \eta\, g / (\sqrt{s} + \epsilon)$, or with momentum
    $b \leftarrow \mu b + g / (\sqrt{s} + \epsilon)$, $\theta \leftarrow \theta - \eta\, b$.
    The same update, defaults and state names as ``torch.optim.RMSprop``. Chapter 04 builds this by hand.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        defaults = dict(
            lr=_number("lr", lr),
            alpha=_number("alpha", alpha, high=1.0),
            eps=_number("eps", eps),
            weight_decay=_number("weight_decay", weight_decay),
            momentum=_number("momentum", momentum),
            centered=bool(centered),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            alpha, mu = group["alpha"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _grad(p)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] += 1
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                square_avg = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
                if group["centered"]:
                    grad_avg = state["grad_avg"].lerp_(g, 1 - alpha)
                    avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()  # sqrt(E[g^2] - E[g]^2)
                else:
                    avg = square_avg.sqrt()
                avg = avg.add_(group["eps"])
                if mu > 0:
                    buf = state["momentum_buffer"].mul_(mu).addcdiv_(g, avg)
                    p.add_(buf, alpha=-group["lr"])
                else:
                    p.addcdiv_(g, avg, value=-group["lr"])
        return loss


class Adam(torch.optim.Optimizer):
    r"""Adam: momentum on the gradient, RMSprop on its scale, both bias-corrected.

    At step $t$: $m \leftarrow \beta_1 m + (1-\beta_1)\, g$, $v \leftarrow \beta_2 v + (1-\beta_2)\, g^2$,
    $\hat m = m / (1 - \beta_1^t)$, $\hat v = v / (1 - \beta_2^t)$,
    $\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$.
    ``weight_decay`` adds $\lambda \theta$ to the gradient (L2 regularisation, coupled to the
    adaptive scaling; :class:`AdamW` decouples it); ``amsgrad=True`` divides by the running maximum
    of $v$ instead. The same update, defaults and state names (``step``, ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``) as ``torch.optim.Adam``. Chapter 04 builds this by hand.
    """

    _decoupled = False  # AdamW sets this

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        defaults = dict(
            lr=_number("lr", lr),
            betas=_betas(betas),
            eps=_number("eps", eps),
            weight_decay=_number("weight_decay", weight_decay),
            amsgrad=bool(amsgrad),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()`` when given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _grad(p)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)  # m
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                if wd != 0:
                    if self._decoupled:
                        p.mul_(1 - lr * wd)  # AdamW: shrink the weights, outside the adaptive scaling
                    else:
                        g = g.add(p, alpha=wd)  # Adam: L2 penalty in the gradient
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                bias_correction1 = 1 - beta1**t
                bias_correction2 = 1 - beta2**t
                denom = (v.sqrt() / math.sqrt(bias_correction2)).add_(eps)  # sqrt(v_hat) + eps
                p.addcdiv_(m, denom, value=-lr / bias_correction1)  # p -= lr m_hat / (sqrt(v_hat) + eps)
        return loss


class AdamW(Adam):
    r"""Adam with decoupled weight decay: $\theta \leftarrow (1 - \eta\lambda)\,\theta$ before the
    Adam step, instead of adding $\lambda\theta$ to the gradient.

    With adaptive scaling the two are not the same: an L2 gradient term is divided by
    $\sqrt{\hat v}$ like the rest of the gradient, so weights with large gradients are barely
    regularised. The same update, defaults (``weight_decay=1e-2``) and state names as
    ``torch.optim.AdamW``. Chapter 04 builds this by hand.
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


TORCH_EQUIVALENT: dict[type, type] = {
    SGD: torch.optim.SGD,
    Adagrad: torch.optim.Adagrad,
    RMSprop: torch.optim.RMSprop,
    Adam: torch.optim.Adam,
    AdamW: torch.optim.AdamW,
}
"""Each from-scratch optimizer and the ``torch.optim`` class whose trajectory it follows."""


# --------------------------------------------------------------------------------------------
# Learning-rate schedules (closed forms)
# --------------------------------------------------------------------------------------------
def _schedule_args(step: Any, base_lr: Any, name: str = "base_lr") -> tuple[int, float]:
    return _integer("step", step), _number(name, base_lr, low_open=True)


def step_decay(step: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """``base_lr * gamma ** (step // step_size)``: ``torch.optim.lr_scheduler.StepLR``.

    Chapter 04 plots it.
    """
    step, base_lr = _schedule_args(step, base_lr)
    step_size = _integer("step_size", step_size, low=1)
    gamma = _number("gamma", gamma, low_open=True)
    return base_lr * gamma ** (step // step_size)


def exponential_decay(step: int, base_lr: float, gamma: float) -> float:
    """``base_lr * gamma ** step``: ``torch.optim.lr_scheduler.ExponentialLR``. Chapter 04 plots it."""
    step, base_lr = _schedule_args(step, base_lr)
    return base_lr * _number("gamma", gamma, low_open=True) ** step


def cosine_annealing(step: int, total_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    r"""Half a cosine from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps`` (and after).

    $\eta_t = \eta_{\min} + \tfrac12(\eta_{\max} - \eta_{\min})(1 + \cos(\pi t / T))$, which is
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)`` for
    ``0 <= step <= total_steps`` (that one climbs again after ``T_max``; this one stays at
    ``min_lr``). Chapter 04 plots it.
    """
    step, base_lr = _schedule_args(step, base_lr)
    total_steps = _integer("total_steps", total_steps, low=1)
    min_lr = _number("min_lr", min_lr, high=base_lr)
    progress = min(step, total_steps) / total_steps
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    r"""Linear warmup for ``warmup_steps`` steps, then half a cosine down to ``min_lr``.

    * ``step < warmup_steps``: ``base_lr * (step + 1) / (warmup_steps + 1)``, a straight line that
      reaches ``base_lr`` at ``step == warmup_steps``;
    * ``warmup_steps <= step < total_steps``: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2``
      with ``p = (step - warmup_steps) / (total_steps - warmup_steps)``;
    * ``step >= total_steps``: ``min_lr``.

    Equal to ``SequentialLR([LinearLR(start_factor=1 / (warmup_steps + 1), total_iters=warmup_steps),
    CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min=min_lr)], milestones=[warmup_steps])``
    over ``0 <= step <= total_steps``. Needs ``0 <= warmup_steps < total_steps`` and
    ``0 <= min_lr <= base_lr``. Chapter 04 derives it; :func:`warmup_cosine_scheduler` is the
    ``LambdaLR`` version.
    """
    step, base_lr = _schedule_args(step, base_lr)
    total_steps = _integer("total_steps", total_steps, low=1)
    warmup_steps = _integer("warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps must be smaller than total_steps, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}"
        )
    min_lr = _number("min_lr", min_lr, high=base_lr)
    if step >= total_steps:
        return min_lr
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr: float = 0.0,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that follows :func:`warmup_cosine` from each group's learning rate to ``min_lr``.

    Step it after every optimizer step (``fit`` does that for ``OneCycleLR`` only, so use it in a
    hand-written loop or with per-epoch ``total_steps``). Each parameter group uses its own ``lr``
    as ``base_lr``; ``min_lr`` (absolute) must not exceed any of them. Chapter 04 uses it.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    total_steps = _integer("total_steps", total_steps, low=1)
    warmup_steps = _integer("warmup_steps", warmup_steps)
    min_lr = _number("min_lr", min_lr)
    lambdas = []
    for i, group in enumerate(optimizer.param_groups):
        base = float(group.get("initial_lr", group["lr"]))
        if min_lr > base:
            raise ValueError(
                f"min_lr={min_lr:g} is larger than the learning rate {base:g} of parameter group {i}"
            )
        warmup_cosine(0, total_steps, warmup_steps, base, min_lr)  # check the arguments once, here
        lambdas.append(
            lambda step, base=base: warmup_cosine(step, total_steps, warmup_steps, base, min_lr) / base
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas, last_epoch=last_epoch)


def one_cycle(
    step: int,
    total_steps: int,
    max_lr: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The one-cycle schedule: a cosine up from ``max_lr / div_factor`` to ``max_lr``, then down to
    ``max_lr / div_factor / final_div_factor``.

    The rise ends at step ``pct_start * total_steps - 1``, the fall at ``total_steps - 1``. Equal to
    ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults (``anneal_strategy="cos"``,
    ``three_phase=False``) for ``0 <= step < total_steps``; that scheduler also cycles the
    momentum the other way. Chapter 04 plots it.
    """
    step, max_lr = _schedule_args(step, max_lr, "max_lr")
    total_steps = _integer("total_steps", total_steps, low=2)
    if step >= total_steps:
        raise ValueError(f"step must be smaller than total_steps={total_steps}, got {step}")
    pct_start = _number("pct_start", pct_start, high=1.0)
    initial = max_lr / _number("div_factor", div_factor, low_open=True)
    final = initial / _number("final_div_factor", final_div_factor, low_open=True)
    peak = pct_start * total_steps - 1  # step of the peak (a float, as in OneCycleLR)
    if not 0 < peak < total_steps - 1:
        raise ValueError(
            f"pct_start * total_steps - 1 must lie strictly between 0 and total_steps - 1 (the peak "
            f"step), got pct_start={pct_start:g}, total_steps={total_steps}"
        )
    if step <= peak:
        start, end, pct = initial, max_lr, step / peak
    else:
        start, end, pct = max_lr, final, (step - peak) / (total_steps - 1 - peak)
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


# --------------------------------------------------------------------------------------------
# Gradient clipping
# --------------------------------------------------------------------------------------------
def clip_grad_norm(
    parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float, eps: float = 1e-6
) -> torch.Tensor:
    r"""Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    The global norm is $\|g\| = \sqrt{\sum_p \|g_p\|^2}$ over every parameter that has a gradient;
    when it exceeds ``max_norm`` every gradient is multiplied by ``max_norm / (||g|| + eps)``, which
    keeps the direction of the update and bounds its length. Returns the norm before clipping
    (a 0-dim tensor). Same result as ``torch.nn.utils.clip_grad_norm_``. Chapter 04 builds this by hand.
    """
    max_norm = _number("max_norm", max_norm, low_open=True)
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([g.detach().norm(2).to(grads[0].device) for g in grads])  # (P,) one norm per tensor
    total = norms.norm(2)  # () = sqrt(sum of squares)
    scale = torch.clamp(max_norm / (total + eps), max=1.0)  # never scales up
    for g in grads:
        g.detach().mul_(scale.to(g.device, g.dtype))
    return total


# --------------------------------------------------------------------------------------------
# Learning-rate range test
# --------------------------------------------------------------------------------------------
def _batches(loader: Iterable) -> Iterator:
    """Batches of ``loader``, starting over when it is exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batches")


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    *,
    loss_fn: Callable = F.cross_entropy,
    optimizer: torch.optim.Optimizer | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 100,
    device: str | torch.device | None = None,
    smooth: float = 0.05,
    diverge: float = 4.0,
) -> dict[str, Any]:
    r"""Leslie Smith's learning-rate range test: train briefly while the learning rate grows
    exponentially, and watch the loss.

    Step $i$ of ``num_steps`` uses $\eta_i = \eta_\text{start}\,(\eta_\text{end}/\eta_\text{start})^{i/(n-1)}$
    on the next batch of ``loader`` (the loader starts over when it runs out). The recorded loss is an
    exponential moving average of the batch losses (weight ``smooth`` on the newest, bias-corrected).
    The test stops early when that average exceeds ``diverge`` times its minimum or becomes NaN.

    ``optimizer`` defaults to ``torch.optim.SGD(model.parameters(), lr=start_lr, momentum=0.9)``;
    a given optimizer has the learning rate of every parameter group set to $\eta_i$. Afterwards the
    model's weights and buffers, its train/eval mode and the optimizer's state and hyperparameters
    are restored as they were: the test changes nothing. ``device`` defaults to the model's device
    (given, the model is moved there and stays). Loaders yield ``(inputs, targets)``; ``loss_fn``
    returns the mean loss of a batch (positive).

    Returns ``{"lrs": [...], "losses": [...], "suggested_lr": float}``: the learning rates tried,
    the smoothed losses, and a suggestion, one tenth of the learning rate at the lowest smoothed
    loss (where the loss still falls steadily). Chapter 04 explains it; chapter 08 uses it.
    """
    check_model(model)
    check_loader(loader, "loader")
    start_lr = _number("start_lr", start_lr, low_open=True)
    end_lr = _number("end_lr", end_lr, low_open=True)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be larger than start_lr, got start_lr={start_lr:g}, end_lr={end_lr:g}")
    num_steps = _integer("num_steps", num_steps, low=2)
    smooth = _number("smooth", smooth, high=1.0, low_open=True)
    diverge = _number("diverge", diverge, low=1.0, low_open=True)
    if device is not None:
        import utils

        model.to(utils.device(device))
    dev = model_device(model)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=start_lr, momentum=0.9)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")

    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    growth = (end_lr / start_lr) ** (1 / (num_steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    with keep_modes(model):  # model.train() below; every mode restored afterwards
        try:
            model.train()
            batches = _batches(loader)
            for i in range(num_steps):
                lr = start_lr * growth**i
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = move_to(unpack_batch(next(batches), "each batch of loader"), dev)
                loss = loss_fn(model(x), y)
                optimizer_step(optimizer, loss)
                value = loss.item()
                if not math.isfinite(value):
                    break
                average = (1 - smooth) * average + smooth * value
                smoothed = average / (1 - (1 - smooth) ** (i + 1))  # bias correction, as in Adam
                lrs.append(lr)
                losses.append(smoothed)
                best = min(best, smoothed)
                if smoothed > diverge * best:
                    break
        finally:
            model.load_state_dict(saved_model)
            optimizer.load_state_dict(saved_optimizer)
    if not lrs:
        raise FloatingPointError(
            f"the loss was not finite at the first step (lr={start_lr:g}); check the model and data"
        )
    suggested = lrs[int(np.argmin(losses))] / 10
    return {"lrs": lrs, "losses": losses, "suggested_lr": float(suggested)}


def plot_lr_range(result: dict[str, Any], ax: plt.Axes | None = None) -> Figure:
    """Plot the smoothed loss of :func:`lr_range_test` against the learning rate (log scale), with the
    suggested learning rate marked. Returns the Figure. Chapter 04 draws it."""
    if not isinstance(result, dict) or not {"lrs", "losses", "suggested_lr"} <= set(result):
        raise ValueError("result must be the dict returned by lr_range_test (keys lrs, losses, suggested_lr)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.8))
    else:
        fig = ax.figure
    lrs, losses = np.asarray(result["lrs"]), np.asarray(result["losses"])
    ax.semilogx(lrs, losses, color="C0", label="smoothed training loss")
    best = int(np.argmin(losses))
    ax.plot(lrs[best], losses[best], "o", color="C3", label=f"lowest loss (lr = {lrs[best]:.2g})")
    ax.axvline(
        result["suggested_lr"],
        color="C2",
        linestyle="--",
        label=f"suggested lr = {result['suggested_lr']:.2g}",
    )
    top = min(losses.max(), 3 * losses[0]) if losses[0] > 0 else losses.max()
    ax.set(
        xlabel="learning rate (log scale)",
        ylabel="loss",
        title="Learning-rate range test",
        ylim=(min(0, losses.min()) if losses.min() < 0 else 0.9 * losses.min(), 1.05 * top),
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# 2-D test surfaces and optimizer trajectories
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surface:
    """A function of two variables to watch optimizers on: ``surface(xy)`` for ``xy`` of shape (..., 2).

    ``grad(x, y)`` is its gradient at one point, written out by hand (Python floats in, a pair of
    floats out), so that :func:`trajectory` needs no autograd and stays fast enough for a widget;
    :meth:`gradient` wraps it for a (2,) tensor. ``start`` is where :func:`trajectory` starts,
    ``minima`` the points it should reach, ``xlim`` and ``ylim`` the window :func:`plot_trajectories`
    draws. Chapter 04 uses three of them (:data:`SURFACES`).
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    grad: Callable[[float, float], tuple[float, float]]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    description: str = ""

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        if not isinstance(xy, torch.Tensor) or xy.shape[-1:] != (2,):
            raise ValueError(
                f"xy must be a tensor of shape (..., 2), got {getattr(xy, 'shape', type(xy).__name__)}"
            )
        return self.fn(xy[..., 0], xy[..., 1])

    def gradient(self, xy: torch.Tensor) -> torch.Tensor:
        """The gradient at one point ``xy`` of shape (2,), with its dtype and device."""
        if not isinstance(xy, torch.Tensor) or xy.shape != (2,):
            raise ValueError(
                f"xy must be one point, a tensor of shape (2,), got {getattr(xy, 'shape', type(xy).__name__)}"
            )
        x, y = xy.tolist()
        return torch.tensor(self.grad(x, y), dtype=xy.dtype, device=xy.device)

    @property
    def f_min(self) -> float:
        """The lowest value of the surface (at its minima)."""
        return min(float(self(torch.tensor(m, dtype=torch.float64))) for m in self.minima)


SURFACES: dict[str, Surface] = {
    "quadratic": Surface(
        "ill-conditioned quadratic",
        lambda x, y: 0.5 * (x**2 + 20 * y**2),
        lambda x, y: (x, 20 * y),
        start=(-4.5, 1.5),
        minima=((0.0, 0.0),),
        xlim=(-5, 5),
        ylim=(-2.2, 2.2),
        description="f = (x^2 + 20 y^2) / 2: curvatures 1 and 20, condition number 20",
    ),
    "rosenbrock": Surface(
        "Rosenbrock",
        lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2,
        lambda x, y: (-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)),
        start=(-1.2, 1.0),
        minima=((1.0, 1.0),),
        xlim=(-2.0, 2.0),
        ylim=(-0.8, 2.2),
        description="f = (1 - x)^2 + 100 (y - x^2)^2: a curved, narrow valley; minimum at (1, 1)",
    ),
    "saddle": Surface(
        "saddle",
        lambda x, y: 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2,
        lambda x, y: (x, y**3 - y),
        start=(-2.0, 1e-3),
        minima=((0.0, -1.0), (0.0, 1.0)),
        xlim=(-2.5, 2.5),
        ylim=(-1.6, 1.6),
        description="f = x^2/2 + y^4/4 - y^2/2: a saddle at the origin between minima at (0, -1) and (0, 1)",
    ),
}
"""The three surfaces of chapter 04: an ill-conditioned quadratic, Rosenbrock's valley and a saddle."""


def trajectory(
    surface: Surface | str,
    optimizer: Callable[..., torch.optim.Optimizer],
    steps: int,
    start: tuple[float, float] | None = None,
    max_grad_norm: float | None = None,
    **hyperparameters: Any,
) -> torch.Tensor:
    """The points an optimizer visits on a 2-D surface: a float64 tensor (steps + 1, 2), start first.

    ``optimizer`` is a class (``utils.optim.Adam``, ``torch.optim.SGD``, ...) or any callable
    ``optimizer([param], **hyperparameters)``. The gradient comes from the surface's hand-written
    ``grad``. ``max_grad_norm`` clips the gradient by its norm before each step. When the point runs
    off to infinity the path stops there (fewer than steps + 1 rows). Chapter 04 draws these paths.
    """
    surface = SURFACES[surface] if isinstance(surface, str) else surface
    if not isinstance(surface, Surface):
        raise TypeError(
            f"surface must be a Surface or one of {sorted(SURFACES)}, got {type(surface).__name__}"
        )
    steps = _integer("steps", steps, low=1)
    xy = torch.tensor(start if start is not None else surface.start, dtype=torch.float64)
    xy.grad = torch.zeros_like(xy)
    opt = optimizer([xy], **hyperparameters)
    path = [xy.clone()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a diverging run overflows on purpose
        for _ in range(steps):
            try:
                gx, gy = surface.grad(*xy.tolist())
            except OverflowError:
                break
            xy.grad.copy_(torch.tensor((gx, gy), dtype=torch.float64))
            if max_grad_norm is not None:
                clip_grad_norm([xy], max_grad_norm)
            opt.step()
            if not torch.isfinite(xy).all() or xy.abs().max() > 1e6:
                break
            path.append(xy.clone())
    return torch.stack(path)  # (steps + 1, 2) unless it diverged


@functools.lru_cache(maxsize=16)
def _contour_grid(surface: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid, heights above the lowest value and log-spaced contour levels of a surface (cached)."""
    xs = torch.linspace(*surface.xlim, 200, dtype=torch.float64)
    ys = torch.linspace(*surface.ylim, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # (200, 200) each
    z = surface(torch.stack([gx, gy], dim=-1))  # (200, 200)
    height = (z - z.min()).numpy() + 1e-3
    levels = np.geomspace(height.min() * 1.5, height.max(), 16)
    return gx.numpy(), gy.numpy(), height, levels


def plot_trajectories(
    surface: Surface | str,
    paths: dict[str, torch.Tensor],
    ax: plt.Axes | None = None,
    title: str | None = None,
    legend: bool = True,
) -> Figure:
    """Draw ``paths`` (name -> (T, 2) points) over the contour lines of ``surface``.

    Contours are spaced on a log scale of the height above the lowest value in the window, so the
    valleys show. Black squares: where the paths start (the surface's ``start`` when there are no
    paths); black stars: the minima; dots: where the paths end. Returns the Figure. Chapter 04 draws these.
    """
    surface = SURFACES[surface] if isinstance(surface, str) else surface
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
    else:
        fig = ax.figure
    gx, gy, height, levels = _contour_grid(surface)
    ax.contour(gx, gy, height, levels=levels, colors="0.6", linewidths=0.6)
    starts = set()
    for i, (name, path) in enumerate(paths.items()):
        p = torch.as_tensor(path).detach().cpu().numpy()
        ax.plot(p[:, 0], p[:, 1], "-", color=f"C{i}", lw=1.4, label=name, alpha=0.9)
        ax.plot(p[-1, 0], p[-1, 1], "o", color=f"C{i}", ms=4)
        starts.add((float(p[0, 0]), float(p[0, 1])))
    for start in starts or {surface.start}:
        ax.plot(*start, "ks", ms=6)
    for m in surface.minima:
        ax.plot(*m, "k*", ms=11)
    ax.set(xlim=surface.xlim, ylim=surface.ylim, xlabel="x", ylabel="y", title=title or surface.name)
    if legend and paths:
        ax.legend(fontsize=7, loc="best")
    return fig
