"""The grader: ``python -m utils.grading grade NOTEBOOK [--json REPORT] [--timeout S] [--assignment ID]``.

1. The assignment comes from ``--assignment`` or the file name (``Copy of 01_backprop.ipynb`` works);
   when the notebook's metadata names another assignment, the grader refuses (a usage error).
2. Before any learner code runs, this process imports what the checks need and builds everything it
   will compare against: the cases of every implement question (fresh random inputs and references),
   the held-out data of every make-it-work question, the watch on forbidden calls.
3. The notebook runs top to bottom in a fresh kernel in a sandbox (:mod:`utils.grading.sandbox`:
   another user or no ptrace rights, its own session, its own log file instead of the grader's
   streams), with ``COURSE_GRADING=1`` and ``COURSE_PROFILE=smoke``. A cell that raises is recorded
   and execution goes on; a cell past the time limit is interrupted; a kernel that dies ends the run.
4. Each question is served through :class:`~utils.grading.kernel.Kernel` requests: only inputs go in,
   raw outputs come back, and everything is compared and measured *here*, so nothing the notebook
   does to ``check``, ``torch.allclose``, ``Tensor.var`` or report files changes the score.
5. The kernel is shut down and every process it left is killed; then the table is printed and the
   JSON report written (atomically). Feedback is one line per question: control characters and
   newlines in messages are replaced, so no text can add rows or a ``Score:`` line.

Chapter 01 is the first graded exercise; ``book/grading.md`` explains grading to learners.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .challenge import MakeItWork, Prediction, verdict
from .checks import QuestionSet, assignments, get_assignment, load_errors
from .compare import Raised
from .core import CallOutcome, Case, CaseResult, Code, Question, QuestionResult, judge
from .kernel import Kernel, decode
from .report import Report, clean, write_report
from .review import ANSWERS, Review
from .sandbox import Sandbox
from .setup_cell import shadowing

__all__ = [
    "DEFAULT_TIMEOUT",
    "Report",
    "UsageError",
    "clean",
    "grade_notebook",
    "resolve_assignment",
    "write_report",
]

DEFAULT_TIMEOUT = 120
COPY_LIMIT = 50_000_000  # bytes of the notebook's folder copied into a sandboxed kernel's own folder
_FILENAME_ID = re.compile(r"(\d\d_[a-z0-9_]+)")


class UsageError(Exception):
    """The grader cannot start: no such notebook, or no way to tell which assignment it is."""


# --------------------------------------------------------------------------- which assignment


def _from_filename(path: str | Path, known: dict) -> str | None:
    stem = Path(path).stem.lower()
    for match in _FILENAME_ID.finditer(stem):
        candidate = match.group(1)
        if candidate in known:
            return candidate
        prefixes = [a for a in known if candidate.startswith(a + "_")]
        if prefixes:
            return max(prefixes, key=len)
    return None


def resolve_assignment(path: str | Path, *, explicit: str | None = None, metadata: dict | None = None) -> str:
    """The assignment of a notebook: ``explicit`` (``--assignment``), else the file name
    (``Copy of 01_backprop.ipynb`` and ``01_backprop (1).ipynb`` give ``01_backprop``;
    ``01_backprop_final.ipynb`` the longest registered id it starts with). The notebook metadata
    ``course.assignment``, which the notebook itself can change, never chooses: when it names another
    assignment than the one found, :class:`UsageError` refuses to grade. Also raised when neither works.
    """
    known = assignments()
    course = (metadata or {}).get("course") if isinstance(metadata, dict) else None
    claimed = course.get("assignment") if isinstance(course, dict) else None
    if explicit:
        if explicit not in known:
            raise UsageError(
                f"unknown assignment {explicit!r}; known assignments: {', '.join(sorted(known)) or 'none'}"
            )
        name = explicit
    else:
        name = _from_filename(path, known)
        if name is None:
            hint = (
                f" (its metadata claims {claimed!r}, which only --assignment can confirm)" if claimed else ""
            )
            raise UsageError(
                f"cannot tell which assignment {Path(path).name} is{hint}: pass --assignment "
                f"(known: {', '.join(sorted(known)) or 'none'}) or keep the number and topic in "
                "the file name, e.g. 01_backprop.ipynb"
            )
    if claimed is not None and claimed != name:
        raise UsageError(
            f"{Path(path).name} is graded as {name}, but its metadata says {claimed!r}: the "
            f"notebook belongs to another assignment (pass --assignment {claimed} if that is "
            "the one to grade)"
        )
    return name


# --------------------------------------------------------------------------- before the kernel starts


@dataclass
class _Plan:
    """What one question needs at grading time, built before any learner code runs."""

    question: Question | MakeItWork | Review
    seed: int
    cases: list[Case] = field(default_factory=list)
    spec: dict | None = None
    batches: list[Any] = field(default_factory=list)
    targets: Any = None
    n_inputs: int = 0
    error: str | None = None


def _prepare(qset: QuestionSet, seeds: list[int]) -> list[_Plan]:
    plans = []
    for q, q_seed in zip(qset.questions, seeds):
        plan = _Plan(q, q_seed)
        try:
            if isinstance(q, Question):
                plan.cases = q.cases(q_seed)
                plan.spec = q.watch_spec()
            elif isinstance(q, MakeItWork):
                plan.batches, plan.targets, plan.n_inputs = q.prepare(q_seed)
                plan.spec = q.watch_spec()
        except Exception as err:
            plan.error = f"grader error while preparing the question: {type(err).__name__}: {err}"
        plans.append(plan)
    return plans


def _private_folder(source: Path, box: Sandbox) -> Path:
    """A sandboxed kernel works in its own folder, holding copies of the notebook folder's files."""
    total = 0
    for entry in sorted(source.iterdir()) if source.is_dir() else ():
        if entry.is_file() and not entry.is_symlink():
            total += entry.stat().st_size
            if total > COPY_LIMIT:
                break
            shutil.copy2(entry, box.kernel_dir / entry.name)
            box.give(box.kernel_dir / entry.name)
    return box.kernel_dir


# --------------------------------------------------------------------------- running


def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _execute_notebook(kernel: Kernel, notes: list[str]) -> None:
    if not kernel.warm_up():
        notes.append("the kernel could not import torch")
        kernel.dead = True
        return
    nb = kernel.client.nb
    for index in range(kernel.n_cells):
        cell = nb.cells[index]
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        where = f"cell {index} (`{_first_line(cell.source)}`)"
        try:
            kernel.run_cell(index=index)
        except Exception as err:  # a problem of the client, not of the cell: note it and go on
            notes.append(f"{where} could not be run: {type(err).__name__}: {err}")
            continue
        if kernel.exited:
            notes.append(f"{where} called exit(), which stops the kernel; the cells after it did not run")
            return
        if kernel.dead:
            notes.append(f"the kernel died in {where}; the cells after it did not run")
            return
        if kernel.timed_out:
            notes.append(f"{where} ran longer than {kernel.timeout} s and was interrupted")
            if not kernel.responsive():
                notes.append(
                    "the kernel stopped responding after the interrupt; the cells after it did not run"
                )
                return
            continue
        errors = [o for o in nb.cells[index].get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            value = str(errors[0].get("evalue", ""))[:200]
            notes.append(f"{where} raised {errors[0].get('ename', 'an error')}: {value}")


def _encode_arg(value: Any) -> Any:
    import torch

    if isinstance(value, Code):
        return {"__grader_code__": value.source}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return value


def _call(kernel: Kernel, case: Case, spec: dict | None, call_timeout: float) -> CallOutcome:
    args = [(n, _encode_arg(v)) for n, v in case.args.items()]
    payload = {
        "mode": "call",
        "function": case.function,
        "args": args,
        "unchanged": list(case.unchanged),
        "harness": _encode_arg(case.harness),
        "watch": spec,
    }
    result, problem, _ = kernel.request(payload, call_timeout)
    fn = case.function
    if problem is not None:
        if problem.startswith("timed out"):
            return CallOutcome(problem=f"timed out: {fn} ran longer than {call_timeout:g} s (per-call limit)")
        if problem == "the kernel died":
            return CallOutcome(problem=f"the kernel died while {fn} ran")
        return CallOutcome(problem=f"{fn} {problem}" if problem.startswith("called") else f"{fn}: {problem}")
    status = result.get("status")
    if status == "missing":
        return CallOutcome(
            problem=f"function {fn} is not defined in the notebook (did its cell run without errors?)"
        )
    if status == "not_callable":
        return CallOutcome(problem=f"{fn} is a {result.get('type')}, not a function")
    if status == "raised":
        return CallOutcome(raised=Raised(str(result.get("type")), str(result.get("message", ""))))
    if status == "ok":
        after, flags = decode(result.get("args_after") or {}), result.get("grad_flags") or {}
        violation = result.get("violation")
        flags = {str(k): bool(v) for k, v in flags.items()} if isinstance(flags, dict) else {}
        after = after if isinstance(after, dict) else {}
        return CallOutcome(
            value=decode(result.get("value")),
            args_after=after,
            grad_flags=flags,
            violation=str(violation) if violation else None,
        )
    return CallOutcome(problem=f"unexpected result from calling {fn}")


def _grade_implement(
    kernel: Kernel, plan: _Plan, result: QuestionResult, call_timeout: float, notes: list[str]
) -> None:
    q, cases = plan.question, plan.cases
    for number, case in enumerate(cases):
        if kernel.dead:
            gone = "not run: the kernel is no longer running"
            result.cases.extend(CaseResult(c.name, c.function, False, gone) for c in cases[number:])
            break
        try:
            result.cases.append(judge(case, _call(kernel, case, plan.spec, call_timeout)))
        except Exception as err:
            message = f"grader error: {type(err).__name__}: {err}"
            result.cases.append(CaseResult(case.name, case.function, False, message))
        if kernel.timed_out:
            result.cases.extend(
                CaseResult(c.name, c.function, False, "not run after the timeout")
                for c in cases[number + 1 :]
            )
            if not kernel.responsive():
                notes.append(
                    f"the kernel stopped responding after {case.function} was interrupted ({q.id}); "
                    "the questions after it were not graded"
                )
            break
        if kernel.dead:
            notes.append(
                f"the kernel died while {case.function} ran ({q.id}); the questions after it were not graded"
            )


def _grade_make_it_work(kernel: Kernel, plan: _Plan, result: QuestionResult, notes: list[str]) -> None:
    q: MakeItWork = plan.question
    payload = {"mode": "predict", "function": q.function, "batches": plan.batches, "watch": plan.spec}
    reply, problem, seconds = kernel.request(payload, q.budget)
    prediction = Prediction(seconds=seconds)
    if problem is not None:
        late = problem.startswith("timed out")
        prediction.problem = (
            f"{q.function} ran past its time budget and was interrupted"
            if late
            else f"{q.function}: {problem}"
        )
        if kernel.timed_out and not kernel.responsive():
            notes.append(f"the kernel stopped responding after {q.function} was interrupted ({q.id})")
    elif reply.get("status") == "missing":
        prediction.problem = (
            f"function {q.function} is not defined in the notebook (did its cell run without errors?)"
        )
    elif reply.get("status") == "not_callable":
        prediction.problem = f"{q.function} is a {reply.get('type')}, not a function"
    elif reply.get("status") == "raised":
        prediction.raised = Raised(str(reply.get("type")), str(reply.get("message", "")))
    else:
        prediction.outputs = list(decode(reply.get("value")) or [])
        prediction.violation = str(reply["violation"]) if reply.get("violation") else None
        if seconds > q.budget:
            prediction.problem = f"{q.function} took {seconds:.1f} s, past its time budget"
    points, text, forbidden = verdict(q, prediction, plan.batches, plan.targets, plan.n_inputs)
    result.awarded, result.summary = points, text
    result.cases.append(
        CaseResult("held-out data", q.function, points >= q.points, text, forbidden=forbidden)
    )


def _answers(kernel: Kernel) -> tuple[Any, str | None]:
    reply, problem, _ = kernel.request({"mode": "answers", "name": ANSWERS}, kernel.timeout)
    if problem is not None:
        return None, f"the answers could not be read: {problem}"
    return (decode(reply.get("value")) if reply.get("status") == "ok" else None), None


def _grade_all(
    kernel: Kernel, plans: list[_Plan], qset: QuestionSet, call_timeout: float, report: Report
) -> None:
    answers, answers_read = None, False
    for plan in plans:
        q = plan.question
        result = QuestionResult(q.id, q.title, qset.assignment, float(q.points), seed=plan.seed, kind=q.kind)
        report.questions.append(result)
        if plan.error is not None:
            result.status, result.error = "error", plan.error
            continue
        if kernel.dead:
            result.status = "error"
            result.error = "not graded: the notebook's kernel is not running (see the notes)"
            continue
        try:
            if isinstance(q, Question):
                _grade_implement(kernel, plan, result, call_timeout, report.notes)
            elif isinstance(q, MakeItWork):
                _grade_make_it_work(kernel, plan, result, report.notes)
            else:
                if not answers_read:
                    answers, problem = _answers(kernel)
                    answers_read = True
                    if problem is not None:
                        report.notes.append(problem)
                right, message = q.verdict(answers)
                result.cases.append(CaseResult("answer", ANSWERS, right, "" if right else message))
                result.summary = "right" if right else message
        except Exception as err:  # the grader's own problem stays with this question
            result.status, result.error = "error", f"grader error: {type(err).__name__}: {err}"


def _all_failed(qset: QuestionSet, message: str) -> list[QuestionResult]:
    return [
        QuestionResult(
            q.id, q.title, qset.assignment, float(q.points), status="error", error=message, kind=q.kind
        )
        for q in qset.questions
    ]


def _read(path: Path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not isinstance(nb.get("cells"), list):
        raise ValueError("no list of cells")
    for number, cell in enumerate(nb.cells):
        if not isinstance(cell.get("cell_type"), str) or not isinstance(cell.get("source"), str):
            raise ValueError(f"cell {number} has no cell_type or no source")
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("metadata", nbformat.NotebookNode())
    return nb


def grade_notebook(
    path: str | Path,
    *,
    assignment: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    call_timeout: int | None = None,
    seed: int | None = None,
    workdir: str | Path | None = None,
) -> Report:
    """Grade one notebook in this process (see the module docstring); never raises for its problems.

    ``timeout`` limits each cell, ``call_timeout`` (default: ``timeout``) each call of a learner's
    function; ``seed`` fixes the random inputs (default: a fresh seed per question); ``workdir`` is
    the kernel's working directory (default: the notebook's folder). Raises :class:`UsageError` only
    when the file does not exist or its assignment cannot be told (or its metadata disagrees).
    ``utils.grading.grade_notebook()`` in a notebook runs this through the command line.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such notebook: {path}")
    if timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    call_timeout = call_timeout or timeout
    assignments()  # import every question set before any learner code runs
    nb, read_error = None, None
    try:
        nb = _read(path)
    except Exception as err:
        read_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    metadata = dict(nb.metadata) if nb is not None else None
    name = resolve_assignment(path, explicit=assignment, metadata=metadata)
    qset = get_assignment(name)
    report = Report(path.name, name)
    if nb is None:
        report.notes.append(f"the notebook could not be read: {read_error}")
        report.questions = _all_failed(qset, "not graded: the notebook is not a valid .ipynb file")
        return report
    rng = secrets.SystemRandom() if seed is None else None
    seeds = [rng.getrandbits(62) if rng is not None else int(seed) + n for n in range(len(qset.questions))]
    plans = _prepare(qset, seeds)
    folder = Path(workdir) if workdir is not None else path.resolve().parent
    shadow = shadowing(folder)
    if shadow:
        report.notes.append(shadow)
    env = dict(os.environ, COURSE_GRADING="1", COURSE_PROFILE="smoke", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.setdefault("MPLBACKEND", "Agg")
    with Sandbox() as box:
        report.notes.extend(box.notes)
        kernel = None
        try:
            cwd = _private_folder(folder, box) if box.uid is not None else folder
            kernel = Kernel(nb, cwd, timeout, box, box.environment(env), box.grader_dir / "kernel.log")
            kernel.start()
            _execute_notebook(kernel, report.notes)
            _grade_all(kernel, plans, qset, call_timeout, report)
        except Exception as err:
            log = box.grader_dir / "kernel.log"
            tail = log.read_text(errors="replace")[-1000:].strip() if log.exists() else ""
            output = f"; kernel output: {tail}" if tail else ""
            report.notes.append(f"the kernel could not be run: {type(err).__name__}: {err}{output}")
        finally:
            if kernel is not None:
                kernel.stop()
            killed = box.kill_leftovers()
            if killed:
                plural = "es" if killed > 1 else ""
                report.notes.append(f"killed {killed} process{plural} the notebook left running")
    graded = {r.question: r for r in report.questions}
    missing = _all_failed(qset, "not graded: the notebook could not be run (see the notes)")
    report.questions = [graded.get(r.question, r) for r in missing]
    if load_errors():
        report.notes.append(f"question modules that failed to load: {load_errors()}")
    return report
