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
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
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
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    code = textwrap.dedent(
        """
        try:
            import utils
        except ImportError as err:
            print("MESSAGE:", err)
        else:
            print("NO ERROR")
        """)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "MESSAGE:" in out.stdout, out.stdout + out.stderr
    message = out.stdout.split("MESSAGE:", 1)[1].strip()
    assert "do not match" in message
    assert "torchvision::nms does not exist" in message
    assert "pip install --upgrade --force-reinstall torch torchvision" in message
    assert "Traceback" not in out.stdout
