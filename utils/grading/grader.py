"""The command-line grader: ``python -m utils.grading grade NOTEBOOK [--json REPORT] [--timeout S]``.

1. The notebook runs top to bottom in a fresh kernel (``COURSE_GRADING=1``, ``COURSE_PROFILE=smoke``,
   working directory = the notebook's folder). A cell that raises is recorded and execution goes on;
   a cell that runs past the time limit is interrupted; a kernel that dies (``os._exit``) ends the run.
2. For every question, this process builds fresh random inputs and the reference outputs. Only the
   inputs go into the kernel (a ``torch.save`` file and a short snippet that looks the learner's
   function up by name, calls it and saves what it returned, or the exception). The result is read
   back with ``torch.load(weights_only=True)`` and compared *here*, so nothing the notebook does to
   ``check``, ``torch.allclose`` or report files changes the score.
3. The kernel is shut down; then the table is printed and the JSON report written.

Chapter 01 is the first graded exercise; ``book/`` explains grading to learners.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checks import QuestionSet, assignments, get_assignment, load_errors
from .core import CallOutcome, Case, CaseResult, Code, Opaque, Question, QuestionResult, Raised, _fmt, judge

__all__ = ["Report", "UsageError", "grade_notebook", "resolve_assignment", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 120
PROBE_TIMEOUT = 15
WARM_UP_TIMEOUT = 300
_WARM_UP = "import torch as __course_grader_torch\ndel __course_grader_torch\n"
_FILENAME_ID = re.compile(r"(\d\d_[a-z0-9_]+)")


class UsageError(Exception):
    """The grader cannot start: no such notebook, or no way to tell which assignment it is."""


# --------------------------------------------------------------------------- which assignment


def resolve_assignment(path: str | Path, *, explicit: str | None = None, metadata: dict | None = None) -> str:
    """The assignment of a notebook: ``explicit`` (``--assignment``), else the notebook metadata
    ``course.assignment``, else the file name (``Copy of 01_backprop.ipynb`` and
    ``01_backprop (1).ipynb`` give ``01_backprop``; ``01_backprop_final.ipynb`` falls back to the
    longest registered id it starts with). Raises :class:`UsageError` when none of these works.
    """
    known = assignments()
    if explicit:
        if explicit not in known:
            raise UsageError(f"unknown assignment {explicit!r}; known assignments: {', '.join(sorted(known)) or 'none'}")
        return explicit
    course = (metadata or {}).get("course") if isinstance(metadata, dict) else None
    value = course.get("assignment") if isinstance(course, dict) else None
    if isinstance(value, str) and value in known:
        return value
    stem = Path(path).stem.lower()
    for match in _FILENAME_ID.finditer(stem):
        candidate = match.group(1)
        if candidate in known:
            return candidate
        prefixes = [a for a in known if candidate.startswith(a + "_")]
        if prefixes:
            return max(prefixes, key=len)
    hint = f" (the notebook metadata names {value!r}, which is not registered)" if value else ""
    raise UsageError(f"cannot tell which assignment {Path(path).name} is{hint}: pass --assignment "
                     f"(known: {', '.join(sorted(known)) or 'none'}) or keep the number and topic in the file name, e.g. 01_backprop.ipynb")


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What the grader found: one :class:`QuestionResult` per question and notes on the run."""

    notebook: str
    assignment: str
    questions: list[QuestionResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(sum(q.score for q in self.questions))

    @property
    def max_score(self) -> float:
        return float(sum(q.max_score for q in self.questions))

    def as_dict(self) -> dict[str, Any]:
        """The JSON report: ``notebook``, ``score``, ``max_score``, ``questions`` (id, score, max_score, feedback) and more."""
        def num(x: float) -> float | int:
            return int(x) if float(x).is_integer() else float(x)

        return {
            "notebook": self.notebook,
            "assignment": self.assignment,
            "score": num(self.score),
            "max_score": num(self.max_score),
            "questions": [
                {"id": q.question, "title": q.title, "score": num(q.score), "max_score": num(q.max_score),
                 "feedback": q.feedback(), "cases_passed": q.cases_passed, "cases_total": len(q.cases), "seed": q.seed}
                for q in self.questions
            ],
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """The printed summary: notes, one row per question, and ``Score: X/Y``."""
        lines = [f"Grading {self.notebook} (assignment {self.assignment})"]
        lines += [f"  note: {n}" for n in self.notes]
        width = max([len(q.title) for q in self.questions] + [5])
        lines.append(f"{'id':<4} {'title':<{width}} {'score':>7}  feedback")
        for q in self.questions:
            score = f"{_fmt(q.score)}/{_fmt(q.max_score)}"
            lines.append(f"{q.question:<4} {q.title:<{width}} {score:>7}  {'✓' if q.passed else '✗'} {q.feedback()}")
        lines.append(f"Score: {_fmt(self.score)}/{_fmt(self.max_score)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the kernel side

# Runs inside the learner's kernel. It only reads the inputs, calls the learner's function and saves
# what came back; the expected values never enter the kernel.
_SNIPPET = r'''
def __course_grader_call(in_path, out_path):
    import math
    import torch
    payload = torch.load(in_path, weights_only=True)

    def rebuild(value):
        if isinstance(value, dict) and "__grader_code__" in value:
            return eval(value["__grader_code__"], {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "math": math})
        return value

    def safe(value, depth=0):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().as_subclass(torch.Tensor).clone()
        if value is None or type(value) in (bool, int, float, str):
            return value
        if type(value) in (tuple, list) and depth < 4:
            return type(value)(safe(v, depth + 1) for v in value)
        cls = type(value)
        return {"__grader_opaque__": cls.__qualname__ if cls.__module__ == "builtins" else cls.__module__ + "." + cls.__qualname__}

    fn = globals().get(payload["function"])
    if fn is None:
        result = {"status": "missing"}
    elif not callable(fn):
        result = {"status": "not_callable", "type": type(fn).__name__}
    else:
        args = [rebuild(v) for _, v in payload["args"]]
        harness = rebuild(payload.get("harness"))
        try:
            value = harness(fn, *args) if harness is not None else fn(*args)
            names = [n for n, _ in payload["args"]]
            after = {n: safe(args[names.index(n)]) for n in payload["unchanged"]}
            result = {"status": "ok", "value": safe(value), "args_after": after}
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            try:
                message = str(err)[:1000]
            except Exception:
                message = "(the exception could not be printed)"
            result = {"status": "raised", "type": type(err).__name__, "message": message}
    torch.save(result, out_path)

__course_grader_call(__IN_PATH__, __OUT_PATH__)
del __course_grader_call
'''


def _encode_arg(value: Any) -> Any:
    if isinstance(value, Code):
        return {"__grader_code__": value.source}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__grader_opaque__" in value:
        return Opaque(str(value["__grader_opaque__"]))
    if isinstance(value, (tuple, list)):
        return type(value)(_decode(v) for v in value)
    return value


class _Kernel:
    """A kernel that runs the notebook's cells and then the grader's snippets, with time limits."""

    def __init__(self, nb, cwd: Path, timeout: int):
        from nbclient import NotebookClient

        grader = self

        class Client(NotebookClient):
            async def _async_handle_timeout(self, timeout, cell=None):  # noqa: D401 - nbclient hook
                grader.timed_out = True
                return await super()._async_handle_timeout(timeout, cell)

        self.timed_out = False
        self.dead = False
        self.exited = False  # the cell called IPython's exit(): the kernel shuts itself down
        self.timeout = timeout
        self.client = Client(
            nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": "TimeoutError", "evalue": f"cell timed out after {timeout} s", "traceback": []},
            record_timing=False, resources={"metadata": {"path": str(cwd)}},
        )
        self.client.on_cell_executed = self._on_cell_executed
        self.n_cells = len(nb.cells)  # the notebook's own cells; the grader's snippets are appended after them

    def _on_cell_executed(self, cell=None, cell_index=None, execute_reply=None, **_):
        payload = ((execute_reply or {}).get("content") or {}).get("payload") or []
        if any(isinstance(p, dict) and p.get("source") == "ask_exit" and not p.get("keepkernel") for p in payload):
            self.exited = self.dead = True

    def run_cell(self, source: str | None = None, *, index: int | None = None, timeout: int | None = None):
        """Run ``source`` in a new cell appended to the notebook, or the notebook's cell ``index``.

        Returns the executed cell; sets ``timed_out``, ``exited`` and ``dead``.
        """
        import nbformat
        from nbclient.exceptions import DeadKernelError

        nb = self.client.nb
        if index is None:
            nb.cells.append(nbformat.v4.new_code_cell(source))
            index = len(nb.cells) - 1
        self.timed_out = self.exited = False
        self.client.timeout = timeout or self.timeout
        try:
            return self.client.execute_cell(nb.cells[index], index)
        except DeadKernelError:
            self.dead = True
            return nb.cells[index]
        finally:
            self.client.timeout = self.timeout

    def responsive(self) -> bool:
        """After a timeout: does the kernel answer a trivial cell? (If not, it is treated as dead.)"""
        if self.dead:
            return False
        self.run_cell("pass", timeout=PROBE_TIMEOUT)
        if self.timed_out:
            self.dead = True
        return not self.dead


def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _execute_notebook(kernel: _Kernel, notes: list[str]) -> None:
    nb = kernel.client.nb
    # torch is imported before the notebook runs, so that its import time does not count against the first cell
    kernel.run_cell(_WARM_UP, timeout=max(kernel.timeout, WARM_UP_TIMEOUT))
    if kernel.dead or kernel.timed_out:
        notes.append("the kernel could not import torch")
        kernel.dead = True
        return
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
                notes.append("the kernel stopped responding after the interrupt; the cells after it did not run")
                return
            continue
        errors = [o for o in nb.cells[index].get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            notes.append(f"{where} raised {errors[0].get('ename', 'an error')}: {str(errors[0].get('evalue', ''))[:200]}")


def _call_in_kernel(kernel: _Kernel, case: Case, workdir: Path, call_timeout: int) -> CallOutcome:
    token = secrets.token_hex(8)
    in_path, out_path = workdir / f"in-{token}.pt", workdir / f"out-{token}.pt"
    payload = {"function": case.function, "args": [(n, _encode_arg(v)) for n, v in case.args.items()],
               "unchanged": list(case.unchanged), "harness": _encode_arg(case.harness)}
    torch.save(payload, in_path)
    source = _SNIPPET.replace("__IN_PATH__", repr(str(in_path))).replace("__OUT_PATH__", repr(str(out_path)))
    kernel.run_cell(source, timeout=call_timeout)
    if kernel.timed_out:
        return CallOutcome(problem=f"timed out: {case.function} ran longer than {call_timeout} s (per-call limit)")
    if kernel.exited:
        return CallOutcome(problem=f"{case.function} called exit(), which stops the kernel")
    if kernel.dead:
        return CallOutcome(problem=f"the kernel died while {case.function} ran")
    if not out_path.exists():
        return CallOutcome(problem=f"no result came back from calling {case.function} (did the notebook replace built-ins?)")
    try:
        result = torch.load(out_path, weights_only=True)
    except Exception as err:
        return CallOutcome(problem=f"the result of {case.function} could not be read back ({type(err).__name__})")
    finally:
        for p in (in_path, out_path):
            p.unlink(missing_ok=True)
    status = result.get("status") if isinstance(result, dict) else None
    if status == "missing":
        return CallOutcome(problem=f"function {case.function} is not defined in the notebook (did its cell run without errors?)")
    if status == "not_callable":
        return CallOutcome(problem=f"{case.function} is a {result.get('type')}, not a function")
    if status == "raised":
        return CallOutcome(raised=Raised(str(result.get("type")), str(result.get("message", ""))))
    if status == "ok":
        after = result.get("args_after")
        return CallOutcome(value=_decode(result.get("value")), args_after=after if isinstance(after, dict) else {})
    return CallOutcome(problem=f"unexpected result from calling {case.function}")


def _grade_question(kernel: _Kernel, q: Question, qset: QuestionSet, workdir: Path, call_timeout: int, seed: int,
                    notes: list[str]) -> QuestionResult:
    result = QuestionResult(q.id, q.title, qset.assignment, float(q.points), seed=seed)
    try:
        cases = q.cases(seed)
    except Exception as err:
        result.status, result.error = "error", f"grader error while building the cases: {type(err).__name__}: {err}"
        return result
    for number, case in enumerate(cases):
        if kernel.dead:
            result.cases.extend(CaseResult(c.name, c.function, False, "not run: the kernel is no longer running")
                                for c in cases[number:])
            break
        try:
            outcome = _call_in_kernel(kernel, case, workdir, call_timeout)
            result.cases.append(judge(case, outcome))
        except Exception as err:
            result.cases.append(CaseResult(case.name, case.function, False, f"grader error: {type(err).__name__}: {err}"))
        if kernel.timed_out:
            result.cases.extend(CaseResult(c.name, c.function, False, "not run after the timeout") for c in cases[number + 1:])
            if not kernel.responsive():
                notes.append(f"the kernel stopped responding after {case.function} was interrupted ({q.id}); "
                             "the questions after it were not graded")
            break
        if kernel.dead:
            notes.append(f"the kernel died while {case.function} ran ({q.id}); the questions after it were not graded")
    return result


def _all_failed(qset: QuestionSet, message: str) -> list[QuestionResult]:
    return [QuestionResult(q.id, q.title, qset.assignment, float(q.points), status="error", error=message) for q in qset.questions]


def grade_notebook(path: str | Path, *, assignment: str | None = None, timeout: int = DEFAULT_TIMEOUT,
                   call_timeout: int | None = None, seed: int | None = None) -> Report:
    """Grade one notebook (see the module docstring); never raises for problems of the notebook.

    ``timeout`` limits each cell, ``call_timeout`` (default: ``timeout``) each call of a learner's
    function; ``seed`` fixes the random inputs (default: a fresh seed per question). Raises
    :class:`UsageError` only when the file does not exist or its assignment cannot be told.
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
    except Exception as err:
        nb, read_error = None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    metadata = nb.metadata if nb is not None else None
    name = resolve_assignment(path, explicit=assignment, metadata=dict(metadata) if metadata is not None else None)
    qset = get_assignment(name)
    report = Report(path.name, name)
    if nb is None:
        report.notes.append(f"the notebook could not be read: {read_error}")
        report.questions = _all_failed(qset, "not graded: the notebook is not a valid .ipynb file")
        return report
    rng = secrets.SystemRandom() if seed is None else None
    workdir = Path(tempfile.mkdtemp(prefix="course-grade-"))
    env = dict(os.environ, COURSE_GRADING="1", COURSE_PROFILE="smoke", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.setdefault("MPLBACKEND", "Agg")
    stderr_path = workdir / "kernel-stderr.txt"
    try:
        try:
            kernel = _Kernel(nb, path.resolve().parent, timeout)
            with open(stderr_path, "wb") as kernel_stderr, kernel.client.setup_kernel(env=env, stderr=kernel_stderr):
                _execute_notebook(kernel, report.notes)
                for number, q in enumerate(qset.questions):
                    q_seed = rng.getrandbits(62) if rng is not None else int(seed) + number
                    if kernel.dead:
                        report.questions.append(QuestionResult(
                            q.id, q.title, qset.assignment, float(q.points), seed=q_seed, status="error",
                            error="not graded: the notebook's kernel is not running (see the notes)"))
                        continue
                    try:
                        report.questions.append(_grade_question(kernel, q, qset, workdir, call_timeout, q_seed, report.notes))
                    except Exception as err:  # the grader's own problem stays with this question
                        report.questions.append(QuestionResult(q.id, q.title, qset.assignment, float(q.points), seed=q_seed,
                                                               status="error", error=f"grader error: {type(err).__name__}: {err}"))
        except Exception as err:
            tail = stderr_path.read_text(errors="replace")[-1000:].strip() if stderr_path.exists() else ""
            report.notes.append(f"the kernel could not be run: {type(err).__name__}: {err}" + (f"; kernel output: {tail}" if tail else ""))
        graded = {r.question: r for r in report.questions}
        report.questions = [graded.get(r.question, r)
                            for r in _all_failed(qset, "not graded: the notebook could not be run (see the notes)")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if load_errors():
        report.notes.append(f"question modules that failed to load: {load_errors()}")
    return report


def write_report(report: Report, path: str | Path) -> None:
    """Write the JSON report (called after the kernel has been shut down)."""
    Path(path).write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
