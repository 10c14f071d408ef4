"""Weight initialization from scratch, and the signal it lets through a deep network (chapter 05).

Chapter 05 derives these initializers from *variance propagation*: a linear layer
``y = W x`` with ``fan_in`` independent inputs of second moment ``E[x^2]`` and weights of mean 0
and variance ``Var(w)`` gives outputs of variance ``fan_in * Var(w) * E[x^2]``. Keeping that
variance constant from layer to layer fixes ``Var(w)``:

* Xavier / Glorot (tanh, linear): ``Var(w) = 2 / (fan_in + fan_out)``, a compromise between the
  forward pass (``1 / fan_in``) and the backward pass (``1 / fan_out``);
* He / Kaiming (ReLU, which zeroes half of its inputs): ``Var(w) = 2 / fan``, with ``fan`` the
  ``fan_in`` (keeps the forward signal) or the ``fan_out`` (keeps the gradients).

Every initializer fills its tensor in place under ``torch.no_grad()`` (so it works on an
``nn.Parameter``) and returns it, like ``torch.nn.init``; given the same ``generator`` it draws
exactly the numbers ``torch.nn.init`` draws. :func:`deep_forward` measures the activation (and
gradient) statistics of a deep MLP for any of them; the chapter's widget is built on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "INITS",
    "calculate_gain",
    "deep_forward",
    "fans",
    "he_init_",
    "he_normal_",
    "he_uniform_",
    "init_std",
    "xavier_normal_",
    "xavier_uniform_",
]

FAN_MODES = ("fan_in", "fan_out")

# Named schemes of deep_forward: the standard deviation as a function of (fan_in, fan_out).
INITS: dict[str, Any] = {
    "zero": lambda fan_in, fan_out: 0.0,
    "small": lambda fan_in, fan_out: 0.01,
    "large": lambda fan_in, fan_out: 1.0,
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
    "he": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
}


def _check_weight(weight: Any) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() < 2:
        raise ValueError(
            "fan_in and fan_out need a weight with at least 2 dimensions (out_features, in_features, "
            "*kernel), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got dtype {weight.dtype}")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape (out, in) or (out, in, *kernel). Chapter 05.

    A linear layer's weight (out, in) has fan_in = in and fan_out = out; a convolution's weight
    (out, in, kh, kw) has fan_in = in * kh * kw and fan_out = out * kh * kw: every output pixel sums
    over ``in * kh * kw`` inputs. Same as ``torch.nn.init._calculate_fan_in_and_fan_out``.
    """
    _check_weight(weight)
    receptive_field = math.prod(weight.shape[2:])  # 1 for a linear layer
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that multiplies the unit-variance standard deviation for an activation. Chapter 05.

    ``"linear"``, ``"conv2d"``, ``"sigmoid"``: 1; ``"tanh"``: 5/3; ``"relu"``: sqrt(2);
    ``"leaky_relu"``: sqrt(2 / (1 + slope^2)) with ``param`` the negative slope (default 0.01).
    Same values as ``torch.nn.init.calculate_gain``.
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    raise ValueError(
        "nonlinearity must be one of linear, conv1d, conv2d, conv3d, sigmoid, tanh, relu, leaky_relu; got "
        f"{nonlinearity!r}"
    )


def init_std(weight: torch.Tensor, scheme: str, fan_mode: str = "fan_in") -> float:
    """The standard deviation that ``scheme`` (``"xavier"`` or ``"he"``) gives ``weight``. Chapter 05.

    Xavier: sqrt(2 / (fan_in + fan_out)); He: sqrt(2 / fan) with ``fan`` chosen by ``fan_mode``.
    """
    fan_in, fan_out = fans(weight)
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "he":
        if fan_mode not in FAN_MODES:
            raise ValueError(f"fan_mode must be 'fan_in' or 'fan_out', got {fan_mode!r}")
        return math.sqrt(2.0 / (fan_in if fan_mode == "fan_in" else fan_out))
    raise ValueError(f"scheme must be 'xavier' or 'he', got {scheme!r}")


def xavier_normal_(
    weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``weight`` in place with N(0, gain^2 * 2 / (fan_in + fan_out)) and return it. Chapter 05.

    Matches ``torch.nn.init.xavier_normal_`` (the same numbers for the same ``generator``).
    """
    std = gain * init_std(weight, "xavier")
    with torch.no_grad():
        return weight.normal_(0.0, std, generator=generator)


def xavier_uniform_(
    weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``weight`` in place with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), and return it. Chapter
    05.

    A uniform distribution on (-a, a) has variance a^2 / 3, hence the sqrt(3) = sqrt(6) / sqrt(2).
    Matches ``torch.nn.init.xavier_uniform_``.
    """
    bound = math.sqrt(3.0) * gain * init_std(weight, "xavier")
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def he_normal_(
    weight: torch.Tensor, fan_mode: str = "fan_in", generator: torch.Generator | None = None
) -> torch.Tensor:
    """He (Kaiming) normal initialization for ReLU: fill ``weight`` with N(0, 2 / fan), return it. Chapter 05.

    ``fan_mode`` is ``"fan_in"`` (keeps the variance of the activations in the forward pass) or
    ``"fan_out"`` (keeps the variance of the gradients in the backward pass). Matches
    ``torch.nn.init.kaiming_normal_(weight, mode=fan_mode, nonlinearity="relu")``.
    """
    std = init_std(weight, "he", fan_mode)
    with torch.no_grad():
        return weight.normal_(0.0, std, generator=generator)


he_init_ = he_normal_  # the name the chapter 05 exercise uses


def he_uniform_(
    weight: torch.Tensor, fan_mode: str = "fan_in", generator: torch.Generator | None = None
) -> torch.Tensor:
    """He (Kaiming) uniform initialization: U(-b, b) with b = sqrt(6 / fan). Chapter 05.

    Matches ``torch.nn.init.kaiming_uniform_(weight, mode=fan_mode, nonlinearity="relu")``.
    """
    bound = math.sqrt(3.0) * init_std(weight, "he", fan_mode)
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


# --------------------------------------------------------------------------------------------
# Activation statistics through a deep MLP
# --------------------------------------------------------------------------------------------
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "linear": lambda z: z}


def deep_forward(
    depth: int = 50,
    width: int = 256,
    *,
    init: str | float = "he",
    activation: str = "relu",
    batch: int = 512,
    batchnorm: bool = False,
    backward: bool = False,
    keep: tuple[int, ...] = (),
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Push a batch of standard normal inputs through ``depth`` square layers and record statistics. Chapter
    05.

    Each layer is ``h <- activation(W h)`` (no bias) with ``W`` of shape (width, width) drawn as
    ``init`` says: a name of :data:`INITS` (``"zero"``, ``"small"`` = N(0, 0.01^2), ``"large"`` =
    N(0, 1), ``"xavier"``, ``"he"``) or a float, the *gain* ``g`` of N(0, g^2 / width). With
    ``batchnorm=True`` every pre-activation is standardized over the batch first (batch
    normalization in training mode, without affine parameters).

    Returns a dict of float64 CPU tensors of shape (depth,): ``"rms"`` (root mean square, the
    quantity that the variance argument keeps constant), ``"std"`` and ``"mean"`` of each layer's output,
    ``"saturated"`` (fraction of outputs with ``|h| > 0.99``, for tanh) and
    ``"dead"`` (fraction exactly 0); with ``backward=True`` also ``"grad_std"``, the standard
    deviation of the gradient of ``(h_L * r).sum()`` (``r`` random) with respect to each layer's
    output. ``"layers"`` maps each 1-based layer index in ``keep`` to its flattened outputs.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be a float gain or one of {sorted(INITS)}, got {init!r}")
        std = float(INITS[init](width, width))
    elif isinstance(init, (int, float)) and not isinstance(init, bool) and init >= 0:
        std = float(init) / math.sqrt(width)
    else:
        raise ValueError(f"init must be a non-negative float gain or one of {sorted(INITS)}, got {init!r}")
    bad = [k for k in keep if not (isinstance(k, int) and 1 <= k <= depth)]
    if bad:
        raise ValueError(f"keep must hold layer indices in [1, {depth}], got {bad}")

    act = ACTIVATIONS[activation]
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, width, generator=gen).to(device)  # (B, width)
    if backward:
        h.requires_grad_(True)  # so that autograd records the layers
    weights = [(torch.randn(width, width, generator=gen) * std).to(device) for _ in range(depth)]
    outputs = []
    with torch.enable_grad() if backward else torch.no_grad():
        for W in weights:
            z = h @ W.T  # (B, width)
            if batchnorm:
                z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
            h = act(z)
            if backward:
                h.retain_grad()
            outputs.append(h)
        if backward:
            r = torch.randn(h.shape, generator=gen).to(device)
            (h * r).sum().backward()

    def per_layer(fn) -> torch.Tensor:
        return torch.tensor([float(fn(o.detach())) for o in outputs], dtype=torch.float64)

    stats = {
        "rms": per_layer(lambda o: o.pow(2).mean().sqrt()),
        "std": per_layer(lambda o: o.std()),
        "mean": per_layer(lambda o: o.mean()),
        "saturated": per_layer(lambda o: (o.abs() > 0.99).float().mean()),
        "dead": per_layer(lambda o: (o == 0).float().mean()),
        "layers": {k: outputs[k - 1].detach().reshape(-1).cpu() for k in keep},
    }
    if backward:
        stats["grad_std"] = torch.tensor([float(o.grad.std()) for o in outputs], dtype=torch.float64)
    return stats
