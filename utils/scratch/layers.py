"""Vectorized layers with hand-written backward passes, and gradient checking.

Chapter 01 derives every function here from the chain rule. Each ``*_forward`` computes a layer's
output; each ``*_backward`` takes ``dout`` (the gradient of the loss with respect to that output,
same shape as the output) and returns the gradients with respect to the layer's inputs and
parameters. Shapes use N for the batch, D for input features, M for output features and C for
classes.

Gradient checking compares an analytic gradient with :func:`numerical_gradient` (central
differences, float64) through :func:`rel_error`, the relative error of cs231n:

* relative error > 1e-2: the gradient is probably wrong;
* 1e-2 > error > 1e-4: suspicious;
* 1e-4 > error > 1e-7: fine for functions with kinks (ReLU), too high otherwise;
* error < 1e-7: correct (smooth functions in float64 usually reach 1e-9 or less).

:class:`MLPScratch` stacks linear and ReLU layers with a softmax cross-entropy loss and trains
on the sklearn digits in chapter 01 without ``torch.autograd``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

# Expected relative error of a correct gradient, and what larger errors usually mean (cs231n).
REL_ERROR_RANGES = (
    (1e-7, "correct"),
    (1e-4, "fine if the function has kinks (ReLU, max), too high otherwise"),
    (1e-2, "suspicious: probably a bug"),
    (math.inf, "wrong"),
)


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape) if hasattr(t, "shape") else ()


def _require_tensor(name: str, value, fn: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn} expects {name} to be a torch.Tensor, got {type(value).__name__}")


# ---- linear (fully connected) layer ----------------------------------------------------------


def linear_forward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Affine layer ``out = x @ W + b`` (chapter 01).

    x: (N, D), W: (D, M), b: (M,)  ->  out: (N, M)
    """
    for name, value in (("x", x), ("W", W), ("b", b)):
        _require_tensor(name, value, "linear_forward")
    if x.ndim != 2 or W.ndim != 2 or b.ndim != 1 or x.shape[1] != W.shape[0] or W.shape[1] != b.shape[0]:
        raise ValueError(
            "linear_forward expects x of shape (N, D), W of shape (D, M) and b of shape (M,); "
            f"got x {_shape(x)}, W {_shape(W)} and b {_shape(b)}"
        )
    return x @ W + b  # (N, D) @ (D, M) + (M,) -> (N, M); b is broadcast over the batch


def linear_backward(
    dout: torch.Tensor, x: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the affine layer (chapter 01).

    dout: (N, M), x: (N, D), W: (D, M)  ->  dx: (N, D), dW: (D, M), db: (M,)
    """
    for name, value in (("dout", dout), ("x", x), ("W", W)):
        _require_tensor(name, value, "linear_backward")
    if (
        dout.ndim != 2
        or x.ndim != 2
        or W.ndim != 2
        or x.shape[1] != W.shape[0]
        or dout.shape != (x.shape[0], W.shape[1])
    ):
        raise ValueError(
            "linear_backward expects dout of shape (N, M), x of shape (N, D) and W of shape (D, M); "
            f"got dout {_shape(dout)}, x {_shape(x)} and W {_shape(W)}"
        )
    dx = dout @ W.T  # (N, M) @ (M, D) -> (N, D)
    dW = x.T @ dout  # (D, N) @ (N, M) -> (D, M): one outer product per example, summed
    db = dout.sum(dim=0)  # (M,): b was broadcast over the batch, so its gradient sums over it
    return dx, dW, db


# ---- ReLU ----------------------------------------------------------------------------------


def relu_forward(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` elementwise (chapter 01). x: any shape -> same shape."""
    _require_tensor("x", x, "relu_forward")
    return x.clamp_min(0)


def relu_backward(dout: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of ReLU (chapter 01): ``dout`` where ``x > 0``, else 0 (0 at ``x == 0`` too).

    dout, x: the same shape  ->  dx: that shape
    """
    _require_tensor("dout", dout, "relu_backward")
    _require_tensor("x", x, "relu_backward")
    if dout.shape != x.shape:
        raise ValueError(
            f"relu_backward expects dout and x of the same shape; got dout {_shape(dout)} and x {_shape(x)}"
        )
    return dout * (x > 0).to(dout.dtype)  # the ReLU gate passes the gradient where it was open


# ---- softmax cross-entropy -------------------------------------------------------------------


def softmax_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax cross-entropy loss over the batch and its gradient (chapter 01).

    logits: (N, C) float, y: (N,) integer labels in [0, C)  ->  loss: () , dlogits: (N, C)

    Stable for large logits: subtracting each row's maximum changes neither the softmax nor the
    loss, and keeps ``exp`` from overflowing. The gradient is ``(softmax(logits) - onehot(y)) / N``.
    """
    _require_tensor("logits", logits, "softmax_cross_entropy")
    _require_tensor("y", y, "softmax_cross_entropy")
    if logits.ndim != 2 or y.ndim != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            "softmax_cross_entropy expects logits of shape (N, C) and y of shape (N,); "
            f"got logits {_shape(logits)} and y {_shape(y)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"softmax_cross_entropy expects floating-point logits, got {logits.dtype}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"softmax_cross_entropy expects integer class labels y, got {y.dtype}")
    n, c = logits.shape
    if n == 0:
        raise ValueError(
            "softmax_cross_entropy needs at least one example (the mean of an empty batch is undefined)"
        )
    if y.min() < 0 or y.max() >= c:
        raise ValueError(
            f"softmax_cross_entropy expects labels in [0, {c}), got values in [{int(y.min())}, "
            f"{int(y.max())}]"
        )
    shifted = logits - logits.max(dim=1, keepdim=True).values  # (N, C), every row's max is 0
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()  # (N, C) log softmax
    rows = torch.arange(n, device=logits.device)
    loss = -log_probs[rows, y].mean()  # ()
    dlogits = log_probs.exp()  # (N, C) softmax probabilities
    dlogits[rows, y] -= 1.0  # p - onehot(y)
    return loss, dlogits / n  # the 1/N comes from the mean


# ---- gradient checking ---------------------------------------------------------------------


def numerical_gradient(
    f: Callable[[torch.Tensor], torch.Tensor | float], x: torch.Tensor, h: float = 1e-5
) -> torch.Tensor:
    """Central-difference gradient of the scalar function ``f`` at ``x`` (chapter 01).

    ``df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)``, one coordinate at a time, so it costs two
    calls of ``f`` per entry of ``x``: a check for small inputs, not a way to train. ``x`` must be
    float64 (in float32 the round-off of ``f`` divided by ``2h`` swamps the result); it is nudged
    in place and restored exactly, so ``x`` is unchanged afterwards.
    """
    _require_tensor("x", x, "numerical_gradient")
    if x.dtype != torch.float64:
        raise TypeError(
            f"numerical_gradient expects x of dtype torch.float64, got {x.dtype}; pass x.double()"
        )
    if not h > 0:
        raise ValueError(f"numerical_gradient expects a step h > 0, got {h}")
    if not x.is_contiguous():
        raise ValueError(
            "numerical_gradient nudges x in place through a flat view, so x must be contiguous; "
            "pass x.contiguous() (and make f read that tensor)"
        )
    grad = torch.zeros_like(x)
    flat_x, flat_g = x.detach().view(-1), grad.view(-1)  # views: writing them writes x and grad
    with torch.no_grad():
        for i in range(flat_x.numel()):
            old = flat_x[i].item()
            flat_x[i] = old + h
            f_plus = _scalar(f(x))
            flat_x[i] = old - h
            f_minus = _scalar(f(x))
            flat_x[i] = old  # restore exactly
            flat_g[i] = (f_plus - f_minus) / (2 * h)
    return grad


def _scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"numerical_gradient expects f to return a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        return value.item()
    return float(value)


def rel_error(a: torch.Tensor | float, b: torch.Tensor | float, eps: float = 1e-8) -> float:
    """Largest elementwise relative error ``|a - b| / max(|a| + |b|, eps)`` (chapter 01)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64, device=a.device)
    if a.shape != b.shape:
        raise ValueError(
            f"rel_error expects two tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs() / (a.abs() + b.abs()).clamp_min(eps)).max().item()


def describe_rel_error(err: float) -> str:
    """What a relative error between an analytic and a numerical gradient usually means (chapter 01)."""
    if math.isnan(err):
        return "wrong (NaN)"
    return next(text for bound, text in REL_ERROR_RANGES if err < bound)


def grad_check(
    f: Callable[[torch.Tensor], torch.Tensor | float],
    x: torch.Tensor,
    analytic: torch.Tensor,
    *,
    h: float = 1e-5,
    name: str = "gradient",
    verbose: bool = True,
) -> float:
    """Compare an analytic gradient of ``f`` at ``x`` with central differences (chapter 01).

    Returns the relative error (see :func:`rel_error`) and, with ``verbose``, prints it with its
    usual meaning. ``x`` must be float64 and is left unchanged.
    """
    numeric = numerical_gradient(f, x, h=h)
    if analytic.shape != x.shape:
        raise ValueError(
            f"grad_check expects the analytic gradient to have x's shape {tuple(x.shape)}, got "
            f"{tuple(analytic.shape)}"
        )
    err = rel_error(analytic.detach().to(numeric.device), numeric)
    if verbose:
        print(f"{name:>12}: relative error {err:.2e}  ({describe_rel_error(err)})")
    return err


# ---- a multilayer perceptron trained without autograd ----------------------------------------


class MLPScratch:
    """An MLP with ReLU hidden layers and a hand-written backward pass (chapter 01).

    ``sizes = (64, 128, 10)`` gives ``x -> linear -> ReLU -> linear -> logits``. Parameters live
    in the dict ``params`` (``W1, b1, W2, b2, ...``, ``W_l`` of shape (sizes[l-1], sizes[l]))
    and are initialised with He et al.'s ``N(0, 2 / fan_in)``; biases start at zero.

    >>> net = MLPScratch((4, 8, 3), seed=0)
    >>> loss, grads = net.loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> sorted(grads) == sorted(net.params)
    True
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(
                f"MLPScratch expects at least two positive layer sizes (inputs, ..., classes), got {sizes}"
            )
        self.sizes = sizes
        gen = torch.Generator().manual_seed(seed)
        self.params: dict[str, torch.Tensor] = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            W = torch.randn(fan_in, fan_out, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
            self.params[f"W{i}"] = W.to(device=device, dtype=dtype)  # (fan_in, fan_out)
            self.params[f"b{i}"] = torch.zeros(fan_out, device=device, dtype=dtype)  # (fan_out,)

    @property
    def num_layers(self) -> int:
        """Number of linear layers."""
        return len(self.sizes) - 1

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MLPScratch:
        """Move (or cast) every parameter, in place; returns ``self``."""
        self.params = {k: v.to(device=device, dtype=dtype) for k, v in self.params.items()}
        return self

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        _require_tensor("x", x, "MLPScratch")
        x = x.reshape(x.shape[0], -1) if x.ndim > 2 else x  # images (N, C, H, W) -> (N, C*H*W)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"MLPScratch expects x of shape (N, {self.sizes[0]}), got {_shape(x)}")
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits (N, C) and the cache of each layer's input and pre-activation for the backward pass."""
        h = self._check_input(x)  # (N, D)
        cache = []
        for i in range(1, self.num_layers + 1):
            z = linear_forward(h, self.params[f"W{i}"], self.params[f"b{i}"])  # (N, sizes[i])
            cache.append((h, z))
            h = relu_forward(z) if i < self.num_layers else z  # no ReLU on the logits
        return h, cache

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean cross-entropy on ``(x, y)`` and its gradient for every parameter (same keys)."""
        logits, cache = self.forward(x)
        loss, dout = softmax_cross_entropy(logits, y)  # (), (N, C)
        grads: dict[str, torch.Tensor] = {}
        for i in range(self.num_layers, 0, -1):  # walk the layers backwards
            h, z = cache[i - 1]
            if i < self.num_layers:
                dout = relu_backward(dout, z)  # through the ReLU that followed layer i
            dout, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(dout, h, self.params[f"W{i}"])
        return loss, grads

    def step(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        """Plain gradient descent: ``p -= lr * dp`` for every parameter."""
        for k, g in grads.items():
            self.params[k] -= lr * g

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class (N,) int64."""
        return self(x).argmax(dim=1)

    def num_parameters(self) -> int:
        """Total number of weights and biases."""
        return sum(p.numel() for p in self.params.values())

    def __repr__(self) -> str:
        return f"MLPScratch(sizes={self.sizes}, parameters={self.num_parameters()})"


__all__ = [
    "MLPScratch",
    "REL_ERROR_RANGES",
    "describe_rel_error",
    "grad_check",
    "linear_backward",
    "linear_forward",
    "numerical_gradient",
    "rel_error",
    "relu_backward",
    "relu_forward",
    "softmax_cross_entropy",
]
