"""What a question forbids, resolved in the grading process into the spec that :mod:`utils.grading.watch`
reads. A question lists names; this module finds every form of each:

* a torch operator (``"torch.nn.functional.conv2d"``, ``"torch.sigmoid"``, ``"torch.Tensor.sigmoid"``):
  the function object (so every alias of it: ``F.conv2d``, ``torch.conv2d``,
  ``torch._C._VariableFunctions.conv2d``) and the operator of the same name in its other forms, the
  ``torch.X`` function, the ``Tensor.X`` method and the in-place ``X_`` variants where torch has them
  (``torch.sigmoid`` also forbids ``x.sigmoid()``, ``x.sigmoid_()`` and ``F.sigmoid``);
* a Python function (``"torch.autograd.grad"``, ``"torch.Tensor.backward"``): its code, and the
  functions a dispatcher such as ``F.max_pool2d`` chooses between;
* a class (``"torchvision.ops.SqueezeExcitation"``): its ``__init__`` and ``forward``;
* a module or package (``"utils.scratch"``, ``"torch.optim"``): every function defined in its files,
  and importing it from the learner's code. A course module (``utils.<name>``) is recognised as a
  file or a package, whichever it is today, and even before it exists.

Not caught: another function that computes the same thing under another name (``torch.special.expit``
is not ``torch.sigmoid``: list it too), Python operators that go straight to C slots (``x @ w`` when
``torch.matmul`` is forbidden), ``torch.ops.aten.*`` overloads, code copied out of a forbidden module,
and a notebook that deliberately subverts the watch inside its own kernel before the call (the watch
notices when it is switched off during the call, not every way of blinding it beforehand).
Chapter 02's exercise forbids the ready-made activations; ``AUTOGRAD`` and ``COURSE`` are the groups
most questions need.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import types
from collections.abc import Iterable, Mapping

from .watch import c_key

__all__ = ["AUTOGRAD", "COURSE", "ForbidSpecError", "forbid_spec"]

# The ways to let autograd compute a gradient. Every one of them ends in the engine's run_backward.
AUTOGRAD = (
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
    "torch.autograd.variable.Variable._execution_engine.run_backward",
)
# The course's own reference implementations, which a question usually asks the learner to reproduce.
COURSE = ("utils.scratch", "utils.ops", "utils.boxes", "utils.metrics")


class ForbidSpecError(ValueError):
    """A question forbids a name that does not exist (a typo in the question set)."""


def _resolve(name: str):
    """The object a dotted name refers to, and whether it is a module."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                module = ".".join(parts[:cut])
                message = f"forbidden name {name!r}: {module} has no attribute {attr!r}"
                raise ForbidSpecError(message) from None
        return obj
    raise ForbidSpecError(f"forbidden name {name!r}: no module {parts[0]!r}")


def _file_tail(code: types.CodeType, module: str | None) -> str:
    """The end of a code object's file name from its top-level package on: ``torch/_tensor.py``."""
    filename = code.co_filename.replace(os.sep, "/")
    top = (module or "").split(".")[0]
    marker = f"/{top}/" if top else ""
    if marker and marker in filename:
        return filename[filename.rindex(marker) + 1 :]
    return "/".join(filename.split("/")[-2:])


def _python_functions(fn) -> list[types.FunctionType]:
    """A Python function, unwrapped; for a dispatcher such as ``F.max_pool2d`` (a closure shared by many
    functions) the functions it chooses between instead of the shared dispatching code."""
    fn = inspect.unwrap(fn)
    if not isinstance(fn, types.FunctionType):
        return []
    inner = []
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
            inner.append(inspect.unwrap(value))
    return inner or [fn]


def _operator_forms(op: str) -> list[object]:
    """torch's operator ``op`` in its function, method and in-place forms, where torch has them."""
    import torch
    import torch.nn.functional as F

    forms = []
    places = ((torch, op), (torch, op + "_"), (torch.Tensor, op), (torch.Tensor, op + "_"), (F, op))
    for owner, name in places:
        obj = getattr(owner, name, None)
        if obj is not None and callable(obj) and not isinstance(obj, type):
            forms.append(obj)
    return forms


def _is_torch_operator(obj) -> bool:
    """A torch operator: a C function of torch, or a function of ``torch.nn.functional``."""
    if isinstance(inspect.unwrap(obj), types.FunctionType):
        return getattr(obj, "__module__", "") == "torch.nn.functional"
    return (c_key(obj) or "").startswith("torch")


def _add_callable(obj, shown: str, spec: dict, *, expand: bool = True) -> None:
    if isinstance(obj, type):
        for attr in ("__init__", "forward"):
            method = obj.__dict__.get(attr)
            if method is not None:
                _add_callable(method, shown, spec, expand=False)
        return
    functions = _python_functions(obj) if isinstance(inspect.unwrap(obj), types.FunctionType) else []
    for fn in functions:
        code = fn.__code__
        entry = [code.co_name, _file_tail(code, fn.__module__), code.co_firstlineno, shown]
        if all(e[:3] != entry[:3] for e in spec["py"]):
            spec["py"].append(entry)
    if not functions:
        key = c_key(obj)
        if key is None:
            raise ForbidSpecError(f"forbidden name {shown!r} is neither a function, a class nor a module")
        spec["c"].setdefault(key, shown)
    if expand and _is_torch_operator(obj):
        op = getattr(inspect.unwrap(obj), "__name__", "").rstrip("_")
        for form in _operator_forms(op):
            if form is not obj:
                _add_callable(form, shown, spec, expand=False)


def _add_module(module: types.ModuleType, name: str, spec: dict) -> None:
    path = getattr(module, "__file__", None)
    if not path:
        raise ForbidSpecError(f"forbidden module {name!r} has no file to recognise its functions by")
    relative = name.replace(".", "/")
    pattern = f"/{relative}/" if hasattr(module, "__path__") else f"/{relative}.py"
    entry = [name, pattern, name]
    if entry not in spec["modules"]:
        spec["modules"].append(entry)


@functools.lru_cache(maxsize=256)
def _cached_spec(names: tuple[str, ...], why: str) -> tuple:
    spec: dict = {"c": {}, "py": [], "modules": [], "why": why}
    for name in names:
        if name.startswith("utils.") and name.count(".") == 1:  # a course module, as a file or a package
            for pattern in (f"/utils/{name[6:]}/", f"/utils/{name[6:]}.py"):
                spec["modules"].append([name, pattern, name])
            continue
        obj = _resolve(name)
        if isinstance(obj, types.ModuleType):
            _add_module(obj, name, spec)
        else:
            _add_callable(obj, name, spec)
    return tuple(sorted(spec["c"].items())), tuple(map(tuple, spec["py"])), tuple(map(tuple, spec["modules"]))


def forbid_spec(names: Iterable[str] | Mapping[str, str], why: str = "") -> dict | None:
    """The watch spec for ``names`` (dotted names; groups such as :data:`AUTOGRAD` may be spliced in),
    or ``None`` when nothing is forbidden. ``why`` ends every message: "q1 asks for the convolution
    itself". Raises :class:`ForbidSpecError` naming a name that does not exist.
    """
    names = tuple(dict.fromkeys(names))  # order kept, duplicates dropped
    if not names:
        return None
    c, py, modules = _cached_spec(names, why)
    return {"c": dict(c), "py": [list(e) for e in py], "modules": [list(e) for e in modules], "why": why}
