"""Chapter 09 (assignment ``09_transfer_learning``): transfer and representation learning.

Every case draws fresh random inputs from the generator it is given; the expected values are
computed in the grading process by the references below (q1) and by :mod:`utils.transfer` (q2, q3),
which the learner's code may not call. Tolerances: float32 ``1e-5 + 1e-4 * |expected|``, float64
``1e-10 + 1e-8 * |expected|``; running statistics ``1e-4 + 1e-4 * |expected|``.

* q1 ``supcon_loss(z, labels, temperature)``: the supervised contrastive loss of Khosla et al. (2020),
  the variant with the mean over positives outside the log (their ``L_out``): embeddings (N, D)
  L2-normalised, ``s_ij`` their cosine similarity over the temperature; for every anchor i with at
  least one positive (another row with its label), ``-mean_{p in P(i)} log softmax_{a != i}(s_ia)[p]``;
  the mean over those anchors. Checked on the value and on the gradient with respect to ``z``:
  several classes, two views of each image (where it equals NT-Xent), a class with a single image
  (an anchor without a positive is left out), one class only, float64, embeddings of scale 1000.
* q2 ``discriminative_param_groups(model, base_lr, factor)``: optimizer groups for any model of the
  backbone contract; checked on what they contain: every trainable parameter exactly once, frozen ones
  absent, and each parameter's learning rate (head ``base_lr``, ``stages[-1]`` times ``factor``, ...,
  the stem and anything outside the stages the next power). MobileNetV2 and ResNet-18 with several
  parts frozen, ``factor`` 1.
* q3 ``adabn_(model, images, batch_size)``: AdaBN in place; the running mean and unbiased variance
  of every batch-norm layer must equal those of all the values the layer receives in one pass over
  ``images`` in batches (batch norm in train mode, everything else in eval mode), the weights,
  ``num_batches_tracked`` and the modes unchanged. Batches of unequal size and images sorted by
  brightness (where the running average of the batch variances, PyTorch's ``momentum=None``, is wrong),
  a model in train mode with dropout, BatchNorm1d, a MobileNetV2.
* q4 (make it work, 2 points) ``predict(images (B, 1, 28, 28)) -> labels (B,)`` (or scores (B, 10)): a
  classifier of the animal silhouettes trained on 20 labelled images per class; its accuracy on the
  1,998 images of the test split, which the exercise never loads; 2 points from 0.75, 1 from 0.65
  (a linear probe at 32 pixels reaches about 0.67 on the validation images; the reference, a probe at
  40 pixels on features averaged with the mirrored image's, about 0.79); 300 s for all predictions.
* r1-r6 (review, half a point each).

Forbidden while the answers run: the course's :mod:`utils.ssl` and :mod:`utils.transfer` (which hold
the chapter's versions) and ``utils.scratch`` / ``utils.ops`` / ``utils.metrics`` in q1-q3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..challenge import MakeItWork
from ..core import Case, Code, Question
from ..forbid import COURSE
from ..review import Review

ASSIGNMENT = "09_transfer_learning"
TITLE = "Transfer learning and representation learning"

F32, F64 = torch.float32, torch.float64
TOL = {F32: {"atol": 1e-5, "rtol": 1e-4}, F64: {"atol": 1e-10, "rtol": 1e-8}}
OWN = ("utils.ssl", "utils.transfer", *COURSE)

# --------------------------------------------------------------------------- q1 supervised contrastive


def supcon_reference(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference of q1 (see the module docstring)."""
    n = len(z)
    zn = F.normalize(z, dim=1)
    self_mask = torch.eye(n, dtype=torch.bool)
    logits = (zn @ zn.T / temperature).masked_fill(self_mask, float("-inf"))  # (N, N)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask  # (N, N)
    count = positives.sum(dim=1)  # (N,)
    has = count > 0
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has] / count[has]
    return per_anchor.mean()


# the loss and its gradient with respect to z, as raw values
SUPCON = Code(
    "lambda supcon_loss, z, labels, temperature: (lambda zz: (lambda loss: (loss.detach(), "
    "torch.autograd.grad(loss, zz)[0]))(supcon_loss(zz, labels, temperature)))"
    "(z.detach().clone().requires_grad_(True))"
)

SUPCON_HINT = (
    "normalise the rows of z, take all pairwise similarities over the temperature, exclude each anchor "
    "from its own softmax (fill the diagonal with -inf before logsumexp), average -log_prob over the "
    "positives of each anchor (same label, not itself), then average over the anchors that have at "
    "least one positive; return a 0-dim tensor that autograd can differentiate"
)


def supcon_cases(g: torch.Generator) -> list[Case]:
    def labels_of(*values: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    n_views = 5
    two_views = torch.arange(n_views).repeat(2)  # (10,) image i and i + 5 share a label: NT-Xent
    inputs = [
        (
            "N=8, D=16, 3 classes, temperature 0.1",
            torch.randn(8, 16, generator=g),
            torch.randint(0, 3, (8,), generator=g),
            0.1,
        ),
        (
            "two views of 5 images (NT-Xent), temperature 0.5",
            torch.randn(10, 12, generator=g),
            two_views,
            0.5,
        ),
        (
            "a class with a single image (no positive)",
            torch.randn(7, 8, generator=g),
            labels_of(0, 0, 1, 1, 1, 2, 0),
            0.2,
        ),
        ("one class only", torch.randn(5, 6, generator=g), labels_of(4, 4, 4, 4, 4), 0.3),
        (
            "float64, temperature 0.07",
            torch.randn(9, 10, generator=g, dtype=F64),
            torch.randint(0, 2, (9,), generator=g),
            0.07,
        ),
        (
            "embeddings of scale 1000 (normalise first)",
            torch.randn(6, 8, generator=g) * 1000,
            labels_of(0, 1, 0, 1, 2, 2),
            0.5,
        ),
        ("N=2, the same label", torch.randn(2, 4, generator=g), labels_of(1, 1), 1.0),
    ]
    cases = []
    for label, z, y, t in inputs:
        zz = z.detach().clone().requires_grad_(True)
        loss = supcon_reference(zz, y, t)
        (grad,) = torch.autograd.grad(loss, zz)
        cases.append(
            Case(
                label,
                "supcon_loss",
                {"z": z, "labels": y, "temperature": t},
                (loss.detach(), grad),
                **TOL[z.dtype],
                hint=SUPCON_HINT,
                unchanged=("z", "labels"),
                outputs=("loss", "gradient with respect to z"),
                harness=SUPCON,
            )
        )
    return cases


# --------------------------------------------------------------------------- q2 parameter groups

MODELS = "__import__('utils.models', fromlist=['_'])"
FREEZE = "lambda parts, m: ([p.requires_grad_(False) for part in parts(m) for p in part.parameters()], m)[-1]"
GROUP_MODELS = [
    ("MobileNetV2 (width 0.35), everything trainable", f"lambda: {MODELS}.mobilenet_v2(10, width_mult=0.35)"),
    (
        "ResNet-18 (width 8), the stem and the first two stages frozen",
        f"lambda: ({FREEZE})(lambda m: [m.stem, m.stages[0], m.stages[1]], {MODELS}.resnet18(10, width=8))",
    ),
    (
        "MobileNetV2 (width 0.35), only the head trainable",
        f"lambda: ({FREEZE})(lambda m: [m.stem, *m.stages], {MODELS}.mobilenet_v2(7, width_mult=0.35))",
    ),
    (
        "ResNet-18 (width 8), the third stage frozen (a gap in the middle)",
        f"lambda: ({FREEZE})(lambda m: [m.stages[2]], {MODELS}.resnet18(5, width=8))",
    ),
]
# per parameter of model.parameters(): how many groups hold it, and the learning rate it gets (0 if none)
GROUPS = Code(
    "lambda discriminative_param_groups, make, base_lr, factor: (lambda m: (lambda gs: ("
    "torch.tensor([sum(1 for g in gs for q in g['params'] if q is p) for p in m.parameters()]), "
    "torch.tensor([next((float(g['lr']) for g in gs for q in g['params'] if q is p), 0.0) "
    "for p in m.parameters()], dtype=torch.float64)))"
    "([dict(g, params=list(g['params'])) for g in discriminative_param_groups(m, base_lr, factor)]))(make())"
)

GROUPS_HINT = (
    "go from the output to the input: model.get_classifier() at base_lr, model.stages[-1] at "
    "base_lr * factor, model.stages[-2] at base_lr * factor**2, ..., then every parameter not yet placed "
    "(the stem, anything outside the stages) at the next power; keep only parameters with "
    "requires_grad, never the same parameter twice; each group is a dict {'params': [...], 'lr': ...}"
)


def groups_cases(g: torch.Generator) -> list[Case]:
    from utils.transfer import discriminative_param_groups

    cases = []
    for i, (label, source) in enumerate(GROUP_MODELS):
        base_lr = float(10 ** torch.empty(1).uniform_(-4, -1, generator=g))
        factor = 1.0 if i == 3 else round(float(torch.empty(1).uniform_(0.1, 0.9, generator=g)), 3)
        expected = GROUPS(discriminative_param_groups, Code(source), base_lr, factor)
        cases.append(
            Case(
                f"{label}, base_lr {base_lr:.2e}, factor {factor}",
                "discriminative_param_groups",
                {"make": Code(source), "base_lr": base_lr, "factor": factor},
                expected,
                atol=0.0,
                rtol=1e-9,
                hint=GROUPS_HINT,
                outputs=("groups holding each parameter", "learning rate of each parameter"),
                harness=GROUPS,
            )
        )
    return cases


# --------------------------------------------------------------------------- q3 AdaBN

BN = "nn.modules.batchnorm._BatchNorm"
# random weights and running statistics (variances in [0.5, 1.5]) from a seeded generator
RANDOMIZE = (
    "lambda seed, m: (lambda gen: ([t.data.copy_(torch.rand(t.shape, generator=gen) + 0.5 if n.endswith("
    "'running_var') else torch.randn(t.shape, generator=gen) * 0.3) for n, t in list(m.named_parameters()) "
    "+ [(n, b) for n, b in m.named_buffers() if b.is_floating_point()]], m)[-1])"
    "(torch.Generator().manual_seed(seed))"
)
SMALL = (
    "nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), "
    "nn.Conv2d(8, 8, 3, stride=2), "
    "nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6))"
)
ADABN_MODELS = {
    "small": f"lambda: ({RANDOMIZE})(1, {SMALL})",
    "mobilenet": f"lambda: ({RANDOMIZE})(2, {MODELS}.mobilenet_v2(4, width_mult=0.35))",
}
ADABN = Code(
    "lambda adabn_, make, images, batch_size, train_mode: (lambda m: (m.train(train_mode), "
    "adabn_(m, images, batch_size), (lambda bns: (torch.cat([b.running_mean for b in bns]), "
    f"torch.cat([b.running_var for b in bns]), torch.cat([p.detach().flatten() for p in m.parameters()]), "
    "torch.tensor([x.training for x in m.modules()]), torch.stack([b.num_batches_tracked for b in bns])))"
    f"([b for b in m.modules() if isinstance(b, {BN})]))[-1])(make())"
)

ADABN_HINT = (
    "put the model in eval mode and only its batch-norm layers in train mode (so that each normalises "
    "with its batch, as in training, while dropout is off); forward hooks on the batch-norm layers add up, "
    "per channel, the sum and the sum of squares of their inputs and the count over all batches; then "
    "running_mean = sum / n and running_var = (sumsq - n * mean**2) / (n - 1); restore every module's "
    "mode and num_batches_tracked; averaging per-batch variances (momentum=None) is not the variance of "
    "all the values"
)


def adabn_cases(g: torch.Generator) -> list[Case]:
    from utils.transfer import adabn

    def reference(make: str, images: torch.Tensor, batch_size: int, train_mode: bool):
        return ADABN(lambda m, x, b: adabn(m, x, batch_size=b), Code(make), images, batch_size, train_mode)

    bright = torch.rand(36, 3, 12, 12, generator=g) + torch.linspace(-1, 2, 36).view(36, 1, 1, 1)
    inputs = [
        (
            "small CNN in eval mode, 40 images in batches of 16 (the last has 8)",
            "small",
            torch.randn(40, 3, 12, 12, generator=g) * 2 + 1,
            16,
            False,
        ),
        ("images sorted by brightness, batches of 12", "small", bright, 12, False),
        (
            "a model in train mode, with dropout: modes restored",
            "small",
            torch.randn(30, 3, 10, 10, generator=g),
            7,
            True,
        ),
        ("one batch larger than the data", "small", torch.randn(9, 3, 12, 12, generator=g), 64, False),
        (
            "MobileNetV2 (width 0.35), 32x32 images",
            "mobilenet",
            torch.randn(14, 3, 32, 32, generator=g),
            6,
            False,
        ),
    ]
    cases = []
    for label, model, images, batch_size, train_mode in inputs:
        make = ADABN_MODELS[model]
        cases.append(
            Case(
                label,
                "adabn_",
                {"make": Code(make), "images": images, "batch_size": batch_size, "train_mode": train_mode},
                reference(make, images, batch_size, train_mode),
                atol=1e-4,
                rtol=1e-4,
                hint=ADABN_HINT,
                unchanged=("images",),
                outputs=("running means", "running variances", "parameters", "modes", "num_batches_tracked"),
                harness=ADABN,
            )
        )
    return cases


# --------------------------------------------------------------------------- q4 make it work


def few_labels(per_class: int = 20, n_val: int = 300) -> tuple[torch.Tensor, ...]:
    """``x_fit, y_fit`` (``per_class`` images of each class) and ``x_val, y_val`` (``n_val`` other images),
    all from the animals' train split: (N, 1, 28, 28) floats in [0, 1] and int64 labels."""
    import utils.data

    train = utils.data.animals("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(9))
    y = train.targets[order]
    fit = torch.cat([order[y == c][:per_class] for c in range(10)])
    val = order[~torch.isin(order, fit)][:n_val]
    return train.images[fit], train.targets[fit], train.images[val], train.targets[val]


def held_out_animals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grader's data for q4: the 1,998 images of the animals' test split, and their labels."""
    del seed  # a fixed split: the exercise never loads it
    import utils.data

    test = utils.data.animals("test")
    return test.images, test.targets


def _validation_animals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    del seed
    _, _, x_val, y_val = few_labels()
    return x_val, y_val


# --------------------------------------------------------------------------- review questions

REVIEW = [
    Review(
        "r1",
        "Parameters of a linear probe",
        12810,
        points=0.5,
        explain="The probe is one linear layer from the 1,280 pooled features to the 10 classes: "
        "1280 * 10 weights + 10 biases = 12,810. The 2.2 million parameters of the backbone stay frozen.",
    ),
    Review(
        "r2",
        "Discriminative learning rate of the first stage",
        3.125e-5,
        rtol=0.01,
        points=0.5,
        explain="Head 1e-3, stages[4] 5e-4, stages[3] 2.5e-4, stages[2] 1.25e-4, stages[1] 6.25e-5, "
        "stages[0] = 1e-3 * 0.5**5 = 3.125e-5: one factor per step down, five steps from the head.",
    ),
    Review(
        "r3",
        "Negatives per view in SimCLR",
        254,
        points=0.5,
        explain="A batch of 128 images gives 256 views; for one view, itself and its positive are left "
        "out, so 256 - 2 = 254 views are its negatives.",
    ),
    Review(
        "r4",
        "NT-Xent at chance",
        5.5413,
        atol=0.001,
        rtol=0.0,
        points=0.5,
        explain="With all similarities equal, the softmax over the 2N - 1 = 255 other views gives the "
        "positive 1/255, and the loss is ln 255 = 5.541. A SimCLR run that stays there learns nothing.",
    ),
    Review(
        "r5",
        "300 grey X-ray images and an ImageNet ResNet",
        {"a", "c"},
        points=0.5,
        explain="(a) the network expects three channels normalised with ImageNet's statistics, so "
        "repeat the grey channel and normalise; (c) with 300 images start with a linear probe and "
        "fine-tune from its head with small learning rates. (b) a learning rate of 0.1 from a random head "
        "wrecks the pretrained features; (d) skipping the normalisation costs accuracy whatever the domain.",
    ),
    Review(
        "r6",
        "A darker camera, no labels",
        "a",
        points=0.5,
        explain="(a) AdaBN re-estimates the batch-norm statistics on unlabelled images of the new camera "
        "and needs nothing else. (b) retraining the head needs labels; (c) freezing batch norm keeps the "
        "old statistics, which are the problem; (d) dropout does not change the input statistics.",
    ),
]

QUESTIONS = [
    Question(
        "q1",
        "Supervised contrastive loss (value and gradient)",
        ("supcon_loss",),
        supcon_cases,
        forbid=OWN,
        why="q1 asks for the loss written with tensor operations",
    ),
    Question(
        "q2",
        "Discriminative learning rates for any backbone",
        ("discriminative_param_groups",),
        groups_cases,
        forbid=OWN,
        why="q2 asks for the parameter groups built yourself",
    ),
    Question(
        "q3",
        "AdaBN",
        ("adabn_",),
        adabn_cases,
        forbid=OWN,
        why="q3 asks for AdaBN written yourself",
    ),
    MakeItWork(
        "q4",
        "Make it work: silhouettes from 20 labels per class",
        held_out_animals,
        metric="accuracy",
        num_classes=10,
        steps=((0.75, 2), (0.65, 1)),
        budget=300,
        batch_size=500,
        preview=_validation_animals,
    ),
    *REVIEW,
]
