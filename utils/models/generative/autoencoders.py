"""Autoencoders of chapter 13: an encoder squeezes an image into a small code, a decoder rebuilds it.

* :class:`MLPAutoencoder`: fully connected; ``hidden=()`` and ``output="identity"`` give the
  *linear* autoencoder, which learns the subspace PCA finds;
* :class:`ConvAutoencoder`: strided convolutions down, a choice of upsampling back up;
* :class:`VAE` and :class:`ConditionalVAE`: the encoder gives a Gaussian ``N(mu, diag(exp(logvar)))``
  over codes, the decoder Bernoulli probabilities for the pixels; samples come from the prior;
* the VQ-VAE, whose codes are snapped to the nearest vector of a learned codebook, is in
  :mod:`~utils.models.generative.vq`.

Images are Tensor[N, C, H, W] in [0, 1]. Every model is a plain ``nn.Module`` with explicit
arguments; it runs on CPU, CUDA and MPS. ``utils.train.fit(model, ..., task=Reconstruction(...))``
trains the autoencoders and VAEs; chapter 13 writes the small tasks the CVAE and the VQ-VAE need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .losses import reparameterize

__all__ = ["UPSAMPLING", "VAE", "ConditionalVAE", "ConvAutoencoder", "MLPAutoencoder"]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
OUTPUTS = {"sigmoid": nn.Sigmoid, "identity": nn.Identity}
UPSAMPLING = ("transpose", "nearest", "bilinear", "pixelshuffle")


def _shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    return shape  # type: ignore[return-value]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def _mlp(sizes: Sequence[int], activation: str) -> list[nn.Module]:
    """``Linear -> activation`` between consecutive sizes, no activation after the last Linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return layers


def _check_images(x: torch.Tensor, shape: tuple[int, ...], who: str) -> None:
    if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} takes images of shape (N, {', '.join(map(str, shape))}), got {got}")


class MLPAutoencoder(nn.Module):
    """``flatten -> MLP -> code (N, latent_dim) -> MLP -> image (N, C, H, W)`` (chapter 13).

    Args:
        image_shape: (C, H, W) of the images.
        latent_dim: size of the code (the bottleneck).
        hidden: widths of the encoder's hidden layers; the decoder mirrors them. ``()`` gives a
            linear encoder and decoder (with ``output="identity"``: the linear autoencoder).
        activation: ``"relu"``, ``"leaky_relu"``, ``"gelu"`` or ``"tanh"`` after each hidden layer.
        output: ``"sigmoid"`` (pixels in [0, 1]) or ``"identity"``.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        hidden: Sequence[int] = (256,),
        *,
        activation: str = "relu",
        output: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.image_shape = _shape(image_shape)
        self.latent_dim = _positive("latent_dim", latent_dim)
        hidden = tuple(_positive("each hidden width", h) for h in hidden)
        _choice("activation", activation, tuple(ACTIVATIONS))
        _choice("output", output, tuple(OUTPUTS))
        d = math.prod(self.image_shape)
        self.encoder = nn.Sequential(nn.Flatten(), *_mlp((d, *hidden, latent_dim), activation))
        self.decoder = nn.Sequential(
            *_mlp((latent_dim, *hidden[::-1], d), activation),
            OUTPUTS[output](),
            nn.Unflatten(1, self.image_shape),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> codes (N, latent_dim)."""
        _check_images(x, self.image_shape, type(self).__name__)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (N, latent_dim) -> images (N, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _upsample(c_in: int, c_out: int, mode: str) -> nn.Module:
    """Double the height and width: the four choices chapter 12 compares."""
    if mode == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    if mode == "pixelshuffle":  # sub-pixel convolution: 4 c_out channels rearranged into a 2x2 block
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2))
    return nn.Sequential(nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(c_in, c_out, 3, padding=1))


class ConvAutoencoder(nn.Module):
    """Strided 3x3 convolutions down to a code (N, latent_dim), upsampling back up (chapter 13).

    Each entry of ``channels`` is one stage: ``Conv2d(3x3, stride 2) -> ReLU`` halves the height
    and width, so H and W must be divisible by ``2 ** len(channels)``. A linear layer maps the last
    feature map to the code and back. The decoder mirrors the encoder with ``upsample``:
    ``"transpose"`` (ConvTranspose2d 4x4, stride 2), ``"nearest"`` or ``"bilinear"`` (resize, then
    a 3x3 convolution) or ``"pixelshuffle"`` (a 3x3 convolution to 4x the channels, then
    PixelShuffle(2)). ``output``: ``"sigmoid"`` or ``"identity"``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        latent_dim: int = 16,
        channels: Sequence[int] = (16, 32),
        *,
        upsample: str = "transpose",
        output: str = "sigmoid",
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.image_shape = _shape((in_channels, h, w))
        self.latent_dim = _positive("latent_dim", latent_dim)
        channels = tuple(_positive("each entry of channels", c) for c in channels)
        if not channels:
            raise ValueError("channels must name at least one stage, e.g. (16, 32)")
        _choice("upsample", upsample, UPSAMPLING)
        _choice("output", output, tuple(OUTPUTS))
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise ValueError(
                f"{len(channels)} stride-2 stages need H and W divisible by {factor}, got {h}x{w}: "
                "use fewer stages or pad the images"
            )
        self.feature_shape = (channels[-1], h // factor, w // factor)
        down: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels):
            down += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(
            *down, nn.Flatten(), nn.Linear(math.prod(self.feature_shape), latent_dim)
        )
        up: list[nn.Module] = [
            nn.Linear(latent_dim, math.prod(self.feature_shape)),
            nn.Unflatten(1, self.feature_shape),
        ]
        rev = channels[::-1]
        for i, (c_in, c_out) in enumerate(zip(rev, (*rev[1:], in_channels))):
            up.append(_upsample(c_in, c_out, upsample))
            if i < len(rev) - 1:
                up.append(nn.ReLU())
        self.decoder = nn.Sequential(*up, OUTPUTS[output]())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> codes (N, latent_dim)."""
        _check_images(x, self.image_shape, type(self).__name__)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (N, latent_dim) -> images (N, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VAE(nn.Module):
    """A variational autoencoder with MLP encoder and decoder (Kingma and Welling, 2014; chapter 13).

    The encoder maps an image to the mean and log-variance (N, latent_dim) each of a Gaussian
    posterior ``q(z|x)``; the decoder maps a code to Bernoulli probabilities for the pixels
    (N, C, H, W), in (0, 1). ``forward(x)`` returns ``(x_hat, mu, logvar)`` with ``x_hat`` decoded
    from a sample ``z ~ q(z|x)`` (in eval mode too: a validation loss is then the same one-sample
    estimate of the negative ELBO as in training), which is what ``utils.train.Reconstruction("bce",
    beta)`` expects. :meth:`reconstruct` decodes the mean instead; :meth:`sample` decodes draws
    from the prior ``N(0, I)``.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        hidden: Sequence[int] = (256,),
        *,
        activation: str = "relu",
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.image_shape = _shape(image_shape)
        self.latent_dim = _positive("latent_dim", latent_dim)
        hidden = tuple(_positive("each hidden width", h) for h in hidden)
        _choice("activation", activation, tuple(ACTIVATIONS))
        if isinstance(cond_dim, bool) or not isinstance(cond_dim, int) or cond_dim < 0:
            raise ValueError(f"cond_dim must be an int >= 0, got {cond_dim!r}")
        self.cond_dim = cond_dim
        d = math.prod(self.image_shape)
        self.encoder = nn.Sequential(*_mlp((d + cond_dim, *hidden, 2 * latent_dim), activation))
        self.decoder = nn.Sequential(
            *_mlp((latent_dim + cond_dim, *hidden[::-1], d), activation),
            nn.Sigmoid(),
            nn.Unflatten(1, self.image_shape),
        )

    def _joined(self, v: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return v if c is None else torch.cat([v, c.to(v.dtype)], dim=1)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) -> ``(mu, logvar)``, each (N, latent_dim)."""
        _check_images(x, self.image_shape, type(self).__name__)
        mu, logvar = self.encoder(self._joined(x.flatten(1), c)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (N, latent_dim) -> pixel probabilities (N, C, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must be (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(self._joined(z, c))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the VAE's deterministic reconstruction (N, C, H, W)."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images (n, C, H, W) decoded from ``z ~ N(0, I)`` (drawn on the CPU with ``generator``)."""
        z = torch.randn(_positive("n", n), self.latent_dim, generator=generator)
        return self.decode(z.to(next(self.parameters()).device))


class ConditionalVAE(VAE):
    """A VAE whose encoder and decoder also see the class label (Sohn et al., 2015; chapter 13).

    ``forward(x, y)`` with integer labels ``y`` (N,) in [0, num_classes) returns ``(x_hat, mu,
    logvar)``; the label enters both networks as a one-hot vector, so the code is free to hold what
    the label does not say (the style of the digit). ``sample(y)`` draws one image per label.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        latent_dim: int = 16,
        hidden: Sequence[int] = (256,),
        *,
        activation: str = "relu",
    ) -> None:
        super().__init__(
            image_shape,
            latent_dim,
            hidden,
            activation=activation,
            cond_dim=_positive("num_classes", num_classes),
        )
        self.num_classes = num_classes

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Labels (N,) -> one-hot (N, num_classes) floats, with a clear error outside [0, num_classes)."""
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"labels must be a (N,) integer tensor, got {getattr(y, 'shape', type(y).__name__)}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes - 1}], got {int(y.min())}..{int(y.max())}"
            )
        return F.one_hot(y.long(), self.num_classes).float()

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return super().encode(x, self.one_hot(y))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if len(y) != len(z):
            raise ValueError(f"one label per code: got {len(z)} codes and {len(y)} labels")
        return super().decode(z, self.one_hot(y))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        mu, logvar = self.encode(x, y)
        return self.decode(reparameterize(mu, logvar), y), mu, logvar

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.decode(self.encode(x, y)[0], y)

    def sample(self, y: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:  # type: ignore[override]
        """One image per label of ``y`` (N,), decoded from ``z ~ N(0, I)``: (N, C, H, W)."""
        device = next(self.parameters()).device
        z = torch.randn(len(y), self.latent_dim, generator=generator).to(device)
        return self.decode(z, y.to(device))
