"""Build the course website (used by ``make book``; see the README).

``python -m utils.book build`` runs Jupyter Book 1.x in strict mode (``-W --keep-going``, every page
rebuilt from clean, every chapter executed in the profile named by ``COURSE_PROFILE``).

Options:

* ``--solutions 0`` leaves the "Solutions" part out of the site (``make book SOLUTIONS=0``): the
  table of contents is written without it and solution notebooks are neither executed nor published.
* ``--no-execute`` renders the notebooks as committed (no outputs): a fast check of the structure.
* ``--path-output DIR`` writes the site to ``DIR/_build/html`` instead of ``./_build/html``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_CAPTION = "Solutions"


def load_toc(root: Path = ROOT) -> dict:
    """The table of contents (``_toc.yml``) as a dict."""
    with open(root / "_toc.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def toc_files(toc: dict) -> list[str]:
    """Every file named in a table of contents, root first, in reading order."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def without_solutions(toc: dict) -> dict:
    """A copy of ``toc`` with the solutions part removed."""
    parts = [p for p in toc.get("parts", []) if p.get("caption") != SOLUTIONS_CAPTION]
    if len(parts) == len(toc.get("parts", [])):
        raise ValueError(f"_toc.yml has no part with caption {SOLUTIONS_CAPTION!r} to leave out")
    return {**toc, "parts": parts}


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return str(exe)
    found = shutil.which("jupyter-book")
    if not found:
        raise RuntimeError("jupyter-book is not installed: run `make install` (or pip install -e '.[dev]')")
    return found


def build(
    *,
    solutions: bool = True,
    execute: bool = True,
    path_output: Path | None = None,
    strict: bool = True,
    nitpicky: bool = False,
    profile: str | None = None,
    root: Path = ROOT,
) -> int:
    """Build the website; return the exit code of Jupyter Book (0 when the strict build passed)."""
    out = Path(path_output) if path_output is not None else root
    tmp = Path(tempfile.mkdtemp(prefix="course-book-"))
    try:
        cmd = [_jupyter_book(), "build", str(root), "--path-output", str(out), "--all"]
        if strict:
            cmd += ["-W", "--keep-going"]
        if nitpicky:
            cmd += ["-n"]
        if not solutions:
            toc_path = tmp / "_toc.yml"
            toc_path.write_text(yaml.safe_dump(without_solutions(load_toc(root)), sort_keys=False), encoding="utf-8")
            cmd += ["--toc", str(toc_path)]
        if not execute:
            with open(root / "_config.yml", encoding="utf-8") as fh:
                config = yaml.safe_load(fh)
            config.setdefault("execute", {})["execute_notebooks"] = "off"
            config["bibtex_bibfiles"] = [str(root / p) for p in config.get("bibtex_bibfiles", [])]
            config_path = tmp / "_config.yml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            cmd += ["--config", str(config_path)]
        # Notebooks show their figures inline: a headless MPLBACKEND (e.g. Agg) would hide them.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env["COURSE_PROFILE"] = profile or os.environ.get("COURSE_PROFILE") or "book"
        env["COURSE_PROGRESS"] = "0"  # a progress bar frozen in a web page tells a reader nothing
        shutil.rmtree(out / "_build" / ".doctrees", ignore_errors=True)
        shutil.rmtree(out / "_build" / "jupyter_execute", ignore_errors=True)
        print(f"Building the book (profile {env['COURSE_PROFILE']}, solutions {'on' if solutions else 'off'}, "
              f"execute {'on' if execute else 'off'}) into {out / '_build' / 'html'}", flush=True)
        return subprocess.call(cmd, cwd=root, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the website")
    b.add_argument("--solutions", choices=["0", "1"], default="1", help="1: publish the solutions part (default); 0: leave it out")
    b.add_argument("--no-execute", action="store_true", help="do not execute notebooks")
    b.add_argument("--path-output", type=Path, default=None, help="write the site to PATH/_build/html")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    b.add_argument("--profile", choices=["smoke", "book", "full"], default=None,
                   help="compute profile for executing the notebooks (default: $COURSE_PROFILE, else book)")
    b.add_argument("--nitpicky", action="store_true", help="also warn about every missing reference")
    args = parser.parse_args(argv)
    return build(solutions=args.solutions == "1", execute=not args.no_execute, path_output=args.path_output,
                 strict=not args.no_strict, nitpicky=args.nitpicky, profile=args.profile)


if __name__ == "__main__":
    sys.exit(main())
