"""Shared test settings: headless plots, the smoke profile, and no fixture notebooks collected by nbval."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent

# Notebooks under tests/ are inputs of the grading tests, not lessons: nbval must not run them.
collect_ignore_glob = ["fixtures/*", "fixtures/**/*"]
