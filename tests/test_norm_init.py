"""utils.scratch.init and utils.scratch.norm (chapter 05): initializers, batch/layer/instance/group
normalization and dropout agree with torch.nn.init and torch.nn.functional, and bad input fails clearly;
the chapter's widget draws."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.scratch import init, norm

F64 = torch.float64

# ---- initializers -------------------------------------------------------------------------------

SHAPES = [(5, 3), (64, 256), (32, 16, 3, 3), (8, 4, 5, 7), (6, 2, 3, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    w = torch.empty(shape)
    assert init.fans(w) == nn.init._calculate_fan_in_and_fan_out(w)


@pytest.mark.parametrize(
    "name, param",
    [
        ("linear", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
    ],
)
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(nn.init.calculate_gain(name, param))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_initializers_draw_what_torch_draws(shape, mode):
    ours = init.he_normal_(torch.empty(shape), mode, generator=torch.Generator().manual_seed(4))
    ref = nn.init.kaiming_normal_(
        torch.empty(shape), mode=mode, nonlinearity="relu", generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(ours, ref)
    ours = init.he_uniform_(torch.empty(shape), mode, generator=torch.Generator().manual_seed(5))
    ref = nn.init.kaiming_uniform_(
        torch.empty(shape), mode=mode, nonlinearity="relu", generator=torch.Generator().manual_seed(5)
    )
    assert torch.allclose(ours, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier_initializers_draw_what_torch_draws(shape, gain):
    ours = init.xavier_normal_(torch.empty(shape), gain, generator=torch.Generator().manual_seed(6))
    assert torch.equal(
        ours, nn.init.xavier_normal_(torch.empty(shape), gain, generator=torch.Generator().manual_seed(6))
    )
    ours = init.xavier_uniform_(torch.empty(shape), gain, generator=torch.Generator().manual_seed(7))
    ref = nn.init.xavier_uniform_(torch.empty(shape), gain, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ours, ref, rtol=1e-6, atol=0)


def test_initializers_fill_in_place_also_parameters():
    conv = nn.Conv2d(8, 16, 3)
    out = init.he_init_(conv.weight, "fan_in")
    assert out is conv.weight and conv.weight.requires_grad
    fan_in = 8 * 9
    big = init.he_init_(torch.empty(400, fan_in * 10)[:, :fan_in].contiguous())
    assert big.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    w = torch.empty(300, 100)
    assert init.xavier_normal_(w) is w
    assert w.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.03)


def test_init_std_and_errors():
    w = torch.empty(20, 10, 3, 3)  # fan_in 90, fan_out 180
    assert init.init_std(w, "he") == pytest.approx(math.sqrt(2 / 90))
    assert init.init_std(w, "he", "fan_out") == pytest.approx(math.sqrt(2 / 180))
    assert init.init_std(w, "xavier") == pytest.approx(math.sqrt(2 / 270))
    with pytest.raises(ValueError, match="fan_mode"):
        init.he_init_(w, "fan_avg")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.he_init_(torch.empty(5))
    with pytest.raises(TypeError, match="floating point"):
        init.he_init_(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="scheme"):
        init.init_std(w, "lecun")
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("gelu")


# ---- deep_forward -------------------------------------------------------------------------------


def test_deep_forward_matches_a_hand_written_loop():
    depth, width, seed = 12, 32, 3
    stats = init.deep_forward(
        depth, width, init="xavier", activation="tanh", batch=64, seed=seed, keep=(1, depth)
    )
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(64, width, generator=gen)
    rms = []
    for _ in range(depth):
        h = torch.tanh(h @ (torch.randn(width, width, generator=gen) * math.sqrt(1 / width)).T)
        rms.append(h.pow(2).mean().sqrt().item())
    assert torch.allclose(stats["rms"], torch.tensor(rms, dtype=F64), rtol=1e-6)
    assert torch.equal(stats["layers"][depth], h.reshape(-1))
    assert stats["std"].shape == stats["mean"].shape == stats["saturated"].shape == (depth,)


def test_deep_forward_shows_vanishing_stable_and_exploding_signals():
    he = init.deep_forward(30, 128, init="he", activation="relu", batch=256)
    xavier = init.deep_forward(30, 128, init="xavier", activation="relu", batch=256)
    large = init.deep_forward(30, 128, init="large", activation="tanh", batch=256)
    zero = init.deep_forward(5, 16, init="zero", activation="relu", batch=8)
    assert 0.2 < (he["rms"][-1] / he["rms"][0]).item() < 5
    assert (xavier["rms"][-1] / xavier["rms"][0]).item() < 1e-3  # (1/2)^(29/2) ~ 4e-5
    assert large["saturated"][-1] > 0.7
    assert torch.all(zero["rms"] == 0) and torch.all(zero["dead"] == 1)
    normed = init.deep_forward(30, 128, init="small", activation="relu", batch=256, batchnorm=True)
    assert 0.5 < (normed["rms"][-1] / normed["rms"][0]).item() < 2
    # a float init is a gain: sqrt(2) is He for square layers
    assert torch.allclose(
        init.deep_forward(10, 64, init=math.sqrt(2))["rms"], init.deep_forward(10, 64, init="he")["rms"]
    )


def test_deep_forward_backward_records_gradients():
    stats = init.deep_forward(20, 64, init="he", activation="relu", batch=128, backward=True)
    assert stats["grad_std"].shape == (20,) and torch.isfinite(stats["grad_std"]).all()
    assert 0.1 < (stats["grad_std"][0] / stats["grad_std"][-1]).item() < 10  # He keeps gradients level too
    vanishing = init.deep_forward(20, 64, init="xavier", activation="relu", batch=128, backward=True)
    assert (vanishing["grad_std"][0] / vanishing["grad_std"][-1]).item() < 0.05


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 0}, "depth"),
        ({"width": 1.5}, "width"),
        ({"init": "lecun"}, "init"),
        ({"init": -1.0}, "init"),
        ({"activation": "gelu"}, "activation"),
        ({"depth": 5, "keep": (6,)}, "keep"),
    ],
)
def test_deep_forward_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        init.deep_forward(**kwargs)


# ---- batch normalization ----------------------------------------------------------------------------


def _bn_args(shape, dtype=torch.float32, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    return (
        torch.randn(shape, generator=g, dtype=dtype) * 2 + offset,
        torch.rand(c, generator=g, dtype=dtype) + 0.5,
        torch.randn(c, generator=g, dtype=dtype),
        torch.randn(c, generator=g, dtype=dtype),
        torch.rand(c, generator=g, dtype=dtype) + 0.5,
    )


@pytest.mark.parametrize("shape", [(8, 4, 5, 5), (2, 3, 1, 1), (1, 5, 4, 4), (16, 6), (4, 3, 10)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_forward_matches_functional(shape, training):
    x, gamma, beta, rm, rv = _bn_args(shape, F64)
    originals = [t.clone() for t in (x, gamma, beta, rm, rv)]
    out, new_rm, new_rv, (x_hat, g, inv_std) = norm.batchnorm_forward(
        x, gamma, beta, rm, rv, 0.3, 1e-3, training
    )
    rm_ref, rv_ref = rm.clone(), rv.clone()
    ref = F.batch_norm(x, rm_ref, rv_ref, gamma, beta, training, 0.3, 1e-3)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(new_rm, rm_ref, atol=1e-12) and torch.allclose(new_rv, rv_ref, atol=1e-12)
    assert torch.allclose(
        out, x_hat * norm._per_channel(g, x.dim()) + norm._per_channel(beta, x.dim()), atol=1e-12
    )
    assert inv_std.shape == (shape[1],) and g is gamma
    for before, after in zip(originals, (x, gamma, beta, rm, rv)):
        assert torch.equal(before, after)  # nothing modified in place


def test_batchnorm_forward_is_stable_for_a_large_mean():
    x, gamma, beta, rm, rv = _bn_args((16, 4, 6, 6), offset=1000.0)
    out = norm.batchnorm_forward(x, gamma, beta, rm, rv)[0]
    ref = F.batch_norm(x.double(), rm.double(), rv.double(), gamma.double(), beta.double(), True)
    assert (out.double() - ref).abs().max() < 1e-3


def test_batchnorm_forward_errors():
    x, gamma, beta, rm, rv = _bn_args((1, 3, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norm.batchnorm_forward(x, gamma, beta, rm, rv)
    norm.batchnorm_forward(x, gamma, beta, rm, rv, training=False)  # evaluation mode is fine
    x, gamma, beta, rm, rv = _bn_args((4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"gamma must be a tensor of shape \(3,\)"):
        norm.batchnorm_forward(x, gamma[:2], beta, rm, rv)
    with pytest.raises(ValueError, match="momentum"):
        norm.batchnorm_forward(x, gamma, beta, rm, rv, momentum=1.5)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        norm.batchnorm_forward(torch.zeros(5), gamma, beta, rm, rv)


@pytest.mark.parametrize("shape", [(8, 4, 5, 5), (2, 3, 1, 1), (1, 5, 4, 4), (16, 6)])
def test_batchnorm_backward_matches_autograd(shape):
    x, gamma, beta, rm, rv = _bn_args(shape, F64, seed=1)
    dout = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    _, _, _, cache = norm.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
    dx, dgamma, dbeta = norm.batchnorm_backward(dout, cache)
    xr, gr, br = (t.clone().requires_grad_() for t in (x, gamma, beta))
    F.batch_norm(xr, None, None, gr, br, True).backward(dout)
    for ours, ref in ((dx, xr.grad), (dgamma, gr.grad), (dbeta, br.grad)):
        assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-8)
    with pytest.raises(ValueError, match="shape of the forward output"):
        norm.batchnorm_backward(torch.cat([dout, dout]), cache)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm2d_module_matches_torch_in_both_modes(momentum):
    torch.manual_seed(0)
    ref, ours = nn.BatchNorm2d(5, momentum=momentum), norm.BatchNorm2d(5, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    for _ in range(4):
        x = torch.randn(6, 5, 4, 4) * 3 + 1
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
    for (name, a), (name_ref, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert name == name_ref and torch.allclose(a.float(), b.float(), atol=1e-6), name
    ref.eval(), ours.eval()
    x = torch.randn(3, 5, 4, 4, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours(x), ref(x_ref)
    assert torch.allclose(out, out_ref, atol=1e-5)
    ref.load_state_dict(ours.state_dict())  # and the other way round
    # gradients of the parameters in training mode
    ours.train(), ref.train()
    x = torch.randn(6, 5, 4, 4)
    (ours(x) ** 2).sum().backward()
    (ref(x) ** 2).sum().backward()
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-4) and torch.allclose(
        ours.bias.grad, ref.bias.grad, atol=1e-4
    )


def test_batchnorm2d_module_without_affine_or_running_stats():
    x = torch.randn(4, 3, 5, 5)
    for kwargs in ({"affine": False}, {"track_running_stats": False}):
        ours, ref = norm.BatchNorm2d(3, **kwargs), nn.BatchNorm2d(3, **kwargs)
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        ours.eval(), ref.eval()
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        assert set(ours.state_dict()) == set(ref.state_dict())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        norm.BatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="channels"):
        norm.BatchNorm2d(3)(torch.randn(4, 2, 5, 5))
    with pytest.raises(ValueError, match="num_features"):
        norm.BatchNorm2d(0)


# ---- layer, instance, group normalization -------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 8, 5, 5), (2, 6, 3, 7), (1, 4, 2, 2)])
def test_layer_instance_group_norm_match_functional(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=F64) * 2 + 1
    c = shape[1]
    w, b = torch.rand(c, generator=g, dtype=F64) + 0.5, torch.randn(c, generator=g, dtype=F64)
    for groups in (1, 2, c):
        assert torch.allclose(norm.group_norm(x, groups, w, b), F.group_norm(x, groups, w, b), atol=1e-12)
    lw, lb = torch.rand(shape[1:], generator=g, dtype=F64), torch.randn(shape[1:], generator=g, dtype=F64)
    assert torch.allclose(norm.layer_norm(x, lw, lb), F.layer_norm(x, shape[1:], lw, lb), atol=1e-12)
    assert torch.allclose(norm.instance_norm(x, w, b), F.instance_norm(x, weight=w, bias=b), atol=1e-12)
    assert torch.allclose(norm.group_norm(x, 1), norm.layer_norm(x), atol=1e-12)
    assert torch.allclose(norm.group_norm(x, c), norm.instance_norm(x), atol=1e-12)
    # no dependence on the rest of the batch
    assert torch.allclose(norm.group_norm(x[:1], 2), norm.group_norm(x, 2)[:1], atol=1e-12)


def test_normalization_errors():
    x = torch.randn(2, 6, 3, 3)
    with pytest.raises(ValueError, match="divides the 6 channels"):
        norm.group_norm(x, 4)
    with pytest.raises(ValueError, match="shape of one sample"):
        norm.layer_norm(x, torch.ones(6))
    with pytest.raises(ValueError, match="spatial"):
        norm.instance_norm(torch.randn(2, 6))
    with pytest.raises(TypeError, match="floating point"):
        norm.layer_norm(torch.ones(2, 3, dtype=torch.int64))
    assert set(norm.NORM_AXES) == {"BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm"}


# ---- dropout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_draws_what_torch_draws(p):
    x = torch.randn(16, 8, 5, 5)
    torch.manual_seed(1)
    ours = norm.dropout(x, p)
    torch.manual_seed(1)
    assert torch.equal(ours, F.dropout(x, p))
    torch.manual_seed(2)
    ours = norm.dropout2d(x, p)
    torch.manual_seed(2)
    assert torch.equal(ours, F.dropout2d(x, p))


def test_dropout_statistics_and_modes():
    ones = torch.ones(200_000)
    out = norm.dropout(ones, 0.3, generator=torch.Generator().manual_seed(0))
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.7)))
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    x = torch.randn(4, 6, 3, 3)
    assert norm.dropout(x, 0.5, training=False) is x and norm.dropout2d(x, 0.5, training=False) is x
    assert torch.equal(norm.dropout(x, 0.0), x)
    assert torch.equal(norm.dropout(x, 1.0), torch.zeros_like(x)) and torch.equal(
        norm.dropout2d(x, 1.0), torch.zeros_like(x)
    )
    maps = norm.dropout2d(torch.ones(64, 32, 4, 4), 0.5, generator=torch.Generator().manual_seed(0))
    per_channel = maps.reshape(64, 32, -1)
    assert torch.all(per_channel.amin(-1) == per_channel.amax(-1))  # whole channels kept or dropped
    a = norm.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    b = norm.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match="probability p"):
        norm.dropout(torch.ones(3), p)
    with pytest.raises(ValueError):
        norm.dropout2d(torch.ones(2, 3, 4, 4), p)


# ---- the widget ---------------------------------------------------------------------------------


def test_activation_figure_and_verdicts():
    from utils.widgets.init_norm import activation_figure, verdict

    fig = activation_figure("relu", math.sqrt(2), 10, width=64, batch=64)
    assert isinstance(fig, matplotlib.figure.Figure) and "keeps its scale" in fig.get_suptitle()
    matplotlib.pyplot.close(fig)
    fig = activation_figure("tanh", 16.0, 20, width=64, batch=64, backward=False)
    assert "saturates" in fig.get_suptitle()
    matplotlib.pyplot.close(fig)
    assert verdict(init.deep_forward(30, 64, init=1.0), "relu") == "vanishes"
    assert verdict(init.deep_forward(30, 64, init=4.0), "relu") == "explodes"
    fig = activation_figure("relu", 0.01, 5, width=16, batch=16)  # all-zero histograms still draw
    matplotlib.pyplot.close(fig)


def test_init_explorer_redraws_when_knobs_move():
    pytest.importorskip("ipywidgets")
    from utils.widgets.init_norm import init_explorer

    box = init_explorer(width=32, batch=32)
    controls, _ = box.children
    (activation, batchnorm), (preset, gain) = controls.children[0].children, controls.children[1].children
    depth = controls.children[2]
    assert box.state["redraws"] == 1 and "relu" in box.state["title"]
    activation.value = "tanh"
    depth.value = 5
    batchnorm.value = True
    assert box.state["redraws"] == 4 and "tanh" in box.state["title"] and "batch norm" in box.state["title"]
    preset.value = "Xavier (gain 1)"
    assert gain.value == pytest.approx(1.0, rel=1e-2) and "N(0, 1²" in box.state["title"]
    gain.value = 3.0
    assert preset.value == "(slider)" and "N(0, 3²" in box.state["title"]
    preset.value = "too large (std 1)"
    assert gain.value == pytest.approx(math.sqrt(32), rel=1e-2)
    matplotlib.pyplot.close("all")
