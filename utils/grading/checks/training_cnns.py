"""Chapter 08 (assignment ``08_training_cnns``): Grad-CAM, FGSM and the initial-loss check.

The answers take a model, which cannot travel into the learner's kernel as a value: each case's
harness (a :class:`~utils.grading.core.Code` lambda) builds a fixed model there from seeded torch
code (:data:`CNN` and :data:`MLP` below), builds a ``DataLoader`` from tensors where one is needed,
and calls the learner's function. The grading process builds the same model from the same seed and
computes the expected value with autograd. One point per question. Forbidden while the answers run
(:mod:`utils.grading.forbid`): ``utils.interpret``, ``utils.debug`` and the course's reference modules.

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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import Case, Code, Question
from ..forbid import COURSE

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


FORBID = ("utils.interpret", "utils.debug", *COURSE)
WHY = "chapter 08's exercise asks for these tools written yourself, not the course's versions"

QUESTIONS = [
    Question("q1", "Grad-CAM heat maps", ("grad_cam",), grad_cam_cases, forbid=FORBID, why=WHY),
    Question("q2", "Fast gradient sign method (FGSM)", ("fgsm",), fgsm_cases, forbid=FORBID, why=WHY),
    Question("q3", "Initial-loss check", ("initial_loss_check",), initial_loss_cases, forbid=FORBID, why=WHY),
]
