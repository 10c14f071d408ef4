"""The 07_architectures questions: the reference answers of the solution notebook pass every case,
other correct answers pass too, plausible mistakes (the stride in the first convolution of the
bottleneck, the ReLU before the addition, an in-place addition into the input, a projection where
none is needed, other names, biased convolutions) fail with a helpful message and the course's own
block, which learners may not call, scores zero under the watch. Every question runs in-process with
``utils.grading.evaluate`` (the harness included)."""

from __future__ import annotations

import dataclasses
import math
import time

import nbformat
import pytest
import torch
from torch import nn

from conftest import ROOT, solution_namespace
from utils.grading import Question, Review, evaluate, get_assignment

ASSIGNMENT = "07_architectures"
QSET = get_assignment(ASSIGNMENT)
IMPLEMENT = [q for q in QSET.questions if isinstance(q, Question)]
REVIEWS = {q.id: q for q in QSET.questions if isinstance(q, Review)}

# Other correct answers: different but valid layer types (the checks must accept them).
ALTERNATIVES = {
    "q1": """
from utils.models.resnet import Bottleneck as _CourseBlock


class Bottleneck(_CourseBlock):  # the course's block: nn.ReLU modules, an in-place sum into its own output
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width, stride)
""",
    "q2": """
class SqueezeExcitation(nn.Module):  # 1x1 convolutions instead of linear layers
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
""",
    "q4": """
class PatchEmbedding(nn.Module):  # unfold + nn.Linear instead of a convolution
    def __init__(self, img_size, patch, in_ch, dim):
        super().__init__()
        if img_size % patch:
            raise ValueError(f"{img_size} is not a multiple of {patch}")
        self.patch = patch
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Linear(in_ch * patch * patch, dim)

    def forward(self, x):
        patches = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)  # (N, P, C*p*p)
        return self.proj(patches)
""",
}


def namespace(*extra: str) -> dict:
    return solution_namespace(ASSIGNMENT, *extra)


def functions_for(ns: dict, qid: str) -> dict:
    return {name: ns[name] for name in QSET.question(qid).functions}


def test_question_set():
    assert QSET.ids == ["q1", "q2", "q3", "q4", "r1", "r2", "r3", "r4", "r5"] and QSET.max_score == 7.5
    assert QSET.question("q1").points == 2 and QSET.question("q1").functions == ("Bottleneck",)
    for q in IMPLEMENT:
        assert len(q.cases(0)) >= 5


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_reference_answers_pass_every_case(seed):
    ns = namespace()
    for q in IMPLEMENT:
        result = evaluate(q, functions_for(ns, q.id), seed=seed)
        assert result.passed, result.line()


@pytest.mark.parametrize("qid", list(ALTERNATIVES))
def test_other_correct_answers_pass(qid):
    ns = namespace(ALTERNATIVES[qid])
    q = QSET.question(qid)
    if qid == "q1":  # the course's own block is forbidden to learners, and must still be right by the checks
        q = dataclasses.replace(q, forbid=())
    result = evaluate(q, functions_for(ns, qid), seed=3)
    assert result.passed, result.line()


def test_cases_are_fast_and_fresh():
    ns = namespace()
    for q in IMPLEMENT:
        start = time.process_time()  # CPU time: the machine may be shared
        evaluate(q, functions_for(ns, q.id), seed=0)
        assert time.process_time() - start < 2.0, q.id
    a, b = QSET.question("q1").cases(1), QSET.question("q1").cases(2)
    assert not torch.equal(a[0].args["x"], b[0].args["x"])
    assert torch.equal(a[0].args["x"], QSET.question("q1").cases(1)[0].args["x"])


BROKEN = {
    "block: the stride in the first 1x1 convolution (the original ResNet)": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=stride, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
""",
        ["torchvision's weights, projection", "values off", "the stride sits in the 3x3 convolution conv2"],
    ),
    "block: ReLU before the addition": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.relu(self.bn3(self.conv3(out)))
        return out + (x if self.downsample is None else self.downsample(x))
""",
        ["torchvision's weights", "values off", "the ReLU comes after the addition"],
    ),
    "block: an in-place addition into its input": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def forward(self, x):
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu_(shortcut.add_(out))  # the identity shortcut is x itself: this writes into the input
""",
        ["identity shortcut", "its argument `x`"],
    ),
    "block: always a projection": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width, stride)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_ch, 4 * width, 1, stride=stride, bias=False), nn.BatchNorm2d(4 * width)
        )
""",
        ["parameter count, 64 -> 16 -> 64, stride 1", "a projection shortcut only when"],
    ),
    "block: other names": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width, stride)
        self.shortcut = self.downsample
        self.downsample = None

    def forward(self, x):
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))
""",
        ["raised RuntimeError", "Error(s) in loading state_dict", "downsample.0"],
    ),
    "block: biased convolutions": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1)
""",
        ["parameter count", "without bias"],
    ),
    "block: 4 * width forgotten (out = width)": (
        "q1",
        """
class Bottleneck(Bottleneck):
    def __init__(self, in_ch, width, stride=1):
        super().__init__(in_ch, width // 4 if width >= 4 else width, stride)
""",
        ["output shape"],
    ),
    "SE: no sigmoid": (
        "q2",
        """
class SqueezeExcitation(SqueezeExcitation):
    def forward(self, x):
        s = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        return x * s[:, :, None, None]
""",
        ["values off", "sigmoid"],
    ),
    "SE: in place": (
        "q2",
        """
class SqueezeExcitation(SqueezeExcitation):
    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x.mul_(s[:, :, None, None])
""",
        ["modified its argument `x`"],
    ),
    "SE: max instead of mean": (
        "q2",
        """
class SqueezeExcitation(SqueezeExcitation):
    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.amax(dim=(2, 3))))))
        return x * s[:, :, None, None]
""",
        ["values off", "the mean over H and W"],
    ),
    "count: buffers counted": (
        "q3",
        """
def count_parameters(model):
    return sum(t.numel() for t in model.state_dict().values())
""",
        ["count_parameters", "not the buffers"],
    ),
    "count: trainable only": (
        "q3",
        """
def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
""",
        ["frozen", "count frozen parameters too"],
    ),
    "count: shared twice": (
        "q3",
        """
def count_parameters(model):  # loops over the layers: a layer used twice is counted twice
    return sum(p.numel() for layer in model for p in layer.parameters())
""",
        ["shared weights count once"],
    ),
    "conv: bias forgotten": (
        "q3",
        """
def conv_params(in_ch, out_ch, k, bias=True):
    return out_ch * in_ch * k * k
""",
        ["conv_params(", "bias=True", "one bias per output channel"],
    ),
    "patches: column-major order": (
        "q4",
        """
class PatchEmbedding(PatchEmbedding):
    def forward(self, x):
        return self.proj(x).transpose(2, 3).flatten(2).transpose(1, 2)
""",
        ["values off", "row-major"],
    ),
    "patches: no transpose": (
        "q4",
        """
class PatchEmbedding(PatchEmbedding):
    def forward(self, x):
        return self.proj(x).flatten(2)
""",
        ["wrong shape", "transpose"],
    ),
    "patches: no check": (
        "q4",
        """
class PatchEmbedding(PatchEmbedding):
    def __init__(self, img_size, patch, in_ch, dim):
        nn.Module.__init__(self)
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)
""",
        ["raises ValueError", "expected True, got False"],
    ),
    "not implemented": (
        "q4",
        """
class PatchEmbedding(nn.Module):
    def __init__(self, img_size, patch, in_ch, dim):
        super().__init__()
        raise NotImplementedError("Replace this line with your solution.")
""",
        ["0/", "not implemented yet"],
    ),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_plausible_mistakes_fail_with_a_helpful_message(label):
    qid, source, fragments = BROKEN[label]
    ns = namespace(source)
    result = evaluate(QSET.question(qid), functions_for(ns, qid), seed=0)
    assert not result.passed and result.score == 0
    feedback = result.feedback()
    for fragment in fragments:
        assert fragment in feedback, feedback


def test_the_course_block_scores_zero_under_the_watch():
    ns = namespace(ALTERNATIVES["q1"])
    result = evaluate(QSET.question("q1"), functions_for(ns, "q1"), seed=0)
    assert result.score == 0 and result.first_failure.forbidden, result.line()
    assert "utils.models" in result.feedback() and "which this question forbids" in result.feedback()


def _solution_answers() -> dict:
    nb = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    ns: dict = {}
    exec(next(c.source for c in nb.cells if c.get("id") == "review-answers"), ns)
    return ns["answers"]


def _weights(*layers: nn.Module) -> int:
    return sum(p.numel() for layer in layers for p in layer.parameters())


def test_the_review_answers_are_what_their_definitions_give():
    bottleneck = (
        nn.Conv2d(256, 64, 1, bias=False),
        nn.Conv2d(64, 64, 3, bias=False),
        nn.Conv2d(64, 256, 1, bias=False),
    )
    assert REVIEWS["r1"].answer == _weights(*bottleneck)
    assert REVIEWS["r2"].answer == _weights(
        nn.Conv2d(256, 256, 3, bias=False), nn.Conv2d(256, 256, 3, bias=False)
    )
    from torchvision.ops import SqueezeExcitation

    assert REVIEWS["r3"].answer == _weights(SqueezeExcitation(256, 256 // 16))
    assert REVIEWS["r4"].answer == (224 // 16) ** 2 + 1
    from torchvision.models import vit_b_16

    vit = vit_b_16()
    tokens = vit._process_input(torch.zeros(1, 3, 224, 224)).shape[1] + vit.class_token.shape[1]
    assert REVIEWS["r4"].answer == tokens
    assert REVIEWS["r5"].answer == {"b", "d"}
    assert math.isclose(REVIEWS["r2"].answer / REVIEWS["r1"].answer, 16.94, abs_tol=0.01)  # "about 17 times"


def test_the_solution_answers_are_right_and_the_usual_mistakes_are_not():
    answers = _solution_answers()
    for q in REVIEWS.values():
        assert q.verdict(answers) == (True, "right"), q.id
    mistakes = {"r1": 81920, "r2": 589824, "r3": 8192, "r4": 196, "r5": {"a", "d"}}
    for qid, wrong in mistakes.items():
        right, message = REVIEWS[qid].verdict({qid: wrong})
        assert not right and REVIEWS[qid].explain in message, message
    right, message = REVIEWS["r1"].verdict({"r1": 69632.0})
    assert not right and "expected an int" in message
