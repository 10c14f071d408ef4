"""A multilayer perceptron as a plain ``nn.Module``.

Chapter 01 uses it to show the vanishing gradient: a deep stack of sigmoid layers passes almost
no gradient back to its first layers, a stack of ReLU layers does. Images are flattened, so the
same model takes (N, D) vectors or (N, C, H, W) images with ``C * H * W == in_features``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
INITS = ("default", "xavier", "kaiming")


class MLP(nn.Module):
    """``Linear -> activation [-> Dropout]`` for each hidden width, then a final ``Linear`` (chapter 01).

    Args:
        in_features: size of one flattened input.
        hidden: widths of the hidden layers, e.g. ``(128,)`` or ``(64,) * 10``; ``()`` gives a
            linear model.
        out_features: number of outputs (classes); the model returns logits.
        activation: one of ``ACTIVATIONS`` (``"relu"``, ``"sigmoid"``, ``"tanh"``, ...).
        dropout: dropout probability after each hidden activation (0 disables it).
        bias: whether the linear layers have biases.
        init: ``"default"`` keeps PyTorch's initialisation of ``nn.Linear``; ``"xavier"`` uses
            Glorot and Bengio's uniform initialisation; ``"kaiming"`` He et al.'s normal
            initialisation for ReLU; biases are zeroed with the last two.

    The number of parameters is ``sum((a + 1) * b)`` over consecutive widths ``a -> b`` of
    ``(in_features, *hidden, out_features)`` (``a * b`` without biases).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        *,
        dropout: float = 0.0,
        bias: bool = True,
        init: str = "default",
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"MLP expects positive sizes, got in_features={in_features}, hidden={hidden}, "
                f"out_features={out_features}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        self.in_features, self.hidden, self.out_features = in_features, hidden, out_features
        self.activation = activation
        widths = (in_features, *hidden, out_features)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(hidden):  # every layer but the last is followed by the non-linearity
                layers.append(ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        if init != "default":
            self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        for layer in self.linear_layers:
            if init == "xavier":
                known = ("relu", "tanh", "sigmoid", "leaky_relu")
                gain = nn.init.calculate_gain(self.activation) if self.activation in known else 1.0
                nn.init.xavier_uniform_(layer.weight, gain=gain)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    @property
    def linear_layers(self) -> list[nn.Linear]:
        """The ``nn.Linear`` layers from input to output (e.g. to read per-layer gradient norms)."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_features) or (N, C, H, W) with C*H*W == in_features  ->  logits (N, out_features)."""
        if x.ndim < 2:
            raise ValueError(
                f"MLP expects a batch of shape (N, {self.in_features}) or (N, C, H, W), got {tuple(x.shape)}"
            )
        x = x.flatten(1)  # (N, D)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} features per example, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        return self.layers(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden={self.hidden}, out_features={self.out_features}, "
            f"activation={self.activation!r}"
        )


__all__ = ["ACTIVATIONS", "INITS", "MLP"]
