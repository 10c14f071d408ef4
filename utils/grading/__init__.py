"""Graded exercises: instant checks in the notebook, a grader on the command line, and the generator
that turns solution notebooks into exercises. Chapter 01 (``01_backprop``) is the first assignment.

For learners
------------
Write the functions an exercise asks for, then run its check cell::

    from utils.grading import check
    check("q1", linear_forward, linear_backward)   # or check("q1"): functions looked up by name

``check`` calls your functions on fresh random inputs (a new seed every call), compares them with a
PyTorch reference at a stated tolerance and prints one line: ``✓``/``✗``, the question, the cases
passed and, on failure, which case failed, why (wrong shape, dtype, NaN, values off by how much,
an exception) and a hint. It never raises because of your code; it returns a
:class:`~utils.grading.core.QuestionResult`. The score comes from the grader::

    python -m utils.grading grade exercises/01_backprop.ipynb [--json report.json] [--timeout 120]

which runs the whole notebook in a fresh kernel (``COURSE_GRADING=1``: the ``check`` cells then only
say that the grader checks the question), builds its own random inputs and references, calls your
functions in that kernel and compares the results in its own process. Each question scores its
points when every case passes, else 0; the table ends with ``Score: X/Y`` and the exit code is 0
whenever grading ran (2 for usage errors).

Which assignment a question belongs to
--------------------------------------
Question sets are registered per assignment (``01_backprop``) and ids are unique within one.
``check`` takes ``assignment=`` if given, else the one chosen once with ``use("01_backprop")``,
else the only assignment that has the id, else the only one whose question uses functions all
defined in the notebook; otherwise it asks for ``assignment=``. The grader takes ``--assignment``,
else the notebook metadata ``course.assignment``, else the file name (``Copy of 01_backprop.ipynb``
works).

For instructors: adding a chapter
---------------------------------
1. Write ``solutions/NN_topic.ipynb``; put each solution between ``# BEGIN SOLUTION`` and
   ``# END SOLUTION`` lines inside a code cell (inside the function, below its docstring), and call
   ``check("q1", ...)`` after each function. Set the metadata ``"course": {"assignment": "NN_topic"}``.
2. Add ``utils/grading/checks/topic.py`` with ``ASSIGNMENT = "NN_topic"``, ``TITLE`` and
   ``QUESTIONS = [Question("q1", "Title", ("fn_a", "fn_b"), build_cases, points=1), ...]``. A
   ``build_cases(generator) -> list[Case]`` draws every random number from the generator, computes the
   expected value with a torch (or torchvision / scikit-learn) reference and returns
   ``Case(name, function, {"arg": value, ...}, expected, atol=..., rtol=..., hint=..., unchanged=(...), outputs=(...))``.
   Callable arguments are ``Code("lambda x: ...")`` source strings. The module is found automatically.
3. Run ``make exercises`` (``python -m utils.grading generate solutions exercises``); ``--check``
   fails when ``exercises/`` is out of sync, a marker is unbalanced, or a solution line leaks.
4. The tests grade every solution (full marks) and every untouched exercise (zero).
"""
from __future__ import annotations

from .challenge import MakeItWork
from .checks import QuestionSet, assignments, get_assignment, register, unregister
from .compare import BoxSet
from .core import Case, CaseResult, Code, Question, QuestionResult, compare
from .forbid import AUTOGRAD, COURSE
from .generate import LeakError, MarkerError, check_sync, find_leaks, find_regions, generate_all, generate_exercise
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
