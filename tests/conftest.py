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


# How `make test` spreads the tests over its pytest-xdist workers (`--dist loadfile`, with the
# scheduler below): a test file is one unit of work, as with plain `loadfile` (a notebook's cells share
# one kernel, a module fixture is built once), except that
# * test_book.py and test_site.py are one unit: the worker that builds the site checks it, while the
#   other worker goes on (a second one would only wait for the build);
# * each case of the tests in INDEPENDENT (a whole notebook run: the claims at a fresh seed, the
#   grading of an exercise or a solution) is a unit of its own, so that the cases run side by side;
# and the units start longest first (the site, then the independent cases, then the lessons run by
# nbval and the files with slow tests, then the rest), so that no worker is left with a long unit at
# the end. The units are told from the test ids alone: the scheduler runs in the controlling process,
# which sees ids, not markers.
SITE_FILES = {"tests/test_book.py", "tests/test_site.py"}
INDEPENDENT = {
    "tests/test_claims.py::test_claims_hold_for_a_fresh_seed",
    "tests/test_exercises.py::test_solution_scores_full_marks_through_grade_notebook",
    "tests/test_exercises.py::test_untouched_exercise_scores_zero_through_the_command_line",
}


def unit_of(nodeid: str) -> str:
    """The unit of work of the test ``nodeid`` (see above)."""
    file = nodeid.split("::")[0]
    if file in SITE_FILES:
        return "site"
    if nodeid.split("[")[0] in INDEPENDENT:
        return nodeid
    return file


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log)


def pytest_collection_modifyitems(session, config, items):
    """Longest units first (the order the scheduler hands them out with --no-loadscope-reorder)."""
    slow_files = {unit_of(item.nodeid) for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        unit = unit_of(item.nodeid)
        if unit == "site":
            return 0
        if unit == item.nodeid:
            return 1
        return 2 if unit in slow_files or unit.endswith(".ipynb") else 3

    items[:] = sorted(items, key=rank)  # stable: the tests of a unit keep their order


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
