"""Graded exercises: instant checks in the notebook, a grader outside it, and the generator that turns
solution notebooks into exercises. Chapter 01 (``01_backprop``) is the first assignment.

For learners
------------
Three kinds of question (``book/grading.md`` says more):

* **implement** (``q1``...): write a function; ``check("q1", linear_forward, linear_backward)`` (or
  ``check("q1")``: looked up by name) calls it on fresh random inputs, compares it with a PyTorch
  reference and prints one line: ✓/✗, the cases passed, the first failure and a hint. Calls the
  question forbids (the function it reproduces, autograd, the course's own modules) raise
  :class:`ForbiddenCallError` while it runs, and the question scores zero;
* **make it work**: train something and expose ``predict(images)``; the grader scores it on data the
  notebook never loads, within a time budget; ``check("q5")`` scores it on a validation set;
* **review** (``r1``...): answers as plain values in one dict, ``answers["r1"] = 7``;
  ``check("r1")`` checks the form, the grader whether it is right.

The score: ``utils.grading.grade_notebook()`` in the last cell (Jupyter, JupyterLab, VS Code, Colab)
or ``python -m utils.grading grade exercises/01_backprop.ipynb [--json report.json]``. Both run the
notebook in a fresh kernel (``COURSE_GRADING=1``: the ``check`` cells then only say that the grader
checks the question) and compute every verdict outside it.

For instructors: a question in a few lines
------------------------------------------
A chapter's questions live in ``utils/grading/checks/<topic>.py`` with ``ASSIGNMENT = "NN_topic"``,
``TITLE`` and ``QUESTIONS = [...]`` (found automatically). One of each kind::

    def linear_cases(g):                      # implement: fresh inputs from g, expected from a reference
        x, w = torch.randn(4, 3, generator=g), torch.randn(3, 2, generator=g)
        return [Case("N=4", "linear_forward", {"x": x, "W": w}, x @ w, atol=1e-6, hint="x @ W")]
    Question("q1", "Linear layer", ("linear_forward",), linear_cases,
             forbid=("torch.nn.functional.linear", *AUTOGRAD, *COURSE), why="write it with @")

    MakeItWork("q5", "Classify the digits", data=held_out, metric="macro_f1",   # data(seed) -> (x, y)
               steps=((0.80, 2), (0.70, 1)), budget=30, preview=validation)

    Review("r1", "Receptive field of 3x3, 3x3, 3x3 with strides 1, 1, 2", 7,
           explain="r = 1 + 2 + 2 + 2 * 2 = 7: the stride of a layer spreads the layers after it")

* :class:`Case`: ``args`` in call order, ``expected`` a tensor, tuple, dict, number or
  :class:`BoxSet`, tolerances ``atol``/``rtol``, ``unchanged`` arguments, ``outputs`` names, a
  ``harness`` (:class:`Code`) when the answer is a class or fills a tensor, ``measure`` for a
  statistic computed here from the raw values the harness returns.
* ``forbid``: dotted names of functions, classes or modules (:mod:`utils.grading.forbid` says which
  aliases are caught); :data:`AUTOGRAD` and :data:`COURSE` are the common groups.
* ``lesson_review=True`` marks an implement question that deliberately asks again for a function the
  chapter defines (``tests/test_grading_transcription.py`` fails otherwise).
* :class:`MakeItWork`: :mod:`utils.grading.challenge`; :class:`Review`: :mod:`utils.grading.review`.

In the solution notebook, solutions sit between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` and
review answers on lines ending ``# ANSWER``; each question is followed by ``check("qN", ...)``; the
metadata says ``"course": {"assignment": "NN_topic"}``. Then ``make exercises`` (``python -m
utils.grading generate solutions exercises``; ``--check`` fails when out of sync, on a bad marker or
a leaked solution line) and ``python -m utils.grading setup-cells`` (the canonical first cell). The
tests grade every solution (full marks) and every untouched exercise (zero).

Which assignment a notebook is: ``check`` takes ``assignment=``, else ``use("01_backprop")``, else
the only assignment with that id. The grader takes ``--assignment`` or the file name (``Copy of
01_backprop.ipynb`` works) and refuses a notebook whose metadata names another assignment.
"""

from __future__ import annotations

from .challenge import MakeItWork
from .checks import QuestionSet, assignments, get_assignment, register, unregister
from .compare import BoxSet
from .core import Case, CaseResult, Code, Question, QuestionResult, compare
from .forbid import AUTOGRAD, COURSE
from .generate import (
    LeakError,
    MarkerError,
    check_sync,
    find_leaks,
    find_regions,
    generate_all,
    generate_exercise,
)
from .inline import check, evaluate, resolve_question, use
from .notebook import NotebookNotFound, grade_notebook
from .review import Review
from .watch import ForbiddenCallError

__all__ = [
    "AUTOGRAD",
    "COURSE",
    "BoxSet",
    "Case",
    "CaseResult",
    "Code",
    "ForbiddenCallError",
    "LeakError",
    "MakeItWork",
    "MarkerError",
    "NotebookNotFound",
    "Question",
    "QuestionResult",
    "QuestionSet",
    "Review",
    "assignments",
    "check",
    "check_sync",
    "compare",
    "evaluate",
    "find_leaks",
    "find_regions",
    "generate_all",
    "generate_exercise",
    "get_assignment",
    "grade_notebook",
    "register",
    "resolve_question",
    "unregister",
    "use",
]
