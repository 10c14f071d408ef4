"""A score wherever the learner works (issue 15, section 5): ``grade_notebook()`` finds the notebook on
Colab, in VS Code and in Jupyter (all mocked here), the first cell of every notebook installs the
course from a pinned release without the runtime's own Jupyter packages, and a learner's ``utils.py``
never shadows the course package silently."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from utils.grading import get_assignment, notebook
from utils.grading.notebook import NotebookNotFound, current_notebook, grade_notebook
from utils.grading.setup_cell import CELL_ID, FOLDERS, cell_source, release, shadowing, write_setup_cells

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


@pytest.fixture
def nowhere(monkeypatch):
    """No Colab, no VS Code, no Jupyter session: each test adds the one it needs."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.setattr(notebook, "_colab", lambda: None)
    monkeypatch.setattr(notebook, "_ipython", lambda: None)
    monkeypatch.setattr(notebook, "_kernel_id", lambda: None)


def _fake_colab(monkeypatch, nb: dict, calls: list):
    message = types.ModuleType("google.colab._message")

    def blocking_request(kind, request="", timeout_sec=None):
        calls.append(kind)
        return {"ipynb": nb}

    message.blocking_request = blocking_request
    colab = types.ModuleType("google.colab")
    colab._message = message
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab._message", message)


def test_colab_gives_the_notebook_json_and_its_name(monkeypatch):
    calls: list = []
    nb = {
        "cells": [],
        "metadata": {"colab": {"name": "Copy of 01_backprop.ipynb"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    _fake_colab(monkeypatch, nb, calls)
    assert current_notebook() == ("Copy of 01_backprop.ipynb", None, nb)
    assert calls == ["get_ipynb"]


def test_vscode_gives_the_path(nowhere, monkeypatch, tmp_path):
    path = tmp_path / "01_backprop.ipynb"
    path.write_text("{}")
    shell = types.SimpleNamespace(user_ns={"__vsc_ipynb_file__": str(path)})
    monkeypatch.setattr(notebook, "_ipython", lambda: shell)
    assert current_notebook() == ("01_backprop.ipynb", path, None)


def test_jupyter_session_name_absolute_or_beside_the_kernel(nowhere, monkeypatch, tmp_path):
    path = tmp_path / "02_activations.ipynb"
    path.write_text("{}")
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    assert current_notebook()[1] == path.resolve()
    monkeypatch.setenv("JPY_SESSION_NAME", "exercises/02_activations.ipynb")  # relative to the server's root
    monkeypatch.chdir(tmp_path)  # the kernel works in the notebook's folder
    assert current_notebook()[1] == path.resolve()


def test_jupyter_sessions_api_matched_by_kernel_id(nowhere, monkeypatch, tmp_path):
    (tmp_path / "work").mkdir()
    path = tmp_path / "work" / "03_losses_metrics.ipynb"
    path.write_text("{}")
    monkeypatch.setattr(notebook, "_kernel_id", lambda: "abc-123")
    server = {"url": "http://127.0.0.1:8888/", "token": "t0k", "root_dir": str(tmp_path)}
    monkeypatch.setattr(notebook, "_servers", lambda: [server])
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        sessions = [
            {"kernel": {"id": "other"}, "path": "x.ipynb"},
            {"kernel": {"id": "abc-123"}, "path": "work/03_losses_metrics.ipynb"},
        ]
        return io.BytesIO(json.dumps(sessions).encode())

    monkeypatch.setattr(notebook.urllib.request, "urlopen", urlopen)
    assert current_notebook() == ("03_losses_metrics.ipynb", path, None)
    assert asked == ["http://127.0.0.1:8888/api/sessions?token=t0k"]


def test_no_way_to_find_the_notebook_says_what_to_do(nowhere, monkeypatch):
    monkeypatch.setattr(notebook, "_kernel_id", lambda: "abc")
    monkeypatch.setattr(notebook, "_servers", lambda: [])
    with pytest.raises(NotebookNotFound) as info:
        grade_notebook()
    message = str(info.value)
    assert "python -m utils.grading grade NOTEBOOK.ipynb" in message and "\n" not in message


def test_grade_notebook_does_nothing_under_the_grader(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert grade_notebook() is None
    assert "the grader is running this notebook" in capsys.readouterr().out


@pytest.mark.slow
def test_grade_notebook_on_colab_grades_the_runtime_json(monkeypatch, tmp_path, capsys):
    """The notebook's JSON comes from the (mocked) Colab runtime; the CLI grades it in a separate process."""
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    solution = nbformat.read(ROOT / "solutions" / "01_backprop.ipynb", as_version=4)
    solution.metadata["colab"] = {"name": "Copy of 01_backprop.ipynb"}
    _fake_colab(monkeypatch, json.loads(nbformat.writes(solution)), [])
    monkeypatch.chdir(tmp_path)  # Colab's /content: the grading kernel works here
    report = grade_notebook(timeout=300)
    printed = capsys.readouterr().out
    qset = get_assignment("01_backprop")
    assert report.score == report.max_score == qset.max_score, printed
    assert report.notebook == "Copy of 01_backprop.ipynb" and printed.rstrip().splitlines()[-1].startswith(
        "Score:"
    )
    assert [q.question for q in report.questions] == qset.ids and all(q.passed for q in report.questions)


# --------------------------------------------------------------------------- the first cell


def test_every_notebook_has_the_canonical_first_cell():
    assert write_setup_cells(ROOT, check=True) == [], "run `python -m utils.grading setup-cells`"
    url, ref = release(ROOT)
    source = cell_source(url, ref)
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).glob("*.ipynb")):
            first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
            assert first.get("id") == CELL_ID and first.source == source, path


def test_the_first_cell_pins_a_release_of_the_repository_set_in_one_place():
    config = (ROOT / "_config.yml").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    url, ref = release(ROOT)
    assert f"url: {url}" in config and ref == f"v{project['version']}"
    source = cell_source(url, ref)
    assert f'INSTALL = "git+{url}@{ref}"' in source
    assert "@main" not in source  # not a moving branch
    assert "[dev" not in source and "[grader" not in source  # no extras
    assert all(len(line) <= 110 for line in source.splitlines())


def test_the_runtime_set_leaves_the_runtime_jupyter_packages_alone():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=!\[ ]", d)[0]: d for d in project["dependencies"]}
    jupyter = {"nbformat", "nbclient", "ipykernel", "jupyter-client", "notebook", "jupyterlab"}
    assert not jupyter & set(runtime)
    assert runtime["ipywidgets"] == "ipywidgets>=7.6"  # Colab ships ipywidgets 7: nothing to upgrade there
    grader = {re.split(r"[<>=!\[ ]", d)[0] for d in project["optional-dependencies"]["grader"]}
    assert grader == {"nbformat", "nbclient", "ipykernel"}
    assert "dlcv-course-utils[grader]" in project["optional-dependencies"]["dev"]


def _run_setup_cell(cwd: Path, *, pythonpath: str | None) -> subprocess.CompletedProcess:
    """Run the first cell's source in a fresh Python in ``cwd`` with a stand-in ``get_ipython``."""
    url, ref = release(ROOT)
    program = (
        "calls = []\n"
        "class Shell:\n    def run_line_magic(self, *a): calls.append(a)\n"
        "get_ipython = lambda: Shell()\n"
        f"exec({cell_source(url, ref)!r})\n"
        "print('pip calls:', calls)\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-c", program], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_first_cell_installs_nothing_where_the_course_is_installed(tmp_path):
    done = _run_setup_cell(tmp_path, pythonpath=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert "pip calls: []" in done.stdout


def test_the_first_cell_says_so_when_a_utils_py_shadows_the_course(tmp_path):
    (tmp_path / "utils.py").write_text("HELPER = 1\n")
    done = _run_setup_cell(tmp_path, pythonpath=str(ROOT))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: {tmp_path / 'utils.py'} shadows the course package `utils`: rename it "
        "(for example to my_utils.py) and restart the kernel"
    )
    assert "pip calls" not in done.stdout  # nothing was installed over it


def test_shadowing_is_reported_by_the_grader_side_too(tmp_path):
    assert shadowing(tmp_path) is None
    (tmp_path / "utils.py").write_text("")
    assert shadowing(tmp_path).startswith(f"{tmp_path / 'utils.py'} shadows the course package `utils`")
    (tmp_path / "utils.py").unlink()
    (tmp_path / "utils").mkdir()
    assert "the folder" in shadowing(tmp_path)
    (tmp_path / "utils" / "grading").mkdir()  # the course's own folder (a clone of the repository)
    assert shadowing(tmp_path) is None


def test_check_works_without_the_grader_packages():
    """`from utils.grading import check` needs no nbformat or nbclient (the grader extra)."""
    program = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('nbformat', 'nbclient'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from utils.grading import check, grade_notebook, Review, MakeItWork\n"
        "import grading_demo\n"  # the linear-layer question (tests/grading_demo.py) as 01_backprop
        "grading_demo.install()\n"
        "def linear_forward(x, W, b): return x @ W + b\n"
        "def linear_backward(dout, x, W): return dout @ W.T, x.T @ dout, dout.sum(0)\n"
        "r = check('q1', linear_forward, linear_backward, assignment='01_backprop')\n"
        "assert r.passed\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    env.pop("COURSE_GRADING", None)
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("✓ q1")
