"""Deprecated alias of :mod:`utils.ops.boxes`: import from ``utils.ops`` (or ``utils.ops.boxes``) instead.

Every name of the old module still works from here; importing it warns once (DeprecationWarning).
"""

from __future__ import annotations

import warnings

from utils.ops.boxes import *  # noqa: F403 (the public names: see utils.ops.boxes.__all__)
from utils.ops.boxes import __all__, _check_boxes, _check_fmt, _upcast  # noqa: F401

# stacklevel=2 names the importing line: warnings skips the import machinery's own frames.
warnings.warn(
    "utils.boxes is deprecated: import the same functions from utils.ops.boxes (or utils.ops)",
    DeprecationWarning,
    stacklevel=2,
)
