"""Keeping the learner's kernel away from the grader (issue 15, section 6). Used by the grader only.

* **No ptrace over the grader.** The grader makes itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``)
  while it grades, so that a process of the same user cannot attach a debugger to it or read its
  memory. When the grader runs as root, the kernel runs as an unprivileged user (``nobody``, or
  ``COURSE_GRADER_USER``) in a private working directory that only it may write; when that user
  cannot run this Python (e.g. an interpreter under ``/root``), the grader says so in one line and
  runs the kernel as root without the capabilities to trace, administer or load modules
  (``PR_CAPBSET_DROP`` before ``exec``, with ``no_new_privs``): a root process without
  ``CAP_SYS_PTRACE`` cannot attach to a non-dumpable one either.
* **No process outlives the kernel.** The grader is a child subreaper (``PR_SET_CHILD_SUBREAPER``)
  while it grades, so processes that a cell double-forks are re-parented to it instead of to init;
  :meth:`Sandbox.kill_leftovers` kills every process of the kernel's session or process group, every
  process that carries the run's token in its environment and every new child of the grader, until
  none is left, before the score is printed.
* **No folder left behind.** Each run works in ``<tmp>/course-grader-<uid>/run-<pid>-<start>-<token>``;
  the grader removes it on exit (also after SIGTERM or SIGINT, which the command line turns into
  exceptions), and every start removes the folders of runs whose process no longer exists (a
  grader killed with SIGKILL).

Linux has all of this; elsewhere the grader keeps the process-group kill and the folder clean-up and
says in a note what it could not do. Chapter 01's exercise is graded this way like every other.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Sandbox", "TOKEN_VARIABLE"]

TOKEN_VARIABLE = "COURSE_GRADER_RUN"
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_SET_NO_NEW_PRIVS = 38
# CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SETPCAP
DROPPED_CAPABILITIES = (16, 17, 19, 21, 8)
PROBE_TIMEOUT = 60


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int = 0) -> int:
    libc = _libc()
    if libc is None:
        return -1
    return int(
        libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(value),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    )


def _drop_capabilities() -> None:  # runs in the kernel's process between fork and exec
    for cap in DROPPED_CAPABILITIES:
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def _proc_stat(pid: int) -> tuple[int, int, int, int] | None:
    """``(ppid, pgid, sid, start time)`` of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


def _alive(pid: int, start: int | None = None) -> bool:
    stat = _proc_stat(pid)
    if stat is not None:
        return start is None or stat[3] == start
    if sys.platform.startswith("linux"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_token(pid: int, token: bytes) -> bool:
    try:
        return token in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


class Sandbox:
    """One grading run's folders, hardening and clean-up; use as ``with Sandbox() as box:``.

    ``box.kernel_dir`` is the kernel's private working directory (also where inputs and outputs of
    the calls are exchanged), ``box.grader_dir`` the grader's own; ``box.notes`` holds one-line
    notes for the report; :meth:`popen_options` and :meth:`environment` say how to start the kernel.
    """

    def __init__(self, *, user: str | None = None, base: str | Path | None = None):
        self.token = secrets.token_hex(8)
        self.notes: list[str] = []
        self.base = Path(base or tempfile.gettempdir()) / f"course-grader-{os.getuid()}"
        self.user = user if user is not None else os.environ.get("COURSE_GRADER_USER", "nobody")
        self.uid: int | None = None
        self.gid: int | None = None
        self.drop_capabilities = False
        self.kernel_pid: int | None = None
        self._restore: list[tuple[int, int]] = []
        self._children_before: set[int] = set()
        self.root: Path | None = None

    # ------------------------------------------------------------------ set-up

    def __enter__(self) -> "Sandbox":
        self.base.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.base, 0o711)
        self.clean_stale(self.base)
        start = _proc_stat(os.getpid())
        self.root = self.base / f"run-{os.getpid()}-{start[3] if start else 0}-{self.token}"
        self.root.mkdir(mode=0o711)
        self.grader_dir = self.root / "grader"
        self.grader_dir.mkdir(mode=0o700)
        self.kernel_dir = self.root / "kernel"
        self.kernel_dir.mkdir(mode=0o700)
        self._harden()
        self._children_before = set(self._children())
        return self

    def _harden(self) -> None:
        if _libc() is None:
            self.notes.append(
                "cannot sandbox on this system (not Linux): the kernel runs as your user and "
                "could attach to the grader; process-group clean-up still applies"
            )
            return
        flag = ctypes.c_int(0)  # PR_GET_CHILD_SUBREAPER writes into an int
        _libc().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
        for option, previous, value in (
            (PR_SET_DUMPABLE, _prctl(PR_GET_DUMPABLE), 0),
            (PR_SET_CHILD_SUBREAPER, flag.value, 1),
        ):
            if previous != value and _prctl(option, value) == 0:
                self._restore.append((option, previous))
        if os.getuid() == 0:
            self._choose_user()

    def _choose_user(self) -> None:
        try:
            entry = pwd.getpwnam(self.user) if self.user else None
        except KeyError:
            entry = None
        problem = "no such user" if entry is None else self._probe(entry.pw_uid, entry.pw_gid)
        if problem is None:
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            os.chown(self.kernel_dir, self.uid, self.gid)
            return
        self.drop_capabilities = True
        self.notes.append(
            f"cannot sandbox as user {self.user!r} ({problem}): the kernel runs as root "
            "without the capabilities to trace the grader"
        )

    def _probe(self, uid: int, gid: int) -> str | None:
        """Why ``uid`` cannot run this Python with ipykernel and the course package, or None when it can."""
        code = (
            "import importlib.util as u, sys; "
            "sys.exit(0 if u.find_spec('ipykernel') and u.find_spec('utils') else 3)"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                user=uid,
                group=gid,
                extra_groups=[],
                cwd=self.kernel_dir if os.stat(self.kernel_dir).st_uid == uid else "/",
                env=self.environment(dict(os.environ)),
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            return f"it cannot import ipykernel and the course package: {tail}"[:200]
        return None

    # ------------------------------------------------------------------ starting the kernel

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The kernel's environment: the run's token, and for another user a home in its private folder."""
        env = dict(env)
        env[TOKEN_VARIABLE] = self.token
        if self.uid is not None:
            home = str(self.kernel_dir)
            env.update(
                HOME=home,
                IPYTHONDIR=f"{home}/.ipython",
                MPLCONFIGDIR=f"{home}/.matplotlib",
                JUPYTER_RUNTIME_DIR=f"{home}/.jupyter",
                JUPYTER_DATA_DIR=f"{home}/.jupyter",
                XDG_CACHE_HOME=f"{home}/.cache",
                TMPDIR=home,
            )
        return env

    def popen_options(self) -> dict:
        """Extra ``subprocess.Popen`` arguments for the kernel (another user, or dropped capabilities)."""
        if self.uid is not None:
            return {"user": self.uid, "group": self.gid, "extra_groups": []}
        if self.drop_capabilities:
            return {"preexec_fn": _drop_capabilities}
        return {}

    def give(self, path: Path) -> None:
        """Let the kernel's user read ``path`` (a connection file the grader wrote)."""
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    # ------------------------------------------------------------------ clean-up

    def _children(self) -> list[int]:
        me = os.getpid()
        try:
            text = Path(f"/proc/{me}/task/{me}/children").read_text()
            return [int(p) for p in text.split()]
        except OSError:
            pass
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[0] == me:
                    found.append(int(entry.name))
        return found

    def _leftovers(self) -> set[int]:
        """New children of the grader; processes of the kernel's session or group, or with the run's token."""
        me = os.getpid()
        found = {p for p in self._children() if p not in self._children_before}
        wanted = f"{TOKEN_VARIABLE}={self.token}".encode()
        if Path("/proc").is_dir():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                pid = int(entry.name)
                stat = _proc_stat(pid)
                if stat is None:
                    continue
                in_group = self.kernel_pid is not None and self.kernel_pid in (stat[1], stat[2])
                if in_group or _has_token(pid, wanted):
                    found.add(pid)
        elif self.kernel_pid is not None:
            try:
                os.killpg(self.kernel_pid, signal.SIGKILL)
            except OSError:
                pass
        found.discard(me)
        return found

    def kill_leftovers(self, rounds: int = 50) -> int:
        """Kill every process the kernel left (see the module docstring); returns how many were killed."""
        killed = 0
        for _ in range(rounds):
            pids = self._leftovers()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            deadline = time.monotonic() + 2.0
            for pid in pids:  # reap our own children, wait for the others to disappear
                while time.monotonic() < deadline:
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0] == pid:
                            break
                    except ChildProcessError:
                        if not _alive(pid):
                            break
                    time.sleep(0.01)
        return killed

    def __exit__(self, *exc) -> None:
        try:
            self.kill_leftovers()
        finally:
            for option, value in reversed(self._restore):
                _prctl(option, value)
            self._restore.clear()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def clean_stale(base: Path) -> list[Path]:
        """Remove the run folders under ``base`` whose grader process no longer exists; returns them."""
        removed = []
        for path in base.glob("run-*-*-*") if base.is_dir() else ():
            parts = path.name.split("-")
            try:
                pid, start = int(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                continue
            if not _alive(pid, start if start else None):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed
