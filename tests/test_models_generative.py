"""utils.models.generative (chapter 13): the KL, the reparameterisation, the autoencoders, VAEs and the
VQ-VAE, against torch.distributions and brute-force references, with the errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from utils.models.generative import (
    UPSAMPLING,
    VAE,
    VQVAE,
    ConditionalVAE,
    ConvAutoencoder,
    MLPAutoencoder,
    VectorQuantizer,
    active_units,
    codebook_usage,
    gaussian_kl,
    quantize,
    reparameterize,
)
from utils.train import Reconstruction, fit
from utils.train.generative import kl_divergence as task_kl


def reference_kl(mu, logvar):
    q = Independent(Normal(mu, (0.5 * logvar).exp()), mu.dim() - 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), mu.dim() - 1)
    return kl_divergence(q, p)


# ----------------------------------------------------------------------------- gaussian_kl


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3), (1, 1)])
def test_gaussian_kl_matches_torch_distributions(shape):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (shape[0],)
    torch.testing.assert_close(kl, reference_kl(mu, logvar))
    torch.testing.assert_close(kl.mean(), task_kl(mu, logvar))  # the training task's batch mean agrees


def test_gaussian_kl_is_zero_only_at_the_prior_and_grows_with_mu():
    zero = torch.zeros(3, 4)
    assert torch.equal(gaussian_kl(zero, zero), torch.zeros(3))
    kl = gaussian_kl(torch.tensor([[0.5], [1.0], [2.0]]), torch.zeros(3, 1))
    torch.testing.assert_close(kl, torch.tensor([0.125, 0.5, 2.0]))  # mu^2 / 2
    assert (gaussian_kl(torch.zeros(2, 3), torch.tensor([[0.5] * 3, [-0.5] * 3])) > 0).all()


def test_gaussian_kl_gradient_matches_autograd_of_reference():
    mu = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(gaussian_kl(mu, logvar).sum(), (mu, logvar))
    g2 = torch.autograd.grad(reference_kl(mu, logvar).sum(), (mu, logvar))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "mu, logvar, error",
    [
        (torch.zeros(3, 2), torch.zeros(3, 4), ValueError),  # shapes differ
        (torch.zeros(3), torch.zeros(3), ValueError),  # no batch dimension
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), TypeError),
        ([0.0, 1.0], torch.zeros(2), TypeError),
    ],
)
def test_gaussian_kl_and_reparameterize_reject_bad_input(mu, logvar, error):
    with pytest.raises(error):
        gaussian_kl(mu, logvar)
    with pytest.raises(error):
        reparameterize(mu, logvar)


# ----------------------------------------------------------------------------- reparameterize


def test_reparameterize_values_and_gradients():
    mu = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(6, 4, dtype=torch.float64)
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    gmu, glv = torch.autograd.grad(z.sum(), (mu, logvar))
    torch.testing.assert_close(gmu, torch.ones_like(mu))
    torch.testing.assert_close(glv, 0.5 * torch.exp(0.5 * logvar) * eps)


def test_reparameterize_samples_have_the_posterior_moments_and_reproduce():
    mu, logvar = (
        torch.tensor([[1.0, -2.0]]).expand(40000, 2),
        torch.tensor([[0.0, math.log(4.0)]]).expand(40000, 2),
    )
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.05, rtol=0)
    again = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    with pytest.raises(ValueError, match="eps must have"):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- active units, codebook


def test_active_units_counts_dimensions_whose_mean_varies():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 0.01, 0.5, 0.0])
    assert active_units(mu).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="N >= 2"):
        active_units(torch.zeros(1, 4))


def test_codebook_usage_fraction_and_perplexity():
    assert codebook_usage(torch.arange(8).repeat(3), 8) == pytest.approx((1.0, 8.0))
    assert codebook_usage(torch.zeros(5, 5, dtype=torch.long), 4) == pytest.approx((0.25, 1.0))
    idx = torch.tensor([0, 0, 1, 1, 1, 1])  # p = (1/3, 2/3)
    h = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert codebook_usage(idx, 4) == pytest.approx((0.5, math.exp(h)))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        codebook_usage(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        codebook_usage(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="num_codes"):
        codebook_usage(torch.tensor([0]), 0)


# ----------------------------------------------------------------------------- quantize


@pytest.mark.parametrize("shape", [(7, 5), (2, 5, 3, 4)])
def test_quantize_picks_the_nearest_code_with_straight_through_gradient(shape):
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(9, 5, generator=g, dtype=torch.float64)
    z_e = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    z_q, idx = quantize(z_e, codebook)
    flat = z_e.detach().movedim(1, -1).reshape(-1, 5)
    expected = torch.cdist(flat, codebook).argmin(1)  # brute-force distances
    assert idx.shape == (shape[0], *shape[2:])
    assert torch.equal(idx.reshape(-1), expected)
    torch.testing.assert_close(z_q.detach().movedim(1, -1).reshape(-1, 5), codebook[expected])
    w = torch.randn(shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad((z_q * w).sum(), z_e)
    torch.testing.assert_close(grad, w)  # the gradient of the identity


def test_quantize_sends_no_gradient_to_the_codebook_and_rejects_bad_shapes():
    codebook = torch.randn(4, 3, requires_grad=True)
    z_q, _ = quantize(torch.randn(5, 3, requires_grad=True), codebook)
    z_q.sum().backward()
    assert codebook.grad is None
    with pytest.raises(ValueError, match="codebook must be"):
        quantize(torch.randn(5, 3), torch.randn(4))
    with pytest.raises(ValueError, match="3-dim codes"):
        quantize(torch.randn(5, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="3-dim codes"):
        quantize(torch.randn(2, 3, 4), torch.randn(4, 3))


def test_vector_quantizer_losses_train_the_right_parameters():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 4)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z_e)
    e = vq.codebook[out.indices].movedim(-1, 1)
    torch.testing.assert_close(out.codebook_loss, F.mse_loss(e, z_e))
    torch.testing.assert_close(out.commitment_loss, out.codebook_loss)  # same value, different gradients
    g_code, g_z = torch.autograd.grad(out.codebook_loss, (vq.codebook, z_e), allow_unused=True)
    assert g_code.abs().sum() > 0 and (g_z is None or g_z.abs().sum() == 0)
    g_code, g_z = torch.autograd.grad(out.commitment_loss, (vq.codebook, z_e), allow_unused=True)
    assert (g_code is None or g_code.abs().sum() == 0) and g_z.abs().sum() > 0
    assert torch.equal(vq.lookup(out.indices), e)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("hidden", [(), (32, 16)])
def test_mlp_autoencoder_shapes_and_linear_case(hidden):
    model = MLPAutoencoder((1, 8, 8), 3, hidden, output="identity" if not hidden else "sigmoid")
    x = torch.rand(5, 1, 8, 8)
    assert model.encode(x).shape == (5, 3)
    assert model(x).shape == x.shape
    if not hidden:  # a linear autoencoder is an affine map: its Jacobian is constant
        assert [type(m).__name__ for m in model.encoder] == ["Flatten", "Linear"]
    else:
        assert ((model(x) > 0) & (model(x) < 1)).all()


@pytest.mark.parametrize("upsample", UPSAMPLING)
def test_conv_autoencoder_shapes_for_every_upsampling(upsample):
    model = ConvAutoencoder(1, 16, 5, (8, 8), upsample=upsample)
    x = torch.rand(3, 1, 16, 16)
    assert model.encode(x).shape == (3, 5)
    out = model(x)
    assert out.shape == x.shape and ((out >= 0) & (out <= 1)).all()


def test_autoencoders_reject_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvAutoencoder(1, 18, 4, (8, 8))
    with pytest.raises(ValueError, match="upsample"):
        ConvAutoencoder(upsample="cubic")
    with pytest.raises(ValueError, match="latent_dim"):
        MLPAutoencoder(latent_dim=0)
    with pytest.raises(ValueError, match="image_shape"):
        MLPAutoencoder((28, 28))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        MLPAutoencoder()(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        ConvAutoencoder(1, 16, 4, (8, 8))(torch.rand(2, 3, 16, 16))


def test_vae_forward_reconstruct_and_sample():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), 4, (32,))
    x = torch.rand(6, 1, 8, 8)
    x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (6, 4)
    assert ((x_hat > 0) & (x_hat < 1)).all()
    torch.testing.assert_close(model.reconstruct(x), model.decode(mu))
    a = model.sample(3, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    with pytest.raises(ValueError, match=r"codes must be \(N, 4\)"):
        model.decode(torch.zeros(2, 5))


def test_conditional_vae_uses_the_label_and_checks_it():
    torch.manual_seed(0)
    model = ConditionalVAE((1, 8, 8), 3, 2, (16,))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    x_hat, mu, logvar = model(x, y)
    assert x_hat.shape == x.shape and mu.shape == (4, 2)
    z = torch.zeros(3, 2)
    images = model.decode(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(images[0], images[1])  # same code, different label, different image
    assert model.sample(torch.tensor([2, 0])).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(x, torch.tensor([0, 1, 3, 1]))
    with pytest.raises(ValueError, match="integer"):
        model(x, torch.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="one label per code"):
        model.decode(z, torch.tensor([0, 1]))


def test_vqvae_shapes_indices_and_errors():
    torch.manual_seed(0)
    model = VQVAE(1, (8, 8), code_dim=4, num_codes=10)
    x = torch.rand(2, 1, 16, 16)
    out = model(x)
    assert out.x_hat.shape == x.shape and out.indices.shape == (2, 4, 4)
    assert out.indices.min() >= 0 and out.indices.max() < 10
    torch.testing.assert_close(model.decode_indices(out.indices), out.x_hat)
    loss = F.mse_loss(out.x_hat, x) + out.codebook_loss + 0.25 * out.commitment_loss
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # the straight-through path reaches the encoder
    assert model.quantizer.codebook.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(2, 1, 18, 18))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(2, 3, 16, 16))


def test_fit_trains_a_vae_and_an_autoencoder_with_reconstruction():
    torch.manual_seed(0)
    x = (torch.rand(64, 1, 8, 8) > 0.5).float()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=16)
    batches = [b[0] for b in data]
    vae = VAE((1, 8, 8), 2, (16,))
    hist = fit(
        vae,
        batches,
        None,
        task=Reconstruction("bce", beta=1.0),
        epochs=3,
        lr=1e-2,
        progress=False,
        device="cpu",
    )
    assert len(hist["train_kl"]) == 3 and len(hist["train_recon"]) == 3
    ae = ConvAutoencoder(1, 8, 4, (8, 8))
    before = F.mse_loss(ae(x), x).item()
    fit(ae, batches, None, task=Reconstruction("mse"), epochs=5, lr=1e-2, progress=False, device="cpu")
    assert F.mse_loss(ae(x), x).item() < before


# ----------------------------------------------------------------------------- the chapter's widget


def test_latent_widget_draws_each_decoder_at_the_chosen_point():
    import matplotlib.pyplot as plt

    from utils.widgets.autoencoders import latent_figure

    torch.manual_seed(0)
    ae, vae = MLPAutoencoder((1, 8, 8), 2, (8,)), VAE((1, 8, 8), 2, (8,))
    codes = {"AE": torch.randn(20, 2), "VAE": torch.randn(20, 2)}
    labels = torch.randint(0, 3, (20,))
    fig = latent_figure({"AE": ae.decoder, "VAE": vae.decoder}, codes, labels, (0.5, -1.0))
    shown = fig.axes[1].images[0].get_array()
    expected = ae.decoder(torch.tensor([[0.5, -1.0]]))[0, 0].detach().numpy()
    assert shown.shape == (8, 8) and abs(shown - expected).max() < 1e-6
    assert len(fig.axes) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="same models"):
        latent_figure({"AE": ae.decoder}, codes, labels, (0, 0))
    with pytest.raises(ValueError, match=r"\(20, 2\)"):
        latent_figure({"AE": ae.decoder}, {"AE": torch.randn(20, 3)}, labels, (0, 0))


def test_latent_explorer_updates():
    pytest.importorskip("ipywidgets")
    from utils.widgets.autoencoders import latent_explorer

    torch.manual_seed(0)
    ae = MLPAutoencoder((1, 8, 8), 2, (8,))
    box = latent_explorer({"AE": ae.decoder}, {"AE": torch.randn(10, 2)}, torch.randint(0, 2, (10,)))
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["z1", "z2"]
    sliders[0].value = 1.5  # redraws without error
    box.update()
