"""Activation functions and their derivatives, written by hand (chapter 02).

Every function takes a floating-point tensor of any shape and returns a tensor of the same shape
and dtype. Each activation ``f`` comes with ``f_grad``, its derivative ``f'(x)`` in closed form
(elementwise), so that the backward pass of ``y = f(x)`` is ``dx = dout * f_grad(x)``. All of them
agree with PyTorch (values and autograd gradients; ``tests/test_activations.py``) and stay finite
and accurate for inputs up to ``|x| = 1e4`` in float32 and float64:

* :func:`sigmoid` and :func:`tanh` never evaluate ``exp`` of a large positive number, and their
  derivatives are written as ``e / (1 + e)**2`` with ``e = exp(-|x|)``, which is accurate even
  where ``1 - sigmoid(x)`` would round to 0;
* :func:`gelu` computes ``Phi(x)`` with ``erfc``, accurate in the negative tail where
  ``1 + erf(x / sqrt 2)`` cancels;
* :func:`softplus`, :func:`elu` and :func:`mish` use ``log1p`` and ``expm1``;
* :func:`softmax` and :func:`log_softmax` subtract the maximum along ``dim`` (the log-sum-exp trick).

At a kink the derivative follows PyTorch's convention: ``relu_grad(0) = 0``, while
``leaky_relu_grad(0) = alpha``, ``prelu_grad(0) = a`` and ``elu_grad(0) = alpha`` (PyTorch tests
``x > 0``).

:data:`ACTIVATIONS` lists the elementwise activations with their PyTorch module; :func:`make_mlp`
builds an MLP with any of them (``utils.models.MLP`` covers fewer), and :func:`dead_fraction`
measures dead rectifier units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_MODULES",
    "Activation",
    "dead_fraction",
    "elu",
    "elu_grad",
    "gelu",
    "gelu_grad",
    "gelu_tanh",
    "gelu_tanh_grad",
    "get",
    "leaky_relu",
    "leaky_relu_grad",
    "log_softmax",
    "log_softmax_backward",
    "make_mlp",
    "mish",
    "mish_grad",
    "prelu",
    "prelu_backward",
    "prelu_grad",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "silu",
    "silu_grad",
    "softmax",
    "softmax_backward",
    "softmax_jacobian",
    "softplus",
    "softplus_grad",
    "swish",
    "swish_grad",
    "tanh",
    "tanh_grad",
]

SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_TANH_C = math.sqrt(2.0 / math.pi)  # 0.7979: the tanh approximation of GELU
GELU_TANH_K = 0.044715


# ---- input checks ----------------------------------------------------------------------------


def _check_x(x, fn: str, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn} expects {name} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{fn} expects a floating-point {name} (float32 or float64), got {x.dtype}; convert it with "
            ".float()"
        )


def _check_number(value, fn: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{fn} expects {name} to be a finite Python number, got {value!r}")
    return float(value)


def _check_dim(z: torch.Tensor, dim: int, fn: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{fn} expects dim to be an int, got {type(dim).__name__}")
    if z.ndim == 0:
        raise ValueError(f"{fn} needs a tensor with at least one dimension, got a 0-dim tensor")
    if not -z.ndim <= dim < z.ndim:
        raise ValueError(
            f"{fn}: dim must be in [{-z.ndim}, {z.ndim - 1}] for a tensor of shape {tuple(z.shape)}, got "
            f"{dim}"
        )
    return dim


# ---- the sigmoid family ------------------------------------------------------------------------


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The logistic sigmoid ``1 / (1 + exp(-x))``, stable for any ``x`` (chapter 02 builds it by hand).

    ``exp`` only ever sees ``-|x| <= 0``: for ``x >= 0`` use ``1 / (1 + e)``, for ``x < 0`` the
    equal ``e / (1 + e)``, with ``e = exp(-|x|)`` in (0, 1]. x: any shape -> same shape, in [0, 1].
    """
    _check_x(x, "sigmoid")
    e = torch.exp(-x.abs())  # in (0, 1]: no overflow
    return torch.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(x: torch.Tensor) -> torch.Tensor:
    """``sigmoid'(x) = sigmoid(x) (1 - sigmoid(x)) = sigmoid(x) sigmoid(-x)``, at most 1/4 (chapter 02).

    Written as ``e / (1 + e)**2`` with ``e = exp(-|x|)``: symmetric and accurate in both tails
    (``1 - sigmoid(x)`` rounds to 0 in float32 from ``x = 17`` on). x: any shape -> same shape.
    """
    _check_x(x, "sigmoid_grad")
    e = torch.exp(-x.abs())
    return e / (1.0 + e) ** 2


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x) = (1 - exp(-2x)) / (1 + exp(-2x)) = 2 sigmoid(2x) - 1``, stable (chapter 02).

    Computed on ``|x|`` with ``expm1`` (accurate near 0) and the sign put back. x: any shape.
    """
    _check_x(x, "tanh")
    e = torch.exp(-2.0 * x.abs())  # in (0, 1]
    return torch.copysign(-torch.expm1(-2.0 * x.abs()) / (1.0 + e), x)


def tanh_grad(x: torch.Tensor) -> torch.Tensor:
    """``tanh'(x) = 1 - tanh(x)**2 = sech(x)**2``, at most 1 (chapter 02).

    Written as ``4 e / (1 + e)**2`` with ``e = exp(-2|x|)``, accurate where ``1 - tanh**2`` cancels.
    """
    _check_x(x, "tanh_grad")
    e = torch.exp(-2.0 * x.abs())
    return 4.0 * e / (1.0 + e) ** 2


# ---- rectifiers --------------------------------------------------------------------------------


def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` elementwise (chapter 02; chapter 01 introduced it)."""
    _check_x(x, "relu")
    return x.clamp_min(0)


def relu_grad(x: torch.Tensor) -> torch.Tensor:
    """1 where ``x > 0``, else 0 (also at ``x == 0``, PyTorch's convention) (chapter 02)."""
    _check_x(x, "relu_grad")
    return (x > 0).to(x.dtype)


def leaky_relu(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """Leaky ReLU: ``x`` for ``x > 0``, ``alpha * x`` otherwise (chapter 02); PyTorch uses alpha 0.01."""
    _check_x(x, "leaky_relu")
    alpha = _check_number(alpha, "leaky_relu", "alpha")
    return torch.where(x > 0, x, alpha * x)


def leaky_relu_grad(x: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """1 where ``x > 0``, else ``alpha`` (``alpha`` at ``x == 0``, as PyTorch) (chapter 02)."""
    _check_x(x, "leaky_relu_grad")
    alpha = _check_number(alpha, "leaky_relu_grad", "alpha")
    one, slope = torch.ones_like(x), torch.full_like(x, alpha)  # keep x's dtype and device
    return torch.where(x > 0, one, slope)


def _prelu_slope(x: torch.Tensor, weight: torch.Tensor, fn: str) -> torch.Tensor:
    """The slope ``a`` of PReLU broadcast against x: one value, or one per channel (dim 1) as nn.PReLU."""
    _check_x(x, fn)
    _check_x(weight, fn, "weight")
    if weight.ndim != 1 or weight.numel() == 0:
        raise ValueError(f"{fn} expects weight of shape (1,) or (C,), got {tuple(weight.shape)}")
    if weight.numel() == 1:
        return weight.reshape(())  # (), broadcasts everywhere
    if x.ndim < 2 or x.shape[1] != weight.numel():
        raise ValueError(
            f"{fn}: a weight of shape ({weight.numel()},) has one slope per channel, so x must have "
            f"{weight.numel()} channels in dim 1, got x of shape {tuple(x.shape)}"
        )
    return weight.reshape(-1, *([1] * (x.ndim - 2)))  # (C, 1, ..., 1), broadcasts from dim 1 on


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Parametric ReLU: ``x`` for ``x > 0``, ``a * x`` otherwise, with a learned slope ``a`` (chapter 02).

    weight: (1,) one slope for all, or (C,) one per channel (dim 1 of x), as ``torch.nn.PReLU``.
    """
    a = _prelu_slope(x, weight, "prelu")
    return torch.where(x > 0, x, a * x)


def prelu_grad(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``d prelu / dx``: 1 where ``x > 0``, else the slope ``a`` (chapter 02). Same shape as x."""
    a = _prelu_slope(x, weight, "prelu_grad")
    return torch.where(x > 0, torch.ones_like(x), a.to(x.dtype).expand_as(x))


def prelu_backward(
    dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward pass of PReLU (chapter 02): ``(dx, dweight)``.

    ``d prelu / d a = x`` where ``x <= 0`` (else 0); the slope is shared, so ``dweight`` sums
    ``dout * that`` over every position that uses it. dout, x: same shape -> dx: x's shape,
    dweight: weight's shape.
    """
    a = _prelu_slope(x, weight, "prelu_backward")
    _check_x(dout, "prelu_backward", "dout")
    if dout.shape != x.shape:
        raise ValueError(
            f"prelu_backward expects dout and x of the same shape, got {tuple(dout.shape)} and "
            f"{tuple(x.shape)}"
        )
    dx = dout * torch.where(x > 0, torch.ones_like(x), a.to(x.dtype).expand_as(x))
    local = dout * torch.where(x > 0, torch.zeros_like(x), x)  # dout * d out / d a, elementwise
    if weight.numel() == 1:
        dweight = local.sum().reshape(1)  # (1,)
    else:
        dims = [d for d in range(x.ndim) if d != 1]
        dweight = local.sum(dim=dims)  # (C,)
    return dx, dweight.to(weight.dtype)


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ELU: ``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise (chapter 02). Uses ``expm1``."""
    _check_x(x, "elu")
    alpha = _check_number(alpha, "elu", "alpha")
    return torch.where(
        x > 0, x, alpha * torch.expm1(x.clamp_max(0))
    )  # clamp: no overflow in the unused branch


def elu_grad(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """1 where ``x > 0``, else ``alpha exp(x)`` (``alpha`` at ``x == 0``, as PyTorch) (chapter 02)."""
    _check_x(x, "elu_grad")
    alpha = _check_number(alpha, "elu_grad", "alpha")
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp_max(0)))


# ---- smooth rectifiers -------------------------------------------------------------------------


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / SQRT_2)  # Phi(x) = (1 + erf(x / sqrt 2)) / 2, without the cancellation


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU ``x Phi(x)``, ``Phi`` the standard normal CDF (chapter 02).

    ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``, computed as ``erfc(-x / sqrt 2) / 2``, which stays
    accurate for large negative x. Matches ``torch.nn.functional.gelu(x)`` (``approximate="none"``).
    """
    _check_x(x, "gelu")
    return x * _std_normal_cdf(x)


def gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """``gelu'(x) = Phi(x) + x phi(x)``, ``phi(x) = exp(-x**2 / 2) / sqrt(2 pi)`` (chapter 02)."""
    _check_x(x, "gelu_grad")
    return _std_normal_cdf(x) + x * torch.exp(-0.5 * x * x) * INV_SQRT_2PI


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU (chapter 02).

    ``0.5 x (1 + tanh(u))`` with ``u = sqrt(2/pi) (x + 0.044715 x**3)``, computed as the equal
    ``x sigmoid(2u)``, which does not cancel for large negative x. Matches
    ``torch.nn.functional.gelu(x, approximate="tanh")``.
    """
    _check_x(x, "gelu_tanh")
    u = GELU_TANH_C * (x + GELU_TANH_K * x**3)
    return x * sigmoid(2.0 * u)


def gelu_tanh_grad(x: torch.Tensor) -> torch.Tensor:
    """Derivative of :func:`gelu_tanh`: ``sigmoid(2u) + x sigmoid'(2u) 2u'`` (chapter 02).

    ``u' = sqrt(2/pi) (1 + 3 * 0.044715 x**2)``. Beyond ``|x| = 1000`` the second term is exactly 0
    in float64, so x is clamped there to keep ``x**3`` from overflowing.
    """
    _check_x(x, "gelu_tanh_grad")
    xc = x.clamp(-1e3, 1e3)
    u = GELU_TANH_C * (xc + GELU_TANH_K * xc**3)
    du = GELU_TANH_C * (1.0 + 3.0 * GELU_TANH_K * xc * xc)
    return sigmoid(2.0 * u) + xc * sigmoid_grad(2.0 * u) * 2.0 * du


def swish(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish ``x sigmoid(beta x)`` (chapter 02). ``beta = 1`` is SiLU; large ``beta`` tends to ReLU."""
    _check_x(x, "swish")
    beta = _check_number(beta, "swish", "beta")
    return x * sigmoid(beta * x)


def swish_grad(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``swish'(x) = sigmoid(beta x) + beta x sigmoid'(beta x)`` (chapter 02)."""
    _check_x(x, "swish_grad")
    beta = _check_number(beta, "swish_grad", "beta")
    return sigmoid(beta * x) + beta * x * sigmoid_grad(beta * x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU ``x sigmoid(x)``, Swish with ``beta = 1`` (chapter 02). Matches ``torch.nn.functional.silu``."""
    _check_x(x, "silu")
    return x * sigmoid(x)


def silu_grad(x: torch.Tensor) -> torch.Tensor:
    """``silu'(x) = sigmoid(x) + x sigmoid(x) sigmoid(-x)`` (chapter 02)."""
    _check_x(x, "silu_grad")
    return sigmoid(x) + x * sigmoid_grad(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))``, a smooth ReLU, computed as ``max(x, 0) + log1p(exp(-|x|))`` (chapter 02)."""
    _check_x(x, "softplus")
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def softplus_grad(x: torch.Tensor) -> torch.Tensor:
    """``softplus'(x) = sigmoid(x)`` (chapter 02)."""
    _check_x(x, "softplus_grad")
    return sigmoid(x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish ``x tanh(softplus(x))`` (chapter 02). Matches ``torch.nn.functional.mish``."""
    _check_x(x, "mish")
    return x * tanh(softplus(x))


def mish_grad(x: torch.Tensor) -> torch.Tensor:
    """``mish'(x) = tanh(sp) + x sech(sp)**2 sigmoid(x)`` with ``sp = softplus(x)`` (chapter 02)."""
    _check_x(x, "mish_grad")
    sp = softplus(x)
    return tanh(sp) + x * tanh_grad(sp) * sigmoid(x)


# ---- softmax and log-softmax -------------------------------------------------------------------


def softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``exp(z) / sum(exp(z))`` along ``dim``, after subtracting the maximum (chapter 02).

    z: any shape (at least 1-D) -> same shape; the entries along ``dim`` are positive and sum to 1.
    """
    _check_x(z, "softmax", "z")
    dim = _check_dim(z, dim, "softmax")
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))  # the largest entry becomes exp(0) = 1
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``z - logsumexp(z)`` along ``dim``, stable for logits in the thousands (chapter 02).

    With ``m`` the maximum along ``dim``, ``logsumexp(z) = m + log(sum(exp(z - m)))``: the sum is
    at least 1, so the log never sees 0 and ``exp`` never overflows.
    """
    _check_x(z, "log_softmax", "z")
    dim = _check_dim(z, dim, "log_softmax")
    shifted = z - z.amax(dim=dim, keepdim=True)  # max along dim is 0
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def softmax_jacobian(z: torch.Tensor) -> torch.Tensor:
    """The Jacobian ``d p_i / d z_j = p_i (delta_ij - p_j) = diag(p) - p p^T`` of softmax (chapter 02).

    z: (C,) -> (C, C). Symmetric; its rows sum to 0 (adding a constant to z changes nothing).
    """
    _check_x(z, "softmax_jacobian", "z")
    if z.ndim != 1:
        raise ValueError(f"softmax_jacobian expects a vector z of shape (C,), got {tuple(z.shape)}")
    p = softmax(z)
    return torch.diag(p) - torch.outer(p, p)


def softmax_backward(dout: torch.Tensor, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Backward pass of ``p = softmax(z, dim)`` (chapter 02): ``dz = p * (dout - sum(dout * p))``.

    The vector-Jacobian product of :func:`softmax_jacobian`, without building the (C, C) matrix.
    dout, z: same shape -> dz: that shape.
    """
    _check_x(dout, "softmax_backward", "dout")
    _check_x(z, "softmax_backward", "z")
    if dout.shape != z.shape:
        raise ValueError(
            f"softmax_backward expects dout and z of the same shape, got {tuple(dout.shape)} and "
            f"{tuple(z.shape)}"
        )
    p = softmax(z, dim)
    return p * (dout - (dout * p).sum(dim=dim, keepdim=True))


def log_softmax_backward(dout: torch.Tensor, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Backward pass of ``log_softmax(z, dim)`` (chapter 02): ``dz = dout - softmax(z) * sum(dout)``.

    With ``dout = -onehot(y) / N`` this is chapter 01's cross-entropy gradient ``(p - onehot(y)) / N``.
    """
    _check_x(dout, "log_softmax_backward", "dout")
    _check_x(z, "log_softmax_backward", "z")
    if dout.shape != z.shape:
        raise ValueError(
            f"log_softmax_backward expects dout and z of the same shape, got {tuple(dout.shape)} and "
            f"{tuple(z.shape)}"
        )
    return dout - softmax(z, dim) * dout.sum(dim=dim, keepdim=True)


# ---- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """One elementwise activation: the hand-written function and derivative, and PyTorch's module (chapter
    02).

    ``module()`` builds the ``torch.nn`` reference with the same parameters (for PReLU, the
    initial slope 0.25 of ``nn.PReLU()``); ``formula`` is LaTeX for plots and tables.
    """

    name: str
    label: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    grad: Callable[[torch.Tensor], torch.Tensor]
    module: Callable[[], nn.Module]
    formula: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


PRELU_INIT = 0.25  # nn.PReLU's initial slope
LEAKY_ALPHA = 0.01  # nn.LeakyReLU's default slope


def _prelu_default(x: torch.Tensor) -> torch.Tensor:
    return prelu(x, torch.full((1,), PRELU_INIT, dtype=x.dtype, device=x.device))


def _prelu_default_grad(x: torch.Tensor) -> torch.Tensor:
    return prelu_grad(x, torch.full((1,), PRELU_INIT, dtype=x.dtype, device=x.device))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("sigmoid", "sigmoid", sigmoid, sigmoid_grad, nn.Sigmoid, r"$\sigma(x) = 1/(1+e^{-x})$"),
        Activation("tanh", "tanh", tanh, tanh_grad, nn.Tanh, r"$\tanh(x)$"),
        Activation("relu", "ReLU", relu, relu_grad, nn.ReLU, r"$\max(x, 0)$"),
        Activation(
            "leaky_relu",
            f"Leaky ReLU (α = {LEAKY_ALPHA})",
            leaky_relu,
            leaky_relu_grad,
            nn.LeakyReLU,
            r"$\max(x, \alpha x)$",
        ),
        Activation(
            "prelu",
            f"PReLU (a = {PRELU_INIT}, learned)",
            _prelu_default,
            _prelu_default_grad,
            nn.PReLU,
            r"$\max(x, a x)$",
        ),
        Activation("elu", "ELU (α = 1)", elu, elu_grad, nn.ELU, r"$x$ or $\alpha(e^x - 1)$"),
        Activation("gelu", "GELU (exact)", gelu, gelu_grad, nn.GELU, r"$x\,\Phi(x)$"),
        Activation(
            "gelu_tanh",
            "GELU (tanh approx.)",
            gelu_tanh,
            gelu_tanh_grad,
            lambda: nn.GELU(approximate="tanh"),
            r"$x\,\sigma(1.596x + 0.0714x^3)$",
        ),
        Activation("silu", "SiLU / Swish", silu, silu_grad, nn.SiLU, r"$x\,\sigma(x)$"),
        Activation("mish", "Mish", mish, mish_grad, nn.Mish, r"$x\tanh(\mathrm{softplus}(x))$"),
    ]
}

# The torch.nn classes of these activations, e.g. to find them in a model (dead_fraction does).
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Tanh,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
)


def get(name: str) -> Activation:
    """The :class:`Activation` called ``name`` (chapter 02), with a clear error for unknown names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ---- networks built from them --------------------------------------------------------------------


def make_mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
    *,
    init_gain: float | None = None,
) -> nn.Sequential:
    """``Flatten``, then ``Linear -> activation`` per hidden width, then a final ``Linear`` (chapter 02).

    ``activation`` is any name of :data:`ACTIVATIONS` (PyTorch's module is used). ``init_gain=None``
    keeps PyTorch's initialisation of ``nn.Linear``; a number ``g`` draws every weight from
    ``N(0, g**2 / fan_in)`` and zeroes the biases (``g = 1``: LeCun; ``g = sqrt 2``: He).
    Takes (N, in_features) or (N, C, H, W) with ``C * H * W == in_features``; returns logits.
    """
    act = get(activation)
    hidden = tuple(int(h) for h in hidden)
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(
            f"make_mlp expects positive sizes, got in_features={in_features}, hidden={hidden}, "
            f"out_features={out_features}"
        )
    if init_gain is not None:
        init_gain = _check_number(init_gain, "make_mlp", "init_gain")
        if init_gain <= 0:
            raise ValueError(
                f"make_mlp expects init_gain > 0 (or None for PyTorch's default), got {init_gain}"
            )
    widths = (in_features, *hidden, out_features)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        linear = nn.Linear(a, b)
        if init_gain is not None:
            nn.init.normal_(linear.weight, std=init_gain / math.sqrt(a))
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(hidden):
            layers.append(act.module())
    return nn.Sequential(*layers)


@torch.no_grad()
def dead_fraction(model: nn.Module, x: torch.Tensor) -> list[float]:
    """For each activation module of ``model``, the fraction of its units that are *dead* on ``x`` (chapter
    02).

    A unit is dead when its pre-activation (the module's input) is ``<= 0`` for every example of
    ``x``: a ReLU then outputs 0 and passes no gradient for any of them. Units are the features of
    a (N, F) input, or the channels (dim 1) of a (N, C, H, W) input. Works for any model whose
    activations are modules (``make_mlp``, ``utils.models.MLP``); one number per activation module,
    in the order of ``model.modules()``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            "dead_fraction expects a non-empty batch x of shape (N, ...), got "
            f"{getattr(x, 'shape', type(x).__name__)}"
        )
    alive: dict[int, torch.Tensor] = {}
    modules = [m for m in model.modules() if isinstance(m, ACTIVATION_MODULES)]
    if not modules:
        raise ValueError("dead_fraction found no activation module (nn.ReLU, nn.GELU, ...) in the model")

    def hook(index: int):
        def record(module, inputs, output):
            z = inputs[0]  # (N, F) or (N, C, ...)
            positive = (z > 0).transpose(0, 1).reshape(z.shape[1], -1).any(dim=1)  # (F,) or (C,)
            alive[index] = positive if index not in alive else alive[index] | positive

        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [1.0 - alive[i].float().mean().item() for i in range(len(modules))]
