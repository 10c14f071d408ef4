"""The learner's kernel as the grader drives it: start it in the sandbox, run the notebook's cells with
time limits, and serve requests (a call, predictions on batches, the review answers).

Every request is one cell appended to the notebook: it runs the source of :mod:`utils.grading.watch`
and :mod:`utils.grading.runner` in a fresh namespace, reads its inputs from a ``torch.save`` file in
the kernel's private folder and saves the result next to it; the grader reads the result back with
``torch.load(weights_only=True)``. The kernel's standard streams go to a log file, never to the
grader's own. Chapter 01's exercise is the first graded this way.
"""

from __future__ import annotations

import inspect
import secrets
import time
from pathlib import Path
from typing import Any

import torch

from . import runner, watch
from .compare import Opaque
from .sandbox import Sandbox

__all__ = ["Kernel", "PROBE_TIMEOUT", "WARM_UP_TIMEOUT", "decode", "request_cell"]

PROBE_TIMEOUT = 15
WARM_UP_TIMEOUT = 300
_WARM_UP = "import torch as __course_grader_torch\ndel __course_grader_torch\n"
_SOURCES = (inspect.getsource(watch), inspect.getsource(runner))
_MAIN = """
import torch as _torch
_torch.save(run_request(_torch.load(IN_PATH, weights_only=True), USER_NS, Watch), OUT_PATH)
"""


def decode(value: Any) -> Any:
    """The grader's reading of :func:`utils.grading.runner.safe`: dicts, sets, ``...`` and opaque values."""
    if isinstance(value, dict):
        if "__grader_opaque__" in value:
            return Opaque(str(value["__grader_opaque__"]))
        if "__grader_ellipsis__" in value:
            return Ellipsis
        if "__grader_set__" in value:
            items = [decode(v) for v in value["__grader_set__"]]
            try:
                return set(items)
            except TypeError:  # unhashable items: a list, which the comparison then refuses with a reason
                return items
        inner = value.get("__grader_dict__", value)
        return {str(k): decode(v) for k, v in inner.items()} if isinstance(inner, dict) else inner
    if isinstance(value, (tuple, list)):
        return type(value)(decode(v) for v in value)
    return value


def request_cell(in_path: Path, out_path: Path) -> str:
    """The source of the cell that serves one request (the inputs are in ``in_path``)."""
    namespace = (
        "{'__name__': '__course_grader__', 'USER_NS': __course_grader_ns, "
        f"'IN_PATH': {str(in_path)!r}, 'OUT_PATH': {str(out_path)!r}}}"
    )
    parts = ", ".join(repr(source) for source in (*_SOURCES, _MAIN))
    return (
        f"(lambda __course_grader_ns: (lambda ns: [exec(s, ns) for s in ({parts},)])({namespace}))"
        "(globals())\n"
    )


class Kernel:
    """A kernel that runs the notebook's cells and then the grader's requests, with time limits."""

    def __init__(self, nb, cwd: Path, timeout: int, sandbox: Sandbox, env: dict[str, str], log_path: Path):
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        grader = self

        class Manager(AsyncKernelManager):
            def write_connection_file(self, **kw):  # the kernel's user must be able to read it
                super().write_connection_file(**kw)
                sandbox.give(Path(self.connection_file))

        class Client(NotebookClient):
            async def _async_handle_timeout(self, timeout, cell=None):  # noqa: D401 - nbclient hook
                grader.timed_out = True
                return await super()._async_handle_timeout(timeout, cell)

        self.timed_out = False
        self.dead = False
        self.exited = False  # the cell called IPython's exit(): the kernel shuts itself down
        self.timeout = timeout
        self.sandbox = sandbox
        self.exchange = sandbox.kernel_dir
        km = Manager(kernel_name="python3")
        km.connection_file = (
            str(sandbox.grader_dir / "kernel.json")
            if sandbox.uid is None
            else str(sandbox.kernel_dir / ".kernel.json")
        )
        self.client = Client(
            nb,
            km=km,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            interrupt_on_timeout=True,
            error_on_timeout={
                "ename": "TimeoutError",
                "evalue": f"cell timed out after {timeout} s",
                "traceback": [],
            },
            record_timing=False,
            shutdown_kernel="immediate",
        )
        self.client.on_cell_executed = self._on_cell_executed
        self.n_cells = len(nb.cells)  # the notebook's own cells; the grader's requests come after them
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._start_kwargs = dict(
            env=env, cwd=str(cwd), stdout=self._log, stderr=self._log, **sandbox.popen_options()
        )

    def start(self) -> None:
        self.client.start_new_kernel(**self._start_kwargs)
        process = getattr(self.client.km.provisioner, "process", None)
        self.sandbox.kernel_pid = getattr(process, "pid", None)
        self.client.start_new_kernel_client()

    def stop(self) -> None:
        try:
            if self.client.km is not None:
                self.client._cleanup_kernel()
        except Exception:  # a dead or wedged kernel: the sandbox kills what is left
            pass
        finally:
            self._log.close()

    def _on_cell_executed(self, cell=None, cell_index=None, execute_reply=None, **_):
        payload = ((execute_reply or {}).get("content") or {}).get("payload") or []
        asked = [p for p in payload if isinstance(p, dict) and p.get("source") == "ask_exit"]
        if any(not p.get("keepkernel") for p in asked):
            self.exited = self.dead = True

    def run_cell(self, source: str | None = None, *, index: int | None = None, timeout: float | None = None):
        """Run ``source`` in a new cell appended to the notebook, or the notebook's cell ``index``.

        Returns the executed cell; sets ``timed_out``, ``exited`` and ``dead``.
        """
        import nbformat
        from nbclient.exceptions import DeadKernelError

        nb = self.client.nb
        if index is None:
            nb.cells.append(nbformat.v4.new_code_cell(source))
            index = len(nb.cells) - 1
        self.timed_out = self.exited = False
        self.client.timeout = max(1, int(round(timeout or self.timeout)))
        try:
            return self.client.execute_cell(nb.cells[index], index)
        except DeadKernelError:
            self.dead = True
            return nb.cells[index]
        finally:
            self.client.timeout = self.timeout
            if index >= self.n_cells:  # the grader's requests do not pile up in memory
                nb.cells[index].source = ""
                nb.cells[index].outputs = []

    def responsive(self) -> bool:
        """After a timeout: does the kernel answer a trivial cell? (If not, it is treated as dead.)"""
        if self.dead:
            return False
        self.run_cell("pass", timeout=PROBE_TIMEOUT)
        if self.timed_out:
            self.dead = True
        return not self.dead

    def warm_up(self) -> bool:
        """Import torch before the notebook runs: its import time does not count against the first cell."""
        self.run_cell(_WARM_UP, timeout=max(self.timeout, WARM_UP_TIMEOUT))
        return not (self.dead or self.timed_out)

    def request(self, payload: dict[str, Any], timeout: float) -> tuple[dict | None, str | None, float]:
        """Serve one request: ``(result, problem, seconds)``; ``problem`` says why there is no result."""
        token = secrets.token_hex(8)
        in_path, out_path = self.exchange / f"in-{token}.pt", self.exchange / f"out-{token}.pt"
        with open(in_path, "xb") as fh:  # never follow a link the kernel may have planted
            torch.save(payload, fh)
        self.sandbox.give(in_path)
        start = time.monotonic()
        try:
            self.run_cell(request_cell(in_path, out_path), timeout=timeout)
            seconds = time.monotonic() - start
            if self.timed_out:
                return None, f"timed out after {timeout:.0f} s", seconds
            if self.exited:
                return None, "called exit(), which stops the kernel", seconds
            if self.dead:
                return None, "the kernel died", seconds
            if not out_path.is_file() or out_path.is_symlink():
                return None, "no result came back (did the notebook replace built-ins such as exec?)", seconds
            try:
                result = torch.load(out_path, weights_only=True)
            except Exception as err:
                return None, f"the result could not be read back ({type(err).__name__})", seconds
            if not isinstance(result, dict):
                return None, "the result could not be read back (not a dict)", seconds
            return result, None, seconds
        finally:
            for p in (in_path, out_path):
                p.unlink(missing_ok=True)
