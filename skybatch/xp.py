"""Array-namespace selection: one code path for NumPy (CPU) and CuPy (GPU).

Pure array functions in :mod:`skybatch.spectra`, :mod:`skybatch.imaging` and
:mod:`skybatch.models` call :func:`get_namespace` on their inputs and use only
the returned namespace, so the same code runs on NumPy, CuPy, or any namespace
that follows the Python array API standard (tests run them through
``array_api_strict`` to prove no NumPy-only call slips in).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["get_namespace", "is_numpy_namespace", "to_numpy", "gpu_available"]


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace shared by ``arrays``.

    NumPy arrays (and Python scalars) give ``numpy``; CuPy arrays give
    ``cupy``; any object with ``__array_namespace__`` gives that namespace.

    Raises
    ------
    TypeError
        If the arrays come from different namespaces (e.g. a CuPy image with a
        NumPy PSF): move them to one device first.
    """
    import numpy as np

    found: ModuleType | None = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, complex, bool)):
            continue
        if isinstance(a, np.ndarray) or isinstance(a, np.generic):
            ns: ModuleType = np
        elif hasattr(a, "__array_namespace__"):
            ns = a.__array_namespace__()
            if getattr(ns, "__name__", "") in ("numpy", "numpy.array_api"):
                ns = np
        else:
            ns = np
        if found is None:
            found = ns
        elif ns is not found:
            raise TypeError(
                f"arrays come from different namespaces ({found.__name__} and {ns.__name__}); "
                "put them on one device first (e.g. cupy.asarray / cupy.asnumpy)"
            )
    return found if found is not None else np


def is_numpy_namespace(xp: ModuleType) -> bool:
    """True when ``xp`` is NumPy itself (where NumPy-only fast paths are allowed)."""
    return getattr(xp, "__name__", "") == "numpy"


def to_numpy(a: Any):
    """Copy an array from any namespace (NumPy, CuPy, array_api_strict) to NumPy."""
    import numpy as np

    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    try:
        return np.from_dlpack(a)
    except Exception:
        return np.asarray(a)


def gpu_available() -> bool:
    """True when a CUDA device can be used (never raises on CPU-only machines)."""
    try:
        from distributed.diagnostics import nvml

        if nvml.device_get_count() > 0:
            return True
    except Exception:
        pass
    try:
        import cupy  # type: ignore[import-not-found]

        return bool(cupy.cuda.is_available())
    except Exception:
        return False
