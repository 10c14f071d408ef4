"""Chapter 05 (assignment ``05_init_norm_reg``): initialization, normalization and regularization.

The chapter built He and Xavier initialization (normal), batch normalization forward and backward,
layer / instance / group normalization without affine parameters, dropout and spatial dropout. The
exercise asks for what it did not print:

* q1 ``kaiming_uniform_(weight, a, mode)`` (1 point): fill ``weight`` in place from the *uniform*
  distribution whose variance keeps a leaky-ReLU layer's output variance (negative slope ``a``), like
  ``torch.nn.init.kaiming_uniform_(weight, a=a, mode=mode, nonlinearity="leaky_relu")``. Checked
  through statistics of about 10^6 draws computed here from the raw values (standard deviation within
  ``rtol = 5e-3``, 7 sd; the largest ``|w|`` within ``1e-3`` of the bound; the kurtosis 1.8 of a
  uniform distribution within 0.02, 20 sd, where a normal one has 3); ``a = 0`` (He), ``a = 0.2``,
  ``a = sqrt(5)`` (PyTorch's default for ``nn.Linear``), ``fan_out``, an ``nn.Parameter``. The weight
  starts as NaN, so returning a new tensor fails.
* q2 ``groupnorm_forward(x, gamma, beta, groups, eps)`` (1 point): like ``F.group_norm``: statistics
  per sample and group of C / G channels, the affine map per *channel*. G = 1 (layer norm), G = C
  (instance norm), 1x1 maps, a batch of one, float64, inputs of mean 64 (``E[x^2] - E[x]^2`` loses the
  variance in float32). Tolerances: float32 ``1e-5 + 1e-5 * |expected|`` (large mean ``1e-4``), float64
  ``1e-9 + 1e-7 * |expected|``.
* q3 ``groupnorm_backward(dout, x, gamma, groups, eps) -> (dx, dgamma, dbeta)`` (2 points), compared with
  autograd through ``F.group_norm`` in float64; the same shapes, and float32 within
  ``1e-5 + 1e-4 * |expected|``. Batch norm's formula with per-group sums in place of per-channel
  ones fails as soon as gamma differs between the channels of a group.
* q4 ``fold_batchnorm(w, b, gamma, beta, running_mean, running_var, eps) -> (w, b)`` (1 point): the
  weights of one convolution (or linear layer) equal to the layer followed by batch norm in
  evaluation mode; compared with ``torch.nn.utils.fusion.fuse_conv_bn_weights``, ``b`` may be None,
  depthwise and linear weights, a tiny running variance (eps matters), float64.
* q5 (make it work, 2 points) ``predict(images (B, 1, 28, 28)) -> labels (B,)`` (or scores (B, 10)) of a
  classifier trained on the 500 upright silhouettes of :func:`silhouettes`; the grader scores the
  accuracy on the 1,998 images of the animals' test split, which the exercise never loads, each
  mirrored, rotated, scaled and shifted at random (:func:`transform`, seeded by the grader): 2 points
  from 0.85, 1 from 0.75 (plain training reaches about 0.67, training on transformed copies about
  0.89); 30 s for all predictions.
* r1-r6 (review, half a point each): He's standard deviation of a convolution, the parameters of
  batch norm, a running mean after five steps, weight decay over 10,000 steps, two diagnoses.

Forbidden while the answers run (:mod:`utils.grading.forbid`): ``torch.nn.init`` (q1), the
normalization functions and layers of ``torch.nn`` (q2, q3), autograd (q3), torch's fusion helpers and
batch norm (q4), and the course's own modules (``utils.scratch``, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..challenge import MakeItWork
from ..core import Case, Code, Question
from ..forbid import AUTOGRAD, COURSE
from ..review import Review

ASSIGNMENT = "05_init_norm_reg"
TITLE = "Initialization, normalization and regularization"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-5}, F64: {"atol": 1e-9, "rtol": 1e-7}}
SAMPLES = 1_000_000  # values per statistical case (about)


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _rand(g: torch.Generator, *shape: int, dtype: torch.dtype = F32) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1 Kaiming uniform

# Fill a NaN tensor (or Parameter) of `shape` `draws` times and return the pooled raw values (flat); the
# statistics of them are computed here (_std, _largest, _kurtosis), never in the learner's process.
_FILL = (
    "lambda fn, shape, a, mode, draws: torch.cat([(lambda w: (fn(w, a, mode), "
    "w.detach().reshape(-1).clone())[1])({make}(torch.full(shape, float('nan')))) for _ in range(draws)])"
)
FILL = Code(_FILL.format(make=""))
FILL_PARAM = Code(_FILL.format(make="nn.Parameter"))


def _std(values: torch.Tensor) -> torch.Tensor:
    return values.double().std()


def _largest(values: torch.Tensor) -> torch.Tensor:
    return values.double().abs().max()


def _kurtosis(values: torch.Tensor) -> torch.Tensor:
    v = values.double()
    centred = v - v.mean()
    return (centred**4).mean() / (centred**2).mean() ** 2


def kaiming_bound(shape: tuple[int, ...], a: float, mode: str) -> float:
    """The bound b of U(-b, b) that torch.nn.init.kaiming_uniform_ uses (the grader's reference)."""
    receptive = math.prod(shape[2:])
    fan = shape[1] * receptive if mode == "fan_in" else shape[0] * receptive
    gain = math.sqrt(2.0 / (1 + a**2))
    return gain * math.sqrt(3.0 / fan)


KAIMING_HINT = (
    "fill the given weight in place (the check reads the tensor it passed, which starts as NaN) under "
    "torch.no_grad(), with weight.uniform_(-bound, bound); the fan counts the kernel positions too "
    "(weight.shape[1] * kh * kw for fan_in); a leaky ReLU with slope a keeps (1 + a^2) / 2 of its input's "
    "second moment, and U(-b, b) has variance b^2 / 3"
)


def kaiming_cases(g: torch.Generator) -> list[Case]:
    del g  # the harness draws in the learner's process; nothing here is random
    cases = []
    layers = [  # (shape, a, mode, label)
        ((64, 256), 0.0, "fan_in", "Linear (64, 256), a = 0 (ReLU), fan_in"),
        ((32, 16, 3, 3), 0.2, "fan_in", "Conv2d (32, 16, 3, 3), a = 0.2, fan_in"),
        ((16, 32, 5, 5), 0.2, "fan_out", "Conv2d (16, 32, 5, 5), a = 0.2, fan_out"),
        ((128, 96), math.sqrt(5), "fan_in", "Linear (128, 96), a = sqrt(5) (PyTorch's default), fan_in"),
    ]
    for shape, a, mode, label in layers:
        draws = math.ceil(SAMPLES / math.prod(shape))
        bound = kaiming_bound(shape, a, mode)
        args = {"shape": shape, "a": a, "mode": mode, "draws": draws}
        cases.append(
            Case(
                f"std over {draws} fills of a {label}",
                "kaiming_uniform_",
                dict(args),
                torch.tensor(bound / math.sqrt(3.0), dtype=F64),
                rtol=5e-3,
                hint=KAIMING_HINT,
                harness=FILL,
                measure=_std,
            )
        )
    shape, a, mode = (48, 24, 3, 3), 0.1, "fan_in"
    draws = math.ceil(SAMPLES / math.prod(shape))
    args = {"shape": shape, "a": a, "mode": mode, "draws": draws}
    bound = kaiming_bound(shape, a, mode)
    cases += [
        Case(
            f"largest |w| over {draws} fills of a (48, 24, 3, 3) weight (the bound of the uniform)",
            "kaiming_uniform_",
            dict(args),
            torch.tensor(bound, dtype=F64),
            rtol=1e-3,
            hint="draw from the uniform distribution U(-bound, bound) (weight.uniform_), not from a normal "
            "one (which has no bound); " + KAIMING_HINT,
            harness=FILL,
            measure=_largest,
        ),
        Case(
            f"kurtosis over {draws} fills of a (48, 24, 3, 3) weight (1.8 for a uniform distribution)",
            "kaiming_uniform_",
            dict(args),
            torch.tensor(1.8, dtype=F64),
            atol=0.02,
            hint="the question asks for the *uniform* variant (kurtosis 1.8); a normal distribution has "
            "kurtosis 3",
            harness=FILL,
            measure=_kurtosis,
        ),
        Case(
            f"std over {draws} fills of an nn.Parameter (48, 24, 3, 3) that requires grad",
            "kaiming_uniform_",
            dict(args),
            torch.tensor(bound / math.sqrt(3.0), dtype=F64),
            rtol=5e-3,
            hint="a Parameter that requires grad cannot be changed in place while autograd records: wrap the "
            "fill in `with torch.no_grad():` (as torch.nn.init does); " + KAIMING_HINT,
            harness=FILL_PARAM,
            measure=_std,
        ),
    ]
    return cases


# --------------------------------------------------------------------------- q2 / q3 group normalization


def _gn_inputs(
    g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, *, scale: float = 1.0, offset: float = 0.0
) -> dict[str, torch.Tensor]:
    c = shape[1]
    return {
        "x": _randn(g, *shape, dtype=dtype) * scale + offset,
        "gamma": _rand(g, c, dtype=dtype) * 1.5 + 0.25,  # different in every channel of a group
        "beta": _randn(g, c, dtype=dtype),
    }


GN_FORWARD = [  # (shape, groups, dtype, eps, scale, offset, label, tolerance)
    ((4, 6, 5, 5), 2, F32, 1e-5, 1.0, 0.0, "x (4, 6, 5, 5), 2 groups of 3 channels", TOL[F32]),
    ((3, 8, 4, 6), 1, F32, 1e-5, 2.0, 1.0, "one group (layer normalization), x (3, 8, 4, 6)", TOL[F32]),
    ((2, 4, 5, 3), 4, F32, 1e-5, 1.0, -0.5, "as many groups as channels (instance normalization)", TOL[F32]),
    ((1, 12, 3, 3), 3, F32, 1e-5, 1.0, 0.3, "a batch of one image, 3 groups of 4 channels", TOL[F32]),
    ((5, 6, 1, 1), 3, F32, 1e-5, 1.0, 0.0, "1x1 feature maps: 2 values per group", TOL[F32]),
    ((3, 6, 4, 4), 2, F64, 1e-3, 0.1, 0.0, "float64, eps 1e-3, variance ~0.01", TOL[F64]),
    (
        (4, 8, 6, 6),
        4,
        F32,
        1e-5,
        1.0,
        64.0,
        "inputs with a large mean (64 + randn)",
        {"atol": 1e-4, "rtol": 1e-4},
    ),
]

GN_FORWARD_HINT = (
    "reshape x to (N, G, C/G * H * W), take the mean and the *biased* variance over the last dimension (of x "
    "- mean, not E[x^2] - E[x]^2), standardize with 1 / sqrt(var + eps), reshape back to (N, C, H, W), then "
    "out = gamma * x_hat + beta with gamma and beta reshaped to (1, C, 1, 1): one pair per channel, not per "
    "group"
)


def gn_forward_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, groups, dtype, eps, scale, offset, label, tol in GN_FORWARD:
        inputs = _gn_inputs(g, shape, dtype, scale=scale, offset=offset)
        wide = {k: v.double() for k, v in inputs.items()}
        expected = F.group_norm(wide["x"], groups, wide["gamma"], wide["beta"], eps).to(dtype)
        cases.append(
            Case(
                label,
                "groupnorm_forward",
                {**inputs, "groups": groups, "eps": eps},
                expected,
                **tol,
                hint=GN_FORWARD_HINT,
                unchanged=("x", "gamma", "beta"),
            )
        )
    return cases


GN_BACKWARD = [  # (shape, groups, dtype, label)
    ((4, 6, 5, 5), 2, F64, "dout (4, 6, 5, 5), 2 groups, float64"),
    ((3, 8, 4, 4), 1, F64, "one group (layer normalization), float64"),
    ((2, 4, 3, 5), 4, F64, "as many groups as channels (instance normalization), float64"),
    ((1, 12, 3, 3), 3, F64, "a batch of one image, 3 groups of 4 channels, float64"),
    ((6, 6, 1, 1), 3, F64, "1x1 feature maps: 2 values per group, float64"),
    ((8, 8, 4, 4), 2, F32, "dout (8, 8, 4, 4), 2 groups, float32"),
]
GN_BACKWARD_TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: TOL[F64]}
GN_BACKWARD_HINT = (
    "dbeta and dgamma are per channel: sums over (N, H, W) of dout and of dout * x_hat; for dx, every x_hat "
    "of a group depends on every x of that group through its mean and variance, as in the chapter's batch "
    "norm, but here gamma changes from channel to channel inside a group: carry g = gamma * dout (the "
    "gradient reaching x_hat) through the group's mean and variance, with sums over each sample's group, not "
    "over the batch"
)


def gn_backward_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for shape, groups, dtype, label in GN_BACKWARD:
        inputs = _gn_inputs(g, shape, F64, scale=1.5, offset=0.3)
        eps = 1e-5
        x = inputs["x"].clone().requires_grad_()
        gamma = inputs["gamma"].clone().requires_grad_()
        beta = inputs["beta"].clone().requires_grad_()
        dout = _randn(g, *shape, dtype=F64)
        F.group_norm(x, groups, gamma, beta, eps).backward(dout)
        cases.append(
            Case(
                label,
                "groupnorm_backward",
                {
                    "dout": dout.to(dtype),
                    "x": inputs["x"].to(dtype),
                    "gamma": inputs["gamma"].to(dtype),
                    "groups": groups,
                    "eps": eps,
                },
                tuple(t.grad.to(dtype) for t in (x, gamma, beta)),
                **GN_BACKWARD_TOL[dtype],
                hint=GN_BACKWARD_HINT,
                unchanged=("dout", "x", "gamma"),
                outputs=("dx", "dgamma", "dbeta"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 folding batch norm

FOLD_HINT = (
    "in evaluation mode batch norm is a fixed affine map per channel, y = gamma (z - running_mean) / "
    "sqrt(running_var + eps) + beta, and z = conv(x, w) + b is linear in w and b: scale each output "
    "channel's weights (dimension 0 of w) by gamma / sqrt(running_var + eps), and fold the mean and the "
    "shift into the bias (b = 0 when the layer has none); return new tensors"
)


def _fold_reference(w, b, gamma, beta, mean, var, eps):
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    bias = b if b is not None else None
    new_w, new_b = fuse_conv_bn_weights(w, bias, mean, var, eps, gamma, beta)
    return new_w.detach(), new_b.detach()


def fold_cases(g: torch.Generator) -> list[Case]:
    cases = []
    layers = [  # (weight shape, bias?, dtype, eps, label, tiny variance?)
        ((8, 4, 3, 3), True, F32, 1e-5, "Conv2d weight (8, 4, 3, 3) with bias", False),
        ((6, 3, 5, 5), False, F32, 1e-5, "Conv2d without bias (b is None)", False),
        ((16, 1, 3, 3), False, F32, 1e-5, "depthwise Conv2d weight (16, 1, 3, 3)", False),
        ((10, 12), True, F64, 1e-5, "Linear weight (10, 12) with bias, float64", False),
        ((4, 4, 1, 1), True, F64, 1e-2, "1x1 Conv2d, eps 1e-2 and a running variance near 0, float64", True),
    ]
    for shape, has_bias, dtype, eps, label, tiny in layers:
        c = shape[0]
        w = _randn(g, *shape, dtype=dtype) * 0.3
        b = _randn(g, c, dtype=dtype) * 0.1 if has_bias else None
        gamma, beta = _rand(g, c, dtype=dtype) + 0.5, _randn(g, c, dtype=dtype)
        mean = _randn(g, c, dtype=dtype) * 0.5
        var = _rand(g, c, dtype=dtype) * (1e-3 if tiny else 1.0) + (0.0 if tiny else 0.5)
        expected = _fold_reference(w, b, gamma, beta, mean, var, eps)
        cases.append(
            Case(
                label,
                "fold_batchnorm",
                {
                    "w": w,
                    "b": b,
                    "gamma": gamma,
                    "beta": beta,
                    "running_mean": mean,
                    "running_var": var,
                    "eps": eps,
                },
                expected,
                **TOL[dtype],
                hint=FOLD_HINT,
                unchanged=("w", "gamma", "beta", "running_mean", "running_var")
                + (("b",) if has_bias else ()),
                outputs=("w", "b"),
            )
        )
    return cases


# --------------------------------------------------------------------------- q5 make it work

N_FIT = 500
N_VALIDATION = 500
DEGREES, TRANSLATE, SCALE = 20.0, 0.2, 0.1  # the grader's transformation (see `transform`)


def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` (N, 1, H, W) mirrored with probability 1/2, rotated by up to 20 degrees,
    scaled by 0.9 to 1.1 and shifted by up to 20% of its size (bilinear, zeros outside): how the images
    of q5's held-out set differ from the upright training images. Random numbers from ``generator``."""
    n = len(images)
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(DEGREES)
    zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * SCALE
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * TRANSLATE
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / zoom, -torch.sin(angle) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / zoom, torch.cos(angle) / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, align_corners=False)


def silhouettes(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data of q5: ``(x_fit (500, 1, 28, 28), y_fit (500,), x_val (500, 1, 28, 28), y_val (500,))``.

    From the training split of ``utils.data.animals``: 500 upright silhouettes to train on, and 500
    others passed through :func:`transform`, as the grader's images will be, to validate on. The
    grader scores ``predict`` on the test split, which the exercise never loads.
    """
    import utils.data

    train = utils.data.animals("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    fit, val = order[:N_FIT], order[N_FIT : N_FIT + N_VALIDATION]
    x_val = transform(train.images[val], torch.Generator().manual_seed(seed + 1))
    return train.images[fit], train.targets[fit], x_val, train.targets[val]


def held_out_silhouettes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q5: the 1,998 test silhouettes, transformed with the grader's own seed."""
    import utils.data

    test = utils.data.animals("test")
    return transform(test.images, torch.Generator().manual_seed(int(seed))), test.targets


def _validation_silhouettes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = silhouettes()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "He initialization of a convolution",
        0.05893,
        atol=0.0005,
        rtol=0.0,
        points=0.5,
        explain="The fan-in of a 3x3 convolution with 64 input channels counts every weight a output sums "
        "over: 64 * 3 * 3 = 576, so std = sqrt(2 / 576) = 0.0589 (with fan_in = 64 one gets 0.177, "
        "three times too large).",
    ),
    Review(
        "r2",
        "Learnable parameters of BatchNorm2d(128)",
        256,
        points=0.5,
        explain="Only gamma and beta are learned, one each per channel: 2 * 128 = 256. The running mean and "
        "variance (and the step counter) are buffers: they are in the state_dict but not in "
        "parameters(), and the optimizer never sees them.",
    ),
    Review(
        "r3",
        "Running mean after five steps",
        0.8190,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Each step keeps 0.9 of the old value and adds 0.1 of the batch mean (2): after five steps "
        "r = 2 * (1 - 0.9^5) = 2 * 0.4095 = 0.819. PyTorch's momentum is the weight of the *new* value "
        "(taking it as the weight of the old one gives 2 * (1 - 0.1^5), about 2).",
    ),
    Review(
        "r4",
        "Weight decay without a gradient",
        0.6065,
        atol=0.005,
        rtol=0.0,
        points=0.5,
        explain="Each step multiplies the weight by (1 - lr * lambda) = 1 - 0.1 * 5e-4 = 0.99995; after "
        "10,000 steps 0.99995^10000 = exp(-0.5) = 0.607 (adding up 10,000 decrements of 5e-5 instead gives "
        "0.5: the decay shrinks a smaller weight by less).",
    ),
    Review(
        "r5",
        "Training 99%, validation 75%: which two actions?",
        {"a", "c"},
        points=0.5,
        explain="The gap says the network memorizes its training set: (a) data augmentation and (c) a "
        "stronger weight decay (or dropout) attack memorization. (b) training longer and (d) a wider "
        "network give it more capacity to memorize, which widens the gap.",
    ),
    Review(
        "r6",
        "Whose output for an image does not depend on the rest of its batch?",
        {"b", "c", "d"},
        points=0.5,
        explain="(a) BatchNorm2d in training mode standardizes with the batch's statistics, so an image's "
        "output changes with its neighbours. (b) LayerNorm and (c) GroupNorm use statistics of the "
        "image alone, and (d) BatchNorm2d in evaluation mode uses its fixed running statistics.",
    ),
]

NORM = (
    "torch.nn.functional.group_norm",
    "torch.nn.GroupNorm",
    "torch.nn.functional.layer_norm",
    "torch.nn.LayerNorm",
    "torch.nn.functional.instance_norm",
    "torch.nn.functional.batch_norm",
    "torch.nn.BatchNorm2d",
)

QUESTIONS = [
    Question(
        "q1",
        "Kaiming uniform initialization for leaky ReLU (statistics)",
        ("kaiming_uniform_",),
        kaiming_cases,
        forbid=("torch.nn.init", *COURSE),
        why="q1 asks for the initialization derived yourself, without torch.nn.init",
    ),
    Question(
        "q2",
        "Group normalization: forward",
        ("groupnorm_forward",),
        gn_forward_cases,
        forbid=(*NORM, *COURSE),
        why="q2 asks for group normalization written with tensor operations",
    ),
    Question(
        "q3",
        "Group normalization: backward",
        ("groupnorm_backward",),
        gn_backward_cases,
        points=2,
        forbid=(*NORM, *AUTOGRAD, *COURSE),
        why="q3 asks for the gradient derived by hand, without autograd",
    ),
    Question(
        "q4",
        "Folding batch norm into the layer before it",
        ("fold_batchnorm",),
        fold_cases,
        forbid=("torch.nn.utils.fusion", "torch.ao", *NORM, *COURSE),
        why="q4 asks for the folded weights worked out yourself",
    ),
    MakeItWork(
        "q5",
        "Make it work: silhouettes seen differently",
        held_out_silhouettes,
        metric="accuracy",
        num_classes=10,
        steps=((0.85, 2), (0.75, 1)),
        budget=30,
        batch_size=250,
        preview=_validation_silhouettes,
    ),
    *REVIEW,
]
