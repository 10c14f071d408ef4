"""The grader's report: one row per question and ``Score: X/Y``, and the JSON file ``--json`` writes.

Every piece of text a notebook can influence (feedback built from its exceptions, type names,
notes on its cells) goes through :func:`clean` first: one line, no control characters, so that no
message can add a row or a ``Score:`` line to the table. The JSON file is written next to its
destination and renamed over it, after the kernel and everything it started are gone.
Chapter 01's exercise is the first graded this way.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import QuestionResult, _fmt

__all__ = ["Report", "clean", "write_report"]


def clean(text: Any, limit: int = 2000) -> str:
    """One line of printable text: control, format and line-separator characters become spaces."""
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch for ch in str(text))
    text = re.sub(r" {2,}", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        """The JSON report: ``notebook``, ``score``, ``max_score``, ``questions`` (id, kind, score, max_score,
        feedback) and ``notes``."""

        def num(x: float) -> float | int:
            return int(x) if float(x).is_integer() else float(x)

        return {
            "notebook": clean(self.notebook),
            "assignment": self.assignment,
            "score": num(self.score),
            "max_score": num(self.max_score),
            "questions": [
                {
                    "id": q.question,
                    "title": clean(q.title),
                    "kind": q.kind,
                    "score": num(q.score),
                    "max_score": num(q.max_score),
                    "feedback": clean(q.feedback()),
                    "cases_passed": q.cases_passed,
                    "cases_total": len(q.cases),
                    "seed": q.seed,
                }
                for q in self.questions
            ],
            "notes": [clean(n) for n in self.notes],
        }

    def table(self) -> str:
        """The printed summary: notes, one row per question, and ``Score: X/Y`` (every row one line)."""
        lines = [f"Grading {clean(self.notebook)} (assignment {self.assignment})"]
        lines += [f"  note: {clean(n)}" for n in self.notes]
        width = max([len(clean(q.title)) for q in self.questions] + [5])
        lines.append(f"{'id':<4} {'title':<{width}} {'score':>7}  feedback")
        for q in self.questions:
            score = f"{_fmt(q.score)}/{_fmt(q.max_score)}"
            mark = "✓" if q.passed else ("½" if q.score > 0 else "✗")
            title = clean(q.title)
            lines.append(f"{q.question:<4} {title:<{width}} {score:>7}  {mark} {clean(q.feedback())}")
        lines.append(f"Score: {_fmt(self.score)}/{_fmt(self.max_score)}")
        return "\n".join(lines)


def write_report(report: Report, path: str | Path) -> None:
    """Write the JSON report atomically (a file next to it, then renamed over it); raises ``OSError``
    (``IsADirectoryError`` when ``path`` is a directory)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as fh:
            fh.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
