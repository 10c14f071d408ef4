"""``check("q1", linear_forward, linear_backward)``: instant feedback inside a notebook.

The functions run in the notebook's own process on fresh random inputs (a new seed each call); the
references are computed here too. This is feedback, not the score: the score comes from
``python -m utils.grading grade``, which computes everything outside the learner's kernel.
Chapter 01 is the first exercise that uses it.
"""

from __future__ import annotations

import copy
import inspect
import os
import secrets
from typing import Any, Callable

import torch

from .challenge import MakeItWork, run_inline
from .checks import QuestionSet, assignments, get_assignment
from .core import CallOutcome, Code, Question, QuestionResult, Raised, judge
from .review import ANSWERS, Review
from .watch import Watch

__all__ = ["check", "evaluate", "use", "current_assignment", "resolve_question"]

_CURRENT: str | None = None


def use(assignment: str | None) -> None:
    """Make ``check`` look questions up in ``assignment`` (e.g. ``use("01_backprop")``); ``None`` undoes it.

    Needed only when two assignments define the same question id and the functions in the notebook
    do not tell them apart (see :func:`resolve_question`).
    """
    global _CURRENT
    if assignment is not None:
        get_assignment(assignment)  # a KeyError names the known assignments
    _CURRENT = assignment


def current_assignment() -> str | None:
    """The assignment set with :func:`use`, or ``None``."""
    return _CURRENT


def resolve_question(
    qid: str, *, assignment: str | None = None, function_names: set[str] | frozenset = frozenset()
) -> tuple[QuestionSet, Question]:
    """Find question ``qid``: in ``assignment`` if given, else in the one chosen with :func:`use`,
    else in the only assignment that has this id, else in the only assignment whose question ``qid``
    uses functions that are all in ``function_names`` (the names defined in the notebook).

    Raises ``KeyError`` with a message that says what to do when none or several match.
    """
    chosen = assignment or _CURRENT
    if chosen is not None:
        qset = get_assignment(chosen)
        return qset, qset.question(qid)
    candidates = [qs for qs in assignments().values() if qid in qs.ids]
    if not candidates:
        known = sorted({i for qs in assignments().values() for i in qs.ids})
        raise KeyError(f"unknown question {qid!r} (known questions: {', '.join(known) or 'none'})")
    if len(candidates) == 1:
        return candidates[0], candidates[0].question(qid)
    # a review question "uses" the notebook's answers dict
    matching = [
        qs for qs in candidates if set(qs.question(qid).functions or (ANSWERS,)) <= set(function_names)
    ]
    if len(matching) == 1:
        return matching[0], matching[0].question(qid)
    names = ", ".join(qs.assignment for qs in (matching or candidates))
    raise KeyError(
        f"question {qid!r} exists in several assignments ({names}); "
        f"say which with check({qid!r}, ..., "
        f'assignment="{(matching or candidates)[0].assignment}") '
        f'or call utils.grading.use("...") once'
    )


def _copy_arg(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Code):
        return value.build()
    return copy.deepcopy(value)


def _call_watched(
    fn: Callable, args: list, harness: Callable | None, spec: dict | None
) -> tuple[Any, str | None]:
    """Call under the watch on forbidden calls; ``(value, violation)``. Other exceptions propagate."""
    if not spec:
        return (harness(fn, *args) if harness is not None else fn(*args)), None
    watch = Watch(spec)
    value = None
    try:
        with watch:
            value = harness(fn, *args) if harness is not None else fn(*args)
    except BaseException:
        if watch.violation is None:
            raise
    return value, watch.violation


def evaluate(
    question: Question, functions: dict[str, Callable], *, seed: int | None = None, assignment: str = ""
) -> QuestionResult:
    """Run every case of an implement ``question`` on ``functions`` (name -> callable) in this process.

    Arguments are copied before each call, so the "must be unchanged" checks compare with the
    originals; forbidden calls raise while the functions run (the references are built before).
    Exceptions raised by the learner's functions become failed cases, never errors here.
    """
    seed = secrets.randbits(62) if seed is None else int(seed)
    result = QuestionResult(question.id, question.title, assignment, float(question.points), seed=seed)
    try:
        cases = question.cases(seed)
        spec = question.watch_spec()
    except Exception as err:  # a broken question set is reported, not raised at the learner
        result.status = "error"
        result.error = f"internal error while building the cases: {type(err).__name__}: {err}"
        return result
    for case in cases:
        args = {name: _copy_arg(value) for name, value in case.args.items()}
        try:
            fn = functions[case.function]
            harness = case.harness.build() if case.harness is not None else None
            value, violation = _call_watched(fn, list(args.values()), harness, spec)
            flags = {n: bool(a.requires_grad) for n, a in args.items() if isinstance(a, torch.Tensor)}
            outcome = CallOutcome(value=value, args_after=args, grad_flags=flags, violation=violation)
        except Exception as err:
            outcome = CallOutcome(raised=Raised(type(err).__name__, _safe_str(err)))
        result.cases.append(judge(case, outcome))
    return result


def _safe_str(err: BaseException) -> str:
    try:
        return str(err)
    except Exception:
        return "(the exception could not be printed)"


def check(
    question: str, *functions: Callable, assignment: str | None = None, seed: int | None = None
) -> QuestionResult:
    """Check one question and print one line: ✓ or ✗, the cases passed, the first failure and a hint.

    ``check("q1", linear_forward, linear_backward)`` passes the functions in the order the question
    lists them; ``check("q1")`` looks them up by name in the calling notebook's globals. The
    assignment is ``assignment=`` if given, else the one set with :func:`use`, else found from the
    question id (see :func:`resolve_question`). ``seed`` repeats a run; by default every call draws
    new random inputs. Never raises for the learner's mistakes. With ``COURSE_GRADING=1`` (set by the
    grader) it only prints that the grader checks the question. Chapter 01 uses it first.
    """
    if os.environ.get("COURSE_GRADING") == "1":
        result = QuestionResult(str(question), status="deferred", max_score=0.0)
        print(f"{question}: the grader will check this question (COURSE_GRADING=1)")
        return result

    frame = inspect.currentframe()
    caller_globals = frame.f_back.f_globals if frame is not None and frame.f_back is not None else {}
    del frame
    result = _check(str(question), functions, assignment, seed, caller_globals)
    print(result.line())
    return result


def _check(
    qid: str, functions: tuple, assignment: str | None, seed: int | None, caller_globals: dict
) -> QuestionResult:
    def error(message: str, qset: QuestionSet | None = None, q: Question | None = None) -> QuestionResult:
        return QuestionResult(
            qid,
            q.title if q else "",
            qset.assignment if qset else "",
            float(q.points) if q else 0.0,
            status="error",
            error=message,
        )

    names = {n for n, v in caller_globals.items() if callable(v) or n == ANSWERS}
    names |= {getattr(f, "__name__", "") for f in functions}
    try:
        qset, q = resolve_question(qid, assignment=assignment, function_names=names)
    except KeyError as err:
        return error(err.args[0] if err.args else str(err))
    if isinstance(q, Review):
        return _check_review(q, qset, caller_globals)
    if functions:
        if len(functions) != len(q.functions):
            return error(
                f"{qid} checks {len(q.functions)} function{'s' if len(q.functions) > 1 else ''} "
                f"({', '.join(q.functions)}), in this order; got {len(functions)}",
                qset,
                q,
            )
        bad = [name for name, f in zip(q.functions, functions) if not callable(f)]
        if bad:
            given = type(functions[q.functions.index(bad[0])]).__name__
            return error(f"{bad[0]}: expected a function, got {given}", qset, q)
        mapping = dict(zip(q.functions, functions))
    else:
        missing = [name for name in q.functions if not callable(caller_globals.get(name))]
        if missing:
            return error(f"function {missing[0]} is not defined yet (run the cell that defines it)", qset, q)
        mapping = {name: caller_globals[name] for name in q.functions}
    if isinstance(q, MakeItWork):
        return _check_make_it_work(q, qset, mapping[q.function], seed)
    return evaluate(q, mapping, seed=seed, assignment=qset.assignment)


def _check_review(q: Review, qset: QuestionSet, caller_globals: dict) -> QuestionResult:
    """The form of a review answer only: whether it is right is for the grader to say."""
    result = QuestionResult(q.id, q.title, qset.assignment, float(q.points), status="deferred", kind=q.kind)
    answers = caller_globals.get(ANSWERS)
    if not isinstance(answers, dict):
        result.status, result.error = "error", f"no dict named `{ANSWERS}` yet: run the cell that creates it"
    elif q.id not in answers:
        result.status, result.error = "error", f"no answer yet: set answers[{q.id!r}] to {q.form}"
    else:
        problem = q.form_error(answers[q.id])
        if problem is not None:
            result.status, result.error = "error", problem
        else:
            result.summary = f"answer recorded ({q.form}); the grader says whether it is right"
    return result


def _check_make_it_work(q: MakeItWork, qset: QuestionSet, fn: Callable, seed: int | None) -> QuestionResult:
    result = QuestionResult(q.id, q.title, qset.assignment, float(q.points), kind=q.kind)
    if q.preview is None:
        result.status = "deferred"
        result.summary = (
            f"the grader scores {q.function} on held-out data ({q.steps_text()}; {q.budget:g} s budget)"
        )
        return result
    try:
        points, text, _ = run_inline(q, fn, secrets.randbits(62) if seed is None else int(seed))
    except Exception as err:
        result.status = "error"
        result.error = f"internal error while preparing the preview: {type(err).__name__}: {err}"
        return result
    result.awarded, result.summary = points, text
    return result
