"""Chapter 08 (assignment ``08_training_cnns``): Grad-CAM, FGSM, the initial-loss check, mixed precision
by hand, a broken training script to fix, a classifier trained to a target and review questions.

The answers take a model, which cannot travel into the learner's kernel as a value: each case's
harness (a :class:`~utils.grading.core.Code` lambda) builds a fixed model there from seeded torch
code (:data:`CNN` and :data:`MLP` below), builds a ``DataLoader`` from tensors where one is needed,
and calls the learner's function. The grading process builds the same model from the same seed and
computes the expected value with autograd. q1-q3 one point each (the chapter calls the course's versions
without printing them); q4-q6 two points each and r1-r6 half a point each go past the chapter. Forbidden
while the answers run (:mod:`utils.grading.forbid`): ``utils.interpret``, ``utils.debug`` and the
course's reference modules; in q4 also ``torch.amp.GradScaler`` and its internal functions.

* q1 ``grad_cam(model, target_layer, x, class_idx) -> (N, H, W)``: ``A`` the output of
  ``target_layer``, ``alpha_k`` the spatial mean of ``d logit_c / d A_k``, ``relu(sum_k alpha_k A_k)``
  upsampled bilinearly (``align_corners=False``) to the input's (H, W), each map divided by its
  maximum (an all-zero map stays zero: no NaN). ``class_idx`` is an int or a (N,) tensor. Cases:
  RGB and gray inputs, non-square images, a single image, a class with only negative evidence
  (the map is all zeros), a class with only positive evidence where every map's minimum is above
  zero (dividing by the maximum, not min-max scaling). Tolerance ``1e-5 + 1e-4 * |expected|``; ``x``
  must be unchanged.
* q2 ``fgsm(model, x, y, eps) -> x_adv``: ``clamp(x + eps * sign(d CE(model(x), y) / dx), 0, 1)``.
  Cases: eps = 0, binary (silhouette-like) images where the clamp matters, a large eps, one image.
  Tolerance ``1e-6``; ``x`` and ``y`` must be unchanged.
* q3 ``initial_loss_check(model, loader, num_classes) -> (loss, ok)``: the mean cross-entropy over
  all samples (a last, smaller batch counts by its size), measured in eval mode without gradients,
  and ``ok = |loss - ln C| <= 0.1 ln C``; the model (with dropout) must be back in the mode it
  was handed over in. Cases: healthy models with C = 2, 10, 100, a final layer with a
  large bias, a loss far below ``ln C``, a model handed over in eval mode (it must stay in eval
  mode), and a loss between 0.24 and 0.32 away from ``ln C = 4.6`` (C = 100: ``ok`` by the relative
  rule, not by an absolute 0.1). Loss tolerance ``1e-5 + 1e-4 * |expected|``; ``ok`` and the modes
  exact. No case lies within 3% of the ``ok`` threshold.
* q4 ``train_step_amp(model, optimizer, x, y, state, dtype) -> (loss, skipped)``: one step with the
  forward pass under ``torch.autocast("cpu", dtype)`` and GradScaler's logic written out (scale the
  loss, unscale the gradients, skip the step on inf/NaN and back off, grow after ``growth_interval``
  good steps), ``state`` updated in place. Several steps per case on a small CNN, against
  ``torch.amp.GradScaler``: losses, skipped steps, scales, growth counts and the final parameters
  (``1e-5 + 1e-4 * |expected|``), bfloat16 and float16, skips from a huge scale, a skip in the middle
  of a run of good steps, a batch of one.
* q5 ``train_digits(images, labels) -> predict``: the notebook shows a training script with five
  planted bugs (raw 0-255 inputs, softmax before ``F.cross_entropy``, no ``zero_grad``, training in
  eval mode, predicting in train mode); the fixed function is trained on 2,000 MNIST digits and its
  ``predict`` must reach 0.85 accuracy on the 1,000 test digits (the fix about 0.94, the script as
  given 0.10; the softmax or the missing ``zero_grad`` alone stay below the bar, and so do the raw
  inputs together with training in eval mode). The accuracy is measured here from the labels.
* q6 (make it work) ``predict(images (B, 1, 28, 28)) -> labels``: trained on 1,000 animal silhouettes,
  scored on the 1,998 of the test split: 2 points from 0.92, 1 from 0.85; 30 s for all predictions,
  120 s per cell (the reference trains for about 25 s on one thread and reaches about 0.95; 4 epochs
  instead of 20 about 0.90, 3 epochs 0.83).
* r1-r6 (review, half a point each): float16's range, a GradScaler's scale after a skip, the initial
  loss of 100 classes, two diagnoses of a training run and one of batch norm at prediction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..challenge import MakeItWork
from ..core import Case, Code, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "08_training_cnns"
TITLE = "Training and understanding CNNs"

# A fixed CNN, built from a seed in the learner's kernel and here. model[2] is a conv block (its output
# is not modified in place afterwards); model[4] is the last ReLU before global average pooling.
# `negate` >= 0 makes every final weight of that class negative (only negative evidence).
CNN = (
    "lambda seed, c_in, k, cls, sign: (lambda m: ("
    "(m[-1].weight.data[cls].copy_(sign * m[-1].weight.data[cls].abs()) if sign != 0 else None), "
    "(m[3].bias.data.add_(3.0) if sign > 0 else None), m)[-1])("
    "(torch.manual_seed(seed), nn.Sequential("
    "nn.Conv2d(c_in, 6, 3, padding=1), nn.ReLU(), "
    "nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()), "
    "nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), "
    "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k)).eval())[1])"
)

# A fixed MLP with dropout; `bias` (k,) is added to the final layer's bias (zeros: a healthy
# initialization); `train` is the mode it is handed over in (a freshly built model is in train mode).
MLP = (
    "lambda seed, d, k, bias, train: (lambda m: (m[-1].bias.data.add_(bias), m.train(train))[1])("
    "(torch.manual_seed(seed), nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.5), "
    "nn.Linear(32, k)))[1])"
)

GRAD_CAM_HARNESS = Code(
    f"lambda grad_cam, x, seed, k, class_idx, layer, cls, sign: "
    f"(lambda m: grad_cam(m, m[layer], x, class_idx))("
    f"({CNN})(seed, x.shape[1], k, cls, sign))"
)
FGSM_HARNESS = Code(f"lambda fgsm, x, y, eps, seed, k: fgsm(({CNN})(seed, x.shape[1], k, 0, 0), x, y, eps)")
# returns the raw answer and the modes of the model and of its dropout layer after the call
INITIAL_LOSS_HARNESS = Code(
    f"lambda initial_loss_check, x, y, num_classes, batch_size, seed, bias, train: (lambda m: (lambda r: "
    f"(r[0], r[1], m.training, m[3].training))(initial_loss_check(m, torch.utils.data.DataLoader("
    f"torch.utils.data.TensorDataset(x, y), batch_size=batch_size), num_classes)))("
    f"({MLP})(seed, x[0].numel(), num_classes, bias, train))"
)

TOL = {"atol": 1e-5, "rtol": 1e-4}


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (), generator=g))


# --------------------------------------------------------------------------- q1 Grad-CAM


def reference_grad_cam(
    model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM with a forward hook and autograd, written out step by step."""
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(x)  # (N, K)
    finally:
        handle.remove()
    act = kept[0]  # (N, C, h, w)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), classes].sum(), act)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(
        peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam)
    )


def grad_cam_cases(g: torch.Generator) -> list[Case]:
    build = Code(CNN).build()
    specs = [  # (label, N, C, H, W, classes, class_idx form, layer, sign of the class's final weights)
        ("3 RGB images 16x16, one class (an int) for all", 3, 3, 16, 16, 5, "int", 2, 0),
        ("4 RGB images 12x12, one class per image (a tensor)", 4, 3, 12, 12, 5, "tensor", 2, 0),
        ("one gray image, non-square 20x12", 1, 1, 20, 12, 4, "int", 2, 0),
        (
            "5 gray images 28x28, the predicted classes, the last conv stage as target layer",
            5,
            1,
            28,
            28,
            10,
            "predicted",
            4,
            0,
        ),
        (
            "a class with only negative evidence: the map is all zeros (not NaN)",
            3,
            3,
            14,
            14,
            5,
            "int",
            4,
            -1,
        ),
        (
            "a class with only positive evidence everywhere: every map's minimum is above zero",
            2,
            3,
            12,
            12,
            5,
            "int",
            4,
            1,
        ),
    ]
    cases = []
    for label, n, c, h, w, k, form, layer, sign in specs:
        seed = _seed(g)
        x = torch.rand(n, c, h, w, generator=g)
        cls = 1
        if sign != 0:
            classes = torch.full((n,), cls, dtype=torch.long)
            class_idx = cls
        elif form == "int":
            class_idx = int(torch.randint(0, k, (), generator=g))
            classes = torch.full((n,), class_idx, dtype=torch.long)
        elif form == "predicted":
            with torch.no_grad():
                classes = build(seed, c, k, cls, sign)(x).argmax(dim=1)
            class_idx = classes
        else:
            classes = torch.randint(0, k, (n,), generator=g)
            class_idx = classes
        model = build(seed, c, k, cls, sign)
        expected = reference_grad_cam(model, model[layer], x, classes)
        if sign > 0 and float(expected.amin()) <= 0.05:
            raise AssertionError("the positive-evidence case must give maps whose minimum is above zero")
        cases.append(
            Case(
                label,
                "grad_cam",
                {
                    "x": x,
                    "seed": seed,
                    "k": k,
                    "class_idx": class_idx,
                    "layer": layer,
                    "cls": cls,
                    "sign": sign,
                },
                expected,
                **TOL,
                harness=GRAD_CAM_HARNESS,
                unchanged=("x",),
                hint="hook the target layer's output A (N, K, h, w); alpha = mean over (h, w) of d "
                "logit[class] / dA; cam = relu((alpha * A).sum(1)); F.interpolate(..., size=x.shape[-2:], "
                "mode='bilinear', align_corners=False); divide each map by its own max (not min-max: a "
                "map's minimum may be above zero), leaving all-zero maps at zero; return (N, H, W), "
                "detached from the graph",
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 FGSM


def reference_fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    return (x + eps * xr.grad.sign()).clamp(0.0, 1.0)


def fgsm_cases(g: torch.Generator) -> list[Case]:
    build = Code(CNN).build()
    specs = [  # (label, N, C, H, W, classes, eps, binary)
        ("4 RGB images 12x12, eps = 0.03", 4, 3, 12, 12, 5, 0.03, False),
        ("eps = 0 leaves the images as they are", 3, 3, 10, 10, 5, 0.0, False),
        (
            "binary gray images (pixels exactly 0 or 1), eps = 0.1: the clamp to [0, 1] matters",
            6,
            1,
            16,
            16,
            10,
            0.1,
            True,
        ),
        ("a large eps = 0.5", 2, 3, 8, 8, 4, 0.5, False),
        ("a single gray image 28x28, eps = 0.2", 1, 1, 28, 28, 10, 0.2, False),
    ]
    cases = []
    for label, n, c, h, w, k, eps, binary in specs:
        seed = _seed(g)
        x = torch.rand(n, c, h, w, generator=g)
        if binary:
            x = (x > 0.6).float()
        y = torch.randint(0, k, (n,), generator=g)
        expected = reference_fgsm(build(seed, c, k, 0, 0), x, y, eps)
        cases.append(
            Case(
                label,
                "fgsm",
                {"x": x, "y": y, "eps": eps, "seed": seed, "k": k},
                expected,
                atol=1e-6,
                harness=FGSM_HARNESS,
                unchanged=("x", "y"),
                hint="differentiate the cross-entropy of model(x) against the labels y with respect to a "
                "copy of x that requires grad; x_adv = x + eps * grad.sign(), then .clamp(0, 1); return a "
                "tensor shaped like x and do not change x in place",
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 initial loss


def reference_initial_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[float, bool]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()  # the whole data set at once: the mean over samples
    model.train(was_training)
    return loss, abs(loss - math.log(num_classes)) <= 0.1 * math.log(num_classes)


def _scaled_bias(g: torch.Generator, k: int, build, seed: int, x, y, low: float, high: float) -> torch.Tensor:
    """A final-layer bias that puts the loss ``low`` to ``high`` away from ln C (by scanning a scale)."""
    direction = torch.randn(k, generator=g)
    for step in range(200):
        bias = direction * 0.01 * 1.05**step
        loss, _ = reference_initial_loss(build(seed, 16, k, bias, True), x, y, k)
        if low < abs(loss - math.log(k)) < high:
            return bias
    raise AssertionError("no bias scale puts the initial loss in the band")


def initial_loss_cases(g: torch.Generator) -> list[Case]:
    build = Code(MLP).build()
    specs = [  # (label, N, classes, batch size, kind, mode handed over in)
        (
            "a healthy MLP with dropout (in train mode), 10 classes, 50 samples in batches of 16",
            50,
            10,
            16,
            "healthy",
            True,
        ),
        ("a final layer with a large bias, 10 classes, batches of 16", 50, 10, 16, "bias", True),
        ("2 classes, 37 samples in batches of 8", 37, 2, 8, "healthy", True),
        ("100 classes, one batch of 40", 40, 100, 64, "healthy", True),
        (
            "a loss far below ln C: every label is 0 and the model predicts 0 with confidence",
            30,
            10,
            16,
            "low",
            True,
        ),
        (
            "a model handed over in eval mode (it must stay in eval mode), 10 classes",
            40,
            10,
            16,
            "healthy",
            False,
        ),
        (
            "100 classes, a loss between 0.24 and 0.32 away from ln C = 4.6: within 10% of ln C (relative), "
            "though more than 0.1 away",
            60,
            100,
            16,
            "band",
            True,
        ),
    ]
    cases = []
    for label, n, k, batch_size, kind, train in specs:
        for _ in range(100):  # redraw until the verdict is clear: no case within 3% of the threshold
            seed = _seed(g)
            x = torch.randn(n, 1, 4, 4, generator=g)
            y = torch.randint(0, k, (n,), generator=g)
            bias = torch.zeros(k)
            if kind == "bias":
                bias = torch.randn(k, generator=g) * 6
            elif kind == "low":
                y = torch.zeros(n, dtype=torch.long)
                bias[0] = 12.0
            elif kind == "band":
                bias = _scaled_bias(g, k, build, seed, x, y, 0.24, 0.32)
            loss, ok = reference_initial_loss(build(seed, 16, k, bias, train), x, y, k)
            margin = abs(abs(loss - math.log(k)) - 0.1 * math.log(k)) / math.log(k)
            if margin > 0.03:
                break
        cases.append(
            Case(
                label,
                "initial_loss_check",
                {
                    "x": x,
                    "y": y,
                    "num_classes": k,
                    "batch_size": batch_size,
                    "seed": seed,
                    "bias": bias,
                    "train": train,
                },
                (loss, ok, train, train),
                **TOL,
                harness=INITIAL_LOSS_HARNESS,
                outputs=("loss", "ok", "model in its original mode", "dropout in its original mode"),
                hint="model.eval() and torch.no_grad(); sum F.cross_entropy(..., reduction='sum') over all "
                "batches and divide by the number of samples (a mean of batch means overweights a small "
                "last batch); ok = abs(loss - math.log(C)) <= 0.1 * math.log(C) (a relative tolerance, not "
                "0.1); put the model back in the mode it came in, model.train(was_training), not always "
                "model.train()",
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 mixed precision by hand

# A small CNN in float32, built from a seed in the learner's kernel and here.
AMP_MODEL = (
    "lambda seed: (torch.manual_seed(seed), nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), "
    "nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)))[1]"
)
# Runs the learner's step on each batch with one state dict (changed in place by the steps) and returns,
# per step, (loss, skipped, scale, growth tracker), then the parameters after the last step.
AMP_HARNESS = Code(
    f"lambda train_step_amp, xs, ys, seed, scale, interval, lr, dtype: (lambda m, state: (lambda o: ("
    f"[(lambda r: (float(r[0]), bool(r[1]), float(state['scale']), int(state['growth_tracker'])))("
    f"train_step_amp(m, o, x, y, state, dtype)) for x, y in zip(xs, ys)], "
    f"[p.detach().clone() for p in m.parameters()]))(torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)))"
    f"(({AMP_MODEL})(seed), {{'scale': scale, 'growth_tracker': 0, 'growth_factor': 2.0, "
    f"'backoff_factor': 0.5, 'growth_interval': interval}})"
)


def reference_amp(xs, ys, seed: int, scale: float, interval: int, lr: float, dtype: torch.dtype):
    """The same steps with ``torch.amp.GradScaler``: per step (loss, skipped, scale, tracker), parameters."""
    model = Code(AMP_MODEL).build()(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=interval)
    steps = []
    for x, y in zip(xs, ys):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale_before
        steps.append((float(loss.detach()), skipped, scaler.get_scale(), scaler._get_growth_tracker()))
    return steps, [p.detach().clone() for p in model.parameters()]


AMP_HINT = (
    "optimizer.zero_grad(); the forward pass and the loss inside torch.autocast('cpu', "
    "dtype=dtype); backward of loss * state['scale']; divide every gradient by the scale; if any "
    "gradient is inf or NaN skip optimizer.step(), multiply the scale by backoff_factor and "
    "reset "
    "growth_tracker to 0; else step, add 1 to growth_tracker and when it reaches growth_interval "
    "multiply the scale by growth_factor and reset it; return (loss.item(), skipped)"
)


def amp_cases(g: torch.Generator) -> list[Case]:
    bf16, f16 = torch.bfloat16, torch.float16
    specs = [  # (label, steps, batch, scale, interval, dtype, step with inputs x300 (or -1), must skip)
        ("bfloat16, 6 steps, scale 2^10 growing every 2 steps", 6, 8, 2.0**10, 2, bf16, -1, False),
        ("float16, 7 steps, scale 2^16, growth interval 3", 7, 8, 2.0**16, 3, f16, -1, False),
        (
            "float16, scale 2^40: the first steps overflow and are skipped while the scale backs off",
            8,
            8,
            2.0**40,
            2,
            f16,
            -1,
            True,
        ),
        ("bfloat16, a batch of one, 5 steps, growth interval 1", 5, 1, 2.0**4, 1, bf16, -1, False),
        ("float16, scale 2^30, growth interval 2: skips, then growth", 10, 4, 2.0**30, 2, f16, -1, True),
        (
            "float16, scale 2^12, growth interval 4, the inputs of step 6 300 times larger: a skip in the "
            "middle of a run of good steps (the count restarts)",
            9,
            8,
            2.0**12,
            4,
            f16,
            5,
            True,
        ),
    ]
    cases = []
    for label, n_steps, batch, scale, interval, dtype, boost, must_skip in specs:
        seed = _seed(g)
        xs = [torch.randn(batch, 1, 6, 6, generator=g) * 3 for _ in range(n_steps)]
        if boost >= 0:
            xs[boost] = xs[boost] * 300
        ys = [torch.randint(0, 5, (batch,), generator=g) for _ in range(n_steps)]
        steps, params = reference_amp(xs, ys, seed, scale, interval, 0.1, dtype)
        if must_skip and not any(step[1] for step in steps):
            raise AssertionError(f"amp case {label!r}: skipped steps {[s[1] for s in steps]}")
        if boost >= 0 and not (steps[boost][1] and steps[boost - 1][3] > 0):
            raise AssertionError(f"amp case {label!r}: no skip after good steps: {steps}")
        cases.append(
            Case(
                label,
                "train_step_amp",
                {
                    "xs": xs,
                    "ys": ys,
                    "seed": seed,
                    "scale": scale,
                    "interval": interval,
                    "lr": 0.1,
                    "dtype": dtype,
                },
                (steps, params),
                atol=1e-5,
                rtol=1e-4,
                harness=AMP_HARNESS,
                outputs=("(loss, skipped, scale, growth_tracker) per step", "parameters after the steps"),
                hint=AMP_HINT,
            )
        )
    return cases


# --------------------------------------------------------------------------- q5 the broken training script

DEBUG_FIT, DEBUG_TEST, DEBUG_BAR = 2000, 1000, 0.85


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else (images * 255).round().to(torch.uint8)


def debug_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q5's data: 2,000 training digits of ``utils.data.mnist`` (uint8, 0-255) chosen with ``seed`` and the
    1,000 test digits, which the exercise never loads: ``(x_fit, y_fit, x_test, y_test)``."""
    import utils.data

    train, test = utils.data.mnist("train"), utils.data.mnist("test")
    fit = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:DEBUG_FIT]
    return _uint8(train.images[fit]), train.targets[fit], _uint8(test.images[:DEBUG_TEST]), test.targets


DEBUG_HARNESS = Code("lambda train_digits, x, y, x_test: train_digits(x, y)(x_test)")


def _capped_accuracy(y_test: torch.Tensor):
    def measure(pred: torch.Tensor) -> float:
        if not isinstance(pred, torch.Tensor) or pred.shape != y_test.shape:
            raise ValueError(f"predict must return labels of shape {tuple(y_test.shape)}")
        return min(float((pred.long() == y_test).double().mean()), DEBUG_BAR)

    return measure


def debug_cases(g: torch.Generator) -> list[Case]:
    x, y, x_test, y_test = debug_data(_seed(g) % 1000)
    return [
        Case(
            f"train_digits on {DEBUG_FIT} training digits, predict on {DEBUG_TEST} digits it never saw: "
            f"accuracy (capped at the bar {DEBUG_BAR})",
            "train_digits",
            {"x": x, "y": y, "x_test": x_test},
            DEBUG_BAR,
            atol=1e-9,
            harness=DEBUG_HARNESS,
            measure=_capped_accuracy(y_test[:DEBUG_TEST]),
            hint="read the script line by line as chapter 08's checklist does: what scale do the inputs have "
            "(uint8, 0-255)? what mode is the model in while it trains and while it predicts? what does "
            "F.cross_entropy expect, logits or probabilities? what happens to the gradients between steps?",
        )
    ]


# --------------------------------------------------------------------------- q6 make it work

N_FIT, N_VALIDATION = 1000, 1000


def animal_silhouettes(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q6's data: ``(x_fit (6000, 1, 28, 28), y_fit, x_val (1000, 1, 28, 28), y_val)`` from the training
    split of ``utils.data.animals``; the grader scores on the test split, which the exercise never loads."""
    import utils.data

    train = utils.data.animals("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    fit, val = order[:N_FIT], order[N_FIT : N_FIT + N_VALIDATION]
    return train.images[fit], train.targets[fit], train.images[val], train.targets[val]


def held_out_animals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q6: the 1,998 test silhouettes (the seed does not change them)."""
    import utils.data

    del seed
    test = utils.data.animals("test")
    return test.images, test.targets


def _validation_animals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = animal_silhouettes()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "The largest finite float16 number, rounded to an int",
        65504,
        points=0.5,
        explain="float16 has 5 exponent bits (largest exponent 15) and 10 mantissa bits: (2 - 2^-10) * "
        "2^15 = 65,504. A loss scaled by 2^16 = 65,536 already overflows to inf in float16, which is why "
        "GradScaler backs off; bfloat16 keeps float32's 8 exponent bits (largest about 3.4e38) and rarely "
        "needs scaling.",
    ),
    Review(
        "r2",
        "GradScaler: scale 65536, growth interval 2000, factors 2 and 0.5; 2,000 good steps, then one "
        "step with inf gradients. The scale after it?",
        65536.0,
        rtol=0.0,
        points=0.5,
        explain="After 2,000 finite steps in a row the scale doubles to 131,072 (and the tracker restarts at "
        "0); the step with inf gradients is skipped and halves it back to 65,536.",
    ),
    Review(
        "r3",
        "Loss at initialization of a 100-class classifier with an unbiased last layer (2 decimals)",
        4.61,
        atol=0.01,
        rtol=0.0,
        points=0.5,
        explain="A network that knows nothing gives each class about 1/100: the cross-entropy is "
        "-ln(1/100) = ln 100 = 4.61. A much larger value means confident wrong predictions (a bias or a "
        "scale problem).",
    ),
    Review(
        "r4",
        "Training loss stays at ln C = 2.30 for 10 classes from the first step on: which two causes?",
        {"a", "c"},
        points=0.5,
        explain="A loss stuck exactly at ln C means the outputs do not change: (a) a learning rate of 0 (or "
        "optimizer.step() never called, or the wrong parameters given to the optimizer) and (c) softmax "
        "applied before F.cross_entropy with very small logits (which softmaxes again: gradients nearly "
        "vanish). (b) a missing model.eval() changes validation numbers, not the training loss; (d) "
        "overfitting makes the training loss fall, not stay.",
    ),
    Review(
        "r5",
        "Train accuracy 99%, validation 72% after 30 epochs: which two actions help most?",
        {"b", "d"},
        points=0.5,
        explain="A large gap between training and validation accuracy is overfitting: (b) data augmentation "
        "and (d) stronger regularisation (weight decay, dropout) or early stopping narrow it. (a) training "
        "longer and (c) a larger network widen it.",
    ),
    Review(
        "r6",
        "Validation accuracy 90% with batches of 256, 40% when the same images come one at a time: the "
        "cause?",
        "c",
        points=0.5,
        explain="(c) batch norm left in train mode at prediction normalises with the statistics of the batch "
        "itself, and a batch of one makes them meaningless; model.eval() switches it to the running "
        "statistics. (a) augmentation, (b) the learning rate and (d) the loss do not depend on the batch "
        "size at prediction.",
    ),
]

FORBID = ("utils.interpret", "utils.debug", *COURSE)
AMP = (
    "torch.amp.GradScaler",
    "torch.cuda.amp.GradScaler",
    "torch._amp_foreach_non_finite_check_and_unscale_",
    "torch._amp_update_scale_",
    *COURSE,
)
WHY = "chapter 08's exercise asks for these tools written yourself, not the course's versions"

QUESTIONS = [
    Question("q1", "Grad-CAM heat maps", ("grad_cam",), grad_cam_cases, forbid=FORBID, why=WHY),
    Question("q2", "Fast gradient sign method (FGSM)", ("fgsm",), fgsm_cases, forbid=FORBID, why=WHY),
    Question("q3", "Initial-loss check", ("initial_loss_check",), initial_loss_cases, forbid=FORBID, why=WHY),
    Question(
        "q4",
        "Mixed precision by hand: autocast and loss scaling",
        ("train_step_amp",),
        amp_cases,
        points=2,
        forbid=AMP,
        why="q4 asks for the loss scaling written yourself, not torch's GradScaler",
    ),
    Question(
        "q5",
        "Fix the broken training script",
        ("train_digits",),
        debug_cases,
        points=2,
        forbid=COURSE,
        why="q5 asks for the script fixed, not replaced by the course's trainer",
    ),
    MakeItWork(
        "q6",
        "Make it work: animal silhouettes",
        held_out_animals,
        metric="accuracy",
        num_classes=10,
        steps=((0.92, 2), (0.85, 1)),
        budget=30,
        batch_size=500,
        preview=_validation_animals,
    ),
    *REVIEW,
]
