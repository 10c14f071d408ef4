"""The course's own exercises: in sync with their solutions, solutions score full marks, untouched
exercises score zero (run through the command-line grader, as a learner would)."""
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


def grade(path, tmp_path):
    report = tmp_path / f"{path.parent.name}_{path.stem}.json"
    out = subprocess.run([sys.executable, "-m", "utils.grading", "grade", str(path), "--json", str(report),
                          "--timeout", "300"], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert report.exists(), out.stdout + out.stderr
    return json.loads(report.read_text()), out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_scores_full_marks(path, tmp_path):
    report, stdout = grade(path, tmp_path)
    assert report["max_score"] == get_assignment(path.stem).max_score > 0
    assert report["score"] == report["max_score"], stdout
    assert f"Score: {report['score']:g}/{report['max_score']:g}" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_untouched_exercise_scores_zero(path, tmp_path):
    report, stdout = grade(ROOT / "exercises" / path.name, tmp_path)
    assert report["max_score"] > 0
    assert report["score"] == 0, stdout
    assert all(q["score"] == 0 for q in report["questions"])
