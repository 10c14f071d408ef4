"""The grader's side inside the learner's kernel: read the inputs, call the learner's function under
the watch on forbidden calls, and save what came back. The expected values never enter the kernel.

This module imports only the standard library (and torch inside its functions): the grader sends
its source, together with :mod:`utils.grading.watch`, into the kernel with every call and runs it
in a fresh namespace (:func:`kernel_source`), so that nothing the notebook defined or patched under
these names takes part. Values travel as ``torch.save`` files read back with ``weights_only=True``.
Three requests (``payload["mode"]``): ``"call"`` one call of a function (or of a harness around it);
``"predict"`` a function called on each batch of inputs in turn (make-it-work questions);
``"answers"`` the notebook's ``answers`` dict (review questions). Chapter 01 is graded this way.
"""

from __future__ import annotations

__all__ = ["run_request", "safe"]

_MAX_DEPTH = 6
_MAX_ITEMS = 100_000


def safe(value, depth: int = 0):
    """What may travel back to the grader: tensors (detached, on the CPU, ``requires_grad`` kept),
    plain Python values, tuples, lists, dicts with string keys and sets of those; anything else
    becomes ``{"__grader_opaque__": type name}``."""
    import torch

    if isinstance(value, torch.Tensor):
        flag = bool(value.requires_grad)
        out = value.detach().cpu().as_subclass(torch.Tensor).clone()
        return out.requires_grad_(True) if flag and (out.is_floating_point() or out.is_complex()) else out
    if value is None or type(value) in (bool, int, float, str):
        return value
    if value is Ellipsis:
        return {"__grader_ellipsis__": True}
    cls = type(value)
    if cls.__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        item = value.item()  # a NumPy scalar: int or float, as its dtype says
        if type(item) in (bool, int, float):
            return item
    if depth < _MAX_DEPTH:
        if cls in (tuple, list) and len(value) <= _MAX_ITEMS:
            return cls(safe(v, depth + 1) for v in value)
        if cls in (set, frozenset) and len(value) <= _MAX_ITEMS:
            return {"__grader_set__": [safe(v, depth + 1) for v in value]}
        if cls is dict and len(value) <= _MAX_ITEMS and all(type(k) is str for k in value):
            return {"__grader_dict__": {k: safe(v, depth + 1) for k, v in value.items()}}
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return {"__grader_opaque__": name}


def _rebuild(value):
    import math

    import torch

    if isinstance(value, dict) and "__grader_code__" in value:
        namespace = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "math": math}
        return eval(value["__grader_code__"], namespace)  # noqa: S307 - source written by the course
    return value


def _message(err: BaseException) -> str:
    try:
        return str(err)[:1000]
    except Exception:
        return "(the exception could not be printed)"


def _call(fn, args: list, harness, watch_cls, spec):
    """``(value, violation)``: the call under the watch (when ``spec`` forbids anything)."""
    if not spec:
        return (harness(fn, *args) if harness is not None else fn(*args)), None
    watch = watch_cls(spec)
    value = None
    try:
        with watch:
            value = harness(fn, *args) if harness is not None else fn(*args)
    except BaseException:
        if watch.violation is None:
            raise
    return value, watch.violation


def run_request(payload: dict, user_ns: dict, watch_cls) -> dict:
    """Serve one request of the grader (see the module docstring); never raises for the learner's errors."""
    mode = payload.get("mode", "call")
    if mode == "answers":
        name = payload.get("name", "answers")
        if name not in user_ns:
            return {"status": "missing"}
        return {"status": "ok", "value": safe(user_ns[name])}
    fn = user_ns.get(payload["function"])
    if fn is None:
        return {"status": "missing"}
    if not callable(fn):
        return {"status": "not_callable", "type": type(fn).__name__}
    spec = payload.get("watch")
    try:
        if mode == "predict":
            outputs, violation = [], None
            for batch in payload["batches"]:
                value, violation = _call(fn, [batch], None, watch_cls, spec)
                if violation is not None:
                    break
                outputs.append(safe(value))
            return {"status": "ok", "value": outputs, "violation": violation}
        args = [_rebuild(v) for _, v in payload["args"]]
        harness = _rebuild(payload.get("harness"))
        value, violation = _call(fn, args, harness, watch_cls, spec)
        names = [n for n, _ in payload["args"]]
        after = {n: safe(args[names.index(n)]) for n in payload.get("unchanged", ())}
        import torch

        grad_flags = {n: bool(a.requires_grad) for n, a in zip(names, args) if isinstance(a, torch.Tensor)}
        return {
            "status": "ok",
            "value": safe(value),
            "args_after": after,
            "grad_flags": grad_flags,
            "violation": violation,
        }
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            raise
        return {"status": "raised", "type": type(err).__name__, "message": _message(err)}
