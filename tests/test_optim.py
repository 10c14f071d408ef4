"""utils.optim (chapter 04): the from-scratch optimizers follow torch.optim step for step, the schedules
equal torch's schedulers, clipping equals torch's, the LR range test restores what it touched, and the
2-D surfaces, plots and the widget behave."""

from __future__ import annotations

import copy
import time
import warnings

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.optim import lr_scheduler as ls

from utils import optim
from utils.optim import SURFACES, TORCH_EQUIVALENT


# ---- optimizers: step for step against torch.optim ------------------------------------------

SETTINGS = [  # (our class, hyperparameters): every option each optimizer has
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, weight_decay=0.1, momentum=0.5, nesterov=True)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.Adagrad, dict(lr=0.2, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-6)),
    (optim.RMSprop, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.005, alpha=0.9, eps=1e-4, momentum=0.9)),
    (optim.RMSprop, dict(lr=0.005, centered=True, weight_decay=0.01)),
    (optim.RMSprop, dict(lr=0.002, centered=True, momentum=0.5)),
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, betas=(0.5, 0.9), eps=1e-3)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    (optim.AdamW, dict(lr=0.03, weight_decay=0.0, betas=(0.8, 0.99))),
]


def _problem(seed: int = 0):
    """A small MLP in float64 with two parameter groups (the second at half the learning rate)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, x, y


def _run(model, opt, x, y, steps=60):
    """Full-batch training for ``steps`` steps; the flattened parameters after every step (steps, P)."""
    trail = []
    for i in range(steps):
        batch = slice((i * 16) % 64, (i * 16) % 64 + 16)  # a different mini-batch each step
        opt.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
        trail.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return torch.stack(trail)


def _groups(model, hp):
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return [{"params": first}, {"params": second, "lr": hp["lr"] / 2}]


@pytest.mark.parametrize("cls, hp", SETTINGS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_optimizer_follows_torch_step_for_step(cls, hp):
    ours_model, x, y = _problem()
    ref_model = copy.deepcopy(ours_model)
    ours = cls(_groups(ours_model, hp), **hp)
    ref = TORCH_EQUIVALENT[cls](_groups(ref_model, hp), **hp)
    ours_trail, ref_trail = _run(ours_model, ours, x, y), _run(ref_model, ref, x, y)
    moved = (ref_trail[-1] - ref_trail[0]).abs().max()
    assert moved > 1e-3  # the optimizer did something: the comparison below means something
    torch.testing.assert_close(ours_trail, ref_trail, rtol=1e-10, atol=1e-12)


def test_defaults_match_torch():
    p = [torch.zeros(2, requires_grad=True)]
    for cls, ref in TORCH_EQUIVALENT.items():
        ours, theirs = cls(p).defaults, ref(p).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (cls.__name__, key)


def test_parameters_without_gradient_are_left_alone():
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(2)) and not torch.equal(a, torch.ones(3))
    assert b not in opt.state


def test_adam_bias_correction_makes_the_first_step_lr_sized():
    """At step 1, m_hat = g and v_hat = g^2: every coordinate moves by lr (up to eps), whatever |g|."""
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([1e-4, 1.0, -50.0, 3.0], dtype=torch.float64)
    optim.Adam([p], lr=0.01).step()
    torch.testing.assert_close(p.detach(), -0.01 * p.grad.sign(), rtol=1e-3, atol=0)


def test_adamw_differs_from_adam_with_l2():
    """Decoupled weight decay is not the L2 penalty once the step is adaptive."""
    model, x, y = _problem(1)
    other = copy.deepcopy(model)
    a = _run(model, optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5), x, y, steps=20)
    b = _run(other, optim.Adam(other.parameters(), lr=0.01, weight_decay=0.5), x, y, steps=20)
    assert (a[-1] - b[-1]).abs().max() > 1e-3


def test_works_with_schedulers_and_state_dict():
    model, x, y = _problem(2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = ls.OneCycleLR(opt, max_lr=0.1, total_steps=10)  # cycles group["momentum"] too
    _run(model, opt, x, y, steps=3)
    sched.step()
    state = copy.deepcopy(opt.state_dict())
    assert {"momentum_buffer"} == set(next(iter(state["state"].values())))
    twin = optim.SGD(copy.deepcopy(model).parameters(), lr=0.1, momentum=0.9)
    twin.load_state_dict(state)
    assert twin.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: optim.SGD(p, lr=-1.0), "lr must lie in"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov=True needs a momentum"),
        (lambda p: optim.Adam(p, betas=(0.9,)), "betas must be a pair"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "betas[0] must lie in"),
        (lambda p: optim.RMSprop(p, alpha=1.5), "alpha must lie in"),
        (lambda p: optim.AdamW(p, lr="0.1"), "lr must be a number"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(call, words):
    with pytest.raises((ValueError, TypeError), match=words.replace("[", r"\[").replace("]", r"\]")):
        call([torch.zeros(2, requires_grad=True)])


# ---- schedules against torch.optim.lr_scheduler ---------------------------------------------


def _torch_lrs(make, steps, base_lr=1.0, **opt_kw):
    """Learning rates of a torch scheduler at steps 0 .. steps - 1 (read before each step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr, **opt_kw)
    sched = make(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return lrs


@pytest.mark.parametrize("base, step_size, gamma", [(0.1, 10, 0.1), (1.0, 7, 0.5), (3e-4, 1, 0.9)])
def test_step_decay_equals_steplr(base, step_size, gamma):
    ref = _torch_lrs(lambda o: ls.StepLR(o, step_size, gamma), 50, base)
    assert [optim.step_decay(s, base, step_size, gamma) for s in range(50)] == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("base, gamma", [(0.1, 0.95), (1.0, 0.5)])
def test_exponential_decay_equals_exponentiallr(base, gamma):
    ref = _torch_lrs(lambda o: ls.ExponentialLR(o, gamma), 50, base)
    assert [optim.exponential_decay(s, base, gamma) for s in range(50)] == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("total, base, min_lr", [(50, 0.1, 0.0), (73, 1.0, 0.01), (5, 0.3, 0.3)])
def test_cosine_annealing_equals_cosineannealinglr(total, base, min_lr):
    ref = _torch_lrs(lambda o: ls.CosineAnnealingLR(o, T_max=total, eta_min=min_lr), total + 1, base)
    ours = [optim.cosine_annealing(s, total, base, min_lr) for s in range(total + 1)]
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert optim.cosine_annealing(total + 10, total, base, min_lr) == min_lr  # stays at the bottom


def _sequential_warmup_cosine(total, warmup, min_lr):
    def make(opt):
        cosine = ls.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)
        if warmup == 0:
            return cosine
        linear = ls.LinearLR(opt, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
        return ls.SequentialLR(opt, [linear, cosine], milestones=[warmup])

    return make


@pytest.mark.parametrize(
    "total, warmup, base, min_lr",
    [
        (100, 10, 0.1, 1e-3),
        (60, 1, 1.0, 0.0),
        (50, 0, 0.3, 0.01),
        (80, 79, 0.5, 0.05),
        (57, 13, 3e-4, 3e-6),
    ],
)
def test_warmup_cosine_equals_linear_then_cosine(total, warmup, base, min_lr):
    ref = _torch_lrs(_sequential_warmup_cosine(total, warmup, min_lr), total + 1, base)
    ours = [optim.warmup_cosine(s, total, warmup, base, min_lr) for s in range(total + 1)]
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-14)
    assert ours[warmup] == pytest.approx(base) and ours[-1] == pytest.approx(min_lr)
    assert optim.warmup_cosine(total + 5, total, warmup, base, min_lr) == min_lr


def test_warmup_cosine_scheduler_is_a_lambdalr_per_group():
    w = torch.zeros(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.01}], lr=0.1)
    sched = optim.warmup_cosine_scheduler(opt, total_steps=40, warmup_steps=5, min_lr=1e-3)
    assert isinstance(sched, ls.LambdaLR)
    for s in range(41):
        assert opt.param_groups[0]["lr"] == pytest.approx(optim.warmup_cosine(s, 40, 5, 0.1, 1e-3), rel=1e-12)
        assert opt.param_groups[1]["lr"] == pytest.approx(
            optim.warmup_cosine(s, 40, 5, 0.01, 1e-3), rel=1e-12
        )
        opt.step()
        sched.step()
    with pytest.raises(
        ValueError, match="min_lr=0.05 is larger than the learning rate 0.01 of parameter group 1"
    ):
        optim.warmup_cosine_scheduler(
            torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.01}], lr=0.1), 40, 5, 0.05
        )


@pytest.mark.parametrize(
    "total, max_lr, pct, div, final_div",
    [
        (100, 0.1, 0.3, 25.0, 1e4),
        (37, 1.0, 0.25, 10.0, 100.0),
        (1000, 3e-3, 0.1, 25.0, 1e4),
    ],
)
def test_one_cycle_equals_onecyclelr(total, max_lr, pct, div, final_div):
    ref = _torch_lrs(
        lambda o: ls.OneCycleLR(
            o, max_lr=max_lr, total_steps=total, pct_start=pct, div_factor=div, final_div_factor=final_div
        ),
        total,
        max_lr,
        momentum=0.9,
    )
    ours = [optim.one_cycle(s, total, max_lr, pct, div, final_div) for s in range(total)]
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: optim.warmup_cosine(0, 10, 10, 0.1), "warmup_steps must be smaller than total_steps"),
        (lambda: optim.warmup_cosine(0, 10, 2, 0.1, 0.2), "min_lr must lie in"),
        (lambda: optim.warmup_cosine(-1, 10, 2, 0.1), "step must be an int >= 0"),
        (lambda: optim.warmup_cosine(1.5, 10, 2, 0.1), "step must be an int"),
        (lambda: optim.one_cycle(10, 10, 0.1), "step must be smaller than total_steps"),
        (lambda: optim.step_decay(3, 0.1, 0), "step_size must be an int >= 1"),
    ],
)
def test_schedules_reject_bad_input(call, words):
    with pytest.raises((ValueError, TypeError), match=words):
        call()


# ---- gradient clipping -------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e3])
def test_clip_grad_norm_equals_torch(max_norm):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    ours = [torch.zeros(s, requires_grad=True) for s in shapes]
    ref = [torch.zeros(s, requires_grad=True) for s in shapes]
    for a, b in zip(ours, ref):
        a.grad = torch.randn(a.shape, generator=g)
        b.grad = a.grad.clone()
    total = optim.clip_grad_norm(ours, max_norm)
    total_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    torch.testing.assert_close(total, total_ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)
    after = torch.cat([a.grad.reshape(-1) for a in ours]).norm()
    assert after <= max_norm * (1 + 1e-5) or max_norm > total


# ---- the LR range test ---------------------------------------------------------------------------


def _loader(n=256, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()  # 3 learnable classes
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=g)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))


def test_lr_range_test_restores_weights_buffers_and_mode():
    model = _net().eval()
    before = copy.deepcopy(model.state_dict())
    result = optim.lr_range_test(model, _loader(), num_steps=60, end_lr=10.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running statistics included
    assert not model.training and not model[1].training
    assert set(result) == {"lrs", "losses", "suggested_lr"}
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-6) and len(lrs) == len(result["losses"]) <= 60
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx((10.0 / 1e-6) ** (1 / 59))
    assert lrs[0] / 10 <= result["suggested_lr"] <= lrs[-1]


def test_lr_range_test_restores_the_optimizer_and_stops_on_divergence():
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = _loader()
    for x, y in list(loader)[:3]:  # the optimizer has state before the test
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    result = optim.lr_range_test(model, loader, optimizer=opt, start_lr=1e-5, end_lr=1e4, num_steps=200)
    assert len(result["lrs"]) < 200  # the loss blew up before the end: the test stopped early
    assert opt.param_groups[0]["lr"] == 3e-3
    after = opt.state_dict()
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor), name
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_lr_range_test_suggests_a_learning_rate_that_trains():
    result = optim.lr_range_test(_net(), _loader(), start_lr=1e-5, end_lr=10.0, num_steps=80)
    losses = result["losses"]
    assert min(losses) < 0.8 * losses[0]  # the loss fell somewhere in the range
    assert 1e-4 < result["suggested_lr"] < 10.0


def test_lr_range_test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="end_lr must be larger than start_lr"):
        optim.lr_range_test(_net(), _loader(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        optim.lr_range_test("model", _loader())
    with pytest.raises(TypeError, match="loader must be an iterable"):
        optim.lr_range_test(_net(), torch.zeros(3))


def test_plot_lr_range_returns_a_figure():
    result = {"lrs": [1e-4, 1e-3, 1e-2, 1e-1], "losses": [1.0, 0.8, 0.5, 2.0], "suggested_lr": 1e-3}
    fig = optim.plot_lr_range(result)
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    matplotlib.pyplot.close(fig)


# ---- surfaces and trajectories ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SURFACES))
def test_surface_gradients_match_autograd(name):
    s = SURFACES[name]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        xy = (torch.rand(2, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
        s(xy).backward()
        torch.testing.assert_close(s.gradient(xy.detach()), xy.grad)
    for m in s.minima:
        assert s.gradient(torch.tensor(m, dtype=torch.float64)).abs().max() == 0


def test_trajectory_converges_and_stops_when_it_diverges():
    path = optim.trajectory("quadratic", optim.SGD, 200, lr=0.05, momentum=0.5)
    assert path.shape == (201, 2) and path.dtype == torch.float64
    assert path[0].tolist() == list(SURFACES["quadratic"].start)
    assert path[-1].abs().max() < 1e-6
    torch_path = optim.trajectory("quadratic", torch.optim.SGD, 200, lr=0.05, momentum=0.5)
    torch.testing.assert_close(path, torch_path)
    diverged = optim.trajectory("quadratic", optim.SGD, 200, lr=0.2)  # 0.2 * 20 > 2: unstable
    assert len(diverged) < 201 and torch.isfinite(diverged).all()
    clipped = optim.trajectory("rosenbrock", optim.SGD, 200, lr=5e-3, max_grad_norm=1.0)
    assert len(clipped) == 201


def test_plot_trajectories_draws_every_path():
    paths = {
        "a": optim.trajectory("saddle", optim.Adam, 20, lr=0.1),
        "b": optim.trajectory("saddle", optim.SGD, 20, lr=0.1),
    }
    fig = optim.plot_trajectories("saddle", paths)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    matplotlib.pyplot.close(fig)


# ---- the widget ----------------------------------------------------------------------------------


def test_widget_redraws_when_a_knob_moves():
    from utils.widgets.optimizers import render_trajectory, trajectory_explorer

    box = trajectory_explorer()
    first, text = box.image.value, box.summary.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and text.startswith("after 100 steps")
    start = time.perf_counter()
    box.controls["momentum"].value = 0.0
    assert time.perf_counter() - start < 5.0  # cheap (well under a second on an idle machine)
    assert box.image.value != first
    box.controls["lr"].value = 0.5  # far above 2 / 20: SGD diverges on the quadratic
    assert box.summary.value.startswith("diverged")
    box.controls["surface"].value = "rosenbrock"
    assert box.controls["lr"].value == pytest.approx(
        1e-3, rel=0.2
    )  # a learning rate that fits the new surface
    assert not box.summary.value.startswith("diverged")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        render_trajectory(optimizer="LBFGS")
