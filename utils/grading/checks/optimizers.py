"""Chapter 04 (assignment ``04_optimizers``): optimizer steps and a schedule, checked against
``torch.optim`` and ``torch.optim.lr_scheduler``.

Calling convention of the step functions (q1 to q3): like the functional API behind ``torch.optim``,
a step function receives *lists* of tensors, one entry per parameter, **updates them in place and
returns nothing**. ``params[i]`` is a parameter, ``grads[i]`` its gradient, and the state lists
(``velocities``; ``m`` and ``v``) hold one tensor per parameter with its shape, created by the caller
as zeros before the first step. ``t`` is the number of the current step: 1 on the first call.

How the step functions are checked: on a random problem, every parameter ``p`` has the gradient
``g_t = s * (p - c) + n_t``, an ill-conditioned diagonal quadratic (curvatures ``s`` between 0.1 and
10 and centre ``c``, both random) plus a fixed random noise sequence ``n_t``, evaluated at the current
parameters. A harness runs 60 steps of the learner's function in a loop (in the learner's kernel); the
reference runs the same loop with the ``torch.optim`` optimizer (``p.grad = g_t; optimizer.step()``)
in the grading process. The whole trajectory, the parameters flattened and concatenated after every
step, shape (60, P), is compared, so a failure names the first step (row) where they part.
Tolerances: float32 ``1e-5 + 1e-4 * |expected|``, float64 ``1e-10 + 1e-8 * |expected|``. The
gradients handed to the learner's function are recorded before and after every call and must come
back exactly as they were (the comparison is made here, from the raw records).
Forbidden while the answers run (:mod:`utils.grading.forbid`): ``torch.optim`` (its optimizers, its
functional forms and its schedulers) and the course's own modules (``utils.optim``, ...).

* q1 ``sgd_momentum_step(params, grads, velocities, lr, momentum, nesterov)``: momentum 0 (plain
  SGD), heavy ball, Nesterov, float64, a 0-dim parameter; against ``torch.optim.SGD``.
* q2 ``adam_step(params, grads, m, v, t, lr, betas, eps)``: default betas, tiny gradients (where the
  place of ``eps`` matters), a large ``eps``, other betas (bias correction); against ``torch.optim.Adam``.
* q3 ``adamw_step(params, grads, m, v, t, lr, betas, eps, weight_decay)``: ``weight_decay`` 0 (Adam),
  small and large decay; against ``torch.optim.AdamW``.
* q4 ``warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr) -> float``: every step from
  0 to ``total_steps`` (and a few past it, where the value is ``min_lr``) against
  ``SequentialLR([LinearLR(start_factor=1/(W+1), total_iters=W), CosineAnnealingLR(T_max=T-W,
  eta_min=min_lr)], milestones=[W])`` (plain ``CosineAnnealingLR`` when W = 0), random lengths and
  rates; tolerance ``1e-12 + 1e-9 * |expected|``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch.optim import lr_scheduler

from ..core import Case, Code, Question
from ..forbid import COURSE

ASSIGNMENT = "04_optimizers"
TITLE = "Optimizers and learning-rate schedules"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}
STEPS = 60

# The loop each step function runs in (inside the learner's kernel): the gradients are computed from the
# current parameters, the learner's function updates the parameters in place, and the parameters are
# recorded, together with the gradients as given and as they are after the call (the caller's gradients
# must come back untouched). The harness returns these raw records; _untouched compares them here.
_GRADS = "[s * (p - c) + n[k] for p, c, s, n in zip(ps, targets, scales, noise)]"
_FLAT = "torch.cat([t.detach().reshape(-1).clone() for t in {}])"
_ZEROS = "[torch.zeros_like(p) for p in params]"


def _loop(call: str, states: tuple[str, ...]) -> Code:
    """A harness running ``call`` once per step; ``call`` sees ``ps``, ``gs``, ``k`` and the zero-initialised
    state lists named in ``states``. It returns (trajectory, gradients as given, gradients after the call)."""
    step = (
        f"(lambda gs: (lambda given: ({call}, ({_FLAT.format('ps')}, given, {_FLAT.format('gs')}))[1])"
        f"({_FLAT.format('gs')}))({_GRADS})"
    )
    stack = "(lambda rows: tuple(torch.stack([r[i] for r in rows]) for i in range(3)))"
    return Code(
        f"lambda fn, params, targets, scales, noise, *hyper: (lambda ps, {', '.join(states)}: "
        f"{stack}([{step} for k in range(noise[0].shape[0])]))("
        f"[p.clone() for p in params], {', '.join([_ZEROS] * len(states))})"
    )


SGD_HARNESS = _loop("fn(ps, gs, vs, *hyper)", ("vs",))
ADAM_HARNESS = _loop("fn(ps, gs, ms, vs, k + 1, *hyper)", ("ms", "vs"))
ADAMW_HARNESS = ADAM_HARNESS
OUTPUTS = ("trajectory", "the caller's gradients left untouched")


def _untouched(records: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """(trajectory, whether every gradient came back exactly as it was given)."""
    trajectory, given, after = records
    return trajectory, bool(torch.equal(given, after))


SCHEDULE_HARNESS = Code(
    "lambda fn, total_steps, warmup_steps, base_lr, min_lr, extra: torch.tensor("
    "[float(fn(k, total_steps, warmup_steps, base_lr, min_lr)) for k in range(total_steps + 1 + extra)], "
    "dtype=torch.float64)"
)

IN_PLACE = (
    "Update the tensors of the lists in place (p.add_(...), p.sub_(...), p.mul_(...), v.mul_(...).add_(...), "
    "v.copy_(...) or p -= ...) and return nothing: `p = p - lr * g` only rebinds a local name, so the caller's "
    "tensors never change and the trajectory stays at its start; leave the gradients as they are "
    "(no g.mul_ or g.add_ on them: the caller may use them again)"
)


def problem(
    g: torch.Generator,
    shapes: list[tuple[int, ...]],
    dtype: torch.dtype,
    *,
    grad_scale: float = 1.0,
    noise_scale: float = 0.3,
    steps: int = STEPS,
) -> dict[str, list[torch.Tensor]]:
    """A random problem: start ``params``, ``targets`` c, curvatures ``scales`` s in [0.1, 10] and a noise
    sequence ``noise`` (one (steps, *shape) tensor per parameter); gradients are multiplied by ``grad_scale``."""

    def randn(shape):
        return torch.randn(tuple(shape), generator=g, dtype=dtype)

    params = [randn(s) for s in shapes]
    targets = [randn(s) for s in shapes]
    scales = [
        grad_scale
        * torch.exp(torch.rand(tuple(s), generator=g, dtype=dtype) * math.log(100.0) - math.log(10.0))
        for s in shapes
    ]  # curvatures log-uniform in [0.1, 10]
    noise = [grad_scale * noise_scale * randn((steps, *s)) for s in shapes]
    return {"params": params, "targets": targets, "scales": scales, "noise": noise}


def torch_trajectory(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], data: dict[str, list[torch.Tensor]]
) -> torch.Tensor:
    """The reference: the same loop with a torch.optim optimizer; the flattened parameters after each step."""
    ps = [p.clone() for p in data["params"]]
    opt = make_optimizer(ps)
    trail = []
    with torch.no_grad():
        for k in range(data["noise"][0].shape[0]):
            for p, c, s, n in zip(ps, data["targets"], data["scales"], data["noise"]):
                p.grad = s * (p - c) + n[k]
            opt.step()
            trail.append(torch.cat([p.reshape(-1).clone() for p in ps]))
    return torch.stack(trail)  # (steps, P)


# --------------------------------------------------------------------------- q1 SGD with momentum

SGD_CASES = [  # (label, shapes, dtype, lr, momentum, nesterov)
    ("plain SGD (momentum = 0)", [(5,), (3, 4)], F32, 0.05, 0.0, False),
    ("heavy ball, momentum 0.9", [(6,), (2, 3)], F32, 0.02, 0.9, False),
    ("Nesterov, momentum 0.9", [(4, 3), (7,)], F32, 0.02, 0.9, True),
    ("Nesterov, momentum 0.5, float64, with a 0-dim parameter", [(), (2, 3, 2)], F64, 0.05, 0.5, True),
    ("heavy ball, momentum 0.99 (long memory), float64", [(8,)], F64, 0.005, 0.99, False),
]


def sgd_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, shapes, dtype, lr, mu, nesterov in SGD_CASES:
        data = problem(g, shapes, dtype)
        expected = torch_trajectory(
            lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mu, nesterov=nesterov), data
        )
        hint = (
            f"v = momentum * v + g (v starts at zero, so after the first step v = g), then "
            f"p -= lr * (g + momentum * v) with Nesterov, p -= lr * v without; with momentum = 0 it is "
            f"p -= lr * g. {IN_PLACE}"
        )
        cases.append(
            Case(
                f"{label}, {STEPS} steps",
                "sgd_momentum_step",
                {**data, "lr": lr, "momentum": mu, "nesterov": nesterov},
                (expected, True),
                **TOL[dtype],
                hint=hint,
                outputs=OUTPUTS,
                harness=SGD_HARNESS,
                measure=_untouched,
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 Adam

ADAM_CASES = [  # (label, shapes, dtype, lr, betas, eps, grad_scale)
    ("default betas (0.9, 0.999), lr 0.01", [(5,), (3, 4)], F32, 0.01, (0.9, 0.999), 1e-8, 1.0),
    (
        "tiny gradients (about 1e-4): eps goes outside the square root",
        [(6,), (2, 2)],
        F32,
        0.01,
        (0.9, 0.999),
        1e-8,
        1e-4,
    ),
    ("large eps = 0.1, float64", [(4, 3)], F64, 0.05, (0.9, 0.999), 0.1, 1.0),
    ("betas (0.5, 0.9), float64, with a 0-dim parameter", [(), (7,)], F64, 0.02, (0.5, 0.9), 1e-8, 1.0),
    ("betas (0.95, 0.9999), lr 0.003", [(3, 5)], F32, 0.003, (0.95, 0.9999), 1e-8, 1.0),
]

ADAM_HINT = (
    "m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, m_hat = m / (1 - b1**t), v_hat = v / (1 - b2**t) "
    "with t starting at 1, and p -= lr * m_hat / (sqrt(v_hat) + eps): eps added after the square root "
    "of the bias-corrected v. "
)


def adam_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, shapes, dtype, lr, betas, eps, scale in ADAM_CASES:
        data = problem(g, shapes, dtype, grad_scale=scale)
        expected = torch_trajectory(lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps), data)
        cases.append(
            Case(
                f"{label}, {STEPS} steps",
                "adam_step",
                {**data, "lr": lr, "betas": betas, "eps": eps},
                (expected, True),
                **TOL[dtype],
                hint=ADAM_HINT + IN_PLACE,
                outputs=OUTPUTS,
                harness=ADAM_HARNESS,
                measure=_untouched,
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 AdamW

ADAMW_CASES = [  # (label, shapes, dtype, lr, betas, eps, weight_decay)
    ("weight_decay = 0 (the same as Adam)", [(5,), (2, 3)], F32, 0.01, (0.9, 0.999), 1e-8, 0.0),
    ("weight_decay 0.1", [(4, 4)], F32, 0.01, (0.9, 0.999), 1e-8, 0.1),
    ("strong decay: lr 0.05, weight_decay 0.5, float64", [(6,), (3,)], F64, 0.05, (0.9, 0.999), 1e-8, 0.5),
    (
        "weight_decay 0.01, betas (0.8, 0.99), float64, with a 0-dim parameter",
        [(), (2, 5)],
        F64,
        0.02,
        (0.8, 0.99),
        1e-6,
        0.01,
    ),
]


def adamw_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, shapes, dtype, lr, betas, eps, wd in ADAMW_CASES:
        data = problem(g, shapes, dtype)
        expected = torch_trajectory(
            lambda ps: torch.optim.AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd), data
        )
        hint = (
            "first shrink the weights, p *= (1 - lr * weight_decay), then take the Adam step of q2 with the "
            "unchanged gradient; do not add weight_decay * p to the gradient (that is Adam's L2 penalty, "
            "which the division by sqrt(v_hat) rescales). " + IN_PLACE
        )
        cases.append(
            Case(
                f"{label}, {STEPS} steps",
                "adamw_step",
                {**data, "lr": lr, "betas": betas, "eps": eps, "weight_decay": wd},
                (expected, True),
                **TOL[dtype],
                hint=hint,
                outputs=OUTPUTS,
                harness=ADAMW_HARNESS,
                measure=_untouched,
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 warmup + cosine


def torch_warmup_cosine(total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> list[float]:
    """Learning rates at steps 0 .. total_steps of LinearLR warmup followed by CosineAnnealingLR."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min=min_lr)
    if warmup_steps == 0:
        sched = cosine
    else:
        linear = lr_scheduler.LinearLR(
            opt, start_factor=1 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps
        )
        sched = lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warmup_steps])
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" and the like
        for _ in range(total_steps + 1):
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            sched.step()
    return lrs


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (), generator=g))


def _log_uniform(g: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=g, dtype=F64))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def schedule_cases(g: torch.Generator) -> list[Case]:
    settings = []  # (label, total_steps, warmup_steps, base_lr, min_lr, extra steps past the end)
    total, warmup = _randint(g, 80, 150), _randint(g, 5, 20)
    settings.append(("warmup then cosine", total, warmup, _log_uniform(g, 1e-3, 1.0), None, 0))
    settings.append(
        (
            "no warmup (warmup_steps = 0): a plain cosine",
            _randint(g, 50, 90),
            0,
            _log_uniform(g, 1e-3, 1.0),
            None,
            0,
        )
    )
    settings.append(("a single warmup step", _randint(g, 50, 90), 1, _log_uniform(g, 1e-3, 1.0), None, 0))
    settings.append(
        ("min_lr = 0", _randint(g, 60, 100), _randint(g, 10, 30), _log_uniform(g, 1e-3, 1.0), 0.0, 0)
    )
    total = _randint(g, 50, 80)
    settings.append(
        ("warmup for all but the last step", total, total - 1, _log_uniform(g, 1e-3, 1.0), None, 0)
    )
    settings.append(
        (
            "steps past total_steps stay at min_lr",
            _randint(g, 50, 80),
            _randint(g, 5, 15),
            _log_uniform(g, 1e-4, 1e-2),
            None,
            5,
        )
    )
    cases = []
    for label, total, warmup, base, min_lr, extra in settings:
        if min_lr is None:
            min_lr = base * _log_uniform(g, 1e-3, 0.2)
        expected = torch.tensor(
            torch_warmup_cosine(total, warmup, base, min_lr) + [min_lr] * extra, dtype=F64
        )
        hint = (
            "for step < warmup_steps: base_lr * (step + 1) / (warmup_steps + 1) (so step 0 does not get 0 and the "
            "line reaches base_lr exactly at step == warmup_steps); then min_lr + (base_lr - min_lr) * "
            "(1 + cos(pi * p)) / 2 with p = (step - warmup_steps) / (total_steps - warmup_steps); "
            "for step >= total_steps: min_lr; return a Python float"
        )
        cases.append(
            Case(
                f"{label}: total_steps={total}, warmup_steps={warmup}, base_lr={base:.3g}, "
                f"min_lr={min_lr:.3g}, steps 0..{total + extra}",
                "warmup_cosine_lr",
                {
                    "total_steps": total,
                    "warmup_steps": warmup,
                    "base_lr": base,
                    "min_lr": min_lr,
                    "extra": extra,
                },
                expected,
                atol=1e-12,
                rtol=1e-9,
                hint=hint,
                outputs=("learning rates",),
                harness=SCHEDULE_HARNESS,
            )
        )
    return cases


FORBID = ("torch.optim", "utils.optim", *COURSE)
WHY = "chapter 04's exercise asks for the update rules written with tensor operations, without torch.optim"

QUESTIONS = [
    Question(
        "q1", "SGD with momentum and Nesterov", ("sgd_momentum_step",), sgd_cases, forbid=FORBID, why=WHY
    ),
    Question("q2", "Adam with bias correction", ("adam_step",), adam_cases, forbid=FORBID, why=WHY),
    Question("q3", "AdamW: decoupled weight decay", ("adamw_step",), adamw_cases, forbid=FORBID, why=WHY),
    Question(
        "q4", "Linear warmup + cosine schedule", ("warmup_cosine_lr",), schedule_cases, forbid=FORBID, why=WHY
    ),
]
