"""The project's own conventions: layout, one dependency list, clean notebooks, a complete table of contents,
a wheel that ships its typing marker."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
from utils import book

TOP_LEVEL = [
    "book",
    "chapters",
    "exercises",
    "solutions",
    "utils",
    "tests",
    "benchmarks",
    "_config.yml",
    "_toc.yml",
    "environment.yml",
    "pyproject.toml",
    "Makefile",
    "README.md",
    ".ci/run",
]


def tracked_notebooks() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    names = out.stdout.split() if out.returncode == 0 else []
    if not names:  # not a git checkout: every notebook of the course folders
        return sorted(p for d in ("chapters", "exercises", "solutions") for p in (ROOT / d).glob("*.ipynb"))
    return [ROOT / n for n in names]


LESSONS = sorted((ROOT / "chapters").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_layout(name):
    assert (ROOT / name).exists(), f"{name} is missing from the top level"


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^\s*make test\s*$", (ROOT / ".ci/run").read_text(), re.M)


def test_environment_yml_installs_from_pyproject_only():
    """environment.yml must not carry a second dependency list that can drift from pyproject.toml."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {re.split(r"[<>=! ]", d)[0] for d in conda_deps} == {"python", "pip"}
    pip_deps = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert pip_deps == ["-e .[dev,lab]"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python_spec = [d for d in conda_deps if d.startswith("python")][0]
    assert python_spec.replace("python", "") == project["requires-python"].replace(" ", "")
    assert {"dev", "lab"} <= set(project["optional-dependencies"])


def test_dependencies_have_lower_bounds_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    for dep in deps:
        assert "==" not in dep, f"{dep}: hard pins break on new releases; use a lower bound"
    names = {re.split(r"[<>=!\[ ]", d)[0] for d in project["dependencies"]}
    assert {"torch", "torchvision"} <= names
    torch_specs = [
        d for d in project["dependencies"] if re.split(r"[<>=! ]", d)[0] in ("torch", "torchvision")
    ]
    assert all("<" not in d for d in torch_specs), "torch/torchvision must resolve as a matched pair"


def test_the_notebooks_run_in_an_ipykernel_6():
    """ipykernel 7 at times never answers a cell's execute request (ipython/ipykernel#1554): a notebook
    run by the grader, the book build or nbval then waits until its time limit. pyproject.toml keeps
    the grader's kernel below 7; this is the kernel the tests run the notebooks in."""
    from importlib.metadata import version

    major = int(version("ipykernel").split(".")[0])
    assert major == 6, f"ipykernel {version('ipykernel')} is installed; the course needs ipykernel 6"


@pytest.mark.parametrize("path", tracked_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
            # an empty code cell is never executed: the website would show a blank input box
            assert "".join(cell["source"]).strip(), f"{path.name} cell {i} is an empty code cell"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_have_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    assert "utils.profile()" in tagged[0].source or "by_profile" in tagged[0].source


def test_every_topic_has_chapter_exercise_and_solution():
    stems = {p.stem for p in LESSONS}
    assert stems, "no chapters found"
    assert stems == {p.stem for p in (ROOT / "exercises").glob("*.ipynb")} == {p.stem for p in SOLUTIONS}
    for stem in stems:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", stem), f"{stem}: topics are named NN_topic"


def test_table_of_contents_names_every_notebook_and_existing_files():
    files = book.toc_files(book.load_toc())
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), (
            f"_toc.yml names {f}, which does not exist"
        )
    for nb in tracked_notebooks():
        rel = str(nb.relative_to(ROOT).with_suffix(""))
        if rel.split("/")[0] in ("chapters", "exercises", "solutions"):
            assert rel in files, f"{rel} is not in _toc.yml"


def test_toc_without_solutions_drops_only_solutions():
    toc = book.load_toc()
    files = book.toc_files(toc)
    kept = book.toc_files(book.without_solutions(toc))
    assert [f for f in files if not f.startswith("solutions/")] == kept
    assert any(f.startswith("solutions/") for f in files)


def test_lessons_link_to_their_exercise():
    for path in LESSONS:
        text = "\n".join(
            c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"
        )
        assert f"../exercises/{path.name}" in text, f"{path.name} does not link to its exercise"
        # `make book SOLUTIONS=0` leaves the solutions out: a lesson that links to one breaks that build
        assert "solutions/" not in text, f"{path.name} links to a solution"


def test_credits_page_agrees_with_utils_data():
    from utils.data import CREDITS

    page = (ROOT / "book" / "credits.md").read_text()
    for name, credit in CREDITS.items():
        assert f"`{name}`" in page, f"book/credits.md does not list {name}"
        assert credit in page, f"book/credits.md has another credit line for {name} than utils.data.CREDITS"


@pytest.mark.parametrize(
    "path",
    LESSONS + SOLUTIONS + sorted((ROOT / "exercises").glob("*.ipynb")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_notebooks_install_the_course_on_hosted_runtimes(path):
    """The first code cell installs the course package on Colab and the like, from the book's repository."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "import utils.grading" in first.source and "except ModuleNotFoundError" in first.source
    assert f"git+{config['repository']['url']}" in first.source


def test_bibliography_files_exist_and_define_each_key_once():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    seen: dict[str, str] = {}
    for name in config["bibtex_bibfiles"]:
        path = ROOT / name
        assert path.exists(), f"_config.yml lists {name}, which does not exist"
        for key in re.findall(r"^@\w+\{([^,\s]+),", path.read_text(), re.M):
            assert key not in seen, f"bibliography key {key} is defined in {seen[key]} and again in {name}"
            seen[key] = name
    for bib in (ROOT / "book").glob("*.bib"):
        assert str(bib.relative_to(ROOT)) in config["bibtex_bibfiles"], f"{bib.name} is not in _config.yml"


def test_the_bibliography_parses_and_every_citation_names_an_entry():
    """What the strict book build checks only after executing every chapter, in seconds: pybtex reads
    every bibliography file in strict mode, and every {cite} key of the pages names an entry."""
    import pybtex.database
    import pybtex.errors

    pybtex.errors.set_strict_mode(True)
    keys = set()
    for name in yaml.safe_load((ROOT / "_config.yml").read_text())["bibtex_bibfiles"]:
        entries = pybtex.database.parse_file(str(ROOT / name)).entries
        for key, entry in entries.items():
            assert {"title", "year"} <= set(entry.fields), f"{name}: {key} has no title or no year"
        keys |= set(entries)
    assert len(keys) > 50
    folders = ("book", "chapters", "solutions", "exercises")
    pages = [p for folder in folders for p in (ROOT / folder).glob("*.*")]
    missing = {
        (p.relative_to(ROOT).as_posix(), key.strip())
        for p in pages
        if p.suffix in {".md", ".ipynb"}
        for group in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", p.read_text())
        for key in group.split(",")
        if key.strip() not in keys
    }
    assert not missing, f"citations with no bibliography entry: {sorted(missing)}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_exercises_name_their_assignment_and_use_their_question_ids(path):
    """check("q1", ...) must reach this chapter's q1 whatever else the learner has defined."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("course", {}).get("assignment") == path.stem
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'use("{path.stem}")' in source
    from utils.grading import get_assignment

    for qid in get_assignment(path.stem).ids:
        assert f'check("{qid}"' in source, f"{path.name} never checks {qid}"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_math_also_compiles_with_latex(path):
    """MathJax accepts `\\lambda_\\max`, pdflatex (make pdf) stops on it: operators in sub- and
    superscripts need braces, `\\lambda_{\\max}`."""
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    bad = sorted(set(re.findall(r"[_^]\\(?:max|min|sup|inf|lim|log|exp|sum|prod|arg)\b", text)))
    assert not bad, f"{path.name}: write {bad[0][0]}{{{bad[0][1:]}}} instead of {bad[0]}"


@pytest.mark.slow
def test_wheel_ships_the_typing_marker(tmp_path):
    """pyproject.toml declares utils/py.typed as package data: the file exists and ends up in the wheel."""
    import os
    import shutil
    import sys
    import zipfile

    assert (ROOT / "utils" / "py.typed").is_file()
    source = tmp_path / "source"  # a copy, so that setuptools' build/ folder stays out of the checkout
    shutil.copytree(ROOT / "utils", source / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--quiet",
        "--wheel-dir",
        str(tmp_path / "dist"),
        str(source),
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "utils/py.typed" in names
    assert "utils/__init__.py" in names and not any(n.startswith(("tests/", "chapters/")) for n in names)


def test_the_tests_run_side_by_side_exist():
    """tests/conftest.py names the tests whose cases `make test` runs as units of their own: a renamed
    test would silently go back to running its cases one after another."""
    from conftest import INDEPENDENT, SITE_FILES

    for name in INDEPENDENT:
        file, function = name.split("::")
        assert re.search(rf"^def {function}\(", (ROOT / file).read_text(), re.M), f"{name} does not exist"
    assert all((ROOT / file).exists() for file in SITE_FILES)
