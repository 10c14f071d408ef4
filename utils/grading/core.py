"""The pieces every question set is made of: :class:`Question`, :class:`Case`, :class:`Code`, and
:func:`compare`, which says in one sentence how a learner's output differs from the reference.

A *question* names the learner's functions and builds *cases* from a ``torch.Generator``: fresh random
inputs, the expected value computed by a torch reference (autograd, ``torch.nn.functional``, ...),
a tolerance and a hint. The same cases serve the inline :func:`utils.grading.check` (the functions are
called in the notebook's own process) and the command-line grader (only the inputs travel into the
learner's kernel; outputs come back and are compared here). Chapter 01 introduces the graded exercises.
"""
from __future__ import annotations

import builtins
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = [
    "Case",
    "CaseResult",
    "CallOutcome",
    "Code",
    "Opaque",
    "Question",
    "QuestionResult",
    "Raised",
    "compare",
    "judge",
    "tolerance_text",
    "type_name",
]

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Code:
    """A callable argument written as Python source, e.g. ``Code("lambda x: (x ** 3).sum()")``.

    Source text (not a function object) travels into the learner's kernel and is rebuilt there with
    :meth:`build`; the names ``torch``, ``nn`` (``torch.nn``), ``F`` (``torch.nn.functional``) and
    ``math`` are available.
    Chapter 01 passes such functions to ``numerical_gradient``.
    """

    source: str

    def build(self) -> Callable:
        """Evaluate the source and return the callable."""
        namespace = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "math": math, "__builtins__": builtins}
        fn = eval(self.source, namespace)  # noqa: S307 - source written by the course, not the learner
        if not callable(fn):
            raise TypeError(f"Code({self.source!r}) does not evaluate to a callable")
        return fn

    def __call__(self, *args, **kwargs):
        return self.build()(*args, **kwargs)

    def __str__(self) -> str:
        return self.source


@dataclass
class Case:
    """One call of one learner function, and what it must return.

    ``args`` maps argument names to values, passed positionally in this order (tensors, numbers,
    :class:`Code`); ``expected`` is a tensor, a tuple of tensors or a number computed by the
    reference in the grading process; a float output passes when
    ``|got - expected| <= atol + rtol * |expected|`` everywhere (``atol = rtol = 0``: exact).
    ``unchanged`` names arguments the call must leave exactly as they were; ``outputs`` names the
    returned values (``("dx", "dW", "db")``) so that messages can say which one is wrong.

    ``harness`` (a :class:`Code`) wraps the call when the learner's answer is not a plain function of
    tensors: it receives the learner's function (or class) followed by the arguments and returns what
    is compared, e.g. ``Code("lambda Block, x: Block(4, 8, 2)(x).shape")`` or a statistic of a tensor
    that the function fills in place. It runs where the learner's function runs (in the kernel when
    grading), so it may build modules; the expected value is still computed by the grader.
    """

    name: str
    function: str
    args: dict[str, Any]
    expected: Any
    atol: float = 0.0
    rtol: float = 0.0
    hint: str = ""
    unchanged: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    harness: Code | None = None

    def __post_init__(self) -> None:
        if self.harness is not None and not isinstance(self.harness, Code):
            raise TypeError(f"Case {self.name!r}: harness must be a Code(...) source string, got {type(self.harness).__name__}")
        if not isinstance(self.args, dict):
            raise TypeError(f"Case {self.name!r}: args must be a dict name -> value, got {type(self.args).__name__}")
        unknown = [n for n in self.unchanged if n not in self.args]
        if unknown:
            raise ValueError(f"Case {self.name!r}: unchanged names {unknown} are not arguments ({list(self.args)})")
        if self.atol < 0 or self.rtol < 0:
            raise ValueError(f"Case {self.name!r}: tolerances must be >= 0, got atol={self.atol}, rtol={self.rtol}")
        self.unchanged = tuple(self.unchanged)
        self.outputs = tuple(self.outputs)


@dataclass
class Question:
    """A graded question: an id (``"q1"``), a title, the learner's function names in the order
    ``check`` receives them, its points, and ``build(generator) -> list[Case]``.

    ``build`` must draw every random number from the generator it is given, so that a seed
    reproduces the cases. Chapter 01's questions live in ``utils/grading/checks/backprop.py``.
    """

    id: str
    title: str
    functions: tuple[str, ...]
    build: Callable[[torch.Generator], list[Case]]
    points: float = 1.0

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"question id must look like 'q1' (letters, digits, _), got {self.id!r}")
        if isinstance(self.functions, str):
            self.functions = (self.functions,)
        self.functions = tuple(self.functions)
        if not self.functions or not all(isinstance(f, str) and f.isidentifier() for f in self.functions):
            raise ValueError(f"question {self.id}: functions must be a non-empty tuple of names, got {self.functions!r}")
        if not (isinstance(self.points, (int, float)) and self.points > 0):
            raise ValueError(f"question {self.id}: points must be a positive number, got {self.points!r}")

    def cases(self, seed: int) -> list[Case]:
        """Build the cases from ``torch.Generator().manual_seed(seed)`` and check they name this question's functions."""
        generator = torch.Generator().manual_seed(int(seed))
        cases = list(self.build(generator))
        if not cases:
            raise ValueError(f"question {self.id}: build() returned no cases")
        for case in cases:
            if not isinstance(case, Case):
                raise TypeError(f"question {self.id}: build() must return Case objects, got {type(case).__name__}")
            if case.function not in self.functions:
                raise ValueError(f"question {self.id}: case {case.name!r} calls {case.function!r}, not one of {self.functions}")
        return cases


# --------------------------------------------------------------------------- what a call produced


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
class CallOutcome:
    """What calling the learner's function gave: a value, an exception, or a problem that prevented
    the call (not defined, timed out, the kernel died). ``args_after`` holds the arguments named in
    ``Case.unchanged`` as they were after the call."""

    value: Any = None
    raised: Raised | None = None
    problem: str | None = None
    args_after: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """The verdict on one case: passed or not, the message and the hint to show."""

    name: str
    function: str
    passed: bool
    message: str = ""
    hint: str = ""


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


def compare(actual: Any, expected: Any, *, atol: float = 0.0, rtol: float = 0.0, outputs: tuple[str, ...] = ()) -> str | None:
    """Compare a learner's output with the reference; ``None`` when it matches, else one sentence.

    Checked in this order: an exception was raised; a tuple of the right length; a tensor (not a
    list, NumPy array or Python float); the shape; the dtype; NaN or Inf where the reference is
    finite; the values (largest absolute error against the stated tolerance). Chapter 01 explains
    tolerances for float32 and float64.
    """
    if isinstance(actual, Raised):
        return actual.describe()
    if isinstance(expected, (tuple, list)):
        names = tuple(outputs) if len(outputs) == len(expected) else tuple(f"output[{i}]" for i in range(len(expected)))
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
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(actual, expected, atol, rtol)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if actual != expected or type(actual) is not type(expected):
            return f"expected {expected!r}, got {actual!r}"
        return None
    if isinstance(expected, (int, float)):
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


def _compare_tensor(actual: Any, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    if not isinstance(actual, torch.Tensor):
        return f"expected a torch.Tensor, got {type_name(actual)}"
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
            what = " and ".join(part for part in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if part)
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
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual.shape)) if actual.dim() else ()
            where = f" at index {index}" if index else ""
            return (f"values off: max abs error {float(diff.max()):.3g} ({int(over.sum())} of {actual.numel()} values "
                    f"outside the tolerance; e.g.{where} got {float(actual.reshape(-1)[worst]):.8g}, expected "
                    f"{float(expected.reshape(-1)[worst]):.8g}); {tolerance_text(atol, rtol)}")
        return None
    if not torch.equal(actual, expected):
        n = int((actual != expected).sum())
        return f"values off: {n} of {actual.numel()} values differ (exact match required)"
    return None


def _same(before: Any, after: Any) -> bool:
    """Exact equality of an argument before and after a call (tensors: same shape, dtype, values)."""
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and after.shape == before.shape and after.dtype == before.dtype
                and torch.equal(after.detach().cpu(), before.detach().cpu()))
    if isinstance(before, Code):
        return True
    return type(after) is type(before) and after == before


def judge(case: Case, outcome: CallOutcome) -> CaseResult:
    """Turn what a call produced into a :class:`CaseResult` (the message names what is wrong)."""
    def fail(message: str, hint: str = case.hint) -> CaseResult:
        return CaseResult(case.name, case.function, False, message, hint)

    if outcome.problem is not None:
        return fail(outcome.problem, "")
    if outcome.raised is not None:
        hint = "" if outcome.raised.type_name == "NotImplementedError" else case.hint
        return fail(outcome.raised.describe(), hint)
    # a modified argument first: it is often the cause of wrong values (e.g. a perturbation not undone)
    for name in case.unchanged:
        if name not in outcome.args_after:
            return fail(f"could not read back argument {name!r} after the call", "")
        if not _same(case.args[name], outcome.args_after[name]):
            return fail(f"the call modified its argument `{name}`{_change(case.args[name], outcome.args_after[name])} "
                        "(it must be left exactly as it was)")
    message = compare(outcome.value, case.expected, atol=case.atol, rtol=case.rtol, outputs=case.outputs)
    if message is not None:
        return fail(message)
    return CaseResult(case.name, case.function, True)


def _change(before: Any, after: Any) -> str:
    if (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == after.shape
            and before.is_floating_point() and after.is_floating_point()):
        delta = (after.detach().cpu().double() - before.detach().cpu().double()).abs()
        return f" (largest change {float(delta.nan_to_num(nan=float('inf')).max()):.3g})"
    return ""


# --------------------------------------------------------------------------- the verdict on a question


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class QuestionResult:
    """The result of checking one question: returned by ``check`` and used in the grader's report.

    ``status`` is ``"graded"`` (the cases ran), ``"deferred"`` (``COURSE_GRADING=1``: the grader
    checks it) or ``"error"`` (the question could not be checked; ``error`` says why).
    The score is all or nothing: ``max_score`` when every case passed, else 0.
    """

    question: str
    title: str = ""
    assignment: str = ""
    max_score: float = 1.0
    cases: list[CaseResult] = field(default_factory=list)
    seed: int | None = None
    status: str = "graded"
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "graded" and bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        return self.max_score if self.passed else 0.0

    @property
    def cases_passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def first_failure(self) -> CaseResult | None:
        return next((c for c in self.cases if not c.passed), None)

    def feedback(self) -> str:
        """One sentence: cases passed and the first failure with its hint (or why it was not checked)."""
        if self.status == "deferred":
            return "the grader will check this question"
        if self.status == "error":
            return self.error or "could not be checked"
        text = f"{self.cases_passed}/{len(self.cases)} cases passed"
        failure = self.first_failure
        if failure is not None:
            text += f"; first failure: case '{failure.name}' ({failure.function}): {failure.message}"
            if failure.hint:
                text += f". Hint: {failure.hint}"
        return text

    def line(self) -> str:
        """The line ``check`` prints: ✓/✗, the question and its feedback."""
        mark = "✓" if self.passed else ("…" if self.status == "deferred" else "✗")
        title = f" {self.title}" if self.title else ""
        return f"{mark} {self.question}{title} — {self.feedback()}"

    def __repr__(self) -> str:
        return (f"QuestionResult({self.question!r}, passed={self.passed}, score={_fmt(self.score)}/{_fmt(self.max_score)}, "
                f"cases={self.cases_passed}/{len(self.cases)}, status={self.status!r})")

    def _ipython_display_(self) -> None:
        """``check`` already printed the line: a bare ``check(...)`` at the end of a cell shows nothing more."""
