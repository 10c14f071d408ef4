"""Build the course website (used by ``make book``; see the README).

``python -m utils.book build`` runs Jupyter Book 1.x in strict, nitpicky mode (``-n -W --keep-going``:
every warning and every unresolved cross-reference fails the build; every page rebuilt from clean,
every chapter executed in the profile named by ``COURSE_PROFILE``).

Before building it installs the site's JavaScript assets (MathJax, require.js, the ipywidgets HTML
manager) with ``npm ci`` into ``site/node_modules`` from the committed lock file, so that the site
works with no network (``site/course_site.py`` serves them from ``_build/html/_vendor/``). When npm is
missing or fails, it says so in one line and the site loads them from the CDN instead;
``COURSE_SITE_ASSETS=cdn`` asks for the CDN without trying npm.

Options:

* ``--solutions 0`` leaves the "Solutions" part out of the site (``make book SOLUTIONS=0``): the
  table of contents is written without it and solution notebooks are neither executed nor published.
* ``--no-execute`` renders the notebooks as committed (no outputs): a fast check of the structure.
* ``--jobs N`` executes up to N notebooks at a time before Sphinx renders them (default: the number
  of CPU cores, or ``COURSE_BOOK_JOBS``). Every notebook still runs from a fresh kernel; each one
  that succeeds is handed to the build through a temporary jupyter-cache, and one that fails is run
  again by the build itself, so that its error is reported (and fails the build) as usual. The
  time each notebook took is written to ``_build/notebook_times.json``.
* ``--path-output DIR`` writes the site to ``DIR/_build/html`` instead of ``./_build/html``.
* ``--toc FILE`` builds with another table of contents (e.g. a subset of the chapters).
* ``--no-nitpicky`` tolerates unresolved cross-references (still strict about other warnings).

``python -m utils.book pdf`` (``make pdf``) builds the whole book as one PDF with LaTeX (pdflatex,
offline) into ``_build/latex/``; it takes the same options and first says which TeX programs or
packages are missing (Debian: ``apt-get install`` the packages of ``TEX_PACKAGES``).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import time
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_CAPTION = "Solutions"
SITE = ROOT / "site"  # the website's own parts: npm assets, the Sphinx extension, the favicon
# What `make pdf` needs: Debian's packages, and the programs and LaTeX files they bring that the build uses.
TEX_PACKAGES = [
    "texlive-latex-recommended",
    "texlive-latex-extra",
    "texlive-fonts-recommended",
    "tex-gyre",
    "latexmk",
]
TEX_PROGRAMS = ["pdflatex", "latexmk", "makeindex", "kpsewhich"]
TEX_FILES = [
    "fncychap.sty",
    "titlesec.sty",
    "tabulary.sty",
    "framed.sty",
    "wrapfig.sty",
    "capt-of.sty",
    "needspace.sty",
    "upquote.sty",
    "fancyvrb.sty",
    "tgtermes.sty",
    "tgheros.sty",
    "cmap.sty",
    "amsmath.sty",
    "xcolor.sty",
    "float.sty",
    "parskip.sty",
    "geometry.sty",
    "hyperref.sty",
]


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


def install_site_assets(site: Path = SITE) -> str | None:
    """Install the site's pinned npm packages (``npm ci`` in ``site/``) unless already installed.

    Returns None when they are installed, else the reason why not (the build then uses the CDN).
    """
    modules = site / "node_modules"
    stamp = modules / ".course-installed"
    digest = hashlib.sha256(
        b"".join((site / f).read_bytes() for f in ("package.json", "package-lock.json"))
    ).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    print("Installing the site's JavaScript assets (npm ci in site/) ...", flush=True)
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=site,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"npm ci failed ({err})"
    if done.returncode != 0:
        lines = [
            line
            for line in (done.stderr or done.stdout).splitlines()
            if "nodedir" not in line and line.strip()
        ]
        return f"npm ci failed ({lines[-1].strip() if lines else f'exit code {done.returncode}'})"
    stamp.write_text(digest + "\n")
    return None


def _own_path(root: Path, path: str) -> str:
    """``path`` (relative in _config.yml) made absolute: in ``root``, else in the course (test books)."""
    found = root / path
    return str(found if found.exists() or root == ROOT else ROOT / path)


def load_config(root: Path = ROOT) -> dict:
    """The book's configuration (``_config.yml``) as a dict."""
    with open(root / "_config.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def write_config(root: Path, target: Path, *, execute: bool, cache: Path | None = None) -> Path:
    """``root/_config.yml`` for a build from ``target``'s folder: paths made absolute, execution on or off.

    With ``cache`` (a jupyter-cache folder filled by :func:`execute_notebooks`), notebooks found there
    are taken from it and the others are executed by the build.
    """
    config = load_config(root)
    if not execute:
        config.setdefault("execute", {})["execute_notebooks"] = "off"
    elif cache is not None:
        config.setdefault("execute", {}).update(execute_notebooks="cache", cache=str(cache))
    config["bibtex_bibfiles"] = [str(root / p) for p in config.get("bibtex_bibfiles", [])]
    sphinx = config.get("sphinx") or {}
    if sphinx.get("local_extensions"):
        sphinx["local_extensions"] = {k: _own_path(root, v) for k, v in sphinx["local_extensions"].items()}
    html = config.get("html") or {}
    if html.get("favicon"):
        html["favicon"] = _own_path(root, html["favicon"])
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def notebooks_to_execute(root: Path, toc: dict, config: dict) -> list[Path]:
    """The notebooks of ``toc`` that the build executes (``execute.exclude_patterns`` left out)."""
    excluded = (config.get("execute") or {}).get("exclude_patterns") or []
    found = []
    for name in toc_files(toc):
        path = root / f"{name}.ipynb"
        if path.exists() and not any(fnmatch.fnmatch(f"{name}.ipynb", pattern) for pattern in excluded):
            found.append(path)
    return found


def _expected_order(paths: list[Path], root: Path, times_file: Path) -> list[Path]:
    """Longest first (the times of the previous build when there are some; else chapters before the
    other notebooks, larger files first), so that the parallel workers finish together."""
    try:
        previous = json.loads(times_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}

    def key(path: Path) -> tuple[float, float]:
        name = path.relative_to(root).as_posix()
        if name in previous:
            return (0, -float(previous[name]))
        return (1, -(1e6 if name.startswith("chapters/") else 0) - path.stat().st_size)

    return sorted(paths, key=key)


def _init_worker(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


def _execute_one(path: str, timeout: int | None, allow_errors: bool) -> tuple[str, float, str | None]:
    """Run one notebook in a fresh kernel in its own folder: (executed notebook JSON, seconds, error)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    result = single_nb_execution(
        nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=allow_errors, meta_override=True
    )
    seconds = time.perf_counter() - start
    if result.err is not None:
        lines = [line for line in str(result.err).splitlines() if line.strip()]
        return "", seconds, f"{type(result.err).__name__}: {lines[-1] if lines else ''}"[:300]
    return nbformat.writes(nb), seconds, None


def execute_notebooks(
    paths: list[Path],
    cache_dir: Path,
    *,
    env: dict[str, str],
    jobs: int,
    root: Path,
    config: dict,
    times_file: Path | None = None,
) -> dict[str, float]:
    """Execute ``paths`` with up to ``jobs`` kernels at a time and put each success in a jupyter-cache
    at ``cache_dir`` (and a copy of it in ``cache_dir/executed/``, by path relative to ``root``);
    returns the seconds each notebook took. Failures are printed, not cached."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    execute = config.get("execute") or {}
    timeout, allow_errors = execute.get("timeout"), bool(execute.get("allow_errors", False))
    if times_file is not None:
        paths = _expected_order(paths, root, times_file)
    cache = get_cache(str(cache_dir))
    times: dict[str, float] = {}
    print(f"Executing {len(paths)} notebooks, {jobs} at a time ...", flush=True)
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(env,)
    ) as pool:
        futures = {pool.submit(_execute_one, str(p), timeout, allow_errors): p for p in paths}
        for done, future in enumerate(as_completed(futures), start=1):
            path = futures[future]
            name = path.relative_to(root).as_posix()
            try:
                text, seconds, error = future.result()
            except Exception as err:  # the worker itself broke: the build runs the notebook again
                text, seconds, error = "", float("nan"), f"{type(err).__name__}: {err}"
            times[name] = round(seconds, 1)
            if error is None:
                record = CacheBundleIn(
                    nbformat.reads(text, as_version=4), str(path), data={"execution_seconds": seconds}
                )
                cache.cache_notebook_bundle(record, check_validity=False, overwrite=True)
                copy = cache_dir / "executed" / name
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(text, encoding="utf-8")
                print(f"  [{done}/{len(paths)}] {name}: {seconds:.1f} s", flush=True)
            else:
                print(
                    f"  [{done}/{len(paths)}] {name} FAILED after {seconds:.1f} s ({error}); "
                    "the build runs it again and reports the error",
                    flush=True,
                )
    print(f"Executed {len(paths)} notebooks in {time.perf_counter() - start:.0f} s", flush=True)
    if times_file is not None:
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n", encoding="utf-8")
    return times


def default_jobs() -> int:
    """How many notebooks the build executes at a time: ``COURSE_BOOK_JOBS``, else the CPU cores."""
    value = os.environ.get("COURSE_BOOK_JOBS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"COURSE_BOOK_JOBS must be a positive integer, got {value!r}")
        return int(value)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


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
    nitpicky: bool = True,
    profile: str | None = None,
    root: Path = ROOT,
    toc: Path | None = None,
    builder: str = "html",
    jobs: int | None = None,
) -> int:
    """Build the website (or, with ``builder="pdflatex"``, the PDF); return Jupyter Book's exit code."""
    out = Path(path_output) if path_output is not None else root
    tmp = Path(tempfile.mkdtemp(prefix="course-book-"))
    try:
        cmd = [_jupyter_book(), "build", str(root), "--path-output", str(out), "--all", "--builder", builder]
        if strict:
            cmd += ["-W", "--keep-going"]
        if nitpicky:
            cmd += ["-n"]
        toc_data = load_toc(root) if toc is None else yaml.safe_load(Path(toc).read_text(encoding="utf-8"))
        if not solutions:
            toc_data = without_solutions(toc_data)
            toc_path = tmp / "_toc.yml"
            toc_path.write_text(yaml.safe_dump(toc_data, sort_keys=False), encoding="utf-8")
            cmd += ["--toc", str(toc_path)]
        elif toc is not None:
            cmd += ["--toc", str(Path(toc).resolve())]
        # Notebooks show their figures inline: a headless MPLBACKEND (e.g. Agg) would hide them.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env["COURSE_PROFILE"] = profile or os.environ.get("COURSE_PROFILE") or "book"
        env["COURSE_PROGRESS"] = "0"  # a progress bar frozen in a web page tells a reader nothing
        if builder == "html" and env.get("COURSE_SITE_ASSETS", "").lower() != "cdn":
            problem = install_site_assets()
            if problem:
                print(
                    f"Site assets: {problem}; the pages load MathJax and the widget renderer from the CDN "
                    "instead (math and widgets then need a network).",
                    flush=True,
                )
                env["COURSE_SITE_ASSETS"] = "cdn"
        shutil.rmtree(out / "_build" / ".doctrees", ignore_errors=True)
        shutil.rmtree(out / "_build" / "jupyter_execute", ignore_errors=True)
        cache = None
        jobs = default_jobs() if jobs is None else jobs
        if execute and jobs > 1:
            config = load_config(root)
            paths = notebooks_to_execute(root, toc_data, config)
            if len(paths) > 1:
                cache = tmp / "jupyter_cache"
                execute_notebooks(
                    paths,
                    cache,
                    env=env,
                    jobs=min(jobs, len(paths)),
                    root=root,
                    config=config,
                    times_file=out / "_build" / "notebook_times.json",
                )
        cmd += ["--config", str(write_config(root, tmp / "_config.yml", execute=execute, cache=cache))]
        target = out / "_build" / ("latex" if builder == "pdflatex" else builder)
        if builder == "pdflatex":
            shutil.rmtree(target, ignore_errors=True)
        print(
            f"Building the book (profile {env['COURSE_PROFILE']}, solutions {'on' if solutions else 'off'}, "
            f"execute {'on' if execute else 'off'}) into {target}",
            flush=True,
        )
        code = subprocess.call(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL)
        if cache is not None:
            # myst-nb renders a cached notebook's outputs but writes the notebook as read to
            # jupyter_execute/: put the executed one there, as a build that executes itself does.
            for executed in (cache / "executed").rglob("*.ipynb"):
                written = out / "_build" / "jupyter_execute" / executed.relative_to(cache / "executed")
                if written.exists():
                    shutil.copyfile(executed, written)
        return code
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def missing_tex() -> list[str]:
    """The TeX programs and LaTeX files that `make pdf` needs and this machine lacks."""
    missing = [p for p in TEX_PROGRAMS if shutil.which(p) is None]
    if "kpsewhich" not in missing:
        found = subprocess.run(["kpsewhich", *TEX_FILES], capture_output=True, text=True).stdout.split()
        missing += [f for f in TEX_FILES if not any(Path(x).name == f for x in found)]
    return missing


def build_pdf(*, path_output: Path | None = None, **options) -> int:
    """Build the whole book as one PDF (LaTeX, offline); print where it is, its size and pages."""
    missing = missing_tex()
    if missing:
        print(
            f"make pdf needs TeX, and this machine lacks: {', '.join(missing)}.\n"
            f"On Debian or Ubuntu: apt-get install --no-install-recommends {' '.join(TEX_PACKAGES)}",
            file=sys.stderr,
        )
        return 2
    code = build(path_output=path_output, builder="pdflatex", **options)
    latex = (Path(path_output) if path_output is not None else ROOT) / "_build" / "latex"
    pdfs = sorted(latex.glob("*.pdf"))
    if code != 0 or not pdfs:
        print(f"The PDF was not built (see the LaTeX log in {latex}).", file=sys.stderr)
        return code or 1
    for pdf in pdfs:
        log = pdf.with_suffix(".log")
        pages = (
            re.findall(r"Output written on .*?\((\d+) pages", log.read_text(errors="replace"))
            if log.exists()
            else []
        )
        print(
            f"The PDF is in {pdf} ({pdf.stat().st_size / 1e6:.1f} MB"
            f"{f', {pages[-1]} pages' if pages else ''})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.book", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("build", "build the website"),
        ("pdf", "build the whole book as one PDF (LaTeX)"),
    ):
        b = sub.add_parser(name, help=help_text)
        b.add_argument(
            "--solutions",
            choices=["0", "1"],
            default="1",
            help="1: publish the solutions part (default); 0: leave it out",
        )
        b.add_argument("--no-execute", action="store_true", help="do not execute notebooks")
        b.add_argument("--path-output", type=Path, default=None, help="write the output to PATH/_build/")
        b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
        b.add_argument(
            "--profile",
            choices=["smoke", "book", "full"],
            default=None,
            help="compute profile for executing the notebooks (default: $COURSE_PROFILE, else book)",
        )
        b.add_argument(
            "--toc", type=Path, default=None, help="build with this table of contents instead of _toc.yml"
        )
        b.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="notebooks executed at a time (default: $COURSE_BOOK_JOBS, else the CPU cores)",
        )
        b.add_argument(
            "--nitpicky", action="store_true", help="warn about every missing reference (the default)"
        )
        b.add_argument("--no-nitpicky", action="store_true", help="tolerate missing references")
    args = parser.parse_args(argv)
    options = dict(
        solutions=args.solutions == "1",
        execute=not args.no_execute,
        path_output=args.path_output,
        strict=not args.no_strict,
        nitpicky=not args.no_nitpicky,
        profile=args.profile,
        toc=args.toc,
        jobs=args.jobs,
    )
    return build_pdf(**options) if args.command == "pdf" else build(**options)


if __name__ == "__main__":
    sys.exit(main())
