"""Make-it-work questions: the learner trains something in the notebook and exposes a function, usually
``predict(images)``; the grader scores its predictions on data the notebook never loads.

How the grader runs one (:func:`utils.grading.grader.grade_notebook`): before any learner code runs it
draws the held-out inputs and labels (``data(seed)``: a split the exercise does not load, or scenes
from a secret seed). After the notebook has run, only the inputs go into the learner's kernel, cut
into batches of ``batch_size``; ``predict`` is called on each batch in turn and the grader takes the
outputs back, times the whole request with its own clock, and computes the metric itself against the
labels it kept. Past the time ``budget`` (seconds, for all batches together) the request is
interrupted and the question scores 0. Points come in steps: ``steps=((0.80, 2), (0.70, 1))`` gives
2 points from a score of 0.80 on, 1 from 0.70 on, else 0.

What ``predict`` returns, by metric: ``"accuracy"`` and ``"macro_f1"`` labels (N,) or class scores
(N, C) (argmax taken); ``"miou"`` label maps (N, H, W) or scores (N, C, H, W); ``"map"`` /
``"map_50"`` one dict per image with ``boxes`` (K, 4) xyxy, ``scores`` (K,) and ``labels`` (K,)
(COCO mAP from :mod:`utils.metrics.detection`). A callable ``metric(preds, targets) -> float`` works too.

For instructors::

    MakeItWork("q5", "Classify imbalanced digits", data=held_out_digits, metric="macro_f1",
               steps=((0.80, 2), (0.70, 1)), budget=30, preview=validation_digits)

``preview(seed)`` (optional) gives data the learner may see: the inline ``check("q5")`` scores on it,
so that the learner gets feedback without ever touching the held-out data. Chapter 03's exercise has
the first make-it-work question.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .compare import Raised, type_name
from .core import check_id, check_points

__all__ = ["METRICS", "MakeItWork", "Prediction", "score_predictions"]


@dataclass
class MakeItWork:
    """A make-it-work question (see the module docstring); its points are those of the highest step."""

    id: str
    title: str
    data: Callable[[int], tuple[Any, Any]]
    metric: str | Callable[[Any, Any], float] = "accuracy"
    steps: tuple[tuple[float, float], ...] = ((0.9, 2.0), (0.8, 1.0))
    function: str = "predict"
    budget: float = 60.0
    batch_size: int = 256
    num_classes: int | None = None
    preview: Callable[[int], tuple[Any, Any]] | None = None
    forbid: tuple[str, ...] = ()
    why: str = ""

    kind: ClassVar[str] = "make_it_work"

    def __post_init__(self) -> None:
        check_id(self.id)
        if not self.function.isidentifier():
            raise ValueError(f"question {self.id}: function must be a name, got {self.function!r}")
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise ValueError(
                f"question {self.id}: metric must be one of {sorted(METRICS)} or a function, "
                f"got {self.metric!r}"
            )
        steps = sorted(((float(bar), float(points)) for bar, points in self.steps), reverse=True)
        if not steps:
            raise ValueError(f"question {self.id}: steps must give at least one (bar, points) pair")
        for _, points in steps:
            check_points(self.id, points)
        self.steps = tuple(steps)
        if self.budget <= 0 or self.batch_size <= 0:
            raise ValueError(f"question {self.id}: budget and batch_size must be positive")
        self.forbid = tuple(self.forbid)

    @property
    def points(self) -> float:
        return max(points for _, points in self.steps)

    @property
    def functions(self) -> tuple[str, ...]:
        return (self.function,)

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "score")

    def watch_spec(self) -> dict | None:
        from .forbid import forbid_spec

        return forbid_spec(self.forbid, self.why or f"{self.id} asks you to train this yourself")

    def prepare(self, seed: int) -> tuple[list[Any], Any, int]:
        """``(batches of inputs, targets, number of inputs)``, drawn in the grading process."""
        inputs, targets = self.data(int(seed))
        n = len(inputs)
        if n == 0:
            raise ValueError(f"question {self.id}: data() returned no inputs")
        if self.metric_name.startswith("map"):
            import utils.metrics.detection  # noqa: F401  (imported before any learner code runs)
        return [inputs[i : i + self.batch_size] for i in range(0, n, self.batch_size)], targets, n

    def award(self, value: float) -> float:
        """The points of the highest step that ``value`` reaches."""
        return next((points for bar, points in self.steps if value >= bar), 0.0)

    def steps_text(self) -> str:
        return ", ".join(f"{_fmt(points)} at {bar:g}" for bar, points in self.steps)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --------------------------------------------------------------------------- predictions and metrics


@dataclass
class Prediction:
    """What came back from the learner's ``predict``: one output per batch, or why there is none."""

    outputs: list[Any] = field(default_factory=list)
    problem: str | None = None
    raised: Raised | None = None
    violation: str | None = None
    seconds: float = 0.0


def _labels(outputs: list[Any], sizes: Sequence[int], dims: int) -> torch.Tensor | str:
    """Concatenate per-batch labels (``dims`` dims each) or scores (``dims + 1``, argmax over dim 1)."""
    parts = []
    for number, (out, size) in enumerate(zip(outputs, sizes)):
        if not isinstance(out, torch.Tensor):
            return f"batch {number}: expected a torch.Tensor, got {type_name(out)}"
        out = out.detach()
        if out.dim() == dims + 1 and out.is_floating_point():
            out = out.argmax(dim=1)
        if out.dim() != dims or len(out) != size:
            return (
                f"batch {number}: expected labels of shape ({size}, ...) with {dims} dims or scores "
                f"with a class dimension, got shape {tuple(out.shape)}"
            )
        if out.is_floating_point() or out.is_complex():
            return f"batch {number}: labels must be integers, got {out.dtype}"
        parts.append(out.long())
    return torch.cat(parts)


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    from utils.metrics import confusion_matrix

    return confusion_matrix(pred.reshape(-1), target.reshape(-1), num_classes)


def _accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    return float((pred == target).double().mean())


def _macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    cm = _confusion(pred, target, num_classes).double()
    tp = cm.diag()
    denominator = cm.sum(0) + cm.sum(1)  # 2 TP + FP + FN
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean())


def _miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    cm = _confusion(pred, target, num_classes).double()
    union = cm.sum(0) + cm.sum(1) - cm.diag()
    present = union > 0  # classes in neither the prediction nor the target do not count
    return float((cm.diag()[present] / union[present]).mean()) if present.any() else 0.0


def _detections(outputs: list[Any], sizes: Sequence[int]) -> list[dict] | str:
    preds = []
    for number, (out, size) in enumerate(zip(outputs, sizes)):
        if not isinstance(out, (list, tuple)) or len(out) != size:
            return f"batch {number}: expected a list of {size} dicts (one per image), got {type_name(out)}"
        for det in out:
            keys = ("boxes", "scores", "labels")
            if not isinstance(det, dict) or not all(isinstance(det.get(k), torch.Tensor) for k in keys):
                return f"batch {number}: each image needs a dict with tensors 'boxes', 'scores' and 'labels'"
            preds.append({k: det[k].detach().cpu() for k in ("boxes", "scores", "labels")})
    return preds


METRICS: dict[str, str] = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "miou": "mIoU",
    "map": "mAP@[.5:.95]",
    "map_50": "mAP@.5",
}


def score_predictions(q: MakeItWork, outputs: list[Any], batches: list[Any], targets: Any) -> float | str:
    """The metric of the predictions against the targets, or one sentence saying why it cannot be computed."""
    sizes = [len(b) for b in batches]
    if len(outputs) != len(sizes):
        return f"expected outputs for {len(sizes)} batches, got {len(outputs)}"
    if callable(q.metric):
        try:
            return float(q.metric(outputs, targets))
        except ValueError as err:  # the metric's own sentence on predictions it cannot score
            return str(err)
    if q.metric in ("map", "map_50"):
        preds = _detections(outputs, sizes)
        if isinstance(preds, str):
            return preds
        from utils.metrics.detection import coco_map

        result = coco_map(preds, targets)
        return float(result["map" if q.metric == "map" else "map_50"])
    target = torch.as_tensor(targets).long()
    pred = _labels(outputs, sizes, target.dim())
    if isinstance(pred, str):
        return pred
    if pred.shape != target.shape:
        return f"expected predictions of shape {tuple(target.shape)} in all, got {tuple(pred.shape)}"
    num_classes = q.num_classes or int(max(int(target.max()), int(pred.max())) + 1)
    if int(pred.min()) < 0 or int(pred.max()) >= num_classes:
        return (
            f"labels must lie in 0..{num_classes - 1}, got values from {int(pred.min())} to {int(pred.max())}"
        )
    return {"accuracy": _accuracy, "macro_f1": _macro_f1, "miou": _miou}[q.metric](pred, target, num_classes)


def verdict(
    q: MakeItWork, prediction: Prediction, batches: list[Any], targets: Any, n: int
) -> tuple[float, str, bool]:
    """``(points, sentence, forbidden)`` for what came back from the kernel (or from an inline run)."""
    budget = f"the budget is {q.budget:g} s for all {n:,} held-out inputs"
    if prediction.violation is not None:
        return 0.0, prediction.violation, True
    if prediction.problem is not None:
        return 0.0, f"{prediction.problem} ({budget})", False
    if prediction.raised is not None:
        return 0.0, f"{q.function} {prediction.raised.describe()}", False
    value = score_predictions(q, prediction.outputs, batches, targets)
    if isinstance(value, str):
        return 0.0, value, False
    points = q.award(value)
    name = METRICS.get(q.metric_name, q.metric_name)
    text = (
        f"{name} {value:.4f} on {n:,} held-out inputs ({_fmt(points)}/{_fmt(q.points)} points; "
        f"steps: {q.steps_text()}); {q.function} took {prediction.seconds:.1f} s of its "
        f"{q.budget:g} s budget"
    )
    return points, text, False


def run_inline(q: MakeItWork, fn: Callable, seed: int) -> tuple[float, str, bool]:
    """The inline ``check`` of a make-it-work question: predictions on the preview data, in this process."""
    from .watch import Watch

    inputs, targets = q.preview(int(seed))
    batches = [inputs[i : i + q.batch_size] for i in range(0, len(inputs), q.batch_size)]
    prediction = Prediction()
    spec = q.watch_spec()
    start = time.perf_counter()
    try:
        for batch in batches:
            if spec:
                watch = Watch(spec)
                try:
                    with watch:
                        out = fn(batch)
                except BaseException:
                    if watch.violation is None:
                        raise
                if watch.violation is not None:
                    prediction.violation = watch.violation
                    break
            else:
                out = fn(batch)
            prediction.outputs.append(out)
    except Exception as err:
        prediction.raised = Raised(type(err).__name__, str(err))
    prediction.seconds = time.perf_counter() - start
    points, text, forbidden = verdict(q, prediction, batches, targets, len(inputs))
    return (
        points,
        text.replace("held-out inputs", "preview inputs (the grader uses held-out ones)"),
        forbidden,
    )
