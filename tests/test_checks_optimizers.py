"""The 04_optimizers question set: the reference solutions of the solution notebook pass every case for
several seeds, the cases hold the edge cases the questions promise, torch.optim itself passes through
the harness, the LAMB reference agrees with an independent computation, typical wrong answers and the
forbidden shortcuts fail with a message that says what is wrong, the review answers are right
(recomputed here with torch.optim) while the usual mistakes are not, and the make-it-work steps give
full points to the solution notebook's training, partial points to a linear classifier and none to
the raw inputs."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch

from conftest import ROOT, functions_for, solution_namespace, watch_off
from utils.grading import MakeItWork, Question, Review, evaluate, get_assignment
from utils.grading.challenge import Prediction, verdict
from utils.grading.checks.optimizers import (
    STEPS,
    LambReference,
    held_out_sensor_digits,
    sensor_digits,
    torch_sgdr,
)

ASSIGNMENT = "04_optimizers"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}


def result_of(qid: str, *sources: str, seed: int = 0, forbid: bool = True):
    q = QSET.question(qid)
    q = q if forbid else watch_off(q)
    return evaluate(q, functions_for(solution_namespace(ASSIGNMENT, *sources), q), seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_reference_solutions_pass_every_case(seed):
    ns = solution_namespace(ASSIGNMENT)
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q), seed=seed)
        assert result.passed, result.line()
        assert result.cases_passed == len(result.cases) >= 5


def test_question_set_covers_the_edge_cases():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "q5", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert QSET.max_score == 9 and sum(q.points for q in REVIEWS.values()) == 3
    assert sum(q.points for q in IMPLEMENT) == 4 and QSET.question("q5").points == 2
    cases = {q.id: q.cases(3) for q in IMPLEMENT}
    for c in cases["q1"] + cases["q2"] + cases["q3"]:
        trajectory, untouched = c.expected  # the whole trajectory, and the caller's gradients untouched
        assert trajectory.shape == (STEPS, sum(p.numel() for p in c.args["params"])) and untouched is True
        assert c.harness is not None
    for qid in ("q1", "q2", "q3"):
        settings = cases[qid]
        assert {c.args["params"][0].dtype for c in settings} == {torch.float32, torch.float64}
        assert any(p.dim() == 0 for c in settings for p in c.args["params"]), qid  # a 0-dim parameter
        assert any(c.args["first_lr"] is not None and c.args["lr_factor"] is not None for c in settings)
    q1 = [c.args["hyper"] for c in cases["q1"]]
    assert {(h["centered"], h["momentum"] > 0) for h in q1} == {(a, b) for a in (0, 1) for b in (0, 1)}
    assert any(c.args["hyper"].get("momentum_decay", 0) >= 0.05 for c in cases["q2"])
    assert any((c.args["params"][0] == 0).all() for c in cases["q3"])  # the trust ratio's edge case
    assert {c.args["hyper"].get("weight_decay", 0.0) for c in cases["q3"]} >= {0.0, 0.1}
    q4 = cases["q4"]
    assert {c.args["t_mult"] for c in q4} == {1, 2, 3} and any(c.args["t0"] == 1 for c in q4)
    triple = next(c for c in q4 if c.args["t_mult"] == 3)
    assert triple.args["total"] >= 121 * triple.args["t0"]  # past the restart where a logarithm fails
    assert all(c.atol <= 1e-12 and c.rtol <= 1e-9 for c in q4)
    # fresh inputs: two seeds differ, one seed repeats
    q2 = QSET.question("q2")
    assert not torch.equal(q2.cases(1)[0].args["params"][0], q2.cases(2)[0].args["params"][0])
    assert torch.equal(q2.cases(1)[0].args["params"][0], q2.cases(1)[0].args["params"][0])


def test_every_question_forbids_what_it_reproduces_and_the_course():
    forbid = {q.id: q.forbid for q in IMPLEMENT}
    assert "torch.optim.RMSprop" in forbid["q1"] and "torch.optim.NAdam" in forbid["q2"]
    assert "torch.optim.AdamW" in forbid["q3"] and "torch.optim.lr_scheduler" in forbid["q4"]
    for q in IMPLEMENT:
        assert {"utils.optim", "utils.grading.checks", "utils.scratch"} <= set(q.forbid), q.id
    assert "torch.optim.Optimizer" not in {name for q in IMPLEMENT for name in q.forbid}


TORCH_ITSELF = {  # torch.optim behind the question's class: the harness and the reference agree
    "q1": "class RMSpropMomentum(torch.optim.RMSprop):\n    pass\n",
    "q2": "class NesterovAdam(torch.optim.NAdam):\n    pass\n",
}


@pytest.mark.parametrize("qid", list(TORCH_ITSELF))
def test_torch_optim_itself_passes_through_the_harness(qid):
    result = result_of(qid, TORCH_ITSELF[qid], seed=3, forbid=False)
    assert result.passed, result.line()


def test_the_lamb_reference_is_adamw_rescaled_per_tensor():
    """LambReference against torch.optim.AdamW: from the same point, AdamW's step divided by lr is the
    update r, whose length LAMB sets to |p| (lr |p| per step). AdamW keeps the same averages, since
    they depend on the gradients only."""
    g = torch.Generator().manual_seed(0)
    p0 = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in p0] for _ in range(20)]
    lr, hyper = 0.01, dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    ours = [p.clone() for p in p0]
    reference = LambReference(ours, lr=lr, **hyper)
    theirs = [p.clone() for p in p0]
    adamw = torch.optim.AdamW(theirs, lr=lr, **hyper)
    for step_grads in grads:
        expected = []
        for p, q, grad in zip(ours, theirs, step_grads):
            q.data.copy_(p)
            p.grad, q.grad = grad.clone(), grad.clone()
        adamw.step()
        for p, q in zip(ours, theirs):
            r = (p - q) / lr
            norm = float(p.norm())
            trust = norm / float(r.norm()) if norm > 0 else 1.0
            expected.append(p - lr * trust * r)
        reference.step()
        for p, e in zip(ours, expected):
            assert torch.allclose(p, e, rtol=1e-10, atol=1e-12)
    assert float(ours[1].norm()) > 0  # the tensor of zeros moved


def test_the_sgdr_reference_restarts_where_the_formula_says():
    lrs = torch_sgdr(15, 1, 2, 1.0, 0.0)
    assert [k for k in range(1, 16) if lrs[k] == 1.0] == [1, 3, 7, 15]
    lrs = torch_sgdr(4 * 121, 4, 3, 0.5, 0.01)
    assert [k for k in range(1, len(lrs)) if lrs[k] == 0.5] == [4, 16, 52, 160, 484]
    assert math.isclose(lrs[16 + 18], 0.01 + 0.49 * (1 + math.cos(math.pi / 2)) / 2)  # halfway, 2nd cycle
    assert math.log(243) / math.log(3) < 5  # why a logarithm fails at the 5th restart with T_mult = 3


# wrong answers: the reference solution's class with one thing changed (sources run after the notebook's)
_RMSPROP_STEP = """
class RMSpropMomentum(RMSpropMomentum):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, alpha, eps, mu = group["lr"], group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(square=torch.zeros_like(p), velocity=torch.zeros_like(p))
                state["square"].mul_(alpha).add_((1 - alpha) * g * g)
                divisor = state["square"].sqrt() + eps
                {update}
"""
_NADAM_STEP = """
class NesterovAdam(NesterovAdam):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
            psi = group["momentum_decay"]
            for p in group["params"]:
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = state["t"]
                mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
                mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
                state["m"].mul_(beta1).add_((1 - beta1) * g)
                state["v"].mul_(beta2).add_((1 - beta2) * g * g)
                divisor = (state["v"] / (1 - beta2**t)).sqrt() + eps
                {update}
"""
_LAMB_STEP = """
class Lamb(Lamb):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = state["t"]
                state["m"].mul_(beta1).add_((1 - beta1) * g)
                state["v"].mul_(beta2).add_((1 - beta2) * g * g)
                adam = (state["m"] / (1 - beta1**t)) / ((state["v"] / (1 - beta2**t)).sqrt() + eps)
                update = adam + group["weight_decay"] * p
                {update}
"""
_SGDR = """
def sgdr_lr(step, t0, t_mult, base_lr, min_lr):
    {cycle}
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * (step - start) / length)) / 2
"""
CURRENT_GRADIENT = "p.sub_(lr * (1 - mu) / (1 - {c}) * g / divisor)"
LOOK_AHEAD = "p.sub_(lr * mu_next / (1 - {c}) * state['m'] / divisor)"

BROKEN = {  # label: (question, source replacing part of the reference, fragments of the feedback)
    "RMSprop: momentum on the raw gradient, divided afterwards": (
        "q1",
        _RMSPROP_STEP.format(
            update='state["velocity"].mul_(mu).add_(g)\n'
            '                p.sub_(lr * state["velocity"] / divisor)'
        ),
        ["case 'momentum 0.9", "trajectory: values off", "momentum * velocity + g / divisor"],
    ),
    "RMSprop: centered ignored": (
        "q1",
        """
_Base = RMSpropMomentum
class RMSpropMomentum(_Base):
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=False)
""",
        ["3/5 cases passed", "case 'centered, no momentum", "the variance instead of the second moment"],
    ),
    "RMSprop: Adam's bias correction on the average": (
        "q1",
        _RMSPROP_STEP.replace(
            'divisor = state["square"].sqrt() + eps',
            'state["t"] = state.get("t", 0) + 1\n'
            '                divisor = (state["square"] / (1 - alpha ** state["t"])).sqrt() + eps',
        ).format(update="p.sub_(lr * g / divisor)"),
        ["case 'no momentum", "values off", "no bias correction"],
    ),
    "RMSprop: the learning rate read once, in __init__": (
        "q1",
        """
_Base = RMSpropMomentum
class RMSpropMomentum(_Base):
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered)
        self.first = [group["lr"] for group in self.param_groups]
    @torch.no_grad()
    def step(self):
        now = [group["lr"] for group in self.param_groups]
        for group, lr in zip(self.param_groups, self.first):
            group["lr"] = lr
        super().step()
        for group, lr in zip(self.param_groups, now):
            group["lr"] = lr
""",
        ["4/5 cases passed", "lr halved at step 30", "a scheduler changes group['lr']"],
    ),
    "RMSprop: the gradients zeroed after the step": (
        "q1",
        """
_Base = RMSpropMomentum
class RMSpropMomentum(_Base):
    @torch.no_grad()
    def step(self):
        super().step()
        self.zero_grad(set_to_none=False)
""",
        ["0/5 cases passed", "the caller's gradients left untouched: expected True, got False"],
    ),
    "NAdam: plain Adam": (
        "q2",
        _NADAM_STEP.format(
            update="p.sub_(lr * state['m'] / (1 - beta1**t) / ((state['v'] / (1 - beta2**t)).sqrt() + eps))"
        ),
        ["0/5 cases passed", "values off", "look-ahead"],
    ),
    "NAdam: beta1^t in the bias corrections instead of the product of the mu's": (
        "q2",
        _NADAM_STEP.format(
            update=CURRENT_GRADIENT.format(c="beta1 ** t")
            + "\n                "
            + LOOK_AHEAD.format(c="beta1 ** (t + 1)")
        ),
        ["0/5 cases passed", "values off", "the running product of the mu's replaces beta1^t"],
    ),
    "NAdam: a constant momentum coefficient (no warm-up)": (
        "q2",
        _NADAM_STEP.replace("0.96 ** (t * psi)", "0.0")
        .replace("0.96 ** ((t + 1) * psi)", "0.0")
        .replace(
            '                state["t"] += 1',
            "                state[\"t\"] += 1\n                state.setdefault('product', 1.0)",
        )
        .format(
            update="state['product'] *= mu\n                "
            + CURRENT_GRADIENT.format(c="state['product']")
            + "\n                "
            + LOOK_AHEAD.format(c="state['product'] * mu_next")
        ),
        ["0/5 cases passed", "mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))"],
    ),
    "LAMB: no trust ratio (AdamW)": (
        "q3",
        _LAMB_STEP.format(update="p.sub_(lr * update)"),
        ["0/5 cases passed", "values off", "lr * (|p| / |r|) * r"],
    ),
    "LAMB: the trust ratio 0 for a tensor of zeros": (
        "q3",
        _LAMB_STEP.format(update="p.sub_(lr * p.norm() / update.norm() * update)"),
        ["4/5 cases passed", "case 'a parameter of zeros", "a tensor of zeros must still move"],
    ),
    "LAMB: the norms of single coordinates (Adam with a relative step)": (
        "q3",
        _LAMB_STEP.format(update="p.sub_(lr * p.abs() / update.abs().clamp(min=1e-12) * update)"),
        ["values off", "the norms of the whole tensor"],
    ),
    "LAMB: the decay inside the averages (L2)": (
        "q3",
        _LAMB_STEP.replace("g, state = p.grad,", "g, state = p.grad + group['weight_decay'] * p,")
        .replace('adam + group["weight_decay"] * p', "adam")
        .format(update="p.sub_(lr * p.norm() / update.norm() * update)"),
        ["case 'weight decay 0.1", "decoupled: not in m and v"],
    ),
    "SGDR: t_mult ignored": (
        "q4",
        _SGDR.format(cycle="start, length = step // t0 * t0, t0"),
        ["case 'T_mult = 2", "values off", "cycle i lasts t0 * t_mult^i steps"],
    ),
    "SGDR: no restart": (
        "q4",
        _SGDR.format(cycle="start, length = 0, t0\n    step = min(step, t0)"),
        ["0/5 cases passed", "where the rate is base_lr again"],
    ),
    "SGDR: the cycle found with a logarithm": (
        "q4",
        _SGDR.format(
            cycle="n = int(math.log(step / t0 * (t_mult - 1) + 1) / math.log(t_mult)) if t_mult > 1 "
            "else step // t0\n"
            "    start = t0 * (t_mult**n - 1) // (t_mult - 1) if t_mult > 1 else n * t0\n"
            "    length = t0 * t_mult**n"
        ),
        ["4/5 cases passed", "case 'T_mult = 3", "count with integers"],
    ),
    "SGDR: the cosine reaches min_lr on the cycle's last step": (
        "q4",
        _SGDR.format(
            cycle="start, length = 0, t0\n"
            "    while step >= start + length:\n"
            "        start, length = start + length, length * t_mult\n"
            "    length = max(length - 1, 1)"
        ),
        ["values off", "over the cycle's length"],
    ),
    "not implemented": (
        "q2",
        """
class NesterovAdam(NesterovAdam):
    def step(self):
        raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/5 cases passed", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_typical_wrong_answers_fail_with_the_right_message(label):
    qid, source, fragments = BROKEN[label]
    for seed in (0, 1):
        result = result_of(qid, source, seed=seed)
        assert not result.passed and result.score == 0
        feedback = result.feedback()
        for fragment in fragments:
            assert fragment in feedback, feedback


SHORTCUTS = {  # the right values, computed the forbidden way
    "q1 through torch.optim.RMSprop": (
        "class RMSpropMomentum(torch.optim.RMSprop):\n    pass\n",
        "torch.optim.RMSprop",
    ),
    "q1 through torch's functional rmsprop": (
        """
from torch.optim.rmsprop import rmsprop
class RMSpropMomentum(RMSpropMomentum):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                s = self.state[p]
                if not s:
                    zeros = torch.zeros_like
                    s.update(square=zeros(p), mean=zeros(p), velocity=zeros(p), step=torch.tensor(0.0))
                rmsprop([p], [p.grad], [s["square"]], [s["mean"]], [s["velocity"]], [s["step"]],
                        lr=group["lr"], alpha=group["alpha"], eps=group["eps"], weight_decay=0.0,
                        momentum=group["momentum"], centered=group["centered"])
""",
        "rmsprop",
    ),
    "q1 through the course's utils.optim": (
        "import utils.optim\nRMSpropMomentum = utils.optim.RMSprop\n",
        "utils.optim",
    ),
    "q2 through torch.optim.NAdam": (
        "class NesterovAdam(torch.optim.NAdam):\n    pass\n",
        "torch.optim.NAdam",
    ),
    "q3 through the checker's own reference": (
        "from utils.grading.checks.optimizers import LambReference as Lamb\n",
        "utils.grading.checks",
    ),
    "q3 through torch.optim.AdamW's step": (
        """
class Lamb(Lamb):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self.state:
                    self.state[p]["adamw"] = torch.optim.AdamW(
                        [p], lr=1.0, betas=group["betas"], eps=group["eps"],
                        weight_decay=group["weight_decay"],
                    )
                before = p.clone()
                self.state[p]["adamw"].step()
                update = before - p
                p.copy_(before)
                trust = p.norm() / update.norm() if p.norm() > 0 and update.norm() > 0 else 1.0
                p.sub_(group["lr"] * trust * update)
""",
        "torch.optim.AdamW",
    ),
    "q4 through CosineAnnealingWarmRestarts": (
        """
def sgdr_lr(step, t0, t_mult, base_lr, min_lr):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, t0, t_mult, min_lr)
    for _ in range(step):
        scheduler.step()
    return optimizer.param_groups[0]["lr"]
""",
        "torch.optim.lr_scheduler",
    ),
}


@pytest.mark.parametrize("label", list(SHORTCUTS))
def test_forbidden_shortcuts_score_zero_with_the_call_named(label):
    source, name = SHORTCUTS[label]
    result = result_of(label.split()[0], source)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert name in result.feedback() and "which this question forbids" in result.feedback()


def test_the_shortcuts_compute_the_right_values():
    """Without the watch, the forbidden shortcuts pass: they fail above for what they call, nothing else."""
    for label in ("q1 through torch's functional rmsprop", "q3 through torch.optim.AdamW's step"):
        result = result_of(label.split()[0], SHORTCUTS[label][0], forbid=False)
        assert result.passed, result.line()


# --------------------------------------------------------------------------- review questions


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def _gradient_descent_diverges(lr: float, steps: int = 2000) -> bool:
    xy = torch.tensor([1.0, 1.0], dtype=torch.float64)
    curvature = torch.tensor([4.0, 100.0], dtype=torch.float64)
    for _ in range(steps):
        xy = xy - lr * curvature * xy
    return bool(xy.abs().max() > 1.0)


def test_the_review_answers_are_what_their_definitions_give():
    r1 = REVIEWS["r1"].answer
    assert _gradient_descent_diverges(r1 * 1.005) and not _gradient_descent_diverges(r1 * 0.995)
    # r2: torch's heavy ball with a constant gradient, after many steps
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    sgd = torch.optim.SGD([p], lr=0.01, momentum=0.95)
    for _ in range(1000):
        before = float(p.detach())
        p.grad = torch.ones(1, dtype=torch.float64)
        sgd.step()
    assert math.isclose(REVIEWS["r2"].answer, before - float(p.detach()), rel_tol=1e-6)
    # r3: torch's Adam, one step on a gradient of 1e-6
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    p.grad = torch.full((1,), 1e-6, dtype=torch.float64)
    torch.optim.Adam([p], lr=1e-3, eps=1e-7).step()
    assert math.isclose(REVIEWS["r3"].answer, -float(p.detach()), rel_tol=1e-3)
    # r4: torch's AdamW with zero gradients only decays, 10,000 times
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    adamw = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1)
    for _ in range(10_000):
        p.grad = torch.zeros(1, dtype=torch.float64)
        adamw.step()
    assert math.isclose(REVIEWS["r4"].answer, float(p.detach()), abs_tol=1e-4)
    # r5: torch's clip_grad_norm_ on gradients of norms 3 and 4
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([0.0, 4.0])
    torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert math.isclose(REVIEWS["r5"].answer, float(a.grad.norm()), rel_tol=1e-6)

    # r6 on f = 1.5 x^2 at lr 1.0 (each step multiplies x by -2): the full batch (the largest there is)
    # diverges, more steps only go further, clipping the gradient's norm to 1 keeps x bounded, lr 0.1
    # converges
    def descend(lr, steps, clip=None):
        x = 10.0
        for _ in range(steps):
            g = 3 * x
            x -= lr * (g if clip is None else g * clip / max(abs(g), clip))
        return abs(x)

    assert 1e6 < descend(1.0, 20) < descend(1.0, 40)
    assert descend(1.0, 1000, clip=1.0) <= 10 and descend(0.1, 100) < 1e-6
    assert REVIEWS["r6"].answer == {"a", "b"}


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    # 1 / lambda_max; no momentum; a step proportional to g; 1 - steps * lr * wd; clipped per tensor; ...
    mistakes = {"r1": 0.01, "r2": 0.01, "r3": 1e-9, "r4": 0.0, "r5": 1.0, "r6": {"c", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    assert "not answered yet" in REVIEWS["r1"].verdict({"r1": ...})[1]


# --------------------------------------------------------------------------- make it work


def test_the_grader_scores_on_data_the_exercise_never_loads():
    x_fit, y_fit, x_val, y_val = sensor_digits()
    x_test, y_test = held_out_sensor_digits(123)
    assert x_fit.shape == (3200, 784) and x_val.shape == (800, 784) and x_test.shape == (1000, 784)
    assert torch.bincount(y_test, minlength=10).tolist() == [100] * 10
    seen = {row.numpy().tobytes() for row in torch.cat([x_fit, x_val])}
    assert sum(row.numpy().tobytes() in seen for row in x_test) <= 3  # other images, the same sensors
    assert torch.equal(held_out_sensor_digits(0)[0], x_test)  # a fixed split, whatever the seed
    spread = x_fit.std(dim=0)
    assert spread.max() / spread[spread > 0].min() > 1e6  # badly conditioned on purpose
    q = QSET.question("q5")
    assert isinstance(q, MakeItWork) and q.points == 2 and q.budget == 30 and q.metric == "accuracy"
    assert q.steps == ((0.90, 2.0), (0.75, 1.0)) and q.preview is not None


def _notebook_cells(*ids: str) -> list[str]:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    cells = {c.get("id"): c.source for c in nb.cells}
    return [cells[i] for i in ids]


def _points(train_source: str) -> tuple[float, str]:
    """The points of ``predict`` on the grader's data, after the notebook's data cell, ``train_source``
    and its predict cell (with the reference solutions of questions 1-4 defined)."""
    data, predict = _notebook_cells("q5-data", "q5-predict")
    ns = solution_namespace(ASSIGNMENT)
    ns["SEED"] = 0
    for source in (data, train_source, predict):
        exec(source, ns)
    q = QSET.question("q5")
    batches, targets, n = q.prepare(0)
    outputs = [ns["predict"](b) for b in batches]
    points, text, _ = verdict(q, Prediction(outputs=outputs), batches, targets, n)
    return points, text


@pytest.mark.slow
def test_the_steps_give_full_partial_and_zero_points():
    """The notebook's training (inputs standardised per pixel, an MLP) reaches the top step, a linear
    classifier on the same inputs the lower one; without the per-pixel scale (the raw inputs, or one
    mean and standard deviation for all pixels) the same training scores nothing."""
    (train,) = _notebook_cells("q5-train")
    per_pixel = "std = torch.where(std > 0, std, torch.ones_like(std))"
    mlp = "nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))"
    assert per_pixel in train and mlp in train
    variants = {
        "solution": train,
        "linear": train.replace(mlp, "nn.Linear(784, 10)"),
        "global scale": train.replace(
            per_pixel, "mean, std = x_fit.mean() + 0 * mean, x_fit.std() + 0 * std  # one scale for all"
        ),
        "raw": train.replace(per_pixel, "mean, std = torch.zeros_like(mean), torch.ones_like(std)"),
    }
    points = {name: _points(source) for name, source in variants.items()}
    scores = {name: p for name, (p, _) in points.items()}
    assert scores == {"solution": 2, "linear": 1, "global scale": 0, "raw": 0}, points
