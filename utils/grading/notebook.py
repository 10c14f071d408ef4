"""``grade_notebook()`` in the last cell of a notebook: the score of the notebook you are in.

It finds the notebook, then runs the command-line grader on it in a separate process, exactly as
``python -m utils.grading grade NOTEBOOK`` would (a fresh kernel runs the notebook from the top; the
score is computed outside your kernel), prints the grader's table and returns the report. Where the
notebook comes from:

* **Colab**: the notebook's JSON from the Colab runtime (``google.colab._message.blocking_request(
  "get_ipynb")``), with its file name from the notebook's ``colab.name``; the grading kernel works in
  your current folder (``/content``);
* **VS Code**: the path in ``__vsc_ipynb_file__``;
* **Jupyter** (Lab, Notebook, Voila): the session path the server gave the kernel (``JPY_SESSION_NAME``),
  else the server's sessions API, matched by this kernel's id from its connection file. Jupyter grades
  the copy on disk: save the notebook first.

Where none works, one sentence says to run the command line instead. Chapter 01's exercise ends with
this cell, like every exercise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .core import QuestionResult

__all__ = ["NotebookNotFound", "current_notebook", "grade_notebook"]

_NOT_FOUND = (
    "cannot tell which notebook this is (not Colab, VS Code or a Jupyter server that this kernel "
    "can reach): save it and run `python -m utils.grading grade NOTEBOOK.ipynb` in a terminal"
)


class NotebookNotFound(RuntimeError):
    """``grade_notebook()`` cannot find the notebook it is called from."""


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _colab() -> tuple[str, dict] | None:
    if "google.colab" not in sys.modules:
        return None
    from google.colab import _message  # type: ignore[import-not-found]

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=120)
    nb = reply.get("ipynb") if isinstance(reply, dict) else None
    if not isinstance(nb, dict):
        raise NotebookNotFound(
            "the Colab runtime did not return the notebook: save it (File, Save) and try again"
        )
    name = (nb.get("metadata", {}).get("colab", {}) or {}).get("name") or "notebook.ipynb"
    return Path(str(name)).name, nb


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file
    except ImportError:
        return None
    try:
        stem = Path(get_connection_file()).stem  # kernel-<id>
    except Exception:
        return None
    return stem[len("kernel-") :] if stem.startswith("kernel-") else None


def _servers() -> list[dict]:
    found = []
    for module in ("jupyter_server.serverapp", "notebook.notebookapp"):
        try:
            app = __import__(module, fromlist=["list_running_servers"])
            found.extend(app.list_running_servers())
        except Exception:
            continue
    return found


def _from_sessions_api(kernel_id: str) -> Path | None:
    for server in _servers():
        url = server.get("url", "").rstrip("/") + "/api/sessions"
        token = server.get("token") or ""
        if token:
            url += "?" + urllib.parse.urlencode({"token": token})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the local server
                sessions = json.loads(response.read().decode())
        except Exception:
            continue
        for session in sessions if isinstance(sessions, list) else ():
            if (session.get("kernel") or {}).get("id") == kernel_id:
                relative = session.get("path") or (session.get("notebook") or {}).get("path")
                root = server.get("root_dir") or server.get("notebook_dir") or ""
                if relative:
                    path = Path(root) / relative
                    if path.is_file():
                        return path
    return None


def current_notebook() -> tuple[str, Path | None, dict | None]:
    """``(file name, path on disk or None, notebook JSON or None)`` of the notebook this kernel runs;
    raises :class:`NotebookNotFound` with one sentence when it cannot be found."""
    colab = _colab()
    if colab is not None:
        return colab[0], None, colab[1]
    shell = _ipython()
    vscode = getattr(shell, "user_ns", {}).get("__vsc_ipynb_file__") if shell is not None else None
    if vscode and Path(vscode).is_file():
        return Path(vscode).name, Path(vscode), None
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        for candidate in (Path(session), Path.cwd() / Path(session).name):
            if candidate.suffix == ".ipynb" and candidate.is_file():
                return candidate.name, candidate.resolve(), None
    kernel_id = _kernel_id()
    if kernel_id:
        path = _from_sessions_api(kernel_id)
        if path is not None:
            return path.name, path, None
    raise NotebookNotFound(_NOT_FOUND)


def _report(data: dict) -> Any:
    from .report import Report

    report = Report(
        str(data.get("notebook", "")), str(data.get("assignment", "")), notes=list(data.get("notes", []))
    )
    for q in data.get("questions", []):
        report.questions.append(
            QuestionResult(
                str(q.get("id")),
                str(q.get("title", "")),
                report.assignment,
                float(q.get("max_score", 0)),
                seed=q.get("seed"),
                kind=str(q.get("kind", "implement")),
                awarded=float(q.get("score", 0)),
                summary=str(q.get("feedback", "")),
            )
        )
    return report


def grade_notebook(
    path: str | Path | None = None,
    *,
    assignment: str | None = None,
    timeout: int | None = None,
    in_process: bool | None = None,
    **kwargs: Any,
):
    """Grade a notebook and return its :class:`~utils.grading.grader.Report`.

    With no ``path`` (the last cell of an exercise): the notebook this kernel runs, graded by the
    command line in a separate process; the table is printed as it comes. With a ``path`` outside a
    notebook (scripts, tests): graded in this process, printing nothing (``in_process=False`` forces
    the separate process). Under the grader itself (``COURSE_GRADING=1``) it does nothing and
    returns ``None``.
    """
    if os.environ.get("COURSE_GRADING") == "1":
        print("grade_notebook(): the grader is running this notebook, so it does not grade it again")
        return None
    if path is not None and (in_process if in_process is not None else _ipython() is None):
        from .grader import DEFAULT_TIMEOUT
        from .grader import grade_notebook as grade_here

        return grade_here(path, assignment=assignment, timeout=timeout or DEFAULT_TIMEOUT, **kwargs)
    return _grade_in_subprocess(path, assignment=assignment, timeout=timeout, **kwargs)


def _grade_in_subprocess(
    path: str | Path | None,
    *,
    assignment: str | None,
    timeout: int | None,
    seed: int | None = None,
    workdir: str | Path | None = None,
):
    from .setup_cell import shadowing

    with tempfile.TemporaryDirectory(prefix="course-grade-") as scratch:
        if path is None:
            name, path, data = current_notebook()
            if data is not None:  # Colab: the JSON goes to a file; the kernel works in the current folder
                path = Path(scratch) / name
                path.write_text(json.dumps(data), encoding="utf-8")
                workdir = workdir or Path.cwd()
            else:
                age = time.time() - path.stat().st_mtime
                print(
                    f"Grading {path} as last saved ({age:.0f} s ago): save the notebook first if you "
                    "changed it."
                )
        shadow = shadowing(Path(workdir or Path(path).resolve().parent))
        if shadow:
            print(shadow)
        report_path = Path(scratch) / "report.json"
        command = [
            sys.executable,
            "-m",
            "utils.grading",
            "grade",
            str(Path(path).resolve()),
            "--json",
            str(report_path),
        ]
        options = (
            ("--assignment", assignment),
            ("--timeout", timeout),
            ("--seed", seed),
            ("--workdir", workdir),
        )
        for flag, value in options:
            if value is not None:
                command += [flag, str(value)]
        package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds this `utils`
        paths = (package_root, os.environ.get("PYTHONPATH"))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        env.pop("COURSE_GRADING", None)
        process = subprocess.Popen(
            command,
            cwd=scratch,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        for line in process.stdout:
            print(line, end="", flush=True)
        process.wait()
        if not report_path.is_file():
            raise RuntimeError(
                f"the grader stopped without a report (exit code {process.returncode}); see its output above"
            )
        return _report(json.loads(report_path.read_text(encoding="utf-8")))
