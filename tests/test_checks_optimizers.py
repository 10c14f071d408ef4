"""The 04_optimizers question set: reference solutions pass every case, plausible wrong answers fail
with a message that points at the mistake. The solutions are written here, so these tests do not
depend on the course's notebooks (the exercise tests grade those)."""

from __future__ import annotations

import dataclasses
import math
import textwrap

import pytest
import torch

from utils.grading import evaluate, get_assignment

QSET = get_assignment("04_optimizers")


SOLUTIONS = """
def sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov):
    for p, g, v in zip(params, grads, velocities):
        v.mul_(momentum).add_(g)
        p.sub_(lr * (g + momentum * v if nesterov else v))


def adam_step(params, grads, m, v, t, lr, betas, eps):
    b1, b2 = betas
    for p, g, mi, vi in zip(params, grads, m, v):
        mi.mul_(b1).add_((1 - b1) * g)
        vi.mul_(b2).add_((1 - b2) * g * g)
        p.sub_(lr * (mi / (1 - b1**t)) / ((vi / (1 - b2**t)).sqrt() + eps))


def adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay):
    for p in params:
        p.mul_(1 - lr * weight_decay)
    adam_step(params, grads, m, v, t, lr, betas, eps)


def warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr):
    if step >= total_steps:
        return min_lr
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
"""


def namespace(*overrides: str) -> dict:
    ns: dict = {"torch": torch, "math": math}
    for source in (SOLUTIONS, *overrides):
        exec(textwrap.dedent(source), ns)
    return ns


def run(qid: str, ns: dict, seed: int):
    q = QSET.question(qid)
    return evaluate(q, {name: ns[name] for name in q.functions}, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = namespace()
    for q in QSET.questions:
        result = run(q.id, ns, seed)
        assert result.passed, result.line()
        assert len(result.cases) >= 4


def test_torch_optim_itself_passes_through_the_harness():
    """The harness and the reference agree when the learner's function is torch.optim's own update."""
    ns = namespace("""
def adam_step(params, grads, m, v, t, lr, betas, eps):
    key = tuple(id(p) for p in params)
    opt = _optimizers.get(key)
    if opt is None:
        opt = _optimizers[key] = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
_optimizers = {}
""")
    q = dataclasses.replace(QSET.question("q2"), forbid=())  # learners may not call torch.optim: the test may
    assert evaluate(q, {"adam_step": ns["adam_step"]}, seed=3).passed


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4"] and QSET.max_score == 4
    cases = {q.id: q.cases(5) for q in QSET.questions}
    q1 = cases["q1"]
    assert {c.args["nesterov"] for c in q1} == {True, False} and any(c.args["momentum"] == 0 for c in q1)
    assert any(p.dim() == 0 for c in q1 for p in c.args["params"])  # a 0-dim parameter
    assert {c.args["params"][0].dtype for c in q1} == {torch.float32, torch.float64}
    for c in q1 + cases["q2"] + cases["q3"]:
        trajectory, untouched = c.expected  # and the caller's gradients must come back untouched
        assert trajectory.shape[0] >= 50 and c.harness is not None  # 50+ steps, compared step by step
        assert untouched is True
        assert trajectory.shape[1] == sum(p.numel() for p in c.args["params"])
    assert any(c.args["noise"][0].abs().max() < 1e-3 for c in cases["q2"])  # tiny gradients
    assert any(c.args["eps"] >= 0.1 for c in cases["q2"]) and any(
        c.args["betas"][0] == 0.5 for c in cases["q2"]
    )
    assert {c.args["weight_decay"] for c in cases["q3"]} >= {0.0, 0.5}
    q4 = cases["q4"]
    assert any(c.args["warmup_steps"] == 0 for c in q4) and any(c.args["extra"] > 0 for c in q4)
    assert any(c.args["min_lr"] == 0 for c in q4) and all(len(c.expected) >= 51 for c in q4)
    # fresh inputs: two seeds differ, one seed repeats
    a, b = QSET.question("q2").cases(1)[0], QSET.question("q2").cases(2)[0]
    assert not torch.equal(a.args["params"][0], b.args["params"][0])
    assert torch.equal(a.args["params"][0], QSET.question("q2").cases(1)[0].args["params"][0])


BROKEN = {
    "right steps, but the caller's gradients zeroed": (
        "q1",
        """
_ref = sgd_momentum_step
def sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov):
    _ref(params, grads, velocities, lr, momentum, nesterov)
    for g in grads:
        g.zero_()  # like optimizer.zero_grad(), but these gradients belong to the caller
""",
        [
            "the caller's gradients left untouched: expected True, got False",
            "leave the gradients as they are",
        ],
    ),
    "weight decay added into the caller's gradient": (
        "q3",
        """
def adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay):
    for p, g in zip(params, grads):
        g.add_(p, alpha=weight_decay)  # Adam's L2 penalty, and written into the caller's gradient
    adam_step(params, grads, m, v, t, lr, betas, eps)
""",
        ["values off"],
    ),
    "momentum with dampening": (
        "q1",
        """
def sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov):
    for p, g, v in zip(params, grads, velocities):
        v.mul_(momentum).add_((1 - momentum) * g)
        p.sub_(lr * (g + momentum * v if nesterov else v))
""",
        ["case 'heavy ball, momentum 0.9", "values off", "v = momentum * v + g"],
    ),
    "Nesterov ignored": (
        "q1",
        """
_ref = sgd_momentum_step
def sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov):
    _ref(params, grads, velocities, lr, momentum, False)
""",
        ["case 'Nesterov, momentum 0.9", "with Nesterov"],
    ),
    "rebinding instead of in place": (
        "q1",
        """
def sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov):
    for p, g, v in zip(params, grads, velocities):
        v = momentum * v + g
        p = p - lr * v
""",
        ["0/5 cases passed", "values off", "in place", "only rebinds a local name"],
    ),
    "no bias correction": (
        "q2",
        """
def adam_step(params, grads, m, v, t, lr, betas, eps):
    b1, b2 = betas
    for p, g, mi, vi in zip(params, grads, m, v):
        mi.mul_(b1).add_((1 - b1) * g)
        vi.mul_(b2).add_((1 - b2) * g * g)
        p.sub_(lr * mi / (vi.sqrt() + eps))
""",
        ["0/5 cases passed", "m_hat = m / (1 - b1**t)"],
    ),
    "eps inside the square root": (
        "q2",
        """
def adam_step(params, grads, m, v, t, lr, betas, eps):
    b1, b2 = betas
    for p, g, mi, vi in zip(params, grads, m, v):
        mi.mul_(b1).add_((1 - b1) * g)
        vi.mul_(b2).add_((1 - b2) * g * g)
        p.sub_(lr * (mi / (1 - b1**t)) / (vi / (1 - b2**t) + eps).sqrt())
""",
        ["case 'tiny gradients", "eps added after the square root"],
    ),
    "step counted from 0": (
        "q2",
        """
_ref = adam_step
def adam_step(params, grads, m, v, t, lr, betas, eps):
    _ref(params, grads, m, v, t + 1, lr, betas, eps)
""",
        ["0/5 cases passed", "t starting at 1"],
    ),
    "L2 penalty instead of decoupled decay": (
        "q3",
        """
def adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay):
    adam_step(params, [g + weight_decay * p for g, p in zip(grads, params)], m, v, t, lr, betas, eps)
""",
        ["case 'weight_decay 0.1", "do not add weight_decay * p to the gradient"],
    ),
    "decay without the learning rate": (
        "q3",
        """
def adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay):
    for p in params:
        p.mul_(1 - weight_decay)
    adam_step(params, grads, m, v, t, lr, betas, eps)
""",
        ["p *= (1 - lr * weight_decay)"],
    ),
    "warmup from zero": (
        "q4",
        """
def warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr):
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
""",
        ["case 'warmup then cosine", "got 0, expected", "step 0 does not get 0"],
    ),
    "cosine climbs again after the end": (
        "q4",
        """
def warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr):
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
""",
        [
            "5/6 cases passed",
            "case 'steps past total_steps stay at min_lr",
            "for step >= total_steps: min_lr",
        ],
    ),
    "returns None": (
        "q4",
        """
def warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr):
    lr = min_lr
""",
        ["raised TypeError", "NoneType"],
    ),
    "not implemented": (
        "q3",
        """
def adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay):
    raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/4 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_variants_fail_with_a_helpful_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = run(qid, namespace(source), seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback
