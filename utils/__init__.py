"""Shared code of the course: every notebook starts with ``import utils``.

The top level holds the three things every chapter needs first (chapter 01 introduces them):

* :func:`device` picks the accelerator (CUDA, then Apple MPS, then CPU), overridable;
* :func:`seed_everything` makes a run reproducible;
* :func:`profile` reads the compute profile (``smoke`` | ``book`` | ``full``) from the
  ``COURSE_PROFILE`` environment variable, and :func:`by_profile` picks a value for it;
* :func:`default_threads` and :func:`set_threads` choose how many CPU threads PyTorch uses.

Everything else lives in modules named by concept: ``utils.data``, ``utils.train``, ``utils.viz``,
``utils.metrics``, ``utils.ops``, ``utils.models``, ``utils.scratch`` and ``utils.grading``.
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"

PROFILES = ("smoke", "book", "full")
DEFAULT_PROFILE = "book"

_TORCHVISION_HINT = (
    "torch {torch} and torchvision {tv} do not match (importing torchvision failed: {err}); "
    "reinstall them as a pair with `pip install --upgrade --force-reinstall torch torchvision` "
    "(or run `make install`), without pinning torch to a version that has no matching torchvision."
)


def _check_torchvision() -> None:
    """Fail with one clear sentence when torch and torchvision are a mismatched pair."""
    import torch

    try:
        import torchvision  # noqa: F401
        from torchvision.ops import nms  # noqa: F401  (the operator a mismatched build lacks)
    except (
        ImportError,
        RuntimeError,
        AttributeError,
        OSError,
    ) as err:  # pragma: no cover - exercised via test
        from importlib import metadata

        try:
            tv_version = metadata.version("torchvision")
        except metadata.PackageNotFoundError:
            tv_version = "(not installed)"
        msg = _TORCHVISION_HINT.format(
            torch=torch.__version__,
            tv=tv_version,
            err=str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
        raise ImportError(msg) from None


_check_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402


def profile() -> str:
    """Return the compute profile named by ``COURSE_PROFILE``: ``smoke``, ``book`` (default) or ``full``.

    * ``smoke``: continuous integration, tiny data, seconds per notebook;
    * ``book``: what the website shows, CPU-friendly, the numbers the text claims are reached;
    * ``full``: a GPU runtime, bigger models and data.
    """
    value = os.environ.get("COURSE_PROFILE", "").strip().lower() or DEFAULT_PROFILE
    if value not in PROFILES:
        raise ValueError(
            f"COURSE_PROFILE must be one of {', '.join(PROFILES)} (or unset for '{DEFAULT_PROFILE}'), "
            f"got {os.environ.get('COURSE_PROFILE')!r}"
        )
    return value


def by_profile(*, smoke, book, full=None, profile_name: str | None = None):
    """Pick the value for the current profile: ``EPOCHS = by_profile(smoke=1, book=30, full=60)``.

    ``full`` defaults to the ``book`` value.
    """
    name = profile_name or profile()
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {name!r}")
    return {"smoke": smoke, "book": book, "full": book if full is None else full}[name]


def device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to compute on: CUDA if available, then Apple MPS, then CPU.

    ``prefer`` (or the ``COURSE_DEVICE`` environment variable) overrides the choice, e.g.
    ``device("cpu")``; asking for a device that is not available raises a ``RuntimeError``.
    Under ``torchrun`` (the ``LOCAL_RANK`` environment variable is set) each process takes its own
    GPU: ``cuda:LOCAL_RANK``, also for a bare ``"cuda"``; an explicit ``"cuda:1"`` is kept.
    Chapter 16 launches training on several GPUs.
    """

    def local_gpu() -> torch.device:  # cuda:LOCAL_RANK under torchrun, else plain cuda
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is None:
            return torch.device("cuda")
        if not local_rank.strip().isdigit():
            raise ValueError(f"LOCAL_RANK must be an int (torchrun sets it), got {local_rank!r}")
        index, count = int(local_rank), torch.cuda.device_count()
        if index >= count:
            raise RuntimeError(
                f"LOCAL_RANK={index} but this machine has {count} GPU(s): start at most {count} "
                f"processes per node (torchrun --nproc_per_node={count})"
            )
        return torch.device("cuda", index)

    choice = prefer if prefer is not None else (os.environ.get("COURSE_DEVICE") or None)
    if choice is not None:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {str(dev)!r} was asked for, but CUDA is not available here")
        if dev.type == "mps" and not (
            getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        ):
            raise RuntimeError(f"device {str(dev)!r} was asked for, but Apple MPS is not available here")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'cpu', 'cuda[:N]' or 'mps', got {str(dev)!r}")
        return local_gpu() if dev.type == "cuda" and dev.index is None else dev
    if torch.cuda.is_available():
        return local_gpu()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) with ``seed``.

    With ``deterministic=True`` also ask PyTorch for deterministic kernels (slower on GPU).
    Returns the seed so that it can be logged.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


# --------------------------------------------------------------------------------------------
# CPU threads
# --------------------------------------------------------------------------------------------

# PyTorch's own choice (one thread per physical core), read before anything changes it.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
_default_device = device  # default_threads' argument is also called `device`


def _usable_cores() -> int:
    """Logical cores this process may run on (a container or ``taskset`` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_threads(device: str | torch.device | None = None, profile_name: str | None = None) -> int:
    """The number of CPU threads a chapter should give PyTorch, for ``device`` and the profile.

    * ``COURSE_THREADS`` (environment variable, a positive integer) wins when it is set;
    * on a GPU (``cuda``, ``mps``) the models run there and the CPU prepares batches: PyTorch's own
      default (one thread per physical core), so a GPU runtime is never slowed down;
    * in the ``smoke`` profile (CI): 1, the tensors are tiny and CI machines are shared;
    * on a CPU with at most 2 cores: 1. The chapters' models are small; on the 2-core machine that
      builds the book a second thread spent more time synchronising than it saved, and both cores are
      often shared with other jobs (chapter 04 and chapter 07 measure it);
    * on a CPU with more cores (a laptop): PyTorch's own default, unchanged.

    ``device`` defaults to :func:`device`; ``profile_name`` to :func:`profile`. Chapters put
    ``THREADS = utils.default_threads(DEVICE)`` in their parameters cell and call :func:`set_threads`.
    """
    value = os.environ.get("COURSE_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"COURSE_THREADS must be a positive integer, got {value!r}")
        return int(value)
    dev = torch.device(device) if device is not None else _default_device()
    if dev.type in ("cuda", "mps"):
        return _TORCH_DEFAULT_THREADS
    name = profile_name or profile()
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {name!r}")
    if name == "smoke" or _usable_cores() <= 2:
        return 1
    return _TORCH_DEFAULT_THREADS


def set_threads(n: int | None = None) -> int:
    """Let PyTorch use ``n`` CPU threads (``None``: :func:`default_threads`); returns the number set.

    Chapter 01 explains the choice; every chapter calls ``utils.set_threads(THREADS)`` after its
    parameters cell, so papermill (``-p THREADS 4``) or ``COURSE_THREADS`` can change it.
    """
    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    torch.set_num_threads(int(n))
    return int(n)


__all__ = [
    "PROFILES",
    "by_profile",
    "default_threads",
    "device",
    "profile",
    "seed_everything",
    "set_threads",
    "__version__",
]
