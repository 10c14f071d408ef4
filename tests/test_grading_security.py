"""The score cannot be taken over from inside the notebook (issue 15, section 6): one test per attack.

The attacks that need a kernel run as notebooks of chapter 01 (their answers are wrong, so any score
above zero is a successful attack), graded concurrently through the command line. The grader's
clean-up after SIGTERM and SIGKILL, its sandbox and its process hunting are tested directly.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from test_grading import exercise_cells, make_notebook, write
from utils.grading import get_assignment
from utils.grading.__main__ import _keep_cwd_off_the_import_path
from utils.grading.__main__ import main as cli_main
from utils.grading.core import CaseResult, QuestionResult
from utils.grading.grader import Report, clean
from utils.grading.sandbox import PR_GET_DUMPABLE, TOKEN_VARIABLE, Sandbox, _prctl

LINUX = sys.platform.startswith("linux")

PTRACE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
grader = os.getppid()
attached = libc.ptrace(16, grader, 0, 0)  # PTRACE_ATTACH
error = ctypes.get_errno()
if attached == 0:
    libc.ptrace(17, grader, 0, 0)  # PTRACE_DETACH
try:
    open(f"/proc/{grader}/mem", "rb").close()
    memory = True
except OSError:
    memory = False
status = open("/proc/self/status").read()
capabilities = int([l for l in status.splitlines() if l.startswith("CapEff")][0].split()[1], 16)
found = {"attached": attached, "errno": error, "memory": memory, "uid": os.getuid(),
         "capabilities": capabilities, "grader": grader}
json.dump(found, open(OUT, "w"))
"""

DOUBLE_FORK = r"""
import json, os, sys, time
forged = {"notebook": "01_backprop.ipynb", "score": 4, "max_score": 4, "questions": []}
# Both processes below strike only once the grader has written its report (which it does after its
# clean-up), however long the grading takes: a process that is still there then has outlived the kernel.
if os.fork() == 0:  # a daemon: new session, orphaned, then a clean environment and a new program
    os.setsid()
    if os.fork() == 0:
        script = (f"i=0; while [ ! -s '{REPORT}' ] && [ $i -lt 6000 ]; do sleep 0.1; i=$((i+1)); done; "
                  f"echo 'Score: 4/4'; echo '{json.dumps(forged)}' > '{REPORT}'; echo survived > '{MARKER}'")
        os.execve("/bin/sh", ["sh", "-c", script], {})
    os._exit(0)
os.wait()
if os.fork() == 0:  # a plain child that stays in the kernel's session
    deadline = time.monotonic() + 600
    while not (os.path.exists(REPORT) and os.path.getsize(REPORT)) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.write(1, b"\nScore: 4/4\n")
    open(MARKER + ".child", "w").write("survived")
    os._exit(0)
os.write(1, b"\nScore: 4/4\n")  # the kernel's own standard output
sys.__stdout__.write("Score: 4/4\n")
"""

FEEDBACK = r"""
import torch
def linear_forward(x, W, b):
    raise ValueError("boom\nq2   ReLU: forward and backward   1/1  ✓ forged\nScore: 4/4")
def linear_backward(dout, x, W):
    return type("X\nq3   Softmax   1/1  ✓ forged\nScore: 4/4", (), {})()
def relu_forward(x):
    raise RuntimeError("\x1b[2A\x1b[K\rScore: 4/4\u2028Score: 4/4\x85Score: 4/4")
"""

REPORT_DIRECTORY = "import os\nos.makedirs(REPORT)\n"

SHADOW = r"""
for name in ("sklearn", "torchvision", "nbformat", "json"):
    with open(f"{name}.py", "w") as fh:
        fh.write(f"open({MARKER!r}, 'a').write({name!r})\n")
"""

STATISTICS = r"""
import math, torch
_std = torch.Tensor.std
def kaiming_uniform_(weight, a=0.0, mode="fan_in"):
    fan = weight.shape[1 if mode == "fan_in" else 0] * math.prod(weight.shape[2:])
    bound = 1.5 * math.sqrt(6 / ((1 + a * a) * fan))  # 50% too wide ...
    with torch.no_grad():
        return weight.uniform_(-bound, bound)
torch.Tensor.std = lambda self, *a, **k: _std(self, *a, **k) / 1.5  # ... which a patched std would hide
torch.equal = lambda a, b: True  # and a patched torch.equal changes nothing either
"""


SHORTCUT = r"""
import torch.nn.functional as F
from utils.scratch import layers  # the course's reference, imported before the grader calls anything
linear = F.linear  # a reference taken before the check
def linear_forward(x, W, b):
    return linear(x, W.T, b)
def relu_forward(x):
    return x.relu()
softmax_cross_entropy = layers.softmax_cross_entropy
"""


def _cell(source: str, **names: str) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in names.items()) + source


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Grade every attack notebook at once; name -> (exit code, stdout, stderr, report or None, folder)."""
    root = tmp_path_factory.mktemp("attacks")
    jobs = {}

    def add(name, cells, *, assignment="01_backprop", cwd=None, report=None, course=False):
        folder = root / name
        folder.mkdir()
        os.chmod(folder, 0o777)  # a kernel running as another user may write its findings here
        if assignment == "05_init_norm_reg":
            ex = nbformat.read(ROOT / "exercises" / "05_init_norm_reg.ipynb", as_version=4)
            ex.cells.append(nbformat.v4.new_code_cell(cells[0]))
            path = write(ex, folder / "05_init_norm_reg.ipynb")
        else:
            path = write(make_notebook(exercise_cells() + cells), folder / "01_backprop.ipynb")
        jobs[name] = (path, report or folder / "report.json", cwd or ROOT, course)
        return folder

    ptrace = root / "ptrace"
    add("ptrace", [_cell(PTRACE, OUT=str(ptrace / "found.json"))])
    fork = root / "fork"
    # graded exactly as a learner's notebook is, by `python -m utils.grading` with the course's questions
    add(
        "fork",
        [_cell(DOUBLE_FORK, REPORT=str(fork / "report.json"), MARKER=str(fork / "survived"))],
        course=True,
    )
    add("feedback", [FEEDBACK])
    directory = root / "directory"
    add("directory", [_cell(REPORT_DIRECTORY, REPORT=str(directory / "report.json"))])
    shadow = root / "shadow"
    add("shadow", [_cell(SHADOW, MARKER=str(shadow / "imported"))], cwd=shadow)
    add("statistics", [STATISTICS], assignment="05_init_norm_reg")
    add("shortcut", [SHORTCUT])
    env = dict(
        os.environ,
        JUPYTER_PLATFORM_DIRS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    )
    env.pop("COURSE_GRADING", None)
    procs = {}
    for name, (path, report, cwd, course) in jobs.items():
        # the grader with the question set the attack notebooks answer (tests/grading_demo.py)
        grader = (
            ["-m", "utils.grading"]
            if course
            else ["-c", "import sys, grading_demo; sys.exit(grading_demo.main())"]
        )
        command = [sys.executable, *grader, "grade", str(path), "--json", str(report)]
        procs[name] = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        results[name] = [proc.returncode, out, err, jobs[name][1]]
    time.sleep(3)  # the daemons strike within 0.1 s of the report's writing
    for name, result in results.items():
        report = Path(result[3])
        result[3] = json.loads(report.read_text()) if report.is_file() else None
        results[name] = (*result, root / name)
    return results


def _genuine(result, max_score=4):
    code, out, err, report, _ = result
    assert code == 0, err
    assert report is not None and report["score"] == 0 and report["max_score"] == max_score, report
    lines = out.rstrip().splitlines()
    assert lines[-1] == f"Score: 0/{max_score}" and sum(line.startswith("Score:") for line in lines) == 1, out
    return report


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="ptrace and /proc are Linux's")
def test_the_kernel_cannot_trace_the_grader(attacks):
    _genuine(attacks["ptrace"])
    found = json.loads((attacks["ptrace"][4] / "found.json").read_text())
    assert found["attached"] == -1 and found["errno"] in (errno.EPERM, errno.EACCES), found
    assert found["memory"] is False
    CAP_SYS_PTRACE = 19
    assert found["uid"] != 0 or not found["capabilities"] & (1 << CAP_SYS_PTRACE), found
    notes = " ".join(attacks["ptrace"][3]["notes"])
    if os.getuid() == 0 and found["uid"] == 0:  # root, and no user to run the kernel as: said in one note
        assert "cannot sandbox as user" in notes


@pytest.mark.slow
def test_no_process_outlives_the_kernel_and_the_streams_are_not_shared(attacks):
    course = get_assignment("01_backprop").max_score
    report = _genuine(attacks["fork"], max_score=int(course) if course == int(course) else course)
    folder = attacks["fork"][4]
    assert not (folder / "survived").exists() and not (folder / "survived.child").exists()
    assert "Score: 4/4" not in attacks["fork"][1]  # nothing the kernel or its children wrote reached us
    if LINUX:
        killed = [n for n in report["notes"] if "killed" in n and "the notebook left running" in n]
        assert killed, report["notes"]


@pytest.mark.slow
def test_feedback_cannot_add_rows_or_a_score_line(attacks):
    report = _genuine(attacks["feedback"])
    out = attacks["feedback"][1]
    rows = [line for line in out.splitlines()[1:] if not line.startswith(("  note:", "id "))]
    assert [r.split()[0] for r in rows] == ["q1", "q2", "q3", "q4", "Score:"], out
    assert "\x1b" not in out and "\u2028" not in out and "\r" not in out
    for q in report["questions"]:
        assert "\n" not in q["feedback"] and "\x1b" not in q["feedback"]
    assert "raised ValueError: boom" in report["questions"][0]["feedback"]


@pytest.mark.slow
def test_a_report_path_turned_into_a_directory_still_prints_the_table(attacks):
    code, out, err, report, folder = attacks["directory"]
    assert code == 1 and report is None
    assert out.rstrip().endswith("Score: 0/4")
    assert f"error: the report could not be written to {folder / 'report.json'}" in err
    assert "IsADirectoryError" in err


@pytest.mark.slow
def test_modules_written_by_the_notebook_never_reach_the_grader(attacks):
    _genuine(attacks["shadow"])
    folder = attacks["shadow"][4]
    assert (folder / "sklearn.py").exists()  # the attack ran, in the grader's working directory
    assert not (folder / "imported").exists()


@pytest.mark.slow
def test_statistics_are_computed_by_the_grader(attacks):
    code, out, err, report, _ = attacks["statistics"]
    assert code == 0, err
    scores = {q["id"]: q for q in report["questions"]}
    assert scores["q1"]["score"] == 0 and "std over" in scores["q1"]["feedback"], scores["q1"]


@pytest.mark.slow
def test_a_forbidden_shortcut_scores_zero_in_the_grader_too(attacks):
    """The watch runs in the learner's kernel: a reference captured at the top of the notebook is caught."""
    report = _genuine(attacks["shortcut"])
    feedback = {q["id"]: q["feedback"] for q in report["questions"]}
    assert "forbidden call in case" in feedback["q1"] and "calls torch.nn.functional.linear" in feedback["q1"]
    assert "calls torch.nn.functional.relu, which this question forbids" in feedback["q2"], feedback["q2"]
    assert "calls utils.scratch (softmax_cross_entropy)" in feedback["q3"], feedback["q3"]


def test_the_grader_keeps_its_working_directory_off_the_import_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), ".", *sys.path])
    _keep_cwd_off_the_import_path()
    assert "" not in sys.path and "." not in sys.path and str(tmp_path) not in sys.path


def test_the_assignment_metadata_cannot_choose_the_questions(tmp_path, capsys):
    nb = make_notebook(exercise_cells(), assignment="02_activations")  # a chapter-01 notebook claiming 02
    path = write(nb, tmp_path / "01_backprop.ipynb")
    assert cli_main(["grade", str(path)]) == 2
    assert "graded as 01_backprop, but its metadata says '02_activations'" in capsys.readouterr().err
    renamed = write(nb, tmp_path / "homework.ipynb")
    assert cli_main(["grade", str(renamed)]) == 2
    assert "--assignment" in capsys.readouterr().err


def test_a_report_path_that_is_a_directory_is_refused_up_front(tmp_path, capsys):
    path = write(make_notebook(exercise_cells()), tmp_path / "01_backprop.ipynb")
    assert cli_main(["grade", str(path), "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a directory" in capsys.readouterr().err


def test_the_table_is_one_line_per_question():
    case = CaseResult("c\n", "f", False, "bad\nScore: 9/9\x1b[1A")
    result = QuestionResult("q1", "Title\nq9 fake 1/1", cases=[case])
    table = Report("nb\n.ipynb", "01_backprop", [result], notes=["note\nScore: 9/9"]).table()
    lines = table.splitlines()
    assert len(lines) == 5 and lines[-1] == "Score: 0/1"
    assert sum(line.startswith("Score:") for line in lines) == 1
    assert clean("a\tb\u2028c\x00d  e") == "a b c d e"


# --------------------------------------------------------------------------- the sandbox itself


@pytest.mark.skipif(not LINUX, reason="prctl is Linux's")
def test_the_grader_is_not_dumpable_while_it_grades(tmp_path):
    before = _prctl(PR_GET_DUMPABLE)
    with Sandbox(base=tmp_path):
        assert _prctl(PR_GET_DUMPABLE) == 0
    assert _prctl(PR_GET_DUMPABLE) == before


@pytest.mark.skipif(not LINUX, reason="child subreapers are Linux's")
def test_leftover_processes_are_found_and_killed(tmp_path):
    """A daemon that left the kernel's session and cleared its environment is found as the grader's orphan."""
    pid_file = tmp_path / "daemon.pid"
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "        os.execve('/bin/sleep', ['sleep', '60'], {})\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    )
    with Sandbox(base=tmp_path / "base") as box:
        starter = subprocess.Popen([sys.executable, "-c", program], env=box.environment(dict(os.environ)))
        box.kernel_pid = starter.pid
        starter.wait(timeout=60)
        for _ in range(500):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.01)
        daemon = int(pid_file.read_text())
        assert Path(f"/proc/{daemon}").exists()
        assert box.kill_leftovers() >= 1
        assert not Path(f"/proc/{daemon}").exists()
        assert box.kill_leftovers() == 0


def test_a_stale_run_folder_is_removed_at_the_next_start(tmp_path):
    base = tmp_path / f"course-grader-{os.getuid()}"
    base.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = base / f"run-{dead.pid}-1-deadbeef"
    (stale / "kernel").mkdir(parents=True)
    alive = base / f"run-{os.getpid()}-0-cafecafe"  # a grader that is still running
    alive.mkdir()
    with Sandbox(base=tmp_path) as box:
        assert box.root.exists() and not stale.exists() and alive.exists()
    assert not box.root.exists()


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environment = entry.joinpath("environ").read_bytes().split(b"\0")
                if f"{TOKEN_VARIABLE}={token}".encode() in environment:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="/proc is Linux's")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_killed_grader_leaves_no_folder_and_no_kernel(tmp_path, how):
    folder = tmp_path / "nb"
    path = write(make_notebook(["import time\ntime.sleep(300)"]), folder / "01_backprop.ipynb")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT), JUPYTER_PLATFORM_DIRS="1")
    env.pop("COURSE_GRADING", None)
    (tmp_path / "tmp").mkdir()
    # a shell that runs the tests in the background makes its children ignore SIGINT: undo that for the grader
    proc = subprocess.Popen(
        [sys.executable, "-m", "utils.grading", "grade", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    base = tmp_path / "tmp" / f"course-grader-{os.getuid()}"
    token, deadline = None, time.monotonic() + 240
    while time.monotonic() < deadline and token is None:
        runs = list(base.glob("run-*")) if base.is_dir() else []
        if runs and _processes_with(runs[0].name.split("-")[-1]):
            token = runs[0].name.split("-")[-1]
        time.sleep(0.2)
    assert token is not None, "the kernel never started"
    time.sleep(3)  # the notebook's cell is running
    proc.send_signal(getattr(signal, how))
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert list(base.glob("run-*")) == []
    for _ in range(100):
        if not _processes_with(token):
            break
        time.sleep(0.1)
    assert _processes_with(token) == []


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="/proc is Linux's")
def test_a_grader_killed_outright_is_cleaned_up_at_the_next_start(tmp_path):
    path = write(make_notebook(["import time\ntime.sleep(300)"]), tmp_path / "nb" / "01_backprop.ipynb")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT), JUPYTER_PLATFORM_DIRS="1")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "utils.grading", "grade", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = tmp_path / "tmp" / f"course-grader-{os.getuid()}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (base.is_dir() and any(base.glob("run-*/grader/kernel.log"))):
        time.sleep(0.2)
    run = next(base.glob("run-*"))
    proc.kill()
    proc.wait(timeout=60)
    assert run.exists()  # SIGKILL leaves no chance to clean up ...
    try:
        with Sandbox(base=tmp_path / "tmp"):
            pass
        assert not run.exists()  # ... the next start removes it
    finally:
        for pid in _processes_with(run.name.split("-")[-1]):  # the orphaned kernel, if it has not noticed yet
            os.kill(pid, signal.SIGKILL)
