"""Wall time of every lesson and solution notebook in a profile, run as the book build runs them.

Budgets (2-core machine): each notebook at most 30 s in `smoke`; chapter 01 at most 2 minutes in
`book`. Results are appended to benchmarks/results/notebook_times.md with the machine and date.

    python benchmarks/notebook_times.py --profile smoke [--profile book] [NOTEBOOK ...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "notebook_times.md"


def run(path: Path, profile: str) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["COURSE_PROFILE"] = profile
    start = time.perf_counter()
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="append", choices=["smoke", "book", "full"])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    profiles = args.profile or ["smoke"]
    notebooks = args.notebooks or sorted([*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
    os.environ.pop("MPLBACKEND", None)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    rows = []
    for profile in profiles:
        for nb in notebooks:
            seconds = run(nb, profile)
            rows.append(f"| {dt.date.today().isoformat()} | {machine} | {nb.resolve().relative_to(ROOT)} | {profile} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Notebook run times\n\nProduced by `python benchmarks/notebook_times.py`. "
                           "Budgets on 2 cores: 30 s per notebook in `smoke`; chapter 01 2 minutes in `book`.\n\n"
                           "| date | machine | notebook | profile | seconds |\n| --- | --- | --- | --- | --- |\n")
    with RESULTS.open("a") as fh:
        fh.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
