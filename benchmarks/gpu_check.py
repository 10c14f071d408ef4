"""`make gpu-check`: everything that needs a CUDA GPU, in one command, with a dated results file.

What it runs, in this order (each step is timed and its outcome recorded):

1. ``pytest -m gpu tests``: the unit tests marked ``gpu`` (skipped everywhere else, CI included);
2. every chapter (``chapters/*.ipynb``) executed with papermill in the ``book`` and in the ``full``
   profile on the GPU, with all its assertions (the ``full`` ones are only ever checked here);
   ``--jobs`` notebooks run at a time (small models leave a data-centre GPU mostly idle), each kernel
   with ``COURSE_THREADS`` set to its share of the CPU cores;
3. ``benchmarks/bench_models.py --device cuda --batch 64 --size 224``, alone on the machine, which
   appends its own table to ``benchmarks/results/models.md``.

The results go to ``benchmarks/results/gpu_check_<date>_<device>.md`` (device name, date, versions,
one row per step, the tail of every failure). The exit status is 0 only when every step passed. On a
machine without CUDA it stops at once with one sentence and exit status 2. Aim: under 10 minutes on a
current data-centre GPU (the total is in the file; a slower run says so).

    python benchmarks/gpu_check.py [--jobs 4] [--profiles book,full] [--skip-benchmark] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).parent / "results"
BUDGET_SECONDS = 600  # the whole check on a current data-centre GPU
NO_CUDA = (
    "make gpu-check needs a CUDA GPU and PyTorch with CUDA support, and this machine has none "
    "(torch.cuda.is_available() is False); run it on a GPU machine."
)


@dataclasses.dataclass
class Step:
    """One line of the results table."""

    name: str
    passed: bool
    seconds: float
    detail: str = ""  # the summary of a test run, or the tail of a failure


def slug(text: str) -> str:
    """A file-name-safe device name: ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown-device"


def results_path(device_name: str, date: dt.date, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / f"gpu_check_{date.isoformat()}_{slug(device_name)}.md"


def _cell(text: str) -> str:
    """Text safe inside one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def write_results(
    steps: list[Step],
    device_name: str,
    versions: dict[str, str],
    date: dt.date | None = None,
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write the dated results file of a gpu-check run and return its path.

    ``steps`` in the order they ran; ``versions`` e.g. ``{"torch": "2.9.0", "CUDA": "12.8"}``.
    Failures get their detail (the tail of the output) in a section of their own.
    """
    date = date or dt.date.today()
    total = sum(s.seconds for s in steps)
    failed = [s for s in steps if not s.passed]
    outcome = f"{len(failed)} of {len(steps)} steps FAILED" if failed else f"all {len(steps)} steps passed"
    over = "" if total <= BUDGET_SECONDS else f" (over the {BUDGET_SECONDS} s aim)"

    def summary(s: Step) -> str:  # a passed step shows its last line (pytest's count); a failure points below
        if not s.detail:
            return ""
        return _cell(s.detail.splitlines()[-1]) if s.passed else "see below"

    lines = [
        f"# GPU check, {date.isoformat()}: {device_name}",
        "",
        "Written by `make gpu-check` (`benchmarks/gpu_check.py`): the `gpu` unit tests, every chapter in the",
        "`book` and `full` profiles on the GPU with its assertions, and the model benchmark (its table is in",
        "`models.md`).",
        "",
        f"- device: {device_name}",
        *(f"- {name}: {value}" for name, value in versions.items()),
        f"- result: {outcome}",
        f"- total: {total:.0f} s{over}",
        "",
        "| step | result | seconds | detail |",
        "| --- | --- | ---: | --- |",
        *(
            f"| {_cell(s.name)} | {'passed' if s.passed else 'FAILED'} | {s.seconds:.1f} | {summary(s)} |"
            for s in steps
        ),
    ]
    for s in failed:
        lines += ["", f"## {s.name}", "", "```", s.detail.rstrip()[-4000:], "```"]
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_path(device_name, date, results_dir)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(name: str, command: list[str], env: dict[str, str], timeout: float) -> Step:
    """Run ``command`` from the repository root; the step passes on exit status 0."""
    start = time.perf_counter()
    try:
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        passed, text = out.returncode == 0, (out.stdout + out.stderr)
    except subprocess.TimeoutExpired as err:
        partial = (err.stdout or b"").decode(errors="replace")[-3000:]
        passed, text = False, f"stopped after {timeout:.0f} s\n{partial}"
    return Step(name, passed, time.perf_counter() - start, "\n".join(text.strip().splitlines()[-40:]))


def chapter_steps(
    notebooks: list[Path], profiles: list[str], jobs: int, timeout: float, out_dir: Path
) -> list[Step]:
    """Every notebook in every profile with papermill, ``jobs`` at a time, each in its own process."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "COURSE_DEVICE": "cuda", "COURSE_THREADS": str(max(1, cores // jobs))}
    env.pop("MPLBACKEND", None)
    env["MPLBACKEND"] = "Agg"
    tasks = []
    for profile in profiles:
        for nb in notebooks:
            command = [
                sys.executable,
                "-m",
                "papermill",
                str(nb),
                str(out_dir / f"{profile}_{nb.name}"),
                "--kernel",
                "python3",
                "--cwd",
                str(nb.parent),
                "--no-progress-bar",
            ]
            tasks.append((f"{nb.relative_to(ROOT)} ({profile})", command, {**env, "COURSE_PROFILE": profile}))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, name, command, task_env, timeout) for name, command, task_env in tasks]
        steps = []
        for future in futures:
            steps.append(future.result())
            s = steps[-1]
            print(f"{'passed' if s.passed else 'FAILED'} {s.name} in {s.seconds:.0f} s", flush=True)
    return steps


def versions() -> dict[str, str]:
    import torch
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "CUDA": str(torch.version.cuda),
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4, help="notebooks run at the same time (default 4)")
    parser.add_argument("--profiles", default="book,full", help="comma-separated (default book,full)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per step (default 600)")
    parser.add_argument("--skip-benchmark", action="store_true", help="leave out bench_models.py")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name(0)
    print(f"GPU check on {device_name}", flush=True)
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    env = {**os.environ, "COURSE_DEVICE": "cuda", "MPLBACKEND": "Agg"}

    pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    steps = [run("pytest -m gpu", pytest, {**env, "COURSE_PROFILE": "smoke"}, args.timeout)]
    print(
        f"{'passed' if steps[0].passed else 'FAILED'} pytest -m gpu in {steps[0].seconds:.0f} s", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as out_dir:
        steps += chapter_steps(
            notebooks,
            [p.strip() for p in args.profiles.split(",") if p.strip()],
            max(1, args.jobs),
            args.timeout,
            Path(out_dir),
        )
    if not args.skip_benchmark:
        steps.append(
            run(
                "bench_models.py --device cuda --batch 64 --size 224",
                [
                    sys.executable,
                    "benchmarks/bench_models.py",
                    "--device",
                    "cuda",
                    "--batch",
                    "64",
                    "--size",
                    "224",
                ],
                env,
                args.timeout,
            )
        )
    path = write_results(steps, device_name, versions())
    failed = [s.name for s in steps if not s.passed]
    print(
        f"results: {path.relative_to(ROOT)}; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
