"""Chapter 04 (assignment ``04_optimizers``): optimizers the lesson only describes or names, a
learning-rate schedule with restarts, a badly conditioned problem to train on, and review questions.

The optimizer questions (q1 to q3) ask for ``torch.optim.Optimizer`` subclasses, as the lesson wrote
``MomentumSGD`` and ``AdamScratch``. How they are checked: on a random problem, every parameter ``p``
has the gradient ``g_t = s * (p - c) + n_t``, an ill-conditioned diagonal quadratic (curvatures ``s``
log-uniform in [0.1, 10], centre ``c``) plus a fixed noise sequence ``n_t``, evaluated at the current
parameters. A harness builds the learner's optimizer (with one or two parameter groups), sets
``p.grad`` and calls ``step()`` 60 times (in the learner's kernel; halfway through some cases
multiply every group's ``lr``, as a scheduler would); the reference runs the same loop with
``torch.optim`` (q3: :class:`LambReference`) in the grading process. The whole trajectory, the
parameters flattened and concatenated after every step, shape (60, P), is compared, so a failure
names the first step (row) where they part. The gradients in ``p.grad`` must come back exactly as
they were given (compared here from the raw records). Tolerances: float32 ``1e-5 + 1e-4 *
|expected|``, float64 ``1e-10 + 1e-8 * |expected|`` (q2: ``1e-8 + 1e-6 * |expected|``).

* q1 (new) ``RMSpropMomentum(params, lr, alpha, eps, momentum, centered)``: the lesson writes RMSprop's
  formula without momentum and names the centered variant; against ``torch.optim.RMSprop``.
* q2 (new) ``NesterovAdam(params, lr, betas, eps, momentum_decay)``: Nesterov momentum in Adam
  (Dozat's NAdam, with PyTorch's momentum schedule); against ``torch.optim.NAdam`` (computed in
  float64 for float64 parameters, whose momentum product torch otherwise keeps in float32).
* q3 (new) ``Lamb(params, lr, betas, eps, weight_decay)``: Adam's direction plus decoupled weight decay,
  rescaled per parameter tensor by the trust ratio ``|p| / |update|`` (1 when either is 0); torch has
  none, the reference is :class:`LambReference`. Cases include a parameter of zeros and a 0-dim one.
* q4 (new) ``sgdr_lr(step, t0, t_mult, base_lr, min_lr) -> float``: cosine annealing with warm
  restarts (SGDR, which the lesson cites), every step from 0 to several cycles, against
  ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` stepped once per step; T_mult 1, 2 and 3,
  steps exactly at the restarts (up to the 5th with T_mult 3, where a logarithm picks the wrong
  cycle); tolerance ``1e-12 + 1e-9 * |expected|``.
* q5 (make it work, 2 points) ``predict(x (B, 784)) -> labels (B,)`` (or scores (B, 10)) of a
  classifier trained on :func:`sensor_digits`: MNIST digits whose every pixel went through its own
  sensor, with an offset and a gain between 1e-3 and 1e3 (a badly conditioned problem); its accuracy
  on the 1,000 digits of the test split, which the exercise never loads, passed through the same
  sensors; 2 points from 0.90, 1 from 0.75; 30 s for all predictions. Measured with the solution
  notebook's training (tests/test_checks_optimizers.py): its MLP on inputs standardised per pixel 0.92
  (2 points), a linear classifier on the same inputs 0.89 (1 point), the MLP on inputs scaled by one
  global mean and standard deviation 0.57 and on the raw inputs 0.12 (0 points).
* r1-r6 (review, half a point each): a stability limit, momentum's speed-up, Adam's first step, AdamW's
  decay, clipping by the global norm, a diagnosis.

Forbidden while the answers run (:mod:`utils.grading.forbid`): the ``torch.optim`` optimizer each
question reproduces (its class, its ``step`` and its functional form), ``torch.optim.lr_scheduler``
in q4, and the course's own modules (``utils.optim``, the references of this module, ...).
``torch.optim.Optimizer`` itself is allowed: subclass it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from ..challenge import MakeItWork
from ..core import Case, Code, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "04_optimizers"
TITLE = "Optimizers, restarts and conditioning"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}
STEPS = 60

# The loop each optimizer runs in (inside the learner's kernel), as a plain function rebuilt from source.
_RUN = """
def run(Optimizer, params, targets, scales, noise, hyper, first_lr, lr_factor):
    ps = [p.clone().requires_grad_() for p in params]
    if first_lr is None:
        opt = Optimizer(ps, **hyper)
    else:  # two parameter groups: the first parameter alone, with its own learning rate
        opt = Optimizer([{"params": ps[:1], "lr": first_lr}, {"params": ps[1:]}], **hyper)
    steps = noise[0].shape[0]
    trail, given, after = [], [], []
    for k in range(steps):
        if lr_factor is not None and k == steps // 2:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * lr_factor
        grads = [s * (p.detach() - c) + n[k] for p, c, s, n in zip(ps, targets, scales, noise)]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        trail.append(torch.cat([p.detach().reshape(-1).clone() for p in ps]))
        given.append(torch.cat([g.reshape(-1) for g in grads]))
        after.append(torch.cat([p.grad.detach().reshape(-1).clone() for p in ps]))
    return torch.stack(trail), torch.stack(given), torch.stack(after)
"""
OPTIMIZER_HARNESS = Code(f"(lambda ns: (exec({_RUN!r}, ns), ns['run'])[1])({{'torch': torch}})")
OUTPUTS = ("trajectory", "the caller's gradients left untouched")


def _untouched(records: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """(trajectory, whether every gradient came back exactly as it was given)."""
    trajectory, given, after = records
    return trajectory, bool(torch.equal(given, after))


def problem(
    g: torch.Generator, shapes: list[tuple[int, ...]], dtype: torch.dtype, *, zeros: bool = False
) -> dict[str, list[torch.Tensor]]:
    """A random problem: start ``params`` (the first one zeros when ``zeros``), ``targets`` c,
    curvatures ``scales`` s log-uniform in [0.1, 10] and a noise sequence ``noise`` (STEPS, *shape)."""

    def randn(shape):
        return torch.randn(tuple(shape), generator=g, dtype=dtype)

    params = [randn(s) for s in shapes]
    if zeros:
        params[0] = torch.zeros_like(params[0])
    targets = [randn(s) for s in shapes]
    scales = [
        torch.exp((torch.rand(tuple(s), generator=g, dtype=dtype) * 2 - 1) * math.log(10.0)) for s in shapes
    ]
    noise = [0.3 * randn((STEPS, *s)) for s in shapes]
    return {"params": params, "targets": targets, "scales": scales, "noise": noise}


def torch_trajectory(
    make_optimizer: Callable[[list], torch.optim.Optimizer],
    data: dict[str, list[torch.Tensor]],
    first_lr: float | None,
    lr_factor: float | None,
) -> torch.Tensor:
    """The reference: the harness's loop with a reference optimizer; the flattened parameters after each step.
    Run with the parameters' dtype as the default dtype, so that scalar state (NAdam's momentum product)
    is kept in that precision too."""
    ps = [p.clone() for p in data["params"]]
    groups = ps if first_lr is None else [{"params": ps[:1], "lr": first_lr}, {"params": ps[1:]}]
    before = torch.get_default_dtype()
    torch.set_default_dtype(ps[0].dtype)
    try:
        opt = make_optimizer(groups)
        trail = []
        with torch.no_grad():
            for k in range(STEPS):
                if lr_factor is not None and k == STEPS // 2:
                    for group in opt.param_groups:
                        group["lr"] = group["lr"] * lr_factor
                for p, c, s, n in zip(ps, data["targets"], data["scales"], data["noise"]):
                    p.grad = s * (p - c) + n[k]
                opt.step()
                trail.append(torch.cat([p.reshape(-1).clone() for p in ps]))
    finally:
        torch.set_default_dtype(before)
    return torch.stack(trail)  # (STEPS, P)


class LambReference(torch.optim.Optimizer):
    """LAMB (You et al., 2020) as q3 defines it: per parameter tensor, the bias-corrected Adam direction
    plus decoupled weight decay, ``r = m_hat / (sqrt(v_hat) + eps) + weight_decay * p``, then
    ``p -= lr * (|p| / |r|) * r``, with the trust ratio 1 when ``|p|`` or ``|r|`` is 0 (chapter 04's
    exercise)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (beta1, beta2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, g = state["t"], p.grad
                state["m"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat, v_hat = state["m"] / (1 - beta1**t), state["v"] / (1 - beta2**t)
                r = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                p_norm, r_norm = p.norm(), r.norm()
                ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else torch.ones((), dtype=p.dtype)
                p.sub_(lr * ratio * r)


@dataclass(frozen=True)
class Setting:
    """One optimizer case: parameter shapes, dtype, the optimizer's keyword arguments, the first
    parameter's own learning rate (two groups) and the factor applied to every lr halfway."""

    label: str
    shapes: list[tuple[int, ...]]
    dtype: torch.dtype
    hyper: dict
    first_lr: float | None = None
    lr_factor: float | None = None
    zeros: bool = False


def optimizer_cases(
    g: torch.Generator,
    settings: list[Setting],
    reference: Callable[..., torch.optim.Optimizer],
    function: str,
    hint: str,
    tol: dict | None = None,
) -> list[Case]:
    tol = tol or TOL
    cases = []
    for s in settings:
        data = problem(g, s.shapes, s.dtype, zeros=s.zeros)
        expected = torch_trajectory(
            lambda groups: reference(groups, **s.hyper), data, s.first_lr, s.lr_factor
        )
        cases.append(
            Case(
                f"{s.label}, {STEPS} steps",
                function,
                {**data, "hyper": s.hyper, "first_lr": s.first_lr, "lr_factor": s.lr_factor},
                (expected, True),
                **tol[s.dtype],
                hint=hint,
                outputs=OUTPUTS,
                harness=OPTIMIZER_HARNESS,
                measure=_untouched,
            )
        )
    return cases


CLASS_HINT = (
    " Read the hyperparameters from each group at every step (a scheduler changes group['lr']; groups "
    "may differ), keep the running averages in self.state[p] (created on the first step), update p in "
    "place under torch.no_grad() and leave p.grad as it is."
)

# --------------------------------------------------------------------------- q1 RMSprop with momentum

RMSPROP_CASES = [
    Setting(
        "no momentum", [(5,), (3, 4)], F32, dict(lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False)
    ),
    Setting(
        "momentum 0.9", [(6,), (2, 3)], F32, dict(lr=0.003, alpha=0.9, eps=1e-8, momentum=0.9, centered=False)
    ),
    Setting(
        "centered, no momentum, float64",
        [(4, 3)],
        F64,
        dict(lr=0.01, alpha=0.95, eps=1e-6, momentum=0.0, centered=True),
    ),
    Setting(
        "centered with momentum 0.5, float64, a 0-dim parameter",
        [(), (7,)],
        F64,
        dict(lr=0.005, alpha=0.9, eps=1e-8, momentum=0.5, centered=True),
    ),
    Setting(
        "two groups (lr 0.02 for the first parameter), lr halved at step 30, momentum 0.8",
        [(4,), (2, 2)],
        F32,
        dict(lr=0.005, alpha=0.99, eps=1e-8, momentum=0.8, centered=False),
        first_lr=0.02,
        lr_factor=0.5,
    ),
]
RMSPROP_HINT = (
    "the running average of g^2 (weight alpha on the old value) gives the divisor sqrt(average) + eps, "
    "with no bias correction; centered: subtract the square of a running average of g under the root "
    "(the variance instead of the second moment); with momentum, the velocity accumulates the divided "
    "gradient (momentum * velocity + g / divisor) and the step is lr * velocity." + CLASS_HINT
)


def rmsprop_cases(g: torch.Generator) -> list[Case]:
    return optimizer_cases(g, RMSPROP_CASES, torch.optim.RMSprop, "RMSpropMomentum", RMSPROP_HINT)


# --------------------------------------------------------------------------- q2 NAdam

NADAM = dict(betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3)
NADAM_CASES = [
    Setting("defaults: lr 0.002, betas (0.9, 0.999)", [(5,), (3, 4)], F32, dict(lr=0.002)),
    Setting("lr 0.01, betas (0.8, 0.99), float64", [(4, 3)], F64, dict(NADAM, lr=0.01, betas=(0.8, 0.99))),
    Setting(
        "momentum_decay 0.05 (the schedule matters), float64, a 0-dim parameter",
        [(), (6,)],
        F64,
        dict(NADAM, lr=0.005, momentum_decay=0.05),
    ),
    Setting("large eps = 0.1, lr 0.05", [(8,)], F32, dict(NADAM, lr=0.05, eps=0.1)),
    Setting(
        "two groups (lr 0.02 for the first parameter), lr x 0.1 at step 30, float64",
        [(3,), (2, 3)],
        F64,
        dict(NADAM, lr=0.005),
        first_lr=0.02,
        lr_factor=0.1,
    ),
]
NADAM_HINT = (
    "Adam's averages m and v (v bias-corrected with 1 - beta2^t); the momentum coefficient of step t is "
    "mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay)), and the running product of the mu's replaces "
    "beta1^t in the bias corrections; the step has two parts: the gradient, weighted by (1 - mu_t) and "
    "corrected with the product up to t, and the look-ahead m, weighted by mu_{t+1} and corrected with "
    "the product up to t + 1, both divided by sqrt(v_hat) + eps. The running average m itself uses the "
    "constant beta1." + CLASS_HINT
)


def nadam_cases(g: torch.Generator) -> list[Case]:
    # float64: 1e-8 + 1e-6 * |expected|, so that a momentum product kept in float32, as torch.optim.NAdam
    # keeps it by default, passes too (it is off by about 1e-10)
    tol = {F32: TOL[F32], F64: {"atol": 1e-8, "rtol": 1e-6}}
    return optimizer_cases(g, NADAM_CASES, torch.optim.NAdam, "NesterovAdam", NADAM_HINT, tol)


# --------------------------------------------------------------------------- q3 LAMB

LAMB = dict(betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
LAMB_CASES = [
    Setting("lr 0.01, no weight decay", [(5,), (3, 4)], F32, dict(lr=0.01)),
    Setting(
        "weight decay 0.1, betas (0.9, 0.99), float64",
        [(4, 3), (6,)],
        F64,
        dict(LAMB, lr=0.02, betas=(0.9, 0.99), weight_decay=0.1),
    ),
    Setting(
        "a parameter of zeros (the trust ratio is 1 there), float64",
        [(4,), (3, 3)],
        F64,
        dict(LAMB, lr=0.01, weight_decay=0.01),
        zeros=True,
    ),
    Setting("a 0-dim parameter, large eps 0.1", [(), (5,)], F32, dict(LAMB, lr=0.005, eps=0.1)),
    Setting(
        "two groups (lr 0.03 for the first parameter), lr halved at step 30, float64",
        [(3, 2), (4,)],
        F64,
        dict(LAMB, lr=0.01, weight_decay=0.05),
        first_lr=0.03,
        lr_factor=0.5,
    ),
]
LAMB_HINT = (
    "per parameter tensor: the bias-corrected Adam direction m_hat / (sqrt(v_hat) + eps) plus "
    "weight_decay * p (decoupled: not in m and v) is the update r; the step is lr * (|p| / |r|) * r with "
    "the norms of the whole tensor (torch.linalg.vector_norm or .norm()), so that every tensor moves by "
    "lr times its own length; when |p| or |r| is 0 the ratio is 1 (a tensor of zeros must still move)."
    + CLASS_HINT
)


def lamb_cases(g: torch.Generator) -> list[Case]:
    return optimizer_cases(g, LAMB_CASES, LambReference, "Lamb", LAMB_HINT)


# --------------------------------------------------------------------------- q4 SGDR schedule


def torch_sgdr(total: int, t0: int, t_mult: int, base_lr: float, min_lr: float) -> list[float]:
    """Learning rates at steps 0 .. total of CosineAnnealingWarmRestarts stepped once per step."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=min_lr)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()" and the like
        for _ in range(total + 1):
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            sched.step()
    return lrs


SGDR_HARNESS = Code(
    "lambda fn, t0, t_mult, base_lr, min_lr, total: torch.tensor("
    "[float(fn(k, t0, t_mult, base_lr, min_lr)) for k in range(total + 1)], dtype=torch.float64)"
)


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (), generator=g))


def _log_uniform(g: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=g, dtype=F64))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def sgdr_cases(g: torch.Generator) -> list[Case]:
    settings = []  # (label, t0, t_mult, total steps)
    t0 = _randint(g, 5, 15)
    settings.append(("T_mult = 1: equal cycles", t0, 1, 5 * t0 + _randint(g, 0, t0)))
    t0 = _randint(g, 3, 10)
    settings.append(("T_mult = 2: each cycle twice as long", t0, 2, 15 * t0 + 3))  # to the 5th restart
    t0 = _randint(g, 2, 6)
    # past the 5th restart, at 121 t0, where log(243) / log(3) = 4.999999999999999 picks the 4th cycle
    settings.append(("T_mult = 3", t0, 3, 121 * t0 + 1))
    settings.append(("T_0 = 1, T_mult = 2: restarts at 1, 3, 7, 15, ...", 1, 2, 64))
    settings.append(("T_0 = 1, T_mult = 1: a restart at every step", 1, 1, 10))
    cases = []
    for label, t0, t_mult, total in settings:
        base = _log_uniform(g, 1e-3, 1.0)
        min_lr = 0.0 if "every step" in label else base * _log_uniform(g, 1e-3, 0.2)
        expected = torch.tensor(torch_sgdr(total, t0, t_mult, base, min_lr), dtype=F64)
        cases.append(
            Case(
                f"{label}: t0={t0}, t_mult={t_mult}, base_lr={base:.3g}, min_lr={min_lr:.3g}, steps "
                f"0..{total}",
                "sgdr_lr",
                {"t0": t0, "t_mult": t_mult, "base_lr": base, "min_lr": min_lr, "total": total},
                expected,
                atol=1e-12,
                rtol=1e-9,
                hint="find the cycle the step falls in (cycle i lasts t0 * t_mult^i steps; a restart is "
                "the first step of a cycle, where the rate is base_lr again) and the position in it, "
                "then half a cosine from base_lr down towards min_lr over the cycle's length; count "
                "with integers: a logarithm of a power lands just below the integer and picks the "
                "previous cycle at a restart; return a Python float",
                outputs=("learning rates",),
                harness=SGDR_HARNESS,
            )
        )
    return cases


# --------------------------------------------------------------------------- q5 make it work

SENSOR_SEED = 2024  # the sensors' offsets and gains are fixed: the same for the grader and the notebook
N_VALIDATION = 800


def _sensors() -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (784,), gains (784,)): a pixel x is recorded as (x + offset) * gain."""
    g = torch.Generator().manual_seed(SENSOR_SEED)
    gains = 10 ** (torch.rand(784, generator=g, dtype=F64) * 6 - 3)  # log-uniform in [1e-3, 1e3]
    offsets = torch.randn(784, generator=g) * 3  # in units of the pixel's range [0, 1]
    return offsets, gains.float()


def _recorded(images: torch.Tensor) -> torch.Tensor:
    offsets, gains = _sensors()
    return (images.reshape(len(images), -1) + offsets) * gains  # (N, 784)


def sensor_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data of q5: ``(x_fit (3200, 784), y_fit (3200,), x_val (800, 784), y_val (800,))``.

    The 4,000 MNIST digits of ``utils.data.mnist("train")``, each pixel recorded by its own sensor,
    ``(x + offset) * gain`` with an offset of a few times the pixel's range and a gain between 1e-3
    and 1e3; 800 random ones make the validation set. The grader scores ``predict`` on the test split
    recorded by the same sensors, which the exercise never loads.
    """
    import utils.data

    train = utils.data.mnist("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    x, y = _recorded(train.images), train.targets
    val, fit = order[:N_VALIDATION], order[N_VALIDATION:]
    return x[fit], y[fit], x[val], y[val]


def held_out_sensor_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q5: the 1,000 digits of the MNIST test split through the same sensors."""
    del seed  # a fixed split: the exercise never loads it
    import utils.data

    test = utils.data.mnist("test")
    return _recorded(test.images), test.targets


def _validation_sensor_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = sensor_digits()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "The largest stable learning rate",
        0.02,
        atol=0.0,
        rtol=0.01,
        points=0.5,
        explain="Gradient descent on f = (4x^2 + 100y^2)/2 multiplies y by 1 - 100 lr per step, which "
        "stays below 1 in size only for lr < 2 / lambda_max = 2 / 100 = 0.02 (1 / 100 is where it "
        "stops oscillating, 2 / 4 the limit of the flat direction).",
    ),
    Review(
        "r2",
        "Heavy ball with a constant gradient",
        0.2,
        atol=0.0,
        rtol=0.01,
        points=0.5,
        explain="The velocity v = 0.95 v + g grows to g / (1 - 0.95) = 20, so each step moves lr * 20 = "
        "0.2: momentum 0.95 multiplies the step of plain SGD (0.01) by 1 / (1 - mu) = 20.",
    ),
    Review(
        "r3",
        "Adam's first step on a tiny gradient",
        0.000909,
        atol=0.0,
        rtol=0.01,
        points=0.5,
        explain="After one step m_hat = g and v_hat = g^2 (the bias corrections undo the zero start), so "
        "the step is lr * g / (|g| + eps) = 1e-3 * 1e-6 / (1e-6 + 1e-7) = 9.09e-4: about lr whatever "
        "the size of g, not proportional to it (1e-9), and eps still takes 9% of it.",
    ),
    Review(
        "r4",
        "AdamW's decay over a run",
        0.3679,
        atol=0.002,
        rtol=0.0,
        points=0.5,
        explain="Each step multiplies the weight by 1 - lr * weight_decay = 1 - 1e-4, so 10,000 steps give "
        "(1 - 1e-4)^10000 = e^-1 = 0.368 (not 1 - 10000 * 1e-4 = 0: the factors multiply).",
    ),
    Review(
        "r5",
        "Clipping by the global norm",
        0.6,
        atol=0.0,
        rtol=0.01,
        points=0.5,
        explain="The global norm is sqrt(3^2 + 4^2) = 5, so both gradients are multiplied by 1 / 5: the "
        "first one's norm becomes 3 / 5 = 0.6 (clipping each to norm 1 separately would change the "
        "direction of the whole gradient).",
    ),
    Review(
        "r6",
        "A run that blows up",
        {"a", "b"},
        points=0.5,
        explain="Steps too large for the curvature make the loss explode: a smaller learning rate (a) or "
        "a bound on the step through the gradient's norm (b) cures that. More epochs (c) only repeat "
        "the same steps, and the stability limit 2 / lambda_max does not depend on the batch size (d).",
    ),
]

# the references of this module (LambReference, ...) are as forbidden as torch.optim
FORBID_OPTIM = ("utils.optim", "utils.grading.checks", *COURSE)


def _forbid(*names: str) -> tuple[str, ...]:
    return (*names, *FORBID_OPTIM)


WHY = "chapter 04's exercise asks for the update rules written with tensor operations, without torch.optim's"

QUESTIONS = [
    Question(
        "q1",
        "RMSprop with momentum and the centered variant",
        ("RMSpropMomentum",),
        rmsprop_cases,
        forbid=_forbid("torch.optim.RMSprop", "torch.optim.RMSprop.step", "torch.optim.rmsprop.rmsprop"),
        why=WHY,
    ),
    Question(
        "q2",
        "Adam with Nesterov momentum (NAdam)",
        ("NesterovAdam",),
        nadam_cases,
        forbid=_forbid(
            "torch.optim.NAdam",
            "torch.optim.NAdam.step",
            "torch.optim.nadam.nadam",
            "torch.optim.Adam",
            "torch.optim.adam.adam",
        ),
        why=WHY,
    ),
    Question(
        "q3",
        "LAMB: Adam with a layer-wise trust ratio",
        ("Lamb",),
        lamb_cases,
        forbid=_forbid(
            "torch.optim.Adam",
            "torch.optim.Adam.step",
            "torch.optim.adam.adam",
            "torch.optim.AdamW",
            "torch.optim.adamw.adamw",
        ),
        why=WHY,
    ),
    Question(
        "q4",
        "Cosine annealing with warm restarts",
        ("sgdr_lr",),
        sgdr_cases,
        forbid=_forbid("torch.optim.lr_scheduler"),
        why="q4 asks for the schedule computed yourself",
    ),
    MakeItWork(
        "q5",
        "Make it work: pixels through badly scaled sensors",
        held_out_sensor_digits,
        metric="accuracy",
        num_classes=10,
        steps=((0.90, 2), (0.75, 1)),
        budget=30,
        batch_size=250,
        preview=_validation_sensor_digits,
    ),
    *REVIEW,
]
