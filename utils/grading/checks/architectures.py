"""Chapter 07 (assignment ``07_architectures``): the signature blocks of CNN architectures, checked
against torchvision.

The learner's answers to q1, q2 and q4 are classes (``nn.Module`` s): a harness builds them where the
learner's code runs, loads weights drawn here, runs fresh random inputs and returns what is compared
(output shapes as zero tensors of that shape, the shapes of the parameters, which are added up here,
outputs). References come from torchvision and ``torch.nn.functional`` in the grading process. Two
points for q1, one for each other question. Forbidden while the answers run
(:mod:`utils.grading.forbid`): torchvision's finished blocks (``torchvision.models.resnet``,
``torchvision.ops.SqueezeExcitation``, ``torchvision.models.vision_transformer``), ``utils.models``,
``utils.flops`` (q3) and the course's reference modules.

* q1 ``Bottleneck(in_ch, width, stride)`` (2 points; the chapter printed the basic block, not this
  one): ResNet-50's bottleneck as torchvision builds it (v1.5: the stride in the 3x3 convolution),
  ``4 * width`` channels out, with torchvision's parameter names ``conv1``, ``bn1``, ``conv2``,
  ``bn2``, ``conv3``, ``bn3`` and, only when ``stride != 1`` or ``in_ch != 4 * width``, the projection
  shortcut ``downsample.0`` (1x1 convolution) / ``downsample.1`` (batch norm). Checked by output
  shapes, parameter counts (exact), and by loading the ``state_dict`` of a
  ``torchvision.models.resnet.Bottleneck`` with random weights and batch-norm statistics
  (``strict=True``) and comparing outputs in eval and in train mode: ``1e-4 + 1e-4 * |expected|``;
  the input must be left unchanged (no in-place ReLU on ``x``). A block with the stride in its first
  1x1 convolution (the original ResNet) has the right shapes and counts and fails on the weights.
* q2 ``SqueezeExcitation(channels, reduction)``: layers ``fc1`` (``channels -> channels // reduction``)
  and ``fc2`` (back), ``nn.Linear`` or 1x1 ``nn.Conv2d``, with biases; reference
  ``torchvision.ops.SqueezeExcitation`` with the same weights; the input must be left unchanged.
  Tolerance ``1e-5 + 1e-5 * |expected|``; parameter counts exact.
* q3 ``count_parameters(model)`` (every parameter once: shared ones once, frozen ones included,
  buffers excluded) and ``conv_params(in_ch, out_ch, k, bias)``: exact integers.
* q4 ``PatchEmbedding(img_size, patch, in_ch, dim)``: layer ``proj`` (``nn.Conv2d`` with kernel =
  stride = patch, or ``nn.Linear(in_ch * patch * patch, dim)`` on patches flattened in (channel, row,
  column) order), attribute ``num_patches``, output (N, num_patches, dim) in row-major patch order,
  ``ValueError`` when ``img_size`` is not a multiple of ``patch``. Tolerance ``1e-5 + 1e-5 * |expected|``.
* r1-r5 (review, half a point each): the weights of a 256-64-64-256 bottleneck (69,632) and of two
  3x3 convolutions at 256 channels, the parameters of squeeze-and-excitation, the tokens of
  ViT-B/16, and why a deeper plain network trains worse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Case, Code, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "07_architectures"
TITLE = "CNN architectures: the signature blocks"


def _randomize(module: nn.Module, g: torch.Generator) -> None:
    """Random weights (He-scaled) and random batch-norm statistics, all drawn from ``g``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- q1 Bottleneck


def _reference_block(in_ch: int, width: int, stride: int) -> nn.Module:
    """torchvision's ResNet bottleneck (v1.5: the stride in the 3x3 convolution), 4 * width channels out."""
    from torchvision.models.resnet import Bottleneck

    downsample = None
    if stride != 1 or in_ch != 4 * width:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, 4 * width, 1, stride=stride, bias=False), nn.BatchNorm2d(4 * width)
        )
    return Bottleneck(in_ch, width, stride, downsample=downsample)


# shapes travel as zero tensors of that shape, so that a mismatch reads
# "wrong shape: expected (...), got (...)"
SHAPE = Code("lambda Block, in_ch, out_ch, stride, x: torch.zeros(Block(in_ch, out_ch, stride)(x).shape)")
# parameter shapes come back raw; _count adds them up here
COUNT = Code(
    "lambda Block, in_ch, out_ch, stride: [list(p.shape) for p in Block(in_ch, out_ch, stride).parameters()]"
)


def _count(shapes: list[list[int]]) -> int:
    return int(sum(math.prod(shape) for shape in shapes))


# build, load the reference state dict strictly, switch to eval (or train) mode, run
RUN_EVAL = Code(
    "lambda Block, in_ch, out_ch, stride, state, x: (lambda m: (m.load_state_dict(state, strict=True), "
    "m.eval(), m(x).detach())[-1])(Block(in_ch, out_ch, stride))"
)
RUN_TRAIN = Code(
    "lambda Block, in_ch, out_ch, stride, state, x: (lambda m: (m.load_state_dict(state, strict=True), "
    "m.train(), m(x).detach())[-1])(Block(in_ch, out_ch, stride))"
)

BLOCK_HINT = (
    "conv1 = Conv2d(in_ch, width, 1, bias=False), bn1, ReLU; conv2 = Conv2d(width, width, 3, stride, "
    "padding=1, bias=False), bn2, ReLU; conv3 = Conv2d(width, 4 * width, 1, bias=False), bn3; add the "
    "shortcut, then ReLU. The shortcut is x itself when the shapes agree, else downsample = "
    "nn.Sequential(Conv2d(in_ch, 4 * width, 1, stride=stride, bias=False), BatchNorm2d(4 * width))"
)


def block_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for in_ch, width, stride, size, label in [
        (32, 8, 1, 10, "identity shortcut (32 -> 8 -> 32, stride 1)"),
        (16, 8, 2, 10, "projection shortcut (16 -> 8 -> 32, stride 2)"),
        (8, 4, 2, 7, "odd input size 7 -> 4 (8 -> 4 -> 16, stride 2)"),
    ]:
        x = torch.randn(2, in_ch, size, size, generator=g)
        out = (size - 1) // stride + 1
        cases.append(
            Case(
                f"output shape, {label}",
                "Bottleneck",
                {"in_ch": in_ch, "out_ch": width, "stride": stride, "x": x},
                torch.zeros(2, 4 * width, out, out),
                harness=SHAPE,
                hint="the block outputs 4 * width channels; the 3x3 convolution carries the stride and "
                "padding=1; the shortcut must produce the same shape (a 1x1 convolution with the same "
                "stride)",
            )
        )
    for in_ch, width, stride, label in [
        (64, 16, 1, "64 -> 16 -> 64, stride 1 (no projection)"),
        (64, 32, 2, "64 -> 32 -> 128, stride 2"),
        (16, 16, 1, "16 -> 16 -> 64, stride 1 (projection for the channels)"),
    ]:
        cases.append(
            Case(
                f"parameter count, {label}",
                "Bottleneck",
                {"in_ch": in_ch, "out_ch": width, "stride": stride},
                _n_params(_reference_block(in_ch, width, stride)),
                harness=COUNT,
                measure=_count,
                hint="three convolutions without bias (each batch norm has its own shift); a projection "
                "shortcut only when stride != 1 or in_ch != 4 * width, and then a 1x1 convolution without "
                "bias plus a BatchNorm2d",
            )
        )
    for in_ch, width, stride, train, label in [
        (32, 8, 1, False, "identity shortcut, eval mode"),
        (16, 8, 2, False, "projection, 16 -> 32, stride 2, eval mode"),
        (32, 8, 2, False, "same channels but stride 2 (projection), eval mode"),
        (12, 8, 1, False, "more channels at stride 1 (projection), eval mode"),
        (16, 8, 2, True, "projection, train mode (batch statistics)"),
    ]:
        ref = _reference_block(in_ch, width, stride)
        _randomize(ref, g)
        x = torch.randn(4, in_ch, 8, 8, generator=g)
        ref.train(train)
        with torch.no_grad():
            expected = ref(x)
        state = {k: v.clone() for k, v in ref.state_dict().items()}
        cases.append(
            Case(
                f"torchvision's weights, {label}",
                "Bottleneck",
                {"in_ch": in_ch, "out_ch": width, "stride": stride, "state": state, "x": x},
                expected,
                atol=1e-4,
                rtol=1e-4,
                harness=RUN_TRAIN if train else RUN_EVAL,
                unchanged=("x",),
                hint="use exactly the names conv1, bn1, conv2, bn2, conv3, bn3 and downsample.0 / "
                "downsample.1 "
                "(no extra parameters); the stride sits in the 3x3 convolution conv2 (torchvision's v1.5), "
                "not in conv1; the ReLU comes after the addition. " + BLOCK_HINT,
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 SqueezeExcitation

SE_COUNT = Code(
    "lambda SE, channels, reduction: [list(p.shape) for p in SE(channels, reduction).parameters()]"
)
SE_RUN = Code(
    "lambda SE, channels, reduction, w1, b1, w2, b2, x: (lambda m: ([p.data.copy_(v.reshape(p.shape)) for p, "
    "v in ((m.fc1.weight, w1), (m.fc1.bias, b1), (m.fc2.weight, w2), (m.fc2.bias, b2))], m.eval(), "
    "m(x).detach())[-1])(SE(channels, reduction))"
)

SE_HINT = (
    "squeeze: the mean over H and W, (N, C); excitation: fc1 (C -> C // reduction), ReLU, fc2 (back to C), "
    "sigmoid; then multiply x by these weights, one per sample and channel: s.view(N, C, 1, 1); return a new "
    "tensor (x * s, not x.mul_(s))"
)


def se_cases(g: torch.Generator) -> list[Case]:
    from torchvision.ops import SqueezeExcitation as Reference

    cases = []
    for channels, reduction in [(32, 16), (24, 4), (64, 8)]:
        expected = channels * (channels // reduction) * 2 + channels // reduction + channels
        cases.append(
            Case(
                f"parameter count, channels={channels}, reduction={reduction}",
                "SqueezeExcitation",
                {"channels": channels, "reduction": reduction},
                expected,
                harness=SE_COUNT,
                measure=_count,
                hint="two layers with biases: fc1 maps channels -> channels // reduction, fc2 maps back",
            )
        )
    for n, channels, reduction, h, w, label in [
        (2, 16, 4, 5, 5, "16 channels, reduction 4"),
        (1, 32, 16, 7, 3, "a single image of 7x3, 32 channels, reduction 16"),
        (3, 24, 8, 1, 1, "1x1 feature maps"),
        (4, 64, 16, 6, 6, "64 channels, reduction 16"),
    ]:
        sq = channels // reduction
        ref = Reference(channels, sq)
        _randomize(ref, g)
        x = torch.randn(n, channels, h, w, generator=g) + 0.5
        with torch.no_grad():
            expected = ref(x)
        args = {
            "channels": channels,
            "reduction": reduction,
            "w1": ref.fc1.weight.detach().reshape(sq, channels).clone(),
            "b1": ref.fc1.bias.detach().clone(),
            "w2": ref.fc2.weight.detach().reshape(channels, sq).clone(),
            "b2": ref.fc2.bias.detach().clone(),
            "x": x,
        }
        cases.append(
            Case(
                f"outputs with given weights, {label}",
                "SqueezeExcitation",
                args,
                expected,
                atol=1e-5,
                rtol=1e-5,
                harness=SE_RUN,
                unchanged=("x",),
                hint=SE_HINT,
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 counting parameters

MODELS = [  # (label, source of an expression that builds the model, with {a}, {b}, {c} random sizes)
    (
        "Conv2d + BatchNorm2d + Linear (batch-norm buffers are not parameters)",
        "nn.Sequential(nn.Conv2d(3, {a}, 3), nn.BatchNorm2d({a}), nn.ReLU(), nn.AdaptiveAvgPool2d(1), "
        "nn.Flatten(), nn.Linear({a}, {b}))",
    ),
    (
        "layers without bias and a depthwise convolution",
        "nn.Sequential(nn.Conv2d({a}, {a}, 3, groups={a}, bias=False), nn.Conv2d({a}, {b}, 1, bias=False), "
        "nn.Linear({b}, {c}, bias=False))",
    ),
    (
        "a frozen layer (requires_grad=False still counts)",
        "(lambda m: (m[0].requires_grad_(False), m)[1])(nn.Sequential(nn.Linear({a}, {b}), nn.ReLU(), "
        "nn.Linear({b}, {c})))",
    ),
    (
        "a layer used twice (shared weights count once)",
        "(lambda lin: nn.Sequential(lin, nn.Tanh(), lin, nn.Linear({a}, {c})))(nn.Linear({a}, {a}))",
    ),
    ("no parameters at all", "nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())"),
    (
        "nested modules: a ResNet-style block inside a Sequential",
        "nn.Sequential(nn.Conv2d(1, {a}, 3), nn.Sequential(nn.Sequential(nn.Conv2d({a}, {a}, 3), "
        "nn.BatchNorm2d({a})), nn.Conv2d({a}, {b}, 1)), nn.LayerNorm({b}))",
    ),
]


def count_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for label, template in MODELS:
        a, b, c = (int(v) for v in torch.randint(2, 40, (3,), generator=g))
        source = template.format(a=a, b=b, c=c)
        model = Code(f"lambda: {source}")()
        cases.append(
            Case(
                f"count_parameters, {label}",
                "count_parameters",
                {},
                _n_params(model),
                harness=Code(f"lambda count_parameters: count_parameters({source})"),
                hint="sum p.numel() over model.parameters(), which visits nested modules and yields a shared "
                "parameter once; count frozen parameters too, and not the buffers (running statistics)",
            )
        )
    for in_ch, out_ch, k, bias in [
        (3, 64, 7, False),
        (64, 64, 3, True),
        (1, 6, 5, True),
        (256, 512, 1, False),
        (
            int(torch.randint(1, 300, (1,), generator=g)),
            int(torch.randint(1, 300, (1,), generator=g)),
            int(torch.randint(1, 8, (1,), generator=g)),
            True,
        ),
    ]:
        conv = nn.Conv2d(in_ch, out_ch, k, bias=bias)
        cases.append(
            Case(
                f"conv_params({in_ch}, {out_ch}, {k}, bias={bias})",
                "conv_params",
                {"in_ch": in_ch, "out_ch": out_ch, "k": k, "bias": bias},
                _n_params(conv),
                hint="out_ch kernels of shape (in_ch, k, k), plus one bias per output channel when "
                "bias=True; return an int",
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 PatchEmbedding

PE_SHAPE = Code(
    "lambda PE, img_size, patch, in_ch, dim, x: torch.zeros(PE(img_size, patch, in_ch, dim)(x).shape)"
)
PE_COUNT = Code("lambda PE, img_size, patch, in_ch, dim: PE(img_size, patch, in_ch, dim).num_patches")
PE_RUN = Code(
    "lambda PE, img_size, patch, in_ch, dim, w, b, x: (lambda m: "
    "(m.proj.weight.data.copy_(w.reshape(m.proj.weight.shape)), m.proj.bias.data.copy_(b), "
    "m(x).detach())[-1])(PE(img_size, patch, in_ch, dim))"
)
# True when the constructor raises ValueError for an image size that is not a multiple of the patch size
PE_RAISES = Code(
    "lambda PE, img_size, patch, in_ch, dim: (lambda ns: (exec('def attempt(PE, *args):\\n    try:\\n        "
    "PE(*args)\\n    except ValueError:\\n        return True\\n    return False', ns), "
    "ns['attempt'](PE, img_size, patch, in_ch, dim))[1])({})"
)

PE_HINT = (
    "proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch) gives (N, dim, H/p, W/p); flatten the "
    "grid and move dim last: x.flatten(2).transpose(1, 2) -> (N, num_patches, dim), patches in row-major "
    "order"
)


def patch_cases(g: torch.Generator) -> list[Case]:
    cases = []
    for img, p, c, d in [(32, 8, 3, 16), (28, 4, 1, 32)]:
        x = torch.randn(2, c, img, img, generator=g)
        cases.append(
            Case(
                f"output shape, {img} px, patch {p}, {c} channel(s), dim {d}",
                "PatchEmbedding",
                {"img_size": img, "patch": p, "in_ch": c, "dim": d, "x": x},
                torch.zeros(2, (img // p) ** 2, d),
                harness=PE_SHAPE,
                hint=PE_HINT,
            )
        )
    for img, p in [(224, 16), (28, 7)]:
        cases.append(
            Case(
                f"num_patches for {img} px and patch {p}",
                "PatchEmbedding",
                {"img_size": img, "patch": p, "in_ch": 3, "dim": 8},
                (img // p) ** 2,
                harness=PE_COUNT,
                hint="num_patches = (img_size // patch) ** 2, set in __init__",
            )
        )
    for n, img, p, c, d, label in [
        (2, 16, 4, 3, 12, "16 px RGB, patch 4"),
        (1, 28, 4, 1, 32, "one 28 px grey image, patch 4"),
        (3, 8, 8, 2, 5, "one patch covering the image"),
        (2, 6, 1, 3, 4, "patch 1: every pixel is a token"),
    ]:
        w = torch.randn(d, c, p, p, generator=g) / p
        b = torch.randn(d, generator=g) * 0.1
        x = torch.randn(n, c, img, img, generator=g)
        expected = F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2)  # (N, P, dim)
        cases.append(
            Case(
                f"outputs with given weights, {label}",
                "PatchEmbedding",
                {"img_size": img, "patch": p, "in_ch": c, "dim": d, "w": w, "b": b, "x": x},
                expected,
                atol=1e-5,
                rtol=1e-5,
                harness=PE_RUN,
                unchanged=("x",),
                hint=PE_HINT + "; with nn.Linear, flatten each patch in (channel, row, column) order",
            )
        )
    cases.append(
        Case(
            "img_size 30 with patch 4 raises ValueError",
            "PatchEmbedding",
            {"img_size": 30, "patch": 4, "in_ch": 3, "dim": 8},
            True,
            harness=PE_RAISES,
            hint="check img_size % patch in __init__ and raise ValueError with a message naming both numbers",
        )
    )
    return cases


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Weights of a 256-64-64-256 bottleneck",
        69632,
        points=0.5,
        explain="1x1 from 256 to 64: 256 * 64 = 16,384; 3x3 from 64 to 64: 64 * 64 * 9 = 36,864; 1x1 from 64 "
        "to 256: 64 * 256 = 16,384; in all 69,632 (the convolutions have no bias; the batch norms add 2 * "
        "(64 + 64 + 256) = 768 parameters, not asked for). Counting the 3x3 convolution at 256 channels, or "
        "the 1x1 ones as 3x3, gives far more.",
    ),
    Review(
        "r2",
        "Weights of two 3x3 convolutions from 256 to 256 channels",
        1179648,
        points=0.5,
        explain="Each has 256 * 256 * 9 = 589,824 weights, two of them 1,179,648: about 17 times the "
        "bottleneck of r1, which is why ResNet-50 uses bottlenecks where ResNet-34 uses basic blocks.",
    ),
    Review(
        "r3",
        "Parameters of squeeze-and-excitation on 256 channels, reduction 16",
        8464,
        points=0.5,
        explain="fc1 maps 256 to 256 // 16 = 16: 256 * 16 weights + 16 biases = 4,112; fc2 maps 16 back to "
        "256: 16 * 256 + 256 = 4,352; in all 8,464, a few per cent of the block it rescales.",
    ),
    Review(
        "r4",
        "Tokens of ViT-B/16 on a 224x224 image, class token included",
        197,
        points=0.5,
        explain="224 / 16 = 14 patches per side, 14 * 14 = 196 patches, plus the class token: 197 tokens "
        "(each of dimension 768).",
    ),
    Review(
        "r5",
        "A 56-layer plain CNN trains to a higher training error than a 20-layer one: which two are right?",
        {"b", "d"},
        points=0.5,
        explain="(a) is wrong: overfitting raises the *validation* error, not the training error. (c) is "
        "wrong: that is the degradation the experiment shows. (b) the deeper plain network is harder "
        "to optimize, and (d) a residual block starts near the identity (its branch near zero), so a "
        "deeper ResNet can do at least as well as a shallower one.",
    ),
]

WHY = "chapter 07's exercise asks you to build the blocks, not to take the finished ones"

QUESTIONS = [
    Question(
        "q1",
        "ResNet bottleneck block (torchvision's weights)",
        ("Bottleneck",),
        block_cases,
        points=2,
        forbid=("torchvision.models.resnet", "utils.models", *COURSE),
        why=WHY,
    ),
    Question(
        "q2",
        "Squeeze-and-excitation",
        ("SqueezeExcitation",),
        se_cases,
        forbid=("torchvision.ops.SqueezeExcitation", "utils.models", *COURSE),
        why=WHY,
    ),
    Question(
        "q3",
        "Counting parameters",
        ("count_parameters", "conv_params"),
        count_cases,
        forbid=("utils.flops", "utils.models", *COURSE),
        why="q3 asks for the counts worked out yourself",
    ),
    Question(
        "q4",
        "ViT patch embedding",
        ("PatchEmbedding",),
        patch_cases,
        forbid=("torchvision.models.vision_transformer", "utils.models", *COURSE),
        why=WHY,
    ),
    *REVIEW,
]
