"""The comparative claims of chapters 01-08 hold for a seed the book never runs.

The book states comparisons ("GELU ends ahead of ReLU", "the ResNet beats LeNet by more than ten
points") only where the `book` profile asserts them for *every* seed it trains (seeds SEED,
SEED + 1, ..., SEED + N_SEEDS - 1, with SEED = 0). A claim that only those seeds happen to support
would still pass the book build. This test runs each chapter's own code again, unchanged, with a
fresh seed, and fails if one of its claim assertions does.

Design (tagged cells and one flag, no copy of the chapters' code):

* every chapter has a parameter ``CLAIMS`` (``PROFILE != "smoke"`` by default) and guards the
  assertions of its comparative claims with ``if CLAIMS:``; the cells holding them are tagged
  ``claim`` in the notebook (`test_claim_cells_are_tagged_and_guarded` keeps the two in step);
* the test executes the whole chapter with papermill in the ``smoke`` profile, so that everything
  around the comparisons (the from-scratch checks, the figures, the widgets) stays smoke-sized, and
  injects ``SEED=7`` (no book run uses seed 7), ``CLAIMS=True``, one seed per comparison
  (``N_SEEDS=1``, ``IMB_SEEDS=1``), and, for the parameters that size the comparative experiments
  (listed per chapter in ``CLAIM_SIZES``), the values the chapter's own parameters cell gives them
  in the ``book`` profile: a claim is checked at the size at which the book makes it, since a claim
  about five epochs on 7,000 images says nothing about one epoch on 1,000;
* a failure shows the chapter's cell and assertion, as papermill reports it.

Claims about single runs are asserted for every seed and so are checked here with the fresh seed.
A few claims are about averages over several seeds (chapter 05's regularizers, whose effect on
accuracy is smaller than a seed's): those are guarded by ``if CLAIMS and N_SEEDS > 1`` and checked
by the book build, which trains three seeds; with one seed this test skips them, since a claim about
a mean is not a claim about every run.

Cost: the comparative experiments of all eight chapters at book size for one seed, the rest at smoke
size: about 6 minutes on 2 CPU cores, so the tests are marked ``slow`` (one per chapter, so that
``pytest -n`` spreads them). The static test of the tags and guards is fast.
"""

from __future__ import annotations

import os
import re

import nbformat
import pytest

import utils
from conftest import ROOT

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
FRESH_SEED = 7  # above every book seed (0 .. N_SEEDS - 1) and different from the chapters' SEED
SEED_COUNTS = ("N_SEEDS", "IMB_SEEDS")  # set to 1: one fresh seed per comparison
CLAIM_SIZES = {  # the parameters that size each chapter's comparative experiments
    "01_backprop": ["DEEP_EPOCHS", "VAL_SIZE"],
    "02_activations": ["EPOCHS", "DEAD_EPOCHS", "TRAIN_SUBSET", "VAL_SIZE"],
    "03_losses_metrics": ["EPOCHS", "IMB_EPOCHS", "DETECTOR_STEPS"],
    "04_optimizers": ["EPOCHS", "TRAIN_SUBSET", "VAL_SIZE", "TEST_SUBSET", "BS_EPOCHS"],
    "05_init_norm_reg": ["EPOCHS", "TRAIN_SIZE", "VAL_SIZE"],
    "06_convolutions": ["EPOCHS", "TRAIN_SUBSET", "VAL_SIZE", "TEST_SUBSET"],
    "07_architectures": ["EPOCHS", "DEG_EPOCHS", "TRAIN_SUBSET", "VAL_SIZE", "DEG_SUBSET"],
    "08_training_cnns": ["EPOCHS", "N_TRAIN", "N_VAL", "WIDTH", "RANGE_STEPS", "OVERFIT_STEPS"],
    "09_transfer_learning": [
        "N_POOL",
        "N_VAL",
        "PER_CLASS",
        "FT_STEPS",
        "FT_PER_CLASS",
        "SCRATCH_STEPS",
        "SSL_STEPS",
        "SSL_BATCH",
        "N_DIGITS",
    ],
    "10_detection_basics": ["N_KMEANS", "N_MATCH", "N_IMAGES"],
    "13_autoencoders": [
        "N_TRAIN",
        "N_VAL",
        "EPOCHS",
        "CONV_EPOCHS",
        "LINEAR_STEPS",
        "ANGLE_STEPS",
        "LATENTS",
        "N_ANOMALY",
    ],
}


def parameters_cell(nb) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def parameters_in(profile: str, source: str, monkeypatch) -> dict:
    """The values a parameters cell gives in ``profile`` (on the CPU), by running its source."""
    monkeypatch.setenv("COURSE_PROFILE", profile)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    namespace = {"utils": utils}
    exec(compile(source, "<parameters>", "exec"), namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def test_every_chapter_is_covered():
    assert [p.stem for p in CHAPTERS] == sorted(CLAIM_SIZES)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_claim_cells_are_tagged_and_guarded(path, monkeypatch):
    """`if CLAIMS:` appears exactly in the cells tagged `claim`; the parameters cell defines what the
    claims test injects, and says how to select the `full` profile."""
    nb = nbformat.read(path, as_version=4)
    params = parameters_cell(nb)
    assert "COURSE_PROFILE=full" in params.source and "%env" in params.source, "say how to select `full`"
    values = parameters_in("book", params.source, monkeypatch)
    for name in ["SEED", "CLAIMS", "THREADS", *CLAIM_SIZES[path.stem]]:
        assert name in values, f"{path.name}: the parameters cell does not define {name}"
    assert values["CLAIMS"] is True and values["SEED"] != FRESH_SEED
    assert parameters_in("smoke", params.source, monkeypatch)["CLAIMS"] is False
    tagged = [c for c in nb.cells if "claim" in c.metadata.get("tags", [])]
    assert tagged, f"{path.name} has no cell tagged 'claim'"
    for c in nb.cells:
        guarded = c.cell_type == "code" and re.search(r"^\s*if CLAIMS\b", c.source, re.M) is not None
        is_tagged = "claim" in c.metadata.get("tags", [])
        assert guarded == is_tagged, (
            f"{path.name} cell {c.get('id')}: tagged 'claim' = {is_tagged}, "
            f"guards assertions with `if CLAIMS` = {guarded}"
        )
        if is_tagged:
            assert "assert" in c.source


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_claims_hold_for_a_fresh_seed(path, tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    nb = nbformat.read(path, as_version=4)
    source = parameters_cell(nb).source
    book = parameters_in("book", source, monkeypatch)
    parameters = {name: book[name] for name in CLAIM_SIZES[path.stem]}
    parameters.update({name: 1 for name in SEED_COUNTS if name in book})
    parameters.update(SEED=FRESH_SEED, CLAIMS=True, DEVICE="cpu")
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / path.name
    pm.execute_notebook(
        str(path),
        str(out),
        parameters=parameters,
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=900,
    )
    executed = nbformat.read(out, as_version=4)
    claims = [c for c in executed.cells if "claim" in c.metadata.get("tags", [])]
    assert claims and all(c.execution_count is not None for c in claims), "a claim cell did not run"
    assert not any(o.get("output_type") == "error" for c in claims for o in c.outputs)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert f"SEED = {FRESH_SEED}" in injected.source and "CLAIMS = True" in injected.source
