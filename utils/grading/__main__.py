"""Command line: ``python -m utils.grading grade NOTEBOOK`` and ``python -m utils.grading generate SOLUTIONS EXERCISES``.

* ``grade NOTEBOOK [--json REPORT] [--timeout SECONDS] [--assignment ID] [--seed N]``: run and score one
  notebook; prints a row per question and ``Score: X/Y``; exit code 0 whenever grading ran.
* ``generate SOLUTIONS_DIR EXERCISES_DIR [--check]``: (re)write the exercises; with ``--check`` write
  nothing and exit 1 naming every file that is out of sync (or has bad markers, or leaks).

Exit code 2 on usage errors. Chapter 01 is the first assignment graded this way.
"""
from __future__ import annotations

import argparse
import sys

from .generate import LeakError, MarkerError, check_sync, generate_all


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.grading", description="Grade notebooks and generate exercises.")
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="run a notebook in a fresh kernel and score it")
    grade.add_argument("notebook", help="the .ipynb file to grade")
    grade.add_argument("--json", dest="json_path", metavar="REPORT", help="also write the report as JSON here")
    grade.add_argument("--timeout", type=int, default=None, metavar="SECONDS",
                       help="time limit per cell and per function call (default 120)")
    grade.add_argument("--assignment", default=None, metavar="ID", help="e.g. 01_backprop (default: metadata, then file name)")
    grade.add_argument("--seed", type=int, default=None, help="fix the random inputs (default: fresh ones every run)")
    gen = sub.add_parser("generate", help="write exercises/ from solutions/")
    gen.add_argument("solutions", help="folder of solution notebooks")
    gen.add_argument("exercises", help="folder of exercise notebooks")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 when the exercises are out of sync")
    return parser


def _grade(args: argparse.Namespace) -> int:
    from .grader import DEFAULT_TIMEOUT, UsageError, grade_notebook, write_report

    try:
        report = grade_notebook(args.notebook, assignment=args.assignment,
                                timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout, seed=args.seed)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.table(), flush=True)
    if args.json_path:
        write_report(report, args.json_path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not Path(args.solutions).is_dir():
        print(f"error: solutions folder {args.solutions} does not exist", file=sys.stderr)
        return 2
    if args.check:
        problems = check_sync(args.solutions, args.exercises)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"{args.exercises} is in sync with {args.solutions}")
        return 0
    try:
        written = generate_all(args.solutions, args.exercises)
    except (MarkerError, LeakError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # e.g. a solution notebook that is not valid JSON
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{args.exercises} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.grading`` (and the ``course-grade`` script)."""
    args = _parser().parse_args(argv)
    return _grade(args) if args.command == "grade" else _generate(args)


if __name__ == "__main__":
    sys.exit(main())
