"""Exercises are generated from solutions: ``python -m utils.grading generate solutions exercises``.

In a solution notebook, solution code sits between the lines ``# BEGIN SOLUTION`` and
``# END SOLUTION`` inside code cells. The exercise keeps everything else (signatures, docstrings,
the code after the region) and replaces each region with one line
``raise NotImplementedError("...")`` at the marker's indentation; outputs and execution counts are
cleared and the notebook metadata ``course.assignment`` is set to the notebook's stem. The output is
a pure function of the input, so ``--check`` can tell when ``exercises/`` is out of sync.
A leak check makes sure no non-trivial line of a solution region appears in the exercise, except in
a cell tagged ``given`` (cell metadata ``tags``): code handed to the learner on purpose, such as the
broken training script of chapter 08 that the solution fixes, whose lines the fix shares.
Review answers are *answer lines* instead, ``answers["r1"] = 7  # ANSWER (an int)``: the exercise
keeps the line with the value replaced by ``...``.
Chapter 01's exercise is the first one built this way.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat


__all__ = [
    "MarkerError",
    "LeakError",
    "Region",
    "PLACEHOLDER",
    "answer_lines",
    "check_sync",
    "exercise_text",
    "find_leaks",
    "find_regions",
    "generate_all",
    "generate_exercise",
    "solution_lines",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("Replace this line with your solution.")'

_MARKER = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*(?P<kind>BEGIN|END) SOLUTION[ \t]*$")
_NEAR_MISS = re.compile(r"#.*\b(begin|end)[ _-]*solutions?\b", re.IGNORECASE)
# an answer line of a review question: `answers["r1"] = 7  # ANSWER (an int)`; the exercise shows `...`
_ANSWER = re.compile(
    r"^(?P<head>[ \t]*[A-Za-z_][\w.]*(?:\[[^\]]+\])?[ \t]*=[ \t]*)(?P<value>\S.*?)"
    r"(?P<tail>[ \t]+#[ \t]*ANSWER\b.*)$"
)
GIVEN = "given"  # the tag of a cell of code given on purpose (a script to fix): no leak check there
_MIN_LEAK_CHARS = 6  # a line shorter than this (spaces removed) is too generic to count as a leak
# lines too generic to count as a leak: bare keywords, closing brackets, `return` of plain names
_TRIVIAL = re.compile(r"^(return\b[\w\s,()]*|pass|break|continue|else:|try:|finally:|[\])}]+[,:]?)$")


class MarkerError(ValueError):
    """An unbalanced, nested or misspelt solution marker; the message names notebook, cell and line."""

    def __init__(self, notebook: str, cell: int | None, line: int, problem: str):
        self.notebook, self.cell, self.line, self.problem = notebook, cell, line, problem
        where = f"{notebook}, cell {cell}" if cell is not None else notebook
        super().__init__(f"{where}, line {line}: {problem}")


class LeakError(ValueError):
    """A line from a solution region would appear in the exercise notebook."""


@dataclass(frozen=True)
class Region:
    """A solution region: 1-based line numbers of its markers and the BEGIN marker's indentation."""

    begin: int
    end: int
    indent: str


def find_regions(source: str, *, notebook: str = "<source>", cell: int | None = None) -> list[Region]:
    """The solution regions of one cell's source, in order.

    Raises :class:`MarkerError` for ``# BEGIN SOLUTION`` without an end, ``# END SOLUTION`` without
    a beginning, a BEGIN inside an open region, and comment lines that look like a marker but are
    not spelt exactly (``# Begin solution``, ``# BEGIN SOLUTIONS``).
    """
    regions: list[Region] = []
    open_at: tuple[int, str] | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        if match is None:
            if _NEAR_MISS.search(line) and line.lstrip().startswith("#"):
                raise MarkerError(
                    notebook,
                    cell,
                    number,
                    f"{line.strip()!r} looks like a solution marker; "
                    f"write exactly {BEGIN!r} or {END!r} on a line of its own",
                )
            continue
        if match["kind"] == "BEGIN":
            if open_at is not None:
                problem = f"nested {BEGIN!r}: the region opened at line {open_at[0]} is not closed yet"
                raise MarkerError(notebook, cell, number, problem)
            open_at = (number, match["indent"])
        else:
            if open_at is None:
                raise MarkerError(notebook, cell, number, f"{END!r} without a matching {BEGIN!r}")
            regions.append(Region(open_at[0], number, open_at[1]))
            open_at = None
    if open_at is not None:
        raise MarkerError(notebook, cell, open_at[0], f"{BEGIN!r} without a matching {END!r}")
    return regions


def answer_lines(source: str) -> list[int]:
    """1-based numbers of the answer lines of a cell (``<target> = <value>  # ANSWER ...``)."""
    return [n for n, line in enumerate(source.splitlines(), start=1) if _ANSWER.match(line)]


def _blank_answers(source: str, *, notebook: str, cell: int | None) -> str:
    lines = source.splitlines()
    regions = find_regions(source, notebook=notebook, cell=cell)
    inside = {n for r in regions for n in range(r.begin, r.end + 1)}
    for number in answer_lines(source):
        if number in inside:
            raise MarkerError(notebook, cell, number, "an answer line (# ANSWER) inside a solution region")
        match = _ANSWER.match(lines[number - 1])
        lines[number - 1] = f"{match['head']}...{match['tail']}"
    text = "\n".join(lines)
    return text + "\n" if source.endswith("\n") and lines else text


def _replace_regions(source: str, regions: list[Region]) -> str:
    lines = source.splitlines()
    out: list[str] = []
    previous = 0
    for region in regions:
        out.extend(lines[previous : region.begin - 1])
        out.append(region.indent + PLACEHOLDER)
        previous = region.end
    out.extend(lines[previous:])
    text = "\n".join(out)
    return text + "\n" if source.endswith("\n") else text


def _stable_id(name: str, index: int) -> str:
    return hashlib.sha1(f"{name}:{index}".encode()).hexdigest()[:8]


def generate_exercise(
    nb: nbformat.NotebookNode, *, name: str = "notebook", assignment: str | None = None
) -> nbformat.NotebookNode:
    """Return the exercise notebook for solution notebook ``nb`` (``nb`` itself is not changed).

    Solution regions become :data:`PLACEHOLDER`; on answer lines (``answers["r1"] = 7  # ANSWER``)
    the value becomes ``...``.

    ``name`` is used in error messages and for the metadata ``course.assignment`` (``assignment``
    overrides it). Raises :class:`MarkerError` for bad markers; the result is deterministic.
    """
    ex = copy.deepcopy(nb)
    wants_ids = (ex.get("nbformat", 4), ex.get("nbformat_minor", 0)) >= (4, 5)
    for index, cell in enumerate(ex.cells):
        if wants_ids and not cell.get("id"):
            cell["id"] = _stable_id(name, index)
        if cell.cell_type != "code":
            continue
        regions = find_regions(cell.source, notebook=name, cell=index)
        if regions:
            cell.source = _replace_regions(cell.source, regions)
        cell.source = _blank_answers(cell.source, notebook=name, cell=index)
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
    course = dict(ex.metadata.get("course", {}))
    course["assignment"] = assignment or Path(name).stem
    ex.metadata["course"] = course
    return ex


def solution_lines(nb: nbformat.NotebookNode, *, name: str = "notebook") -> list[tuple[int, int, str]]:
    """The non-trivial lines inside solution regions: ``(cell index, line number, line)``.

    Left out as too generic: comments, lines with fewer than 6 characters (spaces removed), bare
    keywords (``pass``, ``else:``), closing brackets and ``return`` of plain names (``return dx, dW, db``).
    """
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        for region in find_regions(cell.source, notebook=name, cell=index):
            for number in range(region.begin + 1, region.end):
                line = lines[number - 1].strip()
                short = len(re.sub(r"\s+", "", line)) < _MIN_LEAK_CHARS
                if line.startswith("#") or short or _TRIVIAL.match(line):
                    continue
                found.append((index, number, line))
    return found


def find_leaks(
    solution: nbformat.NotebookNode, exercise: nbformat.NotebookNode, *, name: str = "notebook"
) -> list[str]:
    """Lines of the solution's regions that appear in ``exercise`` (any cell but those tagged
    ``given``, spaces ignored).

    Returns one message per leaked line, naming the solution cell and line; empty when clean.
    """
    cells = [
        "" if GIVEN in c.get("metadata", {}).get("tags", []) else re.sub(r"\s+", "", c.source)
        for c in exercise.cells
    ]
    leaks = []
    for index, number, line in solution_lines(solution, name=name):
        needle = re.sub(r"\s+", "", line)
        hits = [i for i, text in enumerate(cells) if needle in text]
        if hits:
            leaks.append(
                f"{name}: solution line {line!r} (cell {index}, line {number}) appears in the "
                f"exercise (cell {hits[0]})"
            )
    return leaks


def exercise_text(solution_path: str | Path) -> str:
    """The exact file content of the exercise generated from ``solution_path``.

    Raises :class:`MarkerError` for bad markers, :class:`LeakError` when a solution line would
    appear in the exercise or when the notebook has no solution region at all.
    """
    import nbformat

    path = Path(solution_path)
    nb = nbformat.read(path, as_version=4)
    if not any(
        find_regions(c.source, notebook=path.name, cell=i) or answer_lines(c.source)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ):
        raise LeakError(f"{path.name}: no {BEGIN!r} region, so the exercise would be the solution")
    ex = generate_exercise(nb, name=path.name)
    leaks = find_leaks(nb, ex, name=path.name)
    if leaks:
        raise LeakError("; ".join(leaks))
    text = nbformat.writes(ex, version=4)
    return text if text.endswith("\n") else text + "\n"


def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file())


def generate_all(solutions_dir: str | Path, exercises_dir: str | Path) -> list[Path]:
    """Write ``exercises_dir/NAME.ipynb`` for every ``solutions_dir/NAME.ipynb``; return those that changed.

    Files already up to date are not rewritten. Raises on the first bad notebook (nothing is written
    for it).
    """
    solutions, exercises = Path(solutions_dir), Path(exercises_dir)
    if not solutions.is_dir():
        raise FileNotFoundError(f"solutions folder {solutions} does not exist")
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for path in _notebooks(solutions):
        text = exercise_text(path)
        target = exercises / path.name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def check_sync(solutions_dir: str | Path, exercises_dir: str | Path) -> list[str]:
    """Problems that keep ``exercises_dir`` from being exactly what ``generate_all`` would write.

    Each message names the file: bad markers, leaks, missing or out-of-date exercises, and exercises
    without a solution. An empty list means in sync.
    """
    import nbformat

    solutions, exercises = Path(solutions_dir), Path(exercises_dir)
    if not solutions.is_dir():
        return [f"solutions folder {solutions} does not exist"]
    problems = []
    for path in _notebooks(solutions):
        target = exercises / path.name
        try:
            text = exercise_text(path)
        except (MarkerError, LeakError) as err:
            problems.append(str(err))
            continue
        except Exception as err:  # unreadable notebook
            problems.append(f"{path}: cannot be read as a notebook ({type(err).__name__}: {err})")
            continue
        if not target.exists():
            problems.append(f"{target} is missing: run `make exercises`")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{target} is out of sync with {path}: run `make exercises`")
            try:
                solution, exercise = nbformat.read(path, as_version=4), nbformat.read(target, as_version=4)
                problems.extend(find_leaks(solution, exercise, name=str(target)))
            except Exception as err:
                problems.append(f"{target}: cannot be read as a notebook ({type(err).__name__}: {err})")
    if exercises.is_dir():
        for target in _notebooks(exercises):
            if not (solutions / target.name).exists():
                problems.append(f"{target} has no source {solutions / target.name}")
    return problems
