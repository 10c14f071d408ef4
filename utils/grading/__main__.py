"""The command line: ``python -m utils.grading`` with ``grade``, ``generate`` or ``setup-cells``.

* ``grade NOTEBOOK [--json REPORT] [--timeout SECONDS] [--assignment ID] [--seed N] [--workdir DIR]``:
  run and score one notebook; prints a row per question and ``Score: X/Y``. Exit code 0 when grading
  ran, 1 when the report could not be written (the table is printed all the same), 2 on usage errors.
* ``generate SOLUTIONS_DIR EXERCISES_DIR [--check]``: (re)write the exercises; with ``--check`` write
  nothing and exit 1 naming every file that is out of sync (or has bad markers, or leaks).
* ``setup-cells [--check] [--root DIR]``: write the canonical first cell into every notebook
  (:mod:`utils.grading.setup_cell`); with ``--check`` exit 1 naming the notebooks without it.

The working directory never goes on the grader's import path, and SIGTERM or SIGHUP end the grader
the way Ctrl-C does: its kernel, the processes it left and its temporary folder are removed.
Chapter 01 is the first assignment graded this way.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def _keep_cwd_off_the_import_path() -> None:
    """``python -m`` puts the current folder first on ``sys.path``: a module a notebook wrote there
    (``sklearn.py``) must not be what the grader imports. ``utils`` itself is imported already."""
    here = {"", ".", os.getcwd()}
    sys.path[:] = [p for p in sys.path if p not in here and os.path.abspath(p) != os.getcwd()]


def _exit_on(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.grading", description="Grade notebooks and generate exercises."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="run a notebook in a fresh kernel and score it")
    grade.add_argument("notebook", help="the .ipynb file to grade")
    grade.add_argument(
        "--json", dest="json_path", metavar="REPORT", help="also write the report as JSON here"
    )
    grade.add_argument(
        "--timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="time limit per cell and per function call (default 120)",
    )
    grade.add_argument(
        "--assignment",
        default=None,
        metavar="ID",
        help="e.g. 01_backprop (default: the file name; the notebook's metadata must agree)",
    )
    grade.add_argument(
        "--seed", type=int, default=None, help="fix the random inputs (default: fresh ones every run)"
    )
    grade.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="the kernel's working directory (default: the notebook's folder)",
    )
    gen = sub.add_parser("generate", help="write exercises/ from solutions/")
    gen.add_argument("solutions", help="folder of solution notebooks")
    gen.add_argument("exercises", help="folder of exercise notebooks")
    gen.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the exercises are out of sync"
    )
    cells = sub.add_parser("setup-cells", help="write the canonical first cell into every notebook")
    cells.add_argument("--root", default=".", help="the course folder (default: the current one)")
    cells.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a notebook lacks the cell"
    )
    return parser


def _grade(args: argparse.Namespace) -> int:
    from .grader import DEFAULT_TIMEOUT, UsageError, grade_notebook, write_report

    if args.json_path and os.path.isdir(args.json_path):
        print(f"error: --json {args.json_path} is a directory; give the path of a file", file=sys.stderr)
        return 2
    try:
        timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
        report = grade_notebook(
            args.notebook, assignment=args.assignment, seed=args.seed, workdir=args.workdir, timeout=timeout
        )
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.table(), flush=True)
    if args.json_path:
        try:
            write_report(report, args.json_path)
        except OSError as err:
            print(
                f"error: the report could not be written to {args.json_path} "
                f"({type(err).__name__}: {err}); the table above is the result",
                file=sys.stderr,
            )
            return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .generate import LeakError, MarkerError, check_sync, generate_all

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


def _setup_cells(args: argparse.Namespace) -> int:
    from .setup_cell import write_setup_cells

    try:
        changed = write_setup_cells(args.root, check=args.check)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'lacks the canonical first cell' if args.check else 'wrote'}: {path}")
    return 1 if (args.check and changed) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m utils.grading`` and the ``course-grade`` script; called without
    ``argv`` (from the command line) it also keeps the working directory off the import path and turns
    SIGTERM and SIGHUP into a clean exit."""
    if argv is None:
        _keep_cwd_off_the_import_path()
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), _exit_on)
    args = _parser().parse_args(argv)
    if args.command == "grade":
        return _grade(args)
    return _generate(args) if args.command == "generate" else _setup_cells(args)


if __name__ == "__main__":
    sys.exit(main())
