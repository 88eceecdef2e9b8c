"""A stable fingerprint of a model's structure and weights."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _feed(h: Any, obj: Any, seen: set[int], depth: int = 0) -> None:
    """Feed a stable description of ``obj`` into hash ``h`` (see :func:`model_fingerprint`)."""
    if depth > 64:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        h.update(f"array{a.shape}{a.dtype.str};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return
    t = type(obj)
    name = f"{t.__module__}.{t.__qualname__}"
    if isinstance(obj, (list, tuple)):
        h.update(f"{name}[{len(obj)}](".encode())
        for x in obj:
            _feed(h, x, seen, depth + 1)
        h.update(b")")
        return
    if isinstance(obj, dict):
        h.update(f"{name}{{{len(obj)}}}(".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k, seen, depth + 1)
            _feed(h, obj[k], seen, depth + 1)
        h.update(b")")
        return
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    import dataclasses
    import enum

    if isinstance(obj, enum.Enum):
        h.update(f"{name}.{obj.name};".encode())
        return
    if dataclasses.is_dataclass(obj):  # every eqx.Module is a dataclass
        seen.add(id(obj))
        h.update(f"{name}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(obj, f.name, None), seen, depth + 1)
        h.update(b")")
        return
    if callable(obj):  # functions, jax.custom_jvp (jax.nn.relu), PjitFunction, partials: by name, never repr
        import functools

        if isinstance(obj, functools.partial):
            h.update(b"partial(")
            _feed(h, obj.func, seen, depth + 1)
            _feed(h, obj.args, seen, depth + 1)
            _feed(h, obj.keywords, seen, depth + 1)
            h.update(b")")
            return
        fn_name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or t.__qualname__
        h.update(f"fn:{getattr(obj, '__module__', t.__module__)}.{fn_name};".encode())
        return
    h.update(f"obj:{name};".encode())  # an opaque static value: its type only (never its address)


def model_fingerprint(model: Any) -> str:
    """A stable identity (16 hex of sha256) of a model: same weights and structure, same string.

    Hashes every array leaf (shape, dtype, bytes), every class's module-qualified name,
    every field name and static value, and functions by module + qualified name. Never
    uses ``repr`` of functions or objects (which hold memory addresses), so the value is
    the same in every process and on every machine.
    """
    import hashlib

    h = hashlib.sha256(b"skybatch-model/1;")
    _feed(h, model, set())
    return h.hexdigest()[:16]
