"""`make gpu-check` (benchmarks/gpu_check.py): what can be checked without a GPU.

On a machine without CUDA the script must stop at once with one sentence and a non-zero exit status;
the results writer must name the file by date and device and record every step, failures with their
output. The GPU run itself is checked where there is a GPU (`make gpu-check`).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check would run")
def test_without_cuda_it_stops_at_once_with_one_sentence():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert out.stdout == ""
    message = out.stderr.strip()
    assert message == gpu_check.NO_CUDA
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert "Traceback" not in out.stderr
    assert time.perf_counter() - start < 60  # no notebook, no test was started


def test_main_without_cuda_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "RESULTS_DIR", tmp_path)
    called = []
    monkeypatch.setattr(gpu_check, "run", lambda *a, **k: called.append(a))
    assert gpu_check.main([]) == 2
    assert called == [] and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.strip() == gpu_check.NO_CUDA


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("Tesla T4", "tesla-t4"),
        ("  NVIDIA A100-SXM4-40GB ", "nvidia-a100-sxm4-40gb"),
        ("???", "unknown-device"),
    ],
)
def test_slug(name, expected):
    assert gpu_check.slug(name) == expected


def test_results_file_is_dated_names_the_device_and_records_every_step(tmp_path):
    steps = [
        gpu_check.Step("pytest -m gpu", True, 12.34, "collected 4 items\n4 passed in 12.3s"),
        gpu_check.Step("chapters/01_backprop.ipynb (book)", True, 20.0),
        gpu_check.Step(
            "chapters/07_architectures.ipynb (full)",
            False,
            100.0,
            "Traceback ...\nAssertionError: acc | 0.91 < 0.95",
        ),
    ]
    date = dt.date(2031, 2, 3)
    path = gpu_check.write_results(
        steps, "NVIDIA Fake GPU 80GB", {"torch": "9.9.9", "CUDA": "13.0"}, date=date, results_dir=tmp_path
    )
    assert path == tmp_path / "gpu_check_2031-02-03_nvidia-fake-gpu-80gb.md"
    text = path.read_text()
    assert text.startswith("# GPU check, 2031-02-03: NVIDIA Fake GPU 80GB\n")
    assert "- torch: 9.9.9" in text and "- CUDA: 13.0" in text
    assert "- result: 1 of 3 steps FAILED" in text and "- total: 132 s" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| pytest -m gpu | passed | 12.3 | 4 passed in 12.3s |",
        "| chapters/01_backprop.ipynb (book) | passed | 20.0 |  |",
        "| chapters/07_architectures.ipynb (full) | FAILED | 100.0 | see below |",
    ]
    # the failure's output, verbatim (a "|" does not break the table because it is outside it)
    failure = (
        "## chapters/07_architectures.ipynb (full)\n\n"
        "```\nTraceback ...\nAssertionError: acc | 0.91 < 0.95\n```"
    )
    assert failure in text


def test_results_file_says_when_the_run_was_over_budget(tmp_path):
    steps = [gpu_check.Step("a", True, gpu_check.BUDGET_SECONDS + 1.0)]
    path = gpu_check.write_results(steps, "GPU", {}, date=dt.date(2030, 1, 1), results_dir=tmp_path)
    text = path.read_text()
    assert "- result: all 1 steps passed" in text
    assert f"(over the {gpu_check.BUDGET_SECONDS} s aim)" in text


def test_run_records_exit_status_and_output_tail():
    ok = gpu_check.run("ok", [sys.executable, "-c", "print('a'); print('b')"], dict(os.environ), timeout=60)
    assert ok.passed and ok.detail == "a\nb" and ok.seconds > 0
    fail = [sys.executable, "-c", "import sys; print('x'); sys.exit(3)"]
    bad = gpu_check.run("bad", fail, dict(os.environ), timeout=60)
    assert not bad.passed and bad.detail == "x"
    slow = gpu_check.run(
        "slow", [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), timeout=1
    )
    assert not slow.passed and slow.detail.startswith("stopped after 1 s")


def test_makefile_has_the_gpu_check_target():
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in makefile and "benchmarks/gpu_check.py" in makefile
    assert "gpu-check" in makefile.split(".PHONY:", 1)[1].splitlines()[0]
