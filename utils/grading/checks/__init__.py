"""The registry of question sets: one module per chapter in this folder, found automatically.

A module ``utils/grading/checks/<topic>.py`` defines

* ``ASSIGNMENT = "NN_topic"``: the stem of ``solutions/NN_topic.ipynb`` and ``exercises/NN_topic.ipynb``;
* ``TITLE = "..."``: a short title for reports;
* ``QUESTIONS = [Question(...), MakeItWork(...), Review(...), ...]``: ids unique within the assignment
  (``q1``... for implement and make-it-work questions, ``r1``... for review questions by convention).

:func:`assignments` imports every module of this package once and returns ``{assignment: QuestionSet}``.
Tests and experiments can add a set with :func:`register` (and take it away with :func:`unregister`).
Chapter 01 (``backprop.py``) is the first example.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

from ..challenge import MakeItWork
from ..core import Question
from ..review import Review

KINDS = (Question, MakeItWork, Review)

__all__ = ["QuestionSet", "assignments", "get_assignment", "load_errors", "register", "unregister"]

ASSIGNMENT_ID = re.compile(r"^\d\d_[a-z0-9_]+$")


@dataclass
class QuestionSet:
    """The questions of one assignment, in order."""

    assignment: str
    title: str
    questions: list[Question]

    def __post_init__(self) -> None:
        if not ASSIGNMENT_ID.match(self.assignment):
            raise ValueError(
                "assignment id must look like '01_backprop' (NN_ then lowercase letters, "
                f"digits, _), got {self.assignment!r}"
            )
        if not self.questions:
            raise ValueError(f"assignment {self.assignment}: no questions")
        seen: set[str] = set()
        for q in self.questions:
            if not isinstance(q, KINDS):
                raise TypeError(
                    f"assignment {self.assignment}: QUESTIONS must hold Question, MakeItWork or "
                    f"Review objects, got {type(q).__name__}"
                )
            if q.id in seen:
                raise ValueError(f"assignment {self.assignment}: question id {q.id!r} appears twice")
            seen.add(q.id)

    def question(self, qid: str) -> Question | MakeItWork | Review:
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(f"assignment {self.assignment} has no question {qid!r} (it has {', '.join(self.ids)})")

    @property
    def ids(self) -> list[str]:
        return [q.id for q in self.questions]

    @property
    def max_score(self) -> float:
        return float(sum(q.points for q in self.questions))


_REGISTRY: dict[str, QuestionSet] = {}
_LOAD_ERRORS: dict[str, str] = {}
_LOADED = False


def _load_modules() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
            title = getattr(module, "TITLE", module.ASSIGNMENT)
            qset = QuestionSet(module.ASSIGNMENT, title, list(module.QUESTIONS))
        except Exception as err:  # one broken chapter must not take the others down
            _LOAD_ERRORS[info.name] = f"{type(err).__name__}: {err}"
            continue
        if qset.assignment in _REGISTRY:
            _LOAD_ERRORS[info.name] = f"assignment {qset.assignment!r} is already defined by another module"
            continue
        _REGISTRY[qset.assignment] = qset


def assignments() -> dict[str, QuestionSet]:
    """All registered question sets by assignment id (imports the modules of this package once)."""
    _load_modules()
    return dict(_REGISTRY)


def load_errors() -> dict[str, str]:
    """Modules of this package that failed to load, with the error (empty when all is well)."""
    _load_modules()
    return dict(_LOAD_ERRORS)


def get_assignment(assignment: str) -> QuestionSet:
    """The question set of ``assignment``; a ``KeyError`` lists the known ones."""
    sets = assignments()
    if assignment not in sets:
        known = ", ".join(sorted(sets)) or "none"
        extra = f" (modules that failed to load: {load_errors()})" if load_errors() else ""
        raise KeyError(f"unknown assignment {assignment!r}; known assignments: {known}{extra}")
    return sets[assignment]


def register(
    assignment: str, questions: list[Question], title: str | None = None, *, replace: bool = False
) -> QuestionSet:
    """Register a question set by hand (the modules of this package register themselves)."""
    _load_modules()
    if assignment in _REGISTRY and not replace:
        raise ValueError(f"assignment {assignment!r} is already registered (pass replace=True to replace it)")
    qset = QuestionSet(assignment, title or assignment, list(questions))
    _REGISTRY[assignment] = qset
    return qset


def unregister(assignment: str) -> None:
    """Remove a question set registered with :func:`register`."""
    _REGISTRY.pop(assignment, None)
