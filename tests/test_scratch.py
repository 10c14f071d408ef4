"""utils.scratch (chapter 01): the scalar autograd engine and the hand-written layers agree with
torch.autograd and with central differences, and bad input fails with a clear message."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from utils.scratch import engine, layers
from utils.scratch.engine import Value, draw_graph, trace
from utils.scratch.layers import (
    MLPScratch,
    describe_rel_error,
    grad_check,
    linear_backward,
    linear_forward,
    numerical_gradient,
    rel_error,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)

# ---- the scalar engine ------------------------------------------------------------------------


def _both(fn, values):
    """Run ``fn`` on engine Values and on float64 torch scalars; return both outputs and leaves."""
    vs = [Value(v) for v in values]
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    out_v, out_t = fn(*vs), fn(*ts)
    out_v.backward()
    out_t.backward()
    return out_v, out_t, vs, ts


EXPRESSIONS = {
    "add_mul": lambda a, b, c: a * b + c * a,
    "pow_div": lambda a, b, c: (a**2 + 1) / (b * b + 2) - c**3,
    "tanh_neuron": lambda a, b, c: (a * 0.7 + b * -1.3 + c).tanh(),
    "relu_sub": lambda a, b, c: (a - b).relu() * c + (b - a).relu(),
    "exp_log": lambda a, b, c: ((a * b).exp() + (c * c + 1).log()) * 0.5,
    "rsub_rdiv": lambda a, b, c: 2 - a + 3 / (b * b + 1) - c / 4,
    "reuse": lambda a, b, c: (a * a * a + a).tanh() * (a + b) + (a * c).exp(),
    "sigmoid": lambda a, b, c: (a * b - c).sigmoid() * a,
}


@pytest.mark.parametrize("name", EXPRESSIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_matches_torch_autograd(name, seed):
    rng = random.Random(seed)
    values = [rng.uniform(-2, 2) for _ in range(3)]
    out_v, out_t, vs, ts = _both(EXPRESSIONS[name], values)
    assert out_v.data == pytest.approx(out_t.item(), rel=1e-12, abs=1e-12)
    for v, t in zip(vs, ts):
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-9, abs=1e-12), name


def test_engine_random_expression_trees_match_torch():
    """Random compositions of every operation, including inputs used many times."""
    rng = random.Random(0)
    for _ in range(40):
        values = [rng.uniform(0.5, 1.5) for _ in range(4)]
        program = [(rng.choice("+*-/ptrez"), rng.randrange(100), rng.randrange(100)) for _ in range(12)]

        def build(*xs):
            pool = list(xs)
            for op, i, j in program:
                a, b = pool[i % len(pool)], pool[j % len(pool)]
                if op == "+":
                    pool.append(a + b)
                elif op == "*":
                    pool.append(a * b * 0.5)
                elif op == "-":
                    pool.append(a - b)
                elif op == "/":
                    pool.append(a / (b * b + 1))
                elif op == "p":
                    pool.append((a * 0.5) ** 2)
                elif op == "t":
                    pool.append(a.tanh())
                elif op == "r":
                    pool.append((a - 0.3).relu())
                elif op == "e":
                    pool.append((a.tanh() * 0.5).exp())
                else:
                    pool.append((a * a + 1).log())
            return sum(pool[len(xs) :], pool[0])

        out_v, out_t, vs, ts = _both(build, values)
        assert out_v.data == pytest.approx(out_t.item(), rel=1e-10)
        for v, t in zip(vs, ts):
            expected = 0.0 if t.grad is None else t.grad.item()  # None: the input was not used
            assert v.grad == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_engine_gradients_accumulate_over_reuse_and_deep_graphs():
    x = Value(3.0)
    y = x + x  # the same input twice: dy/dx = 2
    y.backward()
    assert x.grad == 2.0
    # a chain far deeper than Python's recursion limit still backpropagates
    z = Value(1.0)
    out = z
    for _ in range(5000):
        out = out * 1.0 + 0.0
    out.backward()
    assert z.grad == 1.0


def test_engine_relu_gradient_is_zero_at_the_kink_and_log_rejects_nonpositive():
    x = Value(0.0)
    x.relu().backward()
    assert x.grad == 0.0
    with pytest.raises(ValueError, match="positive"):
        Value(0.0).log()
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)


def test_trace_lists_each_node_once_in_topological_order():
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    c = a * b
    d = c + a
    nodes, edges = trace(d)
    assert nodes[-1] is d and len(nodes) == 4
    index = {id(n): i for i, n in enumerate(nodes)}
    assert all(index[id(u)] < index[id(v)] for u, v in edges)
    assert {(u.label, v._op) for u, v in edges} == {("a", "*"), ("b", "*"), ("a", "+"), ("", "+")}
    assert len(edges) == 4


def test_draw_graph_returns_a_figure_with_one_box_per_value():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    out = (a * b + a).tanh()
    out.label = "out"
    out.backward()
    fig = draw_graph(out)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("data" in t for t in texts) == len(trace(out)[0])
    assert any(t.startswith("out") and "grad 1" in t for t in texts)
    plt.close(fig)


# ---- vectorized layers against torch.autograd ----------------------------------------------


def test_linear_backward_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    W = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    out = linear_forward(x, W, b)
    torch.testing.assert_close(out, F.linear(x, W.T, b))
    dout = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    out.backward(dout)
    dx, dW, db = linear_backward(dout, x.detach(), W.detach())
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dW, W.grad)
    torch.testing.assert_close(db, b.grad)


def test_relu_backward_matches_autograd_and_is_zero_at_zero():
    x = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    out = relu_forward(x)
    torch.testing.assert_close(out, torch.relu(x))
    dout = torch.arange(6, dtype=torch.float64).reshape(2, 3) + 1
    out.backward(dout)
    dx = relu_backward(dout, x.detach())
    torch.testing.assert_close(dx, x.grad)  # torch also uses 0 at x == 0
    assert dx[0, 1] == 0 and dx[1, 2] == 0


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_softmax_cross_entropy_matches_torch_and_is_stable(scale):
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(6, 5, generator=gen, dtype=torch.float64) * scale).requires_grad_()
    y = torch.randint(0, 5, (6,), generator=gen)
    loss, dlogits = softmax_cross_entropy(logits.detach(), y)
    ref = F.cross_entropy(logits, y)
    ref.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(dlogits, logits.grad)


def test_softmax_cross_entropy_known_value():
    loss, dlogits = softmax_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
    assert loss.item() == pytest.approx(math.log(4))  # uniform over 4 classes
    torch.testing.assert_close(dlogits.sum(dim=1), torch.zeros(2))  # each row of p - onehot sums to 0


# ---- numerical gradients and relative errors -------------------------------------------------


def test_numerical_gradient_matches_autograd_and_leaves_x_unchanged():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    before = x.clone()

    def f(t):
        return (t.sin() * t.exp()).sum() + (t**2).mean()

    num = numerical_gradient(f, x)
    assert torch.equal(x, before)
    xr = x.clone().requires_grad_()
    f(xr).backward()
    assert rel_error(num, xr.grad) < 1e-8


def test_numerical_gradient_needs_float64_and_a_scalar_function():
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda t: t.sum(), torch.zeros(3))
    with pytest.raises(ValueError, match="scalar"):
        numerical_gradient(lambda t: t * 2, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        numerical_gradient(lambda t: t.sum(), torch.zeros(3, 4, dtype=torch.float64).T)


def test_numerical_gradient_nudges_x_in_place_so_closures_over_parameters_work():
    """The chapter checks a network's parameters with f ignoring its argument: x must be nudged in place."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    num = numerical_gradient(lambda _: (w**2).sum(), w)
    torch.testing.assert_close(num, 2 * w)


def test_rel_error_values():
    assert rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert rel_error(torch.tensor([1.0]), torch.tensor([3.0])) == pytest.approx(0.5)
    assert rel_error(0.0, 1e-12) == pytest.approx(1e-4)  # the 1e-8 floor keeps tiny values from exploding
    assert rel_error(torch.tensor([1.0, 100.0]), torch.tensor([1.0, 101.0])) == pytest.approx(1 / 201)
    with pytest.raises(ValueError, match="same shape"):
        rel_error(torch.zeros(2), torch.zeros(3))
    assert describe_rel_error(1e-9) == "correct"
    assert describe_rel_error(1e-5).startswith("fine")
    assert describe_rel_error(1e-3).startswith("suspicious")
    assert describe_rel_error(0.5) == "wrong"


def test_grad_check_accepts_a_correct_gradient_and_flags_a_wrong_one(capsys):
    x = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)  # away from 0, where h**2 truncation dominates

    def f(t):
        return (t**3).sum()

    assert grad_check(f, x, 3 * x**2, name="cube") < 1e-8
    assert "cube" in capsys.readouterr().out
    assert grad_check(f, x, 2 * x**2, verbose=False) > 1e-2


# ---- the hand-written MLP ----------------------------------------------------------------------


def test_mlp_scratch_gradients_pass_a_gradient_check():
    torch.manual_seed(0)
    net = MLPScratch((6, 5, 4, 3), seed=3, dtype=torch.float64)
    x = torch.randn(7, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    _, grads = net.loss(x, y)
    for name, p in net.params.items():
        err = grad_check(lambda _: net.loss(x, y)[0], p, grads[name], name=name, verbose=False)
        assert err < 1e-6, (name, err)


def test_mlp_scratch_matches_autograd_and_learns():
    net = MLPScratch((4, 8, 3), seed=0, dtype=torch.float64)
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    loss, grads = net.loss(x, y)
    params = {k: v.clone().requires_grad_() for k, v in net.params.items()}
    h = torch.relu(x @ params["W1"] + params["b1"])
    F.cross_entropy(h @ params["W2"] + params["b2"], y).backward()
    for k in params:
        torch.testing.assert_close(grads[k], params[k].grad)
    first = loss.item()
    for _ in range(200):
        loss, grads = net.loss(x, y)
        net.step(grads, lr=0.5)
    assert loss.item() < 0.2 * first
    assert (net.predict(x) == y).float().mean() == 1.0
    assert net.num_parameters() == 4 * 8 + 8 + 8 * 3 + 3


def test_mlp_scratch_is_reproducible_and_flattens_images():
    a, b = MLPScratch((64, 16, 10), seed=5), MLPScratch((64, 16, 10), seed=5)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert a(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        a(torch.rand(3, 63))
    with pytest.raises(ValueError, match="two positive layer sizes"):
        MLPScratch((64,))


# ---- clear errors on bad input ---------------------------------------------------------------


def test_shape_errors_name_the_expected_and_actual_shapes():
    with pytest.raises(ValueError, match=r"x of shape \(N, D\).*got x \(3, 4\), W \(5, 2\)"):
        linear_forward(torch.zeros(3, 4), torch.zeros(5, 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"b of shape \(M,\).*b \(3,\)"):
        linear_forward(torch.zeros(3, 4), torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"dout of shape \(N, M\).*dout \(3, 3\)"):
        linear_backward(torch.zeros(3, 3), torch.zeros(3, 4), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        relu_backward(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"logits of shape \(N, C\) and y of shape \(N,\)"):
        softmax_cross_entropy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="integer class labels"):
        softmax_cross_entropy(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        relu_forward([1.0, -1.0])


def test_package_exports():
    import utils.scratch as scratch

    assert scratch.Value is engine.Value and scratch.MLPScratch is layers.MLPScratch
    for name in scratch.__all__:
        assert hasattr(scratch, name), name


@pytest.mark.parametrize("seed", [0, 1])
def test_packaged_layers_pass_the_chapter_01_exercise_checks(seed):
    """utils.scratch.layers holds what chapter 01's lesson builds, which its earlier exercise asked
    learners to rebuild (tests/grading_demo.py keeps those checks): checked with the question's watch
    off, since learners may not call the course's versions but the checks must still accept them."""
    import dataclasses

    grading = pytest.importorskip("utils.grading.inline")
    import grading_demo

    for question in grading_demo.QUESTIONS:
        question = dataclasses.replace(question, forbid=())
        result = grading.evaluate(
            question, {name: getattr(layers, name) for name in question.functions}, seed=seed
        )
        assert result.passed, result.line()
