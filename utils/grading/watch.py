"""The watch on forbidden calls: while a learner's function runs under a check, calls it may not make
raise :class:`ForbiddenCallError` and the case fails with that message.

This module imports only the standard library: the grader ships its source into the learner's
kernel with every call (:mod:`utils.grading.runner`), so that nothing the notebook defined or patched
beforehand takes part. The inline :func:`utils.grading.check` imports it normally. Which calls a
question forbids is worked out in the grading process by :mod:`utils.grading.forbid`, which turns
names such as ``"torch.nn.functional.conv2d"`` into the plain-string *spec* this module reads.

How calls are recognised (``sys.setprofile``, so every call the function makes is seen, whatever
name it was reached through):

* C functions (``torch.conv2d``, ``x.sigmoid()``): by :func:`c_key`, ``"<owner>.<name>"`` read from
  the function object itself (``torch._VariableFunctionsClass.conv2d``, ``torch._C.TensorBase.sigmoid``),
  so ``F.conv2d``, ``torch.conv2d``, ``torch._C._VariableFunctions.conv2d``, a reference captured in a
  default argument or a closure before the check, and ``torch._C.TensorBase.sigmoid(x)`` are one key;
* Python functions (``torch.autograd.grad``, ``Tensor.backward``): by name, first line and file;
* whole modules (``utils.scratch``, ``torch.optim``): any function whose file lies in the module's
  folder, and ``import`` statements of the module in the learner's code (``builtins.__import__``).

Switching the watch off from inside the function (``sys.setprofile``) is itself forbidden, and a
canary call after the function returns proves that the watch was still on. Chapter 02's exercise
is the first one that forbids calls (the ready-made activations).
"""

from __future__ import annotations

import builtins
import os
import sys

__all__ = ["ForbiddenCallError", "Watch", "c_key"]


class ForbiddenCallError(RuntimeError):
    """Raised inside the learner's function when it calls something its question forbids."""


def _owner_name(cls) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', getattr(cls, '__name__', '?'))}"


def c_key(fn) -> str | None:
    """``"<owner>.<name>"`` of a C function or method, the same for every alias of it; ``None`` otherwise.

    ``torch.conv2d`` (a static method of ``torch._VariableFunctionsClass``) gives
    ``"torch._VariableFunctionsClass.conv2d"``; ``torch._C._nn.gelu`` gives ``"torch._C._nn.gelu"``;
    ``torch.Tensor.sigmoid`` and ``x.sigmoid`` both give ``"torch._C.TensorBase.sigmoid"``.
    """
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return None
    objclass = getattr(fn, "__objclass__", None)  # an unbound method descriptor: Tensor.sigmoid
    if objclass is not None:
        return f"{_owner_name(objclass)}.{name}"
    owner = getattr(fn, "__self__", None)
    if owner is None:  # a static method of a C class: its qualified name says which
        module = getattr(fn, "__module__", None) or "?"
        return f"{module}.{getattr(fn, '__qualname__', name)}"
    if type(owner).__name__ == "module":
        return f"{owner.__name__}.{name}"
    cls = owner if isinstance(owner, type) else type(owner)
    for base in getattr(cls, "__mro__", ()):  # the class that defines the method: TensorBase, not Tensor
        if name in vars(base):
            return f"{_owner_name(base)}.{name}"
    return f"{_owner_name(cls)}.{name}"


def _canary_target() -> None:
    """A function that only the watch calls: seeing it proves that the watch is still on."""


class Watch:
    """Forbid the calls of ``spec`` while in a ``with Watch(spec):`` block.

    ``spec`` is a dict of plain values (it travels into the learner's kernel):
    ``"c"`` maps C keys (:func:`c_key`) to the name shown in the message; ``"py"`` is a list of
    ``[name, file tail, first line, shown name]`` for Python functions; ``"modules"`` a list of
    ``[dotted name, file pattern, shown name]``; ``"why"`` the reason appended to the message.
    After the block, :attr:`violation` is ``None`` or the message of the first forbidden call.
    """

    def __init__(self, spec: dict):
        self.why = str(spec.get("why", ""))
        self.c = {str(k): str(v) for k, v in dict(spec.get("c", {})).items()}
        self.c_names = {k.rsplit(".", 1)[-1] for k in self.c}
        self.py: dict[str, list[tuple[str, int, str]]] = {}
        for name, tail, line, shown in spec.get("py", ()):
            self.py.setdefault(str(name), []).append((str(tail).replace("/", os.sep), int(line), str(shown)))
        self.modules = [(str(m), str(p).replace("/", os.sep), str(s)) for m, p, s in spec.get("modules", ())]
        self.violation: str | None = None
        self._canary_code = _canary_target.__code__
        self._canary_seen = False
        self._previous = None
        self._import = None

    # ---------------------------------------------------------------- the checks

    def _trip(self, shown: str, how: str = "calls") -> None:
        message = f"{how} {shown}, which this question forbids" + (f": {self.why}" if self.why else "")
        if self.violation is None:
            self.violation = message
        raise ForbiddenCallError(message)

    def _profile(self, frame, event, arg):
        if event == "c_call":
            name = getattr(arg, "__name__", None)
            if name == "setprofile" and frame.f_code is not _EXIT_CODE and c_key(arg) == "sys.setprofile":
                self._trip("sys.setprofile (switching off the watch on forbidden calls)")
            if name in self.c_names:
                key = c_key(arg)
                if key in self.c:
                    self._trip(self.c[key])
        elif event == "call":
            code = frame.f_code
            if code is self._canary_code:
                self._canary_seen = True
                return
            candidates = self.py.get(code.co_name)
            if candidates:
                for tail, line, shown in candidates:
                    if code.co_firstlineno == line and code.co_filename.endswith(tail):
                        self._trip(shown)
            if self.modules and code.co_name != "<module>":  # running a module's body is importing it
                filename = code.co_filename
                for _, pattern, shown in self.modules:
                    if pattern in filename:
                        self._trip(f"{shown} ({code.co_name})")

    def _learner_import(self, importer_globals) -> bool:
        """Imports made by the learner's code count; those made by libraries on their own behalf do not."""
        if not isinstance(importer_globals, dict):
            return True
        module = importer_globals.get("__name__")
        if module == "__main__" or not isinstance(module, str):
            return True
        if module == "utils" or module.startswith("utils."):
            return False
        filename = str(importer_globals.get("__file__") or "")
        libraries = ("site-packages", "dist-packages", os.sep + "lib" + os.sep + "python")
        return not any(part in filename for part in libraries)

    def _guarded_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and self.modules and self._learner_import(globals):
            wanted = [name] + [f"{name}.{item}" for item in (fromlist or ()) if isinstance(item, str)]
            for module, _, shown in self.modules:
                if any(w == module or w.startswith(module + ".") for w in wanted):
                    self._trip(shown, how="imports")
        return self._import(name, globals, locals, fromlist, level)

    # ---------------------------------------------------------------- the block

    def __enter__(self) -> "Watch":
        self._previous = sys.getprofile()
        self._import = builtins.__import__
        builtins.__import__ = self._guarded_import
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        self._canary_seen = False
        _canary_target()
        watching = self._canary_seen
        sys.setprofile(self._previous)
        if builtins.__import__ is self._guarded_import or self._import is not None:
            builtins.__import__ = self._import
        if not watching and self.violation is None:
            self.violation = (
                "the watch on forbidden calls was switched off while the function ran "
                "(it must not call sys.setprofile)"
            )


_EXIT_CODE = Watch.__exit__.__code__  # the one place allowed to switch the watch off
