"""The course's own exercises: in sync with their solutions, solutions score full marks, untouched
exercises score zero. Every solution is graded through ``utils.grading.grade_notebook()`` as a learner
calls it in the notebook's last cell (the Jupyter lookup of the notebook mocked: ``JPY_SESSION_NAME``),
which runs the command-line grader in a separate process; every exercise through the command line
directly. Each notebook is graded once: both ways end in the same command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from utils.grading import check_sync, get_assignment

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_exercises_are_in_sync_with_solutions():
    problems = check_sync(ROOT / "solutions", ROOT / "exercises")
    assert problems == [], "\n".join(problems) + "\nrun `make exercises`"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_solution_has_a_question_set(path):
    qset = get_assignment(path.stem)
    assert qset.questions, f"{path.stem} has no questions"


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_scores_full_marks_through_grade_notebook(path, monkeypatch, capsys):
    from utils.grading import grade_notebook, notebook

    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # what a Jupyter server tells the notebook's kernel
    monkeypatch.setattr(notebook, "_ipython", lambda: None)
    monkeypatch.setattr(notebook, "_colab", lambda: None)
    report = grade_notebook(timeout=300)
    printed = capsys.readouterr().out
    assert report.max_score == get_assignment(path.stem).max_score > 0
    assert report.score == report.max_score, printed
    # This is the solution's smoke run in `make test` (nbval runs the lessons only): every cell runs.
    cell_problems = [note for note in report.notes if note.startswith(("cell ", "the kernel"))]
    assert not cell_problems, cell_problems
    assert f"Score: {report.score:g}/{report.max_score:g}" in printed and f"Grading {path}" in printed


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_untouched_exercise_scores_zero_through_the_command_line(path, tmp_path):
    report_path = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "utils.grading",
        "grade",
        str(ROOT / "exercises" / path.name),
        "--json",
        str(report_path),
        "--timeout",
        "300",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(report_path.read_text())
    assert report["max_score"] == get_assignment(path.stem).max_score > 0
    assert report["score"] == 0, out.stdout
    assert all(q["score"] == 0 for q in report["questions"])
    assert out.stdout.rstrip().endswith(f"Score: 0/{report['max_score']:g}")
