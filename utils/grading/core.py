"""The pieces every question set is made of: :class:`Question` (an *implement* question), :class:`Case`,
:class:`Code`, the verdicts (:class:`CaseResult`, :class:`QuestionResult`) and :func:`judge`.

A *question* names the learner's functions and builds *cases* from a ``torch.Generator``: fresh random
inputs, the expected value computed by a torch reference (autograd, ``torch.nn.functional``, ...),
a tolerance and a hint. The same cases serve the inline :func:`utils.grading.check` (the functions are
called in the notebook's own process) and the command-line grader (only the inputs travel into the
learner's kernel; outputs come back and are compared here). The other kinds of question, review and
make it work, live in :mod:`utils.grading.review` and :mod:`utils.grading.challenge`.
Chapter 01 introduces the graded exercises.
"""

from __future__ import annotations

import builtins
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from .compare import BoxSet, Opaque, Raised, compare, tolerance_text, type_name

__all__ = [
    "BoxSet",
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
        namespace = {
            "torch": torch,
            "nn": torch.nn,
            "F": torch.nn.functional,
            "math": math,
            "__builtins__": builtins,
        }
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
    :class:`Code`); ``expected`` is what :func:`~utils.grading.compare.compare` checks the output
    against (a tensor, a tuple, a dict, a number, a :class:`BoxSet`), computed by the reference in
    the grading process; a float output passes when ``|got - expected| <= atol + rtol * |expected|``
    everywhere (``atol = rtol = 0``: exact). ``unchanged`` names arguments the call must leave
    exactly as they were; ``outputs`` names the returned values (``("dx", "dW", "db")``) so that
    messages can say which one is wrong.

    ``harness`` (a :class:`Code`) wraps the call when the learner's answer is not a plain function of
    tensors: it receives the learner's function (or class) followed by the arguments and returns what
    comes back, e.g. ``Code("lambda Block, x: Block(4, 8, 2)(x)")``. It runs where the learner's
    function runs (in the kernel when grading), so it should return *raw* values: a statistic is
    computed by ``measure``, a function applied here, in the grading process, to what came back
    (e.g. ``measure=lambda values: values.std()`` over the values a fill function produced), so that
    nothing patched in the notebook's process can change it.
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
    measure: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.harness is not None and not isinstance(self.harness, Code):
            raise TypeError(
                f"Case {self.name!r}: harness must be a Code(...) source string, "
                f"got {type(self.harness).__name__}"
            )
        if not isinstance(self.args, dict):
            raise TypeError(
                f"Case {self.name!r}: args must be a dict name -> value, got {type(self.args).__name__}"
            )
        unknown = [n for n in self.unchanged if n not in self.args]
        if unknown:
            raise ValueError(
                f"Case {self.name!r}: unchanged names {unknown} are not arguments ({list(self.args)})"
            )
        if self.atol < 0 or self.rtol < 0:
            raise ValueError(
                f"Case {self.name!r}: tolerances must be >= 0, got atol={self.atol}, rtol={self.rtol}"
            )
        if self.measure is not None and not callable(self.measure):
            raise TypeError(f"Case {self.name!r}: measure must be a function of the returned value")
        self.unchanged = tuple(self.unchanged)
        self.outputs = tuple(self.outputs)


def check_id(qid: str) -> None:
    if not isinstance(qid, str) or not _ID.match(qid):
        raise ValueError(f"question id must look like 'q1' or 'r1' (letters, digits, _), got {qid!r}")


def check_points(qid: str, points: Any) -> None:
    if isinstance(points, bool) or not (isinstance(points, (int, float)) and points > 0):
        raise ValueError(f"question {qid}: points must be a positive number, got {points!r}")


@dataclass
class Question:
    """An *implement* question: an id (``"q1"``), a title, the learner's function names in the order
    ``check`` receives them, ``build(generator) -> list[Case]`` and its points (all or nothing).

    ``build`` must draw every random number from the generator it is given, so that a seed
    reproduces the cases. ``forbid`` lists what the learner's code may not call while it runs under
    the check (dotted names of functions, classes or modules, e.g. ``("torch.nn.functional.conv2d",
    *AUTOGRAD, *COURSE)``; see :mod:`utils.grading.forbid`), ``why`` the reason shown with it.
    ``lesson_review=True`` marks a question that deliberately asks again for a function the chapter
    wrote under the same name (the transcription test in ``tests/`` allows it then).
    Chapter 01's questions live in ``utils/grading/checks/backprop.py``.
    """

    id: str
    title: str
    functions: tuple[str, ...]
    build: Callable[[torch.Generator], list[Case]]
    points: float = 1.0
    forbid: tuple[str, ...] = ()
    why: str = ""
    lesson_review: bool = False

    kind: ClassVar[str] = "implement"

    def __post_init__(self) -> None:
        check_id(self.id)
        if isinstance(self.functions, str):
            self.functions = (self.functions,)
        self.functions = tuple(self.functions)
        if not self.functions or not all(isinstance(f, str) and f.isidentifier() for f in self.functions):
            raise ValueError(
                f"question {self.id}: functions must be a non-empty tuple of names, got {self.functions!r}"
            )
        check_points(self.id, self.points)
        if isinstance(self.forbid, str):
            self.forbid = (self.forbid,)
        self.forbid = tuple(self.forbid)

    def cases(self, seed: int) -> list[Case]:
        """The cases built from ``torch.Generator().manual_seed(seed)``, each calling one of ``functions``."""
        generator = torch.Generator().manual_seed(int(seed))
        cases = list(self.build(generator))
        if not cases:
            raise ValueError(f"question {self.id}: build() returned no cases")
        for case in cases:
            if not isinstance(case, Case):
                raise TypeError(
                    f"question {self.id}: build() must return Case objects, got {type(case).__name__}"
                )
            if case.function not in self.functions:
                raise ValueError(
                    f"question {self.id}: case {case.name!r} calls {case.function!r}, "
                    f"not one of {self.functions}"
                )
        return cases

    def watch_spec(self) -> dict | None:
        """The watch spec of ``forbid`` (``None`` when nothing is forbidden): :mod:`utils.grading.forbid`."""
        from .forbid import forbid_spec

        why = self.why or f"{self.id} asks you to write this yourself"
        return forbid_spec(self.forbid, why)


# --------------------------------------------------------------------------- what a call produced


@dataclass
class CallOutcome:
    """What calling the learner's function gave: a value, an exception, or a problem that prevented
    the call (not defined, timed out, the kernel died). ``args_after`` holds the arguments named in
    ``Case.unchanged`` as they were after the call, ``grad_flags`` the ``requires_grad`` of every
    tensor argument after the call, ``violation`` the message of a forbidden call."""

    value: Any = None
    raised: Raised | None = None
    problem: str | None = None
    args_after: dict[str, Any] = field(default_factory=dict)
    grad_flags: dict[str, bool] = field(default_factory=dict)
    violation: str | None = None


@dataclass
class CaseResult:
    """The verdict on one case: passed or not, the message and the hint to show; ``forbidden`` when
    it failed because of a forbidden call."""

    name: str
    function: str
    passed: bool
    message: str = ""
    hint: str = ""
    forbidden: bool = False


def _same(before: Any, after: Any) -> bool:
    """Exact equality of an argument before and after a call (tensors: shape, dtype, values, grad flag)."""
    if isinstance(before, torch.Tensor):
        return (
            isinstance(after, torch.Tensor)
            and after.shape == before.shape
            and after.dtype == before.dtype
            and after.requires_grad == before.requires_grad
            and torch.equal(after.detach().cpu(), before.detach().cpu())
        )
    if isinstance(before, Code):
        return True
    return type(after) is type(before) and after == before


def judge(case: Case, outcome: CallOutcome) -> CaseResult:
    """Turn what a call produced into a :class:`CaseResult` (the message names what is wrong)."""

    def fail(message: str, hint: str = case.hint) -> CaseResult:
        return CaseResult(case.name, case.function, False, message, hint)

    if outcome.violation is not None:
        return CaseResult(case.name, case.function, False, outcome.violation, "", forbidden=True)
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
            change = _change(case.args[name], outcome.args_after[name])
            return fail(
                f"the call modified its argument `{name}`{change} (it must be left exactly as it was)"
            )
    for name, flag in outcome.grad_flags.items():
        before = case.args.get(name)
        if isinstance(before, torch.Tensor) and bool(flag) != before.requires_grad:
            state = "on" if flag else "off"
            return fail(
                f"the call switched requires_grad {state} on its argument `{name}`; work on a copy "
                "(e.g. x.clone().requires_grad_()) and leave the caller's tensor as it was"
            )
    value = outcome.value
    if case.measure is not None:
        try:
            value = case.measure(value)
        except Exception as err:  # what came back does not have the form the measure needs
            return fail(
                f"the returned value could not be measured ({type(err).__name__}: {err}); "
                f"got {type_name(outcome.value)}"
            )
    message = compare(value, case.expected, atol=case.atol, rtol=case.rtol, outputs=case.outputs)
    if message is not None:
        return fail(message)
    return CaseResult(case.name, case.function, True)


def _change(before: Any, after: Any) -> str:
    if (
        isinstance(before, torch.Tensor)
        and isinstance(after, torch.Tensor)
        and before.shape == after.shape
        and before.is_floating_point()
        and after.is_floating_point()
    ):
        delta = (after.detach().cpu().double() - before.detach().cpu().double()).abs()
        return f" (largest change {float(delta.nan_to_num(nan=float('inf')).max()):.3g})"
    return ""


# --------------------------------------------------------------------------- the verdict on a question


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class QuestionResult:
    """The result of checking one question: returned by ``check`` and used in the grader's report.

    ``status`` is ``"graded"`` (the cases ran), ``"deferred"`` (the grader checks it: under
    ``COURSE_GRADING=1``, or a make-it-work or review question checked inline) or ``"error"`` (the
    question could not be checked; ``error`` says why). An implement or review question scores all
    or nothing (``max_score`` when every case passed, else 0); a make-it-work question sets
    ``awarded`` to the points of the step it reached, and ``summary`` to the sentence it reports.
    """

    question: str
    title: str = ""
    assignment: str = ""
    max_score: float = 1.0
    cases: list[CaseResult] = field(default_factory=list)
    seed: int | None = None
    status: str = "graded"
    error: str | None = None
    kind: str = "implement"
    awarded: float | None = None
    summary: str = ""

    @property
    def passed(self) -> bool:
        if self.status != "graded":
            return False
        if self.awarded is not None:
            return self.awarded >= self.max_score
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        if self.status != "graded":
            return 0.0
        if self.awarded is not None:
            return float(self.awarded)
        return self.max_score if self.passed else 0.0

    @property
    def cases_passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def first_failure(self) -> CaseResult | None:
        """The failure to report: a forbidden call first (it explains the zero), else the first failure."""
        failures = [c for c in self.cases if not c.passed]
        return next((c for c in failures if c.forbidden), failures[0] if failures else None)

    def feedback(self) -> str:
        """One sentence: cases passed and the first failure with its hint (or why it was not checked)."""
        if self.status == "deferred":
            return self.summary or "the grader will check this question"
        if self.status == "error":
            return self.error or "could not be checked"
        if self.summary:
            return self.summary
        text = f"{self.cases_passed}/{len(self.cases)} cases passed"
        failure = self.first_failure
        if failure is not None:
            kind = "forbidden call in" if failure.forbidden else "first failure:"
            text += f"; {kind} case '{failure.name}' "
            text += f"({failure.function}): {failure.message}"
            if failure.hint:
                text += f". Hint: {failure.hint}"
        return text

    def line(self) -> str:
        """The line ``check`` prints: ✓/✗, the question and its feedback."""
        mark = "✓" if self.passed else ("…" if self.status == "deferred" else "✗")
        title = f" {self.title}" if self.title else ""
        return f"{mark} {self.question}{title} — {self.feedback()}"

    def __repr__(self) -> str:
        return (
            f"QuestionResult({self.question!r}, passed={self.passed}, "
            f"score={_fmt(self.score)}/{_fmt(self.max_score)}, "
            f"cases={self.cases_passed}/{len(self.cases)}, status={self.status!r})"
        )

    def _ipython_display_(self) -> None:
        """``check`` printed the line already: a bare ``check(...)`` ending a cell shows nothing more."""
