"""utils.scratch.losses (chapter 03): every loss agrees with its torch / torchvision / scikit-learn
reference in value and in gradient, stays finite for huge logits, and refuses bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torchvision.ops import sigmoid_focal_loss

from utils.scratch import losses as L

REDUCTIONS = ("mean", "sum", "none")
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_same_value_and_grad(ours_fn, ref_fn, *inputs, dtype=torch.float32):
    """Same value and same gradient w.r.t. the first input (the logits or predictions)."""
    a = inputs[0].clone().requires_grad_()
    b = inputs[0].clone().requires_grad_()
    ours, ref = ours_fn(a, *inputs[1:]), ref_fn(b, *inputs[1:])
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, **TOL[dtype])


# ---- regression -------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_regression_losses_match_torch(reduction, dtype):
    g = _gen(1)
    pred = torch.randn(7, 3, generator=g, dtype=dtype) * 3
    target = torch.randn(7, 3, generator=g, dtype=dtype)
    assert_same_value_and_grad(
        lambda p, t: L.mse_loss(p, t, reduction),
        lambda p, t: F.mse_loss(p, t, reduction=reduction),
        pred,
        target,
        dtype=dtype,
    )
    assert_same_value_and_grad(
        lambda p, t: L.mae_loss(p, t, reduction),
        lambda p, t: F.l1_loss(p, t, reduction=reduction),
        pred,
        target,
        dtype=dtype,
    )
    for delta in (0.5, 1.0, 2.5):
        assert_same_value_and_grad(
            lambda p, t: L.huber_loss(p, t, delta, reduction),
            lambda p, t: F.huber_loss(p, t, reduction=reduction, delta=delta),
            pred,
            target,
            dtype=dtype,
        )


def test_huber_is_smooth_l1_times_beta_and_exact_at_the_kink():
    pred = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 4.0])  # residuals exactly at +-delta included
    target = torch.zeros(7)
    torch.testing.assert_close(
        L.huber_loss(pred, target, delta=1.0, reduction="none"),
        torch.tensor([2.5, 0.5, 0.03125, 0.0, 0.125, 0.5, 3.5]),
    )
    torch.testing.assert_close(
        L.huber_loss(pred, target, 2.0), 2.0 * F.smooth_l1_loss(pred, target, beta=2.0)
    )


def test_constant_minimisers_are_mean_and_median():
    y = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0], dtype=torch.float64)
    grid = torch.linspace(-1, 101, 102001, dtype=torch.float64)  # step 0.001
    mse = torch.stack([L.mse_loss(torch.full_like(y, c), y) for c in grid[::100]])
    mae = torch.stack([L.mae_loss(torch.full_like(y, c), y) for c in grid[::100]])
    assert grid[::100][mse.argmin()].item() == pytest.approx(y.mean().item(), abs=0.1)  # 21.2
    assert grid[::100][mae.argmin()].item() == pytest.approx(y.median().item(), abs=0.1)  # 2


# ---- binary cross-entropy ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_from_probabilities_matches_torch_including_the_clamp(reduction):
    g = _gen(2)
    probs = torch.rand(10, 4, generator=g)
    probs[0, 0], probs[0, 1] = 0.0, 1.0  # log(0): PyTorch clamps to -100
    targets = (torch.rand(10, 4, generator=g) > 0.5).float()
    targets[0, 0], targets[0, 1] = 1.0, 0.0  # the worst mistakes: loss exactly 100
    ours = L.bce(probs, targets, reduction)
    torch.testing.assert_close(ours, F.binary_cross_entropy(probs, targets, reduction=reduction))
    assert torch.isfinite(ours).all()
    soft = torch.rand(10, 4, generator=g)
    assert_same_value_and_grad(
        lambda p, t: L.bce(p, t, reduction),
        lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction),
        probs[1:],
        soft[1:],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
def test_bce_with_logits_matches_torch_and_is_stable(reduction, dtype, scale):
    g = _gen(3)
    logits = torch.randn(16, 5, generator=g, dtype=dtype) * scale
    targets = (torch.rand(16, 5, generator=g) > 0.5).to(dtype)
    targets[:4] = torch.rand(4, 5, generator=g, dtype=dtype)  # soft targets too
    assert_same_value_and_grad(
        lambda z, t: L.bce_with_logits(z, t, reduction=reduction),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
        logits,
        targets,
        dtype=dtype,
    )
    assert torch.isfinite(L.bce_with_logits(logits, targets, reduction=reduction)).all()


def test_bce_with_logits_pos_weight_matches_torch():
    g = _gen(4)
    logits = torch.randn(12, 3, generator=g) * 20
    targets = (torch.rand(12, 3, generator=g) > 0.7).float()
    pos_weight = torch.tensor([1.0, 3.0, 0.5])
    for reduction in REDUCTIONS:
        assert_same_value_and_grad(
            lambda z, t: L.bce_with_logits(z, t, pos_weight, reduction),
            lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight, reduction=reduction),
            logits,
            targets,
        )


def test_probability_form_saturates_where_the_logit_form_does_not():
    z = torch.tensor([40.0, 200.0])  # confident, and wrong: target 0
    t = torch.zeros(2)
    naive = L.bce(torch.sigmoid(z), t, reduction="none")
    assert torch.equal(naive, torch.tensor([100.0, 100.0]))  # sigmoid rounds to 1: stuck at the clamp
    torch.testing.assert_close(L.bce_with_logits(z, t, reduction="none"), z)  # softplus(z) = z for large z


# ---- focal loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha, gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0), (-1.0, 2.0), (0.25, 0.5), (0.0, 3.0)]
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_loss_matches_torchvision(alpha, gamma, reduction):
    g = _gen(5)
    logits = torch.randn(20, 3, generator=g) * 4
    logits[0] = torch.tensor([60.0, -60.0, 300.0])  # large logits stay finite
    targets = (torch.rand(20, 3, generator=g) > 0.8).float()
    assert_same_value_and_grad(
        lambda z, t: L.focal_loss(z, t, alpha, gamma, reduction),
        lambda z, t: sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma, reduction=reduction),
        logits,
        targets,
    )


def test_focal_loss_with_gamma_zero_and_no_alpha_is_bce():
    g = _gen(6)
    logits, targets = torch.randn(30, generator=g), (torch.rand(30, generator=g) > 0.5).float()
    torch.testing.assert_close(
        L.focal_loss(logits, targets, alpha=-1, gamma=0.0),
        F.binary_cross_entropy_with_logits(logits, targets),
    )
    # and it down-weights easy examples: a confident correct prediction costs far less than under BCE
    easy, t1 = torch.tensor([4.0]), torch.tensor([1.0])
    assert L.focal_loss(easy, t1, alpha=-1, gamma=2.0) < 1e-3 * L.bce_with_logits(easy, t1)


# ---- categorical cross-entropy --------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_torch_with_weights_and_smoothing(smoothing, use_weight, reduction):
    g = _gen(7)
    logits = torch.randn(25, 6, generator=g) * 3
    y = torch.randint(0, 6, (25,), generator=g)
    weight = torch.rand(6, generator=g) + 0.1 if use_weight else None
    assert_same_value_and_grad(
        lambda z, t: L.cross_entropy(z, t, weight, smoothing, reduction),
        lambda z, t: F.cross_entropy(z, t, weight=weight, label_smoothing=smoothing, reduction=reduction),
        logits,
        y,
    )


@pytest.mark.parametrize("shift, scale", [(0.0, 1000.0), (3000.0, 1.0), (-3000.0, 1.0)])
def test_cross_entropy_label_smoothing_is_stable(shift, scale):
    g = _gen(8)
    logits = torch.randn(9, 4, generator=g) * scale + shift
    y = torch.randint(0, 4, (9,), generator=g)
    ours = L.cross_entropy_label_smoothing(logits, y, 0.1)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, F.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-3, rtol=1e-5)


def test_weighted_mean_divides_by_the_sum_of_weights():
    logits = torch.zeros(3, 2)  # every sample costs log 2
    y = torch.tensor([0, 0, 1])
    w = torch.tensor([1.0, 10.0])
    # a weighted *average* of equal losses is that loss, not (1 + 1 + 10) / 3 times it
    torch.testing.assert_close(
        L.cross_entropy(logits, y, weight=w), torch.tensor(np.log(2.0), dtype=torch.float32)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_focal_loss(reduction):
    g = _gen(9)
    logits = torch.randn(40, 5, generator=g) * 3
    y = torch.randint(0, 5, (40,), generator=g)
    assert_same_value_and_grad(
        lambda z, t: L.softmax_focal_loss(z, t, gamma=0.0, reduction=reduction),
        lambda z, t: F.cross_entropy(z, t, reduction=reduction),
        logits,
        y,
    )
    w = torch.rand(5, generator=g) + 0.5
    gamma = 2.0

    def reference(z, t):
        ce = F.cross_entropy(z, t, reduction="none")
        p_y = torch.softmax(z, dim=1).gather(1, t[:, None]).squeeze(1)
        loss = w[t] * (1 - p_y) ** gamma * ce
        return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]

    assert_same_value_and_grad(
        lambda z, t: L.softmax_focal_loss(z, t, gamma, w, reduction), reference, logits, y
    )
    big = torch.tensor([[5000.0, 0.0, -5000.0]])  # a confident mistake: -log p_y = 10,000, (1 - p_y)^2 = 1
    assert L.softmax_focal_loss(big, torch.tensor([2]), gamma=2.0).item() == pytest.approx(10_000.0)


def test_class_weights_match_sklearn_balanced():
    g = _gen(10)
    y = torch.cat([torch.full((50,), 0), torch.full((5,), 1), torch.randint(0, 4, (30,), generator=g)])
    expected = compute_class_weight("balanced", classes=np.arange(4), y=y.numpy())
    w = L.class_weights(y, 4)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert (w * torch.bincount(y, minlength=4)).sum().item() == pytest.approx(len(y))  # total weight = N
    with pytest.raises(ValueError, match=r"classes \[4\] never occur"):
        L.class_weights(y, 5)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: L.bce_with_logits(torch.zeros(3), torch.zeros(4)), ValueError, "same shape"),
        (lambda: L.bce_with_logits(torch.zeros(3), torch.tensor([0.0, 2.0, 1.0])), ValueError, r"\[0, 1\]"),
        (
            lambda: L.bce_with_logits(torch.zeros(3, dtype=torch.long), torch.zeros(3)),
            TypeError,
            "floating-point",
        ),
        (lambda: L.bce(torch.tensor([1.5]), torch.tensor([1.0])), ValueError, "bce_with_logits"),
        (lambda: L.cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 4])), ValueError, r"\[0, 3\]"),
        (lambda: L.cross_entropy(torch.zeros(3, 4), torch.zeros(3)), TypeError, "integer class labels"),
        (lambda: L.cross_entropy(torch.zeros(4), torch.zeros(4, dtype=torch.long)), ValueError, r"\(N, C\)"),
        (
            lambda: L.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), weight=torch.ones(2)),
            ValueError,
            r"\(3,\)",
        ),
        (
            lambda: L.cross_entropy_label_smoothing(torch.zeros(2, 3), torch.tensor([0, 1]), 1.5),
            ValueError,
            "label_smoothing",
        ),
        (lambda: L.focal_loss(torch.zeros(2), torch.zeros(2), gamma=-1.0), ValueError, "gamma"),
        (lambda: L.mse_loss(torch.zeros(2), torch.zeros(2), reduction="avg"), ValueError, "reduction"),
        (lambda: L.huber_loss(torch.zeros(2), torch.zeros(2), delta=0.0), ValueError, "delta"),
    ],
)
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()
