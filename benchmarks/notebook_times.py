"""Wall and CPU time of every lesson and solution notebook in a profile, run as the book build runs them.

Budgets (2-core machine, each notebook measured alone): at most 30 s per notebook in `smoke`; at most
about 3 minutes per chapter in `book`, and about 8 minutes for chapters 01-08 together (CI builds the
book in the `book` profile and must stay under 45 minutes).

The wall time depends on what else the machine runs; the CPU time (user + sys of the kernel process,
the work the notebook itself does) much less so, which is why both are recorded, with the load
average at the start. Results are appended to benchmarks/results/notebook_times.md with the machine
and the date; `--no-record` only prints them.

    python benchmarks/notebook_times.py --profile smoke [--profile book] [--no-record] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "notebook_times.md"
HEADER = (
    "# Notebook run times\n\n"
    "Produced by `python benchmarks/notebook_times.py`. Budgets on 2 cores, each notebook measured alone: "
    "30 s per notebook in `smoke`; about 3 minutes per chapter in `book`, about 8 minutes for chapters "
    "01-08 together. CPU seconds are user + sys of the notebook's kernel; the load is the 1-minute load "
    "average when the notebook started (above ~1 on 2 cores, other jobs were inflating the wall time).\n\n"
    "| date | machine | notebook | profile | seconds | CPU seconds | load |\n"
    "| --- | --- | --- | --- | --- | --- | --- |\n"
)


def children_cpu_seconds() -> float:
    """User + sys seconds of every finished child process (the kernels) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(path: Path, profile: str, cwd: Path | None = None) -> tuple[float, float]:
    """Execute the notebook at ``path`` in ``profile``; return (wall seconds, CPU seconds of its kernel).

    The kernel is a child process that the client waits for at shutdown, so its CPU time is counted in
    ``RUSAGE_CHILDREN`` once the notebook is done.
    """
    nb = nbformat.read(path, as_version=4)
    os.environ["COURSE_PROFILE"] = profile
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(cwd or path.parent)}}
    ).execute()
    return time.perf_counter() - start, children_cpu_seconds() - cpu_before


def row(notebook: str, profile: str, seconds: float, cpu: float, load: float, machine: str) -> str:
    return (
        f"| {dt.date.today().isoformat()} | {machine} | {notebook} | {profile} | {seconds:.1f} "
        f"| {cpu:.1f} | {load:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", action="append", choices=["smoke", "book", "full"])
    parser.add_argument("--no-record", action="store_true", help="print the rows, do not append them")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    profiles = args.profile or ["smoke"]
    notebooks = args.notebooks or sorted([*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
    os.environ.pop("MPLBACKEND", None)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    rows = []
    for profile in profiles:
        for nb in notebooks:
            load = os.getloadavg()[0]
            seconds, cpu = run(nb, profile)
            name = str(nb.resolve().relative_to(ROOT)) if nb.resolve().is_relative_to(ROOT) else str(nb)
            rows.append(row(name, profile, seconds, cpu, load, machine))
            print(rows[-1], flush=True)
    if args.no_record:
        return
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as fh:
        fh.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
