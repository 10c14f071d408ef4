"""Review questions: short answers written as plain Python values, in the style of exam review sheets.

The convention, the same in every exercise: the notebook holds one dict named ``answers`` whose keys
are the question ids, one entry per cell or all in one::

    answers = {}
    answers["r1"] = 7             # an int: output sizes, parameter counts, receptive fields
    answers["r2"] = 0.474         # a number, within the question's tolerance
    answers["r3"] = {"b", "d"}    # multiple choice: the set of the right letters

``...`` (the exercise's placeholder) means "not answered yet". The grader reads the dict after the
notebook has run; after a wrong answer its feedback explains the computation. ``check("r1")`` in the
notebook only says whether the answer has the right form (an int, a number, a set of letters): the
grader alone says whether it is right. In a solution notebook each answer line ends with
``# ANSWER``; the exercise generator replaces the value on that line with ``...``.

For instructors, one question in one line::

    Review("r1", "Receptive field, strides 1, 1, 2", 7, explain="r = 1 + 2 + 2 + 2 * 2 = 7: ...")
    Review("r2", "Macro-F1 of a constant classifier", 0.474, atol=0.005, explain="...")
    Review("r3", "Train 99%, validation 75%: which two actions?", {"b", "d"}, explain="...")

The type of ``answer`` says what is accepted: an ``int`` needs an int (``27.0`` is refused, with a
message saying so); a ``float`` takes an int or a float within ``atol + rtol * |answer|`` (default
``rtol = 0.01``); a set of letters takes a set (or list or tuple) of those letters in any case, and a
single letter also as a string; a ``bool`` needs a bool. Chapter 03's exercise ends with such a block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .compare import type_name
from .core import check_id, check_points

__all__ = ["ANSWERS", "Review"]

ANSWERS = "answers"  # the name of the notebook's dict of review answers


def _letters(value: Any) -> set[str] | None:
    """A set of lowercase letters from a set / list / tuple / single string, or None if it is not one."""
    if isinstance(value, str):
        value = {value}
    if not isinstance(value, (set, frozenset, list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return {v.strip().lower() for v in value}


@dataclass
class Review:
    """A review question: its id (``"r1"``), a title, the right ``answer`` (int, float, bool, a letter
    or a set of letters) and ``explain``, the computation shown after a wrong answer. ``atol`` and
    ``rtol`` set the tolerance of a float answer; ``choices`` the letters a multiple-choice answer may
    use (default ``"abcd"``, or those of the answer when it has more). One point by default.
    """

    id: str
    title: str
    answer: Any
    explain: str
    points: float = 1.0
    atol: float = 0.0
    rtol: float = 0.01
    choices: str = "abcd"

    kind: ClassVar[str] = "review"
    functions: ClassVar[tuple[str, ...]] = ()
    forbid: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_id(self.id)
        check_points(self.id, self.points)
        if not self.explain.strip():
            raise ValueError(f"review {self.id}: explain must say how the answer is computed")
        answer = self.answer
        if isinstance(answer, (str, set, frozenset)):
            letters = _letters(answer)
            if not letters or not all(len(x) == 1 and x.isalpha() for x in letters):
                raise ValueError(
                    f"review {self.id}: a multiple-choice answer is a letter or a set of "
                    f"letters, got {answer!r}"
                )
            self.choices = "".join(sorted(set(self.choices.lower()) | letters))
        elif not isinstance(answer, (bool, int, float)):
            raise TypeError(
                f"review {self.id}: the answer must be an int, a float, a bool or letters, "
                f"got {type(answer).__name__}"
            )
        if self.atol < 0 or self.rtol < 0:
            raise ValueError(f"review {self.id}: tolerances must be >= 0")

    @property
    def form(self) -> str:
        """What the answer must look like, for messages: ``an int``, ``a set of letters from a-d``."""
        answer = self.answer
        if isinstance(answer, bool):
            return "True or False"
        if isinstance(answer, int):
            return "an int"
        if isinstance(answer, float):
            return "a number"
        if isinstance(answer, str):
            return f'one letter from {self.choices[0]}-{self.choices[-1]} (e.g. "{self.choices[0]}")'
        first, second = self.choices[0], self.choices[1]
        return f'a set of letters from {first}-{self.choices[-1]} (e.g. {{"{first}", "{second}"}})'

    def form_error(self, given: Any) -> str | None:
        """``None`` when ``given`` has the right form (whether right or not), else what is wrong with it."""
        if given is Ellipsis:
            return f"not answered yet: replace ... in answers[{self.id!r}] with {self.form}"
        answer = self.answer
        if isinstance(answer, bool):
            return None if isinstance(given, bool) else f"expected True or False, got {type_name(given)}"
        if isinstance(answer, int):
            if isinstance(given, bool) or not isinstance(given, int):
                shown = f" {given!r}" if isinstance(given, float) else ""
                return (
                    f"expected an int, got {type_name(given)}{shown}; this question asks for a whole number"
                )
            return None
        if isinstance(answer, float):
            if isinstance(given, bool) or not isinstance(given, (int, float)):
                return f"expected a number, got {type_name(given)}"
            return None if math.isfinite(given) else f"expected a finite number, got {given}"
        letters = _letters(given)
        if letters is None:
            return f"expected {self.form}, got {type_name(given)}"
        bad = sorted(x for x in letters if len(x) != 1 or x not in self.choices)
        if bad:
            return f"{bad[0]!r} is not one of the choices {', '.join(self.choices)}"
        if isinstance(answer, str) and len(letters) != 1:
            return f"expected one letter, got {len(letters)}"
        return None

    def is_right(self, given: Any) -> bool:
        """Whether a well-formed answer is right (see :meth:`form_error` first)."""
        answer = self.answer
        if isinstance(answer, bool) or isinstance(answer, int):
            return given == answer and type(given) is type(answer)
        if isinstance(answer, float):
            return abs(float(given) - answer) <= self.atol + self.rtol * abs(answer)
        return _letters(given) == _letters(answer)

    def verdict(self, answers: Any) -> tuple[bool, str]:
        """``(right, message)`` for the notebook's ``answers`` dict (or whatever the name held)."""
        if answers is None:
            return False, f"no dict named `{ANSWERS}` in the notebook (did the cell that creates it run?)"
        if not isinstance(answers, dict):
            return False, f"`{ANSWERS}` must be a dict of answers by question id, got {type_name(answers)}"
        if self.id not in answers:
            return False, f"no answer: set answers[{self.id!r}] to {self.form}"
        given = answers[self.id]
        problem = self.form_error(given)
        if problem is not None:
            return False, problem
        if self.is_right(given):
            return True, "right"
        return False, f"not right ({given!r}). {self.explain}"
