"""Papermill drives the notebooks: parameters injected after the `parameters` cell take effect."""

from __future__ import annotations

import re

import nbformat
import pytest

from conftest import ROOT

pm = pytest.importorskip("papermill")
pytestmark = pytest.mark.slow

CHAPTER = ROOT / "chapters" / "01_backprop.ipynb"


def outputs_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_injected_parameters_take_effect(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    out = tmp_path / "01_backprop.out.ipynb"
    pm.execute_notebook(
        str(CHAPTER),
        str(out),
        parameters={"EPOCHS": 3, "SEED": 7, "DEVICE": "cpu"},
        cwd=str(CHAPTER.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags.index(["injected-parameters"]) == next(i for i, t in enumerate(tags) if "parameters" in t) + 1
    text = outputs_text(nb)
    # the chapter reports the settings it runs with, and the training history has EPOCHS entries
    assert re.search(r"profile=smoke\b", text), text[:2000]
    assert re.search(r"device=cpu\b", text)
    assert re.search(r"epochs=3\b", text)
    assert re.search(r"seed=7\b", text)
    assert re.search(r"trained for 3 epochs", text, re.I), (
        "the training loop did not run for the injected EPOCHS"
    )
