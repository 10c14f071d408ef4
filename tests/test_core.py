"""utils top level: device, seed_everything, profile, and the torch/torchvision mismatch message."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import utils
from conftest import ROOT


@pytest.mark.parametrize("name", ["smoke", "book", "full", " SMOKE "])
def test_profile_reads_environment(monkeypatch, name):
    monkeypatch.setenv("COURSE_PROFILE", name)
    assert utils.profile() == name.strip().lower()


def test_profile_defaults_to_book(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert utils.profile() == "book"
    monkeypatch.setenv("COURSE_PROFILE", "")
    assert utils.profile() == "book"


def test_profile_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"smoke, book, full.*'fast'"):
        utils.profile()


def test_by_profile_picks_value(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert utils.by_profile(smoke=1, book=30, full=90) == 1
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert utils.by_profile(smoke=1, book=30, full=90) == 90
    assert utils.by_profile(smoke=1, book=30) == 30  # full falls back to book
    with pytest.raises(ValueError):
        utils.by_profile(smoke=1, book=2, profile_name="huge")


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = (
        "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert utils.device().type == expected
    assert utils.device("cpu") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert utils.device() == torch.device("cpu")


def test_device_rejects_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        utils.device("cuda")


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert utils.device().type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert utils.device().type == "cuda"


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3)

    utils.seed_everything(123)
    a = draw()
    utils.seed_everything(123)
    b = draw()
    utils.seed_everything(124)
    c = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and not torch.equal(a[2], c[2])


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises((TypeError, ValueError)):
        utils.seed_everything(bad)


def test_mismatched_torchvision_gives_one_clear_sentence(tmp_path):
    """A torchvision that fails to import (as a build for another torch does) gets a clear message."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    code = textwrap.dedent(
        """
        try:
            import utils
        except ImportError as err:
            print("MESSAGE:", err)
        else:
            print("NO ERROR")
        """
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "MESSAGE:" in out.stdout, out.stdout + out.stderr
    message = out.stdout.split("MESSAGE:", 1)[1].strip()
    assert "do not match" in message
    assert "torchvision::nms does not exist" in message
    assert "pip install --upgrade --force-reinstall torch torchvision" in message
    assert "Traceback" not in out.stdout


# --- CPU threads: default_threads / set_threads -------------------------------------------------


@pytest.fixture
def threads_env(monkeypatch):
    """No COURSE_THREADS from the caller's shell; torch's own default pinned to 8 for the tests."""
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    monkeypatch.setattr(utils, "_TORCH_DEFAULT_THREADS", 8)
    return monkeypatch


@pytest.mark.parametrize("profile", ["smoke", "book", "full"])
@pytest.mark.parametrize("dev", ["cuda", "mps", "cuda:1"])
def test_default_threads_never_limits_a_gpu_runtime(threads_env, profile, dev):
    threads_env.setattr(utils, "_usable_cores", lambda: 2)
    assert utils.default_threads(dev, profile) == 8


@pytest.mark.parametrize(
    "cores, profile, expected",
    [
        (2, "book", 1),
        (1, "full", 1),
        (2, "smoke", 1),  # the 2-core book machine and CI: one thread
        (8, "smoke", 1),  # CI stays at one thread whatever the machine
        (8, "book", 8),
        (16, "full", 8),
        (4, "book", 8),  # a laptop: torch's own default, unchanged
    ],
)
def test_default_threads_on_cpu(threads_env, cores, profile, expected):
    threads_env.setattr(utils, "_usable_cores", lambda: cores)
    assert utils.default_threads("cpu", profile) == expected


def test_default_threads_reads_profile_and_device_by_default(threads_env):
    threads_env.setattr(utils, "_usable_cores", lambda: 8)
    threads_env.setenv("COURSE_DEVICE", "cpu")
    threads_env.setenv("COURSE_PROFILE", "smoke")
    assert utils.default_threads() == 1
    threads_env.setenv("COURSE_PROFILE", "book")
    assert utils.default_threads() == 8


def test_course_threads_environment_wins(threads_env):
    threads_env.setattr(utils, "_usable_cores", lambda: 2)
    threads_env.setenv("COURSE_THREADS", "3")
    assert utils.default_threads("cpu", "book") == 3
    assert utils.default_threads("cuda", "full") == 3
    for bad in ("0", "-2", "two", "1.5"):
        threads_env.setenv("COURSE_THREADS", bad)
        with pytest.raises(ValueError, match="COURSE_THREADS must be a positive integer"):
            utils.default_threads("cpu", "book")


def test_default_threads_rejects_unknown_profile(threads_env):
    with pytest.raises(ValueError, match="profile must be one of"):
        utils.default_threads("cpu", "huge")


def test_set_threads_sets_torch_and_returns_the_number(threads_env):
    before = torch.get_num_threads()
    try:
        assert utils.set_threads(2) == 2 and torch.get_num_threads() == 2
        assert utils.set_threads(np.int64(1)) == 1 and torch.get_num_threads() == 1
        threads_env.setenv("COURSE_THREADS", "2")
        assert utils.set_threads() == 2 and torch.get_num_threads() == 2  # None: the default
        for bad in (0, -1, 1.5, "2", True):
            with pytest.raises(ValueError, match="positive int"):
                utils.set_threads(bad)
        assert torch.get_num_threads() == 2  # a refused value changes nothing
    finally:
        torch.set_num_threads(before)
