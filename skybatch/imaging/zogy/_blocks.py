"""Cache-blocked row ranges for the elementwise passes of ZOGY (NumPy), whole arrays elsewhere."""

from __future__ import annotations

from types import ModuleType

from skybatch.xp import is_numpy_namespace

_BLOCK_BYTES = 1 << 19  # ~0.5 MB of complex64 per row block: the temporaries stay in cache


def _row_ranges(xp: ModuleType, shape: tuple[int, ...]):
    """(r0, r1) row ranges for cache-blocked elementwise passes on NumPy; the whole
    array in one range elsewhere (GPU kernels want the whole array)."""
    ny = int(shape[0])
    if not is_numpy_namespace(xp):
        yield 0, ny
        return
    row_bytes = 8 * int(shape[-1])
    step = max(8, _BLOCK_BYTES // max(row_bytes, 1))
    for r0 in range(0, ny, step):
        yield r0, min(r0 + step, ny)


def _row_blocks(xp: ModuleType, shape: tuple[int, ...]):
    """Index tuples ``(slice(r0, r1), ...)`` for :func:`_row_ranges`."""
    for r0, r1 in _row_ranges(xp, shape):
        yield (slice(r0, r1), ...)

