"""Shared test settings: headless plots, the smoke profile, no fixture notebooks collected by nbval, and
the website built once per session (the `site` fixture of test_book.py and test_site.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent

# Notebooks under tests/ are inputs of the grading tests, not lessons: nbval must not run them.
collect_ignore_glob = ["fixtures/*", "fixtures/**/*"]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The website built as `make book` builds it: strict, from clean, executed in the book profile.

    `COURSE_SITE_BUILD=_build` checks an existing build (e.g. of `make book`) instead of building one.
    """
    if os.environ.get("COURSE_SITE_BUILD"):
        built = Path(os.environ["COURSE_SITE_BUILD"]).resolve()
        assert (built / "html" / "index.html").exists(), f"COURSE_SITE_BUILD={built} holds no built site"
        return built
    from utils import book

    out = tmp_path_factory.mktemp("site")
    code = book.build(path_output=out, profile="book")
    assert code == 0, "the strict book build failed (see the warnings and errors above)"
    return out / "_build"


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The tests' tensors and models are tiny: one CPU thread is faster than several competing for
    the cores (much faster on a busy 2-core machine). Notebooks run in their own kernels, unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
