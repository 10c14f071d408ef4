"""utils.scratch.activations and utils.widgets.activations (chapter 02): every hand-written
activation and derivative agrees with PyTorch (values and autograd gradients) and with central
differences, stays finite and accurate for |x| up to 1e4, and bad input fails with a clear message."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.models import MLP
from utils.scratch import activations as A
from utils.scratch.layers import softmax_cross_entropy

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-6, "rtol": 1e-5}, F64: {"atol": 1e-12, "rtol": 1e-10}}
EXTREMES = [
    0.0,
    -0.0,
    1e-3,
    -1e-3,
    1.0,
    -1.0,
    5.0,
    -5.0,
    20.0,
    -20.0,
    30.0,
    -30.0,
    100.0,
    -100.0,
    1e3,
    -1e3,
    1e4,
    -1e4,
]


def inputs(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    body = torch.randn(500, generator=g, dtype=dtype) * 4  # most of the action is in [-10, 10]
    return torch.cat([body, torch.tensor(EXTREMES, dtype=dtype)])  # (518,)


def torch_value_and_grad(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's output and its elementwise derivative d f(x_i) / d x_i, by autograd."""
    xr = x.clone().requires_grad_()
    y = module.to(x.dtype)(xr)
    y.backward(torch.ones_like(y))  # elementwise function: the gradient of the sum is f'(x)
    return y.detach(), xr.grad


# ---- every activation of the registry against its torch.nn module -------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(A.ACTIVATIONS))
def test_activation_matches_torch_values_and_autograd(name, dtype):
    act = A.ACTIVATIONS[name]
    x = inputs(dtype)
    expected_y, expected_d = torch_value_and_grad(act.module(), x)
    y, d = act.fn(x), act.grad(x)
    assert y.dtype == d.dtype == dtype and y.shape == d.shape == x.shape
    assert torch.isfinite(y).all() and torch.isfinite(d).all()
    torch.testing.assert_close(y, expected_y, **TOL[dtype])
    torch.testing.assert_close(d, expected_d, **TOL[dtype])


@pytest.mark.parametrize("name", list(A.ACTIVATIONS))
def test_derivative_matches_central_differences(name):
    """An independent check of every closed-form derivative: (f(x + h) - f(x - h)) / 2h in float64."""
    act = A.ACTIVATIONS[name]
    x = inputs(F64, seed=1)
    x = x[(x.abs() > 1e-3) & (x.abs() < 50)]  # away from the kinks of the rectifiers
    h = 1e-6
    numeric = (act.fn(x + h) - act.fn(x - h)) / (2 * h)
    torch.testing.assert_close(act.grad(x), numeric, atol=1e-7, rtol=1e-6)


def test_functions_keep_shape_dtype_and_leave_input_alone():
    x = torch.randn(2, 3, 4, dtype=F64)
    before = x.clone()
    for act in A.ACTIVATIONS.values():
        for out in (act.fn(x), act.grad(x)):
            assert out.shape == x.shape and out.dtype == F64
    assert torch.equal(x, before)


# ---- parameters: Leaky ReLU, ELU, Swish, softplus, PReLU -------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.2, 1.5])
def test_leaky_relu_and_elu_with_alpha(alpha):
    x = inputs(F64, seed=2)
    y, d = torch_value_and_grad(nn.LeakyReLU(alpha), x)
    torch.testing.assert_close(A.leaky_relu(x, alpha), y, **TOL[F64])
    torch.testing.assert_close(A.leaky_relu_grad(x, alpha), d, **TOL[F64])
    if alpha > 0:
        y, d = torch_value_and_grad(nn.ELU(alpha), x)
        torch.testing.assert_close(A.elu(x, alpha), y, **TOL[F64])
        torch.testing.assert_close(A.elu_grad(x, alpha), d, **TOL[F64])


def test_gradients_at_exactly_zero_follow_torch():
    zero = torch.zeros(3, dtype=F64)
    assert torch.equal(A.relu_grad(zero), torch.zeros(3, dtype=F64))
    assert torch.equal(A.leaky_relu_grad(zero, 0.1), torch.full((3,), 0.1, dtype=F64))
    assert torch.equal(A.elu_grad(zero, 2.0), torch.full((3,), 2.0, dtype=F64))
    assert torch.equal(A.prelu_grad(zero, torch.tensor([0.3], dtype=F64)), torch.full((3,), 0.3, dtype=F64))
    for module, mine in [
        (nn.ReLU(), A.relu_grad),
        (nn.LeakyReLU(0.1), lambda x: A.leaky_relu_grad(x, 0.1)),
        (nn.ELU(2.0), lambda x: A.elu_grad(x, 2.0)),
    ]:
        assert torch.equal(mine(zero), torch_value_and_grad(module, zero)[1])


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_swish_matches_autograd(beta):
    x = inputs(F64, seed=3)
    xr = x.clone().requires_grad_()
    y = xr * torch.sigmoid(beta * xr)
    y.sum().backward()
    torch.testing.assert_close(A.swish(x, beta), y.detach(), **TOL[F64])
    torch.testing.assert_close(A.swish_grad(x, beta), xr.grad, **TOL[F64])
    torch.testing.assert_close(A.swish(x, 1.0), A.silu(x))


def test_softplus_matches_torch():
    x = inputs(F64, seed=4)
    y, d = torch_value_and_grad(nn.Softplus(), x)
    # torch returns x itself (and gradient 1) beyond x = 20, where log1p(exp(-x)) < 2.1e-9 is what it drops
    torch.testing.assert_close(A.softplus(x), y, atol=1e-8, rtol=1e-12)
    torch.testing.assert_close(A.softplus_grad(x), d, atol=1e-8, rtol=1e-12)
    assert torch.isfinite(A.softplus(x)).all() and A.softplus(torch.tensor([1e4], dtype=F64)).item() == 1e4


@pytest.mark.parametrize(
    "shape, channels", [((7,), 1), ((5, 4), 1), ((5, 4), 4), ((2, 3, 4, 4), 3), ((2, 3, 6), 3)]
)
def test_prelu_forward_and_backward_match_torch(shape, channels):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(*shape, generator=g, dtype=F64)
    x.view(-1)[0] = 0.0  # a kink
    weight = torch.rand(channels, generator=g, dtype=F64)
    dout = torch.randn(*shape, generator=g, dtype=F64)
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    y = F.prelu(xr, wr)
    y.backward(dout)
    torch.testing.assert_close(A.prelu(x, weight), y.detach(), **TOL[F64])
    dx, dw = A.prelu_backward(dout, x, weight)
    torch.testing.assert_close(dx, xr.grad, **TOL[F64])
    torch.testing.assert_close(dw, wr.grad, **TOL[F64])
    assert dw.shape == weight.shape
    torch.testing.assert_close(dout * A.prelu_grad(x, weight), xr.grad, **TOL[F64])


# ---- stability at the extremes --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_extreme_inputs_give_the_right_limits(dtype):
    big = torch.tensor([-1e4, 1e4], dtype=dtype)
    assert torch.equal(A.sigmoid(big), torch.tensor([0.0, 1.0], dtype=dtype))
    assert torch.equal(A.tanh(big), torch.tensor([-1.0, 1.0], dtype=dtype))
    for fn in (A.relu, A.gelu, A.gelu_tanh, A.silu, A.mish, A.softplus, A.elu):
        y = fn(big)
        assert torch.isfinite(y).all(), fn.__name__
        assert y[1] == 1e4 and abs(y[0]) <= 1.0, fn.__name__  # x on the right, bounded on the left
    for act in A.ACTIVATIONS.values():
        assert torch.isfinite(act.grad(big)).all(), act.name
    # the naive formula the module avoids: exp(x) / (1 + exp(x)) is inf / inf = NaN at x = 1e4
    assert torch.isnan(torch.exp(big) / (1 + torch.exp(big)))[1]


def test_tails_are_accurate_where_torch_rounds_to_zero():
    """The derivatives in the form e / (1 + e)**2 keep their relative accuracy far into the tails."""
    x = torch.tensor([20.0, 30.0, 40.0], dtype=F64)
    exact_sigmoid_grad = torch.tensor([math.exp(-v) / (1 + math.exp(-v)) ** 2 for v in x.tolist()], dtype=F64)
    torch.testing.assert_close(A.sigmoid_grad(x), exact_sigmoid_grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(A.sigmoid_grad(-x), exact_sigmoid_grad, rtol=1e-12, atol=0)
    exact_tanh_grad = torch.tensor([1 / math.cosh(v) ** 2 for v in (10.0, 15.0)], dtype=F64)
    torch.testing.assert_close(
        A.tanh_grad(torch.tensor([10.0, 15.0], dtype=F64)), exact_tanh_grad, rtol=1e-12, atol=0
    )
    # GELU's Phi(x) through erfc: accurate where 1 + erf(x / sqrt 2) cancels to 0
    x = torch.tensor([-10.0, -20.0], dtype=F64)
    exact_gelu = torch.tensor([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x.tolist()], dtype=F64)
    assert (exact_gelu != 0).all()
    torch.testing.assert_close(A.gelu(x), exact_gelu, rtol=1e-12, atol=0)
    # float32: sigmoid_grad(20) is 2.06e-9, not the 0 of sigmoid(x) * (1 - sigmoid(x))
    assert A.sigmoid_grad(torch.tensor(20.0)).item() == pytest.approx(math.exp(-20), rel=1e-5)


def test_gelu_tanh_is_close_to_exact_gelu():
    x = torch.linspace(-8, 8, 4001, dtype=F64)
    assert (A.gelu_tanh(x) - A.gelu(x)).abs().max() < 1e-3
    assert (A.gelu_tanh_grad(x) - A.gelu_grad(x)).abs().max() < 1e-2


# ---- softmax and log-softmax -----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1000.0, 0.0), (1.0, 3000.0), (1.0, -3000.0)])
def test_softmax_and_log_softmax_match_torch(dim, scale, shift):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(3, 4, 5, generator=g, dtype=F64) * scale + shift
    p, logp = A.softmax(z, dim), A.log_softmax(z, dim)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(p, torch.softmax(z, dim), **TOL[F64])
    torch.testing.assert_close(logp, torch.log_softmax(z, dim), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(p.sum(dim), torch.ones_like(p.sum(dim)))
    z32 = z.float()
    torch.testing.assert_close(A.log_softmax(z32, dim), torch.log_softmax(z32, dim), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dim", [0, -1])
def test_softmax_backward_and_log_softmax_backward_match_autograd(dim):
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4, 6, generator=g, dtype=F64) * 3
    dout = torch.randn(4, 6, generator=g, dtype=F64)
    for mine, backward, ref in [
        (A.softmax, A.softmax_backward, torch.softmax),
        (A.log_softmax, A.log_softmax_backward, torch.log_softmax),
    ]:
        zr = z.clone().requires_grad_()
        ref(zr, dim).backward(dout)
        torch.testing.assert_close(backward(dout, z, dim), zr.grad, **TOL[F64])


def test_softmax_jacobian_matches_autograd_and_sums_to_zero():
    z = torch.randn(5, dtype=F64)
    J = A.softmax_jacobian(z)
    torch.testing.assert_close(
        J, torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), z), **TOL[F64]
    )
    torch.testing.assert_close(J, J.T)
    torch.testing.assert_close(J.sum(dim=1), torch.zeros(5, dtype=F64), atol=1e-15, rtol=0)


def test_log_softmax_backward_gives_chapter_01_cross_entropy_gradient():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(6, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (6,), generator=g)
    dout = -F.one_hot(y, 4).to(F64) / 6  # d(mean of -log p[y]) / d log p
    torch.testing.assert_close(A.log_softmax_backward(dout, z), softmax_cross_entropy(z, y)[1], **TOL[F64])


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="floating-point x.*torch.int64"):
        A.sigmoid(torch.arange(3))
    with pytest.raises(TypeError, match="torch.Tensor, got list"):
        A.gelu([1.0, 2.0])
    with pytest.raises(TypeError, match="alpha to be a finite Python number"):
        A.leaky_relu(torch.zeros(2), alpha=float("nan"))
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 1\]"):
        A.log_softmax(torch.zeros(2, 3), dim=2)
    with pytest.raises(ValueError, match="0-dim"):
        A.softmax(torch.tensor(1.0))
    with pytest.raises(ValueError, match="4 channels in dim 1"):
        A.prelu(torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(1,\) or \(C,\)"):
        A.prelu(torch.zeros(2, 3), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="same shape"):
        A.softmax_backward(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown activation 'swishy'; expected one of sigmoid, tanh"):
        A.get("swishy")
    with pytest.raises(ValueError, match=r"shape \(C,\)"):
        A.softmax_jacobian(torch.zeros(2, 2))


# ---- make_mlp and dead_fraction ---------------------------------------------------------------------


def test_make_mlp_structure_parameters_and_init():
    model = A.make_mlp(64, (32, 16), 10, "mish")
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.Mish, nn.Linear, nn.Mish, nn.Linear]
    reference = MLP(64, (32, 16), 10, activation="relu")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    torch.manual_seed(0)
    deep = A.make_mlp(400, (400, 400), 10, "relu", init_gain=math.sqrt(2))
    first = deep[1]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert torch.equal(first.bias, torch.zeros(400))
    gelu_tanh = A.make_mlp(4, (3,), 2, "gelu_tanh")[2]
    assert isinstance(gelu_tanh, nn.GELU) and gelu_tanh.approximate == "tanh"
    with pytest.raises(ValueError, match="unknown activation"):
        A.make_mlp(4, (3,), 2, "swishy")
    with pytest.raises(ValueError, match="init_gain > 0"):
        A.make_mlp(4, (3,), 2, "relu", init_gain=-1.0)


def test_dead_fraction_counts_units_off_for_every_example():
    torch.manual_seed(0)
    model = A.make_mlp(10, (8, 6), 3, "relu")
    x = torch.randn(50, 10)
    with torch.no_grad():
        model[1].bias[:4] = -1e3  # four units of the first layer can never switch on
        model[1].bias[4:] = 1e3  # the other four are always on
    fractions = A.dead_fraction(model, x)
    assert len(fractions) == 2 and fractions[0] == pytest.approx(0.5)
    # a unit that is on for a single example is alive: unit 0 now fires only for the largest x[:, 0]
    top = x[:, 0].topk(2)
    with torch.no_grad():
        model[1].weight[0] = 0.0
        model[1].weight[0, 0] = 1.0
        model[1].bias[0] = -(top.values[0] + top.values[1]) / 2
    assert A.dead_fraction(model, x)[0] == pytest.approx(3 / 8)
    others = torch.cat([x[: top.indices[0]], x[top.indices[0] + 1 :]])
    assert A.dead_fraction(model, others)[0] == pytest.approx(4 / 8)
    # works on utils.models.MLP and on conv feature maps (units are channels)
    assert len(A.dead_fraction(MLP(10, (5, 5, 5), 2), x)) == 3
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with torch.no_grad():
        conv[0].bias[:] = torch.tensor([-1e3, -1e3, -1e3, 1e3])
    assert A.dead_fraction(conv, torch.randn(2, 1, 6, 6)) == [pytest.approx(0.75)]
    with pytest.raises(ValueError, match="no activation module"):
        A.dead_fraction(nn.Linear(3, 2), torch.zeros(2, 3))


# ---- the widget --------------------------------------------------------------------------------------


def test_activation_stats_show_saturation_and_switched_off_units():
    from utils.widgets.activations import activation_stats

    small = activation_stats("sigmoid", scale=0.05)
    assert small["grad_mean"] == pytest.approx(0.25, abs=1e-3) and small["small_grad"] == 0.0
    large = activation_stats("sigmoid", scale=20.0)
    assert large["grad_mean"] < 0.03 and large["small_grad"] > 0.7  # saturated
    relu = activation_stats("relu", scale=3.0)
    assert relu["zero_grad"] == pytest.approx(0.5, abs=0.02) and relu["grad_mean"] == pytest.approx(
        0.5, abs=0.02
    )
    shifted = activation_stats("relu", scale=1.0, shift=-3.0)
    assert shifted["zero_grad"] > 0.99
    leaky = activation_stats("leaky_relu", scale=1.0, shift=-3.0)
    assert leaky["zero_grad"] == 0.0 and leaky["grad_mean"] > 0.01
    with pytest.raises(ValueError, match="scale must be a positive number"):
        activation_stats("relu", scale=0.0)
    with pytest.raises(ValueError, match="unknown activation"):
        activation_stats("swishy")


def test_plot_and_explorer_build_and_update(monkeypatch):
    from utils.widgets import activations as W

    fig = W.plot_activation_stats("gelu", scale=2.0, shift=-1.0)
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "GELU (exact)"
    plt.close(fig)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    box = W.activation_explorer("tanh", scale=2.0)
    choice, scale, shift = box.children[0].children
    assert choice.value == "tanh" and len(shown) == 1
    choice.value = "relu"
    scale.value = 10.0
    shift.value = -2.0
    assert len(shown) == 4 and shown[-1].axes[0].get_title() == "ReLU"
    assert all(not plt.fignum_exists(f.number) for f in shown)  # closed after display: no duplicate figures
