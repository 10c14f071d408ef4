"""The first cell of every notebook (chapters, exercises, solutions), written by one command::

    python -m utils.grading setup-cells [--check]

On a hosted runtime (Colab and the like) the cell installs the course package from the repository
at the release the notebook belongs to, ``git+<url>@v<version>``; it installs only the runtime
dependencies, none of the runtime's own Jupyter packages (the grader's ``nbclient``, ``nbformat`` and
``ipykernel`` are the ``grader`` extra). Locally it installs nothing. Everywhere it first checks that
``import utils`` will find the course package and not a learner's own ``utils.py`` (or ``utils/``)
beside the notebook, and says so in one sentence when one shadows it.

The repository URL is the one of ``_config.yml`` (``repository.url``, which the website's launch and
repository buttons use too) and the release tag is ``v`` + the version in ``pyproject.toml``: both
read here, nowhere else. Publishing a version means tagging that commit ``v<version>``.
Chapter 01 is the first notebook that carries the cell.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CELL_ID", "FOLDERS", "cell_source", "release", "shadowing", "write_setup_cells"]

CELL_ID = "setup"
FOLDERS = ("chapters", "solutions", "exercises")

_TEMPLATE = """\
# Setup, the same first cell in every notebook: on a hosted runtime (Colab and the like) it installs
# the course package, release {ref}; locally it installs nothing. Either way it checks that `utils` is
# the course package, not a file of yours that shadows it. (`python -m utils.grading setup-cells` writes it.)
import importlib
import importlib.util
import os

INSTALL = "git+{url}@{ref}"
_course = importlib.util.find_spec("utils")
_folders = list(_course.submodule_search_locations or []) if _course is not None else []
if _course is not None and not any(os.path.isdir(os.path.join(p, "grading")) for p in _folders):
    raise ImportError(f"{{_course.origin or _folders[0]}} shadows the course package `utils`: "
                      "rename it (for example to my_utils.py) and restart the kernel")
try:
    import utils.grading  # the course package is installed
except ModuleNotFoundError:
    get_ipython().run_line_magic("pip", f"install --quiet {{INSTALL}}")
    importlib.invalidate_caches()
    import utils.grading
del _course, _folders, INSTALL"""


def release(root: str | Path) -> tuple[str, str]:
    """``(repository URL, release tag)`` from ``_config.yml`` and ``pyproject.toml`` under ``root``."""
    root = Path(root)
    config = (root / "_config.yml").read_text(encoding="utf-8")
    match = re.search(r"^repository:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*(\S+)", config, re.M)
    if match is None:
        raise ValueError(f"{root / '_config.yml'} has no repository.url")
    project = (root / "pyproject.toml").read_text(encoding="utf-8")
    section = project.split("[project]", 1)[-1].split("\n[", 1)[0]
    version = re.search(r'^version\s*=\s*"([^"]+)"', section, re.M)
    if version is None:
        raise ValueError(f"{root / 'pyproject.toml'} has no [project] version")
    return match.group(1).rstrip("/"), f"v{version.group(1)}"


def cell_source(url: str, ref: str) -> str:
    """The canonical first cell for the repository ``url`` at ``ref``."""
    return _TEMPLATE.format(url=url, ref=ref)


def shadowing(folder: str | Path) -> str | None:
    """One sentence when ``folder`` holds a ``utils.py`` or a ``utils/`` without ``grading/`` that would
    shadow the course package in a kernel started there; ``None`` otherwise."""
    folder = Path(folder)
    if (folder / "utils.py").is_file():
        return (
            f"{folder / 'utils.py'} shadows the course package `utils` in the notebook's kernel: "
            "rename it (for example to my_utils.py)"
        )
    if (folder / "utils").is_dir() and not (folder / "utils" / "grading").is_dir():
        return (
            f"the folder {folder / 'utils'} shadows the course package `utils` in the notebook's kernel: "
            "rename it (for example to my_utils)"
        )
    return None


def _setup_index(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            return index if cell.get("id") == CELL_ID or cell.source.lstrip().startswith("# Setup") else None
    return None


def write_setup_cells(root: str | Path, *, check: bool = False) -> list[Path]:
    """Put the canonical first cell into every notebook of ``FOLDERS`` under ``root``; returns the
    notebooks that changed (with ``check=True``: that would change, writing nothing)."""
    import nbformat

    root = Path(root)
    source = cell_source(*release(root))
    changed = []
    for folder in FOLDERS:
        for path in sorted((root / folder).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            index = _setup_index(nb)
            cell = nb.cells[index] if index is not None else None
            if cell is not None and cell.source == source and cell.get("id") == CELL_ID:
                continue
            changed.append(path)
            if check:
                continue
            if index is None:
                cell = nbformat.v4.new_code_cell(source)
                cell["id"] = CELL_ID
                first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
                nb.cells.insert(first, cell)
            else:
                nb.cells[index].source = source
                nb.cells[index]["id"] = CELL_ID
            text = nbformat.writes(nb, version=4)
            path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return changed
