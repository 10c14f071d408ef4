"""Shared test settings: headless plots, the smoke profile, no fixture notebooks collected by nbval, the
website built once per session (the `site` fixture of test_book.py and test_site.py), and the helpers
of the question-set tests (`tests/test_checks_*.py`): the reference solutions come from the solution
notebooks, their one source of truth."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent

# Notebooks under tests/ are inputs of the grading tests, not lessons: nbval must not run them.
collect_ignore_glob = ["fixtures/*", "fixtures/**/*"]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The website built as `make book` builds it: strict, from clean, executed in the book profile.

    `COURSE_SITE_BUILD=_build` checks an existing build (e.g. of `make book`) instead of building one.
    """
    if os.environ.get("COURSE_SITE_BUILD"):
        built = Path(os.environ["COURSE_SITE_BUILD"]).resolve()
        assert (built / "html" / "index.html").exists(), f"COURSE_SITE_BUILD={built} holds no built site"
        return built
    from filelock import FileLock

    from utils import book

    # Under pytest-xdist every worker has its own session: the first one to get here builds the site
    # in the folder the workers share, the others wait for it and check the same build.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out, result = shared / "site", shared / "site.result"
    with FileLock(str(shared / "site.lock")):
        if not result.exists():
            out.mkdir(exist_ok=True)
            result.write_text(str(book.build(path_output=out, profile="book")))
    assert result.read_text() == "0", "the strict book build failed (see the warnings and errors above)"
    return out / "_build"


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The tests' tensors and models are tiny: one CPU thread is faster than several competing for
    the cores (much faster on a busy 2-core machine). Notebooks run in their own kernels, unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def solution_namespace(assignment: str, *extra: str) -> dict:
    """The reference solutions of ``solutions/<assignment>.ipynb`` in a fresh namespace: the notebook's
    top-level import lines, then every code cell that defines a function or class (``def``, ``class``
    or a decorator first, after comments), then the ``extra`` sources (e.g. a wrong variant)."""
    import nbformat

    namespace: dict = {}
    nb = nbformat.read(ROOT / "solutions" / f"{assignment}.ipynb", as_version=4)
    cells = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    lines = [line for source in cells for line in source.splitlines()]
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    exec(compile("\n".join(imports), f"<{assignment} imports>", "exec"), namespace)
    for source in cells:
        lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if lines and lines[0].startswith(("def ", "class ", "@")):
            exec(compile(source, f"<{assignment}>", "exec"), namespace)
    for source in extra:
        exec(textwrap.dedent(source), namespace)
    return namespace


def functions_for(namespace: dict, question) -> dict:
    """The functions a question calls, taken from ``namespace`` by name."""
    return {name: namespace[name] for name in question.functions}


def watch_off(question):
    """The question without its forbidden calls: for checking the course's own implementations, which
    learners may not call, against the question's cases."""
    return dataclasses.replace(question, forbid=())
