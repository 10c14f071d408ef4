"""utils.models.MLP (chapter 01): shapes, activations, parameter count, initialisation and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.models import MLP
from utils.models.mlp import ACTIVATIONS


def n_params(widths, bias=True):
    return sum(a * b + (b if bias else 0) for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize("hidden", [(), (32,), (16, 8, 4)])
def test_output_shape_for_vectors_and_images(hidden):
    model = MLP(64, hidden, 10)
    assert model(torch.rand(5, 64)).shape == (5, 10)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)  # images are flattened


@pytest.mark.parametrize("hidden", [(), (32,), (16, 8, 4), (64,) * 10])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_formula(hidden, bias):
    model = MLP(64, hidden, 10, bias=bias)
    assert sum(p.numel() for p in model.parameters()) == n_params((64, *hidden, 10), bias)
    assert len(model.linear_layers) == len(hidden) + 1


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_choice_is_used_between_linear_layers(activation):
    torch.manual_seed(0)
    model = MLP(3, (4, 5), 2, activation)
    kinds = [type(m) for m in model.layers]
    expected = ACTIVATIONS[activation]
    assert kinds == [nn.Linear, expected, nn.Linear, expected, nn.Linear]
    # the forward pass is exactly linear -> activation -> linear -> activation -> linear
    x = torch.randn(6, 3)
    act = expected()
    l1, l2, l3 = model.linear_layers
    torch.testing.assert_close(model(x), l3(act(l2(act(l1(x))))))


def test_sigmoid_and_relu_differ_and_match_functional_reference():
    torch.manual_seed(0)
    relu = MLP(8, (16,), 3, "relu")
    sig = MLP(8, (16,), 3, "sigmoid")
    sig.load_state_dict(relu.state_dict())
    x = torch.randn(4, 8)
    W1, b1, W2, b2 = (p.detach() for p in relu.parameters())
    torch.testing.assert_close(relu(x), F.linear(F.relu(F.linear(x, W1, b1)), W2, b2))
    torch.testing.assert_close(sig(x), F.linear(torch.sigmoid(F.linear(x, W1, b1)), W2, b2))


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = MLP(20, (50,), 5, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.layers)
    x = torch.randn(8, 20)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_init_options():
    torch.manual_seed(0)
    model = MLP(256, (256, 256), 10, init="kaiming")
    for layer in model.linear_layers:
        assert torch.count_nonzero(layer.bias) == 0
        std = layer.weight.std().item()
        assert std == pytest.approx((2 / layer.in_features) ** 0.5, rel=0.1)  # He et al.
    xavier = MLP(256, (256,), 256, "tanh", init="xavier")
    bound = 5 / 3 * (6 / 512) ** 0.5  # gain(tanh) * sqrt(6 / (fan_in + fan_out))
    w = xavier.linear_layers[0].weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_deep_sigmoid_gradients_vanish_but_relu_with_he_init_do_not():
    """The experiment of chapter 01 in miniature."""
    torch.manual_seed(0)
    x, y = torch.rand(128, 64), torch.randint(0, 10, (128,))
    ratios = {}
    for act, init in (("sigmoid", "xavier"), ("relu", "kaiming")):
        model = MLP(64, (64,) * 10, 10, act, init=init)
        F.cross_entropy(model(x), y).backward()
        norms = [layer.weight.grad.norm().item() for layer in model.linear_layers]
        ratios[act] = norms[0] / norms[-1]
    assert ratios["sigmoid"] < 1e-3
    assert ratios["relu"] > 1e-1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activation="swish"), "activation must be one of"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(init="orthogonal"), "init must be one of"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(4, (3,), 2, **kwargs)


def test_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match="positive sizes"):
        MLP(4, (0,), 2)
    model = MLP(64, (8,), 10)
    with pytest.raises(ValueError, match="64 features per example, got 63"):
        model(torch.rand(2, 63))
    with pytest.raises(ValueError, match="batch of shape"):
        model(torch.rand(64))


def test_runs_on_the_course_device():
    import utils

    dev = utils.device()
    model = MLP(64, (32,), 10).to(dev)
    out = model(torch.rand(3, 64, device=dev))
    assert out.device.type == dev.type and out.shape == (3, 10)
