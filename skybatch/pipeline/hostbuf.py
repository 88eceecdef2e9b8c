"""Host arrays that JAX's CPU runtime can use in place: 64-byte aligned NumPy buffers.

``jax.device_put`` (and a jitted call given a NumPy argument) copies a host array into a new
XLA buffer unless the array's data is aligned to XLA's minimum alignment (64 bytes); then the
CPU runtime aliases it instead (zero-copy). NumPy's default allocator only guarantees 16 bytes,
so a 32 MB batch of spectra is copied on every call (measured: ~28 ms under load, against
0.05 ms aliased). The model feeders therefore read chunks and gather batches into arrays from
:func:`aligned_empty`. An aliased array must not be written while a JAX array made from it is
alive: the feeders hand out fresh arrays (or reuse a chunk buffer only after the calls that
used it have returned their results).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGN", "aligned_empty", "is_aligned"]

#: bytes: XLA's minimum buffer alignment on CPU, also a cache line
ALIGN = 64


def aligned_empty(shape: tuple[int, ...] | int, dtype: np.dtype | type = np.float32, align: int = ALIGN) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on an ``align``-byte boundary (C order)."""
    dt = np.dtype(dtype)
    shp = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    # an empty slice keeps its base's pointer: slice one byte first so that size-0 arrays are aligned too
    return raw[off : off + max(nbytes, 1)][:nbytes].view(dt).reshape(shp)


def is_aligned(a: np.ndarray, align: int = ALIGN) -> bool:
    """True when ``a``'s data starts on an ``align``-byte boundary (always for an empty array:
    there is nothing to copy, and NumPy may give a zero-size view any address)."""
    return a.size == 0 or a.ctypes.data % align == 0
