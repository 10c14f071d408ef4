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
* ``--path-output DIR`` writes the site to ``DIR/_build/html`` instead of ``./_build/html``.
* ``--toc FILE`` builds with another table of contents (e.g. a subset of the chapters).
* ``--no-nitpicky`` tolerates unresolved cross-references (still strict about other warnings).

``python -m utils.book pdf`` (``make pdf``) builds the whole book as one PDF with LaTeX (pdflatex,
offline) into ``_build/latex/``; it takes the same options and first says which TeX programs or
packages are missing (Debian: ``apt-get install`` the packages of ``TEX_PACKAGES``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
TEX_PACKAGES = ["texlive-latex-recommended", "texlive-latex-extra", "texlive-fonts-recommended", "tex-gyre", "latexmk"]
TEX_PROGRAMS = ["pdflatex", "latexmk", "makeindex", "kpsewhich"]
TEX_FILES = ["fncychap.sty", "titlesec.sty", "tabulary.sty", "framed.sty", "wrapfig.sty", "capt-of.sty",
             "needspace.sty", "upquote.sty", "fancyvrb.sty", "tgtermes.sty", "tgheros.sty", "cmap.sty",
             "amsmath.sty", "xcolor.sty", "float.sty", "parskip.sty", "geometry.sty", "hyperref.sty"]


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
    digest = hashlib.sha256(b"".join((site / f).read_bytes() for f in ("package.json", "package-lock.json"))).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    print("Installing the site's JavaScript assets (npm ci in site/) ...", flush=True)
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                              cwd=site, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"npm ci failed ({err})"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if "nodedir" not in line and line.strip()]
        return f"npm ci failed ({lines[-1].strip() if lines else f'exit code {done.returncode}'})"
    stamp.write_text(digest + "\n")
    return None


def _own_path(root: Path, path: str) -> str:
    """``path`` (relative in _config.yml) made absolute: in ``root``, else in the course (test books)."""
    found = root / path
    return str(found if found.exists() or root == ROOT else ROOT / path)


def write_config(root: Path, target: Path, *, execute: bool) -> Path:
    """``root/_config.yml`` for a build from ``target``'s folder: paths made absolute, execution on or off."""
    with open(root / "_config.yml", encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not execute:
        config.setdefault("execute", {})["execute_notebooks"] = "off"
    config["bibtex_bibfiles"] = [str(root / p) for p in config.get("bibtex_bibfiles", [])]
    sphinx = config.get("sphinx") or {}
    if sphinx.get("local_extensions"):
        sphinx["local_extensions"] = {k: _own_path(root, v) for k, v in sphinx["local_extensions"].items()}
    html = config.get("html") or {}
    if html.get("favicon"):
        html["favicon"] = _own_path(root, html["favicon"])
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


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
        if not solutions:
            toc_path = tmp / "_toc.yml"
            toc_data = load_toc(root) if toc is None else yaml.safe_load(Path(toc).read_text(encoding="utf-8"))
            toc_path.write_text(yaml.safe_dump(without_solutions(toc_data), sort_keys=False), encoding="utf-8")
            cmd += ["--toc", str(toc_path)]
        elif toc is not None:
            cmd += ["--toc", str(Path(toc).resolve())]
        cmd += ["--config", str(write_config(root, tmp / "_config.yml", execute=execute))]
        # Notebooks show their figures inline: a headless MPLBACKEND (e.g. Agg) would hide them.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env["COURSE_PROFILE"] = profile or os.environ.get("COURSE_PROFILE") or "book"
        env["COURSE_PROGRESS"] = "0"  # a progress bar frozen in a web page tells a reader nothing
        if builder == "html" and env.get("COURSE_SITE_ASSETS", "").lower() != "cdn":
            problem = install_site_assets()
            if problem:
                print(f"Site assets: {problem}; the pages load MathJax and the widget renderer from the CDN "
                      "instead (math and widgets then need a network).", flush=True)
                env["COURSE_SITE_ASSETS"] = "cdn"
        shutil.rmtree(out / "_build" / ".doctrees", ignore_errors=True)
        shutil.rmtree(out / "_build" / "jupyter_execute", ignore_errors=True)
        target = out / "_build" / ("latex" if builder == "pdflatex" else builder)
        if builder == "pdflatex":
            shutil.rmtree(target, ignore_errors=True)
        print(f"Building the book (profile {env['COURSE_PROFILE']}, solutions {'on' if solutions else 'off'}, "
              f"execute {'on' if execute else 'off'}) into {target}", flush=True)
        return subprocess.call(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL)
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
        print(f"make pdf needs TeX, and this machine lacks: {', '.join(missing)}.\n"
              f"On Debian or Ubuntu: apt-get install --no-install-recommends {' '.join(TEX_PACKAGES)}",
              file=sys.stderr)
        return 2
    code = build(path_output=path_output, builder="pdflatex", **options)
    latex = (Path(path_output) if path_output is not None else ROOT) / "_build" / "latex"
    pdfs = sorted(latex.glob("*.pdf"))
    if code != 0 or not pdfs:
        print(f"The PDF was not built (see the LaTeX log in {latex}).", file=sys.stderr)
        return code or 1
    for pdf in pdfs:
        log = pdf.with_suffix(".log")
        pages = re.findall(r"Output written on .*?\((\d+) pages", log.read_text(errors="replace")) if log.exists() else []
        print(f"The PDF is in {pdf} ({pdf.stat().st_size / 1e6:.1f} MB"
              f"{f', {pages[-1]} pages' if pages else ''})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("build", "build the website"), ("pdf", "build the whole book as one PDF (LaTeX)")):
        b = sub.add_parser(name, help=help_text)
        b.add_argument("--solutions", choices=["0", "1"], default="1", help="1: publish the solutions part (default); 0: leave it out")
        b.add_argument("--no-execute", action="store_true", help="do not execute notebooks")
        b.add_argument("--path-output", type=Path, default=None, help="write the output to PATH/_build/")
        b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
        b.add_argument("--profile", choices=["smoke", "book", "full"], default=None,
                       help="compute profile for executing the notebooks (default: $COURSE_PROFILE, else book)")
        b.add_argument("--toc", type=Path, default=None, help="build with this table of contents instead of _toc.yml")
        b.add_argument("--nitpicky", action="store_true", help="warn about every missing reference (the default)")
        b.add_argument("--no-nitpicky", action="store_true", help="tolerate missing references")
    args = parser.parse_args(argv)
    options = dict(solutions=args.solutions == "1", execute=not args.no_execute, path_output=args.path_output,
                   strict=not args.no_strict, nitpicky=not args.no_nitpicky, profile=args.profile, toc=args.toc)
    return build_pdf(**options) if args.command == "pdf" else build(**options)


if __name__ == "__main__":
    sys.exit(main())
