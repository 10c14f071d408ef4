"""``compare(actual, expected)``: ``None`` when a learner's output matches the reference, else one
sentence that says how it differs. Chapter 01 explains tolerances for float32 and float64.

The expected value decides what is checked:

* a tensor: type, shape, dtype, ``requires_grad`` (a returned tensor still attached to the autograd
  graph when the reference is not), NaN / Inf where the reference is finite, then the values
  (``|got - expected| <= atol + rtol * |expected|``; ``atol = rtol = 0``: exact);
* a tuple or list: the same length, then each element (``outputs`` names them in messages);
* a dict (e.g. of tensors): the same keys, then each value;
* a :class:`BoxSet`: detections matched to the expected boxes one to one by IoU, order ignored;
* an ``int``: an ``int`` (``27.0`` is not accepted for ``27``); a ``float``: any number within the
  tolerance; ``bool``, ``str`` and ``None``: equal and of the same type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BoxSet", "Opaque", "Raised", "compare", "tolerance_text", "type_name"]


@dataclass(frozen=True)
class Raised:
    """The learner's function raised ``type_name(message)``."""

    type_name: str
    message: str

    def describe(self) -> str:
        if self.type_name == "NotImplementedError":
            return "not implemented yet (the function still raises NotImplementedError)"
        message = self.message.strip().splitlines()[0] if self.message.strip() else ""
        if len(message) > 300:
            message = message[:297] + "..."
        return f"raised {self.type_name}" + (f": {message}" if message else "")


@dataclass(frozen=True)
class Opaque:
    """A returned value of a type that the grader does not read back (it only keeps the type name)."""

    type_name: str


@dataclass
class BoxSet:
    """An expected set of detections, compared without regard to order (chapters 10 and 11).

    ``boxes`` Tensor[K, 4] (x1, y1, x2, y2); optional ``labels`` Tensor[K] (compared exactly) and
    ``scores`` Tensor[K] (within ``score_atol``). The learner's value is a dict with ``"boxes"``
    (and ``"labels"``, ``"scores"`` where expected), as torchvision's detectors return, or a
    Tensor[K, 4]. Each expected box is matched to a distinct returned box with the same label and
    IoU >= ``min_iou`` (greedily, best IoU first); every box must be matched, with none left over.
    """

    boxes: torch.Tensor
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    min_iou: float = 0.99
    score_atol: float = 1e-4

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float64).reshape(-1, 4)
        k = len(self.boxes)
        for name in ("labels", "scores"):
            value = getattr(self, name)
            if value is not None:
                value = torch.as_tensor(value).reshape(-1)
                if len(value) != k:
                    raise ValueError(f"BoxSet: {name} has {len(value)} entries for {k} boxes")
                setattr(self, name, value)
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"BoxSet: min_iou must be in (0, 1], got {self.min_iou}")


def type_name(value: Any) -> str:
    """A short type name for messages: ``float``, ``numpy.ndarray``, ``torch.Tensor``."""
    if isinstance(value, Opaque):
        return value.type_name
    if isinstance(value, torch.Tensor):
        return "torch.Tensor"
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", None) else f"{module}.{cls.__qualname__}"


def tolerance_text(atol: float, rtol: float) -> str:
    """How a tolerance reads in feedback: ``exact`` or ``|got - expected| <= 1e-05 + 1e-05 * |expected|``."""
    if atol == 0 and rtol == 0:
        return "exact match required"
    return f"tolerance |got - expected| <= {atol:g} + {rtol:g} * |expected|"


def _shape(t: torch.Tensor) -> str:
    shape = tuple(t.shape)
    return "() (a 0-dim tensor)" if shape == () else str(shape)


def compare(
    actual: Any, expected: Any, *, atol: float = 0.0, rtol: float = 0.0, outputs: tuple[str, ...] = ()
) -> str | None:
    """Compare a learner's output with the reference; ``None`` when it matches, else one sentence
    (see the module docstring for what each kind of expected value checks)."""
    if isinstance(actual, Raised):
        return actual.describe()
    if isinstance(expected, (tuple, list)):
        names = (
            tuple(outputs)
            if len(outputs) == len(expected)
            else tuple(f"output[{i}]" for i in range(len(expected)))
        )
        listing = f"{len(expected)} values ({', '.join(names)})"
        if not isinstance(actual, (tuple, list)):
            return f"expected a tuple of {listing}, got {type_name(actual)}"
        if len(actual) != len(expected):
            return f"expected a tuple of {listing}, got {len(actual)} value{'s' if len(actual) != 1 else ''}"
        for name, got, want in zip(names, actual, expected):
            message = compare(got, want, atol=atol, rtol=rtol)
            if message is not None:
                return f"{name}: {message}"
        return None
    if isinstance(expected, dict):
        return _compare_dict(actual, expected, atol, rtol)
    if isinstance(expected, BoxSet):
        return _compare_boxes(actual, expected)
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(actual, expected, atol, rtol)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if actual != expected or type(actual) is not type(expected):
            return f"expected {expected!r}, got {actual!r}"
        return None
    if isinstance(expected, int):
        if isinstance(actual, bool) or not isinstance(actual, int):
            shown = f" {actual!r}" if isinstance(actual, float) else ""
            return (
                f"expected an int, got {type_name(actual)}{shown} (return an int, e.g. with // or int(...))"
            )
        if abs(actual - expected) > atol + rtol * abs(expected):
            return f"values off: got {actual}, expected {expected} ({tolerance_text(atol, rtol)})"
        return None
    if isinstance(expected, float):
        if isinstance(actual, torch.Tensor) and actual.numel() == 1:
            actual = actual.item()
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return f"expected a number, got {type_name(actual)}"
        if not math.isfinite(actual) and math.isfinite(expected):
            return f"got {actual}, expected the finite value {expected:.6g}"
        if abs(actual - expected) > atol + rtol * abs(expected):
            return f"values off: got {actual:.6g}, expected {expected:.6g} ({tolerance_text(atol, rtol)})"
        return None
    raise TypeError(f"compare() does not know how to compare with an expected {type_name(expected)}")


def _compare_dict(actual: Any, expected: dict, atol: float, rtol: float) -> str | None:
    if not isinstance(actual, dict):
        return f"expected a dict with keys {sorted(expected)}, got {type_name(actual)}"
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        return f"expected the keys {sorted(expected)}: {', '.join(parts)}"
    for key, want in expected.items():
        message = compare(actual[key], want, atol=atol, rtol=rtol)
        if message is not None:
            return f"key {key!r}: {message}"
    return None


def _compare_tensor(actual: Any, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    if not isinstance(actual, torch.Tensor):
        return f"expected a torch.Tensor, got {type_name(actual)}"
    if actual.requires_grad and not expected.requires_grad:
        return (
            "the returned tensor still requires grad (it is attached to the autograd graph); return a "
            "tensor that does not, e.g. computed under torch.no_grad() or with .detach()"
        )
    if expected.requires_grad and not actual.requires_grad:
        return "the returned tensor must require grad (like the reference), but it does not"
    actual = actual.detach()
    if actual.device.type != "cpu":
        actual = actual.cpu()
    expected = expected.detach().cpu()
    if actual.shape != expected.shape:
        return f"wrong shape: expected {_shape(expected)}, got {_shape(actual)}"
    if actual.dtype != expected.dtype:
        return f"wrong dtype: expected {expected.dtype}, got {actual.dtype}"
    if actual.is_floating_point() or actual.is_complex():
        bad = ~torch.isfinite(actual) & torch.isfinite(expected)
        if bad.any():
            n_nan = int(torch.isnan(actual)[bad].sum())
            n_inf = int(bad.sum()) - n_nan
            parts = (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "")
            what = " and ".join(part for part in parts if part)
            return f"contains {what} (of {actual.numel()} values) where the reference is finite"
        if actual.numel() == 0:
            return None
        same_special = ~torch.isfinite(expected) & (actual == expected)
        diff = (actual.to(torch.float64) - expected.to(torch.float64)).abs()
        diff = torch.where(same_special, torch.zeros_like(diff), diff)
        allowed = atol + rtol * expected.to(torch.float64).abs()
        over = diff > allowed
        if over.any():
            worst = int(torch.argmax(torch.where(over, diff - allowed, torch.zeros_like(diff))))
            index = (
                tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual.shape))
                if actual.dim()
                else ()
            )
            where = f" at index {index}" if index else ""
            got, want = float(actual.reshape(-1)[worst]), float(expected.reshape(-1)[worst])
            return (
                f"values off: max abs error {float(diff.max()):.3g} ({int(over.sum())} of "
                f"{actual.numel()} values outside the tolerance; e.g.{where} got {got:.8g}, "
                f"expected {want:.8g}); {tolerance_text(atol, rtol)}"
            )
        return None
    if not torch.equal(actual, expected):
        n = int((actual != expected).sum())
        return f"values off: {n} of {actual.numel()} values differ (exact match required)"
    return None


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (K, 4) with every box of ``b`` (M, 4): (K, M); empty boxes give 0."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _box_text(box: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in box) + "]"


def _compare_boxes(actual: Any, expected: BoxSet) -> str | None:
    fields = {"boxes": actual} if isinstance(actual, torch.Tensor) else actual
    wanted = ["boxes"] + [n for n in ("labels", "scores") if getattr(expected, n) is not None]
    if not isinstance(fields, dict):
        return f"expected a dict with {wanted} (or a Tensor[K, 4] of boxes), got {type_name(actual)}"
    for name in wanted:
        if not isinstance(fields.get(name), torch.Tensor):
            got = type_name(fields.get(name)) if name in fields else "none"
            return f"expected {name!r} as a torch.Tensor, got {got}"
    boxes = fields["boxes"].detach().cpu().to(torch.float64)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        if not (boxes.numel() == 0 and len(expected.boxes) == 0):
            return f"boxes: expected a Tensor[K, 4], got shape {tuple(boxes.shape)}"
        boxes = boxes.reshape(0, 4)
    if len(boxes) != len(expected.boxes):
        return f"expected {len(expected.boxes)} boxes, got {len(boxes)}"
    for name in wanted[1:]:
        if fields[name].reshape(-1).shape[0] != len(boxes):
            return f"{name}: expected one per box ({len(boxes)}), got shape {tuple(fields[name].shape)}"
    if len(boxes) == 0:
        return None
    iou = _iou(expected.boxes, boxes)
    if expected.labels is not None:
        same = expected.labels.reshape(-1, 1).cpu() == fields["labels"].detach().cpu().reshape(1, -1)
        iou = torch.where(same, iou, torch.full_like(iou, -1.0))
    pairs, taken_e, taken_a = [], set(), set()
    for flat in torch.argsort(iou.reshape(-1), descending=True).tolist():
        e, a = divmod(flat, iou.shape[1])
        if e in taken_e or a in taken_a or iou[e, a] < expected.min_iou:
            continue
        pairs.append((e, a))
        taken_e.add(e)
        taken_a.add(a)
    unmatched = [e for e in range(len(expected.boxes)) if e not in taken_e]
    if unmatched:
        e = unmatched[0]
        label = f" (label {int(expected.labels[e])})" if expected.labels is not None else ""
        best = float(iou[e].max()) if iou.shape[1] else 0.0
        same = " with that label" if expected.labels is not None else ""
        near = (
            f"; the closest returned box{same} has IoU {best:.3f}"
            if best >= 0
            else "; no returned box has that label"
        )
        return (
            f"{len(unmatched)} of {len(expected.boxes)} expected boxes have no match with IoU >= "
            f"{expected.min_iou:g}, e.g. {_box_text(expected.boxes[e])}{label}{near}"
        )
    if expected.scores is not None:
        got = fields["scores"].detach().cpu().to(torch.float64).reshape(-1)
        for e, a in pairs:
            if abs(float(got[a]) - float(expected.scores[e])) > expected.score_atol:
                return (
                    f"the box matched to {_box_text(expected.boxes[e])} has score {float(got[a]):.6g}, "
                    f"expected {float(expected.scores[e]):.6g} (tolerance {expected.score_atol:g})"
                )
    return None
