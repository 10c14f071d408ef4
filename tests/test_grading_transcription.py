"""Exercises ask for what the lesson did not print (issue 15, section 1).

An implement question fails this test when it asks for a function (or class) that its chapter's
notebook defines under the same name, unless the question says it is a deliberate review of the
lesson (``Question(..., lesson_review=True)``). ``ALLOWED`` lists the offenders whose questions
were still being rewritten, each by chapter and name (none left since chapters 01-06 were
rewritten). The list may only shrink: a new offender fails, and so does an entry that no longer
offends.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from conftest import ROOT
from utils.grading import Question, assignments

# (assignment, function) asked for by an exercise and defined in its chapter: none left today
ALLOWED: set[tuple[str, str]] = set()


def defined_names(source: str) -> set[str]:
    """Functions and classes a notebook cell defines at its top level (``name = lambda`` included)."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    names = set()
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def chapter_names(assignment: str) -> set[str]:
    path = ROOT / "chapters" / f"{assignment}.ipynb"
    if not path.exists():
        return set()
    cells = nbformat.read(path, as_version=4).cells
    return set().union(*(defined_names(c.source) for c in cells if c.cell_type == "code"))


def offenders(sets=None) -> set[tuple[str, str]]:
    found = set()
    for name, qset in (sets or assignments()).items():
        defined = chapter_names(name)
        for q in qset.questions:
            if isinstance(q, Question) and not q.lesson_review:
                found.update((name, f) for f in q.functions if f in defined)
    return found


def test_no_exercise_transcribes_its_chapter():
    found = offenders()
    new = sorted(found - ALLOWED)
    assert not new, (
        "these exercises ask for functions their chapter defines under the same name; ask for "
        f"what the lesson did not print, or mark the question lesson_review=True: {new}"
    )
    stale = sorted(ALLOWED - found)
    assert not stale, f"no longer transcribed: remove these entries from ALLOWED in {__file__}: {stale}"


def test_the_check_catches_a_new_offender_and_respects_lesson_review():
    from utils.grading.checks import QuestionSet

    def build(g):
        raise AssertionError("not built")

    # a question that asks for a function chapter 04 defines, once plainly and once marked as a review
    defined = sorted(chapter_names("04_optimizers"))
    assert defined, "chapter 04 defines functions"
    copied = Question("q1", "Copied", (defined[0],), build)
    reviewed = Question("q2", "Reviewed on purpose", (defined[0],), build, lesson_review=True)
    sets = {"04_optimizers": QuestionSet("04_optimizers", "x", [copied, reviewed])}
    assert offenders(sets) == {("04_optimizers", defined[0])}


@pytest.mark.parametrize(
    "source, names",
    [
        ("def f(x):\n    return x\nclass B:\n    pass\ng = lambda x: x\nh = 3\n", {"f", "B", "g"}),
        ("%matplotlib inline\nimport torch\n\ndef inner():\n    def hidden():\n        pass\n", {"inner"}),
    ],
)
def test_defined_names(source, names):
    assert defined_names(source) == names
