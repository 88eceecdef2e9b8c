"""Resampling plans: pixel edges, the overlap weights of a shared grid (cached), their CSR form."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from skybatch.xp import get_namespace, is_numpy_namespace, to_numpy

_COVERAGE_TOL = 1e-6  # an output pixel counts as fully covered at coverage >= 1 - this
_TOUCH_EPS = 1e-9  # per-spectrum grids: overlaps below this fraction of an output pixel are rounding noise
_MAX_BATCH_ELEMENTS = 1 << 18  # per-spectrum path: rows per batch ≈ this / (n_in + n_out)


class Resampled(NamedTuple):
    """Result of :func:`resample`: arrays of shape (n_spectrum, n_out) (or (n_out,))."""

    flux: Any
    """Flux density on the output grid (same unit and dtype as the input); 0 where ivar is 0."""
    ivar: Any
    """Inverse variance (diagonal only; see the module notes); 0 = no information."""
    mask: Any
    """uint32 bit field: OR of the input bits over overlapping pixels, plus NOCOVERAGE."""


def pixel_edges(wavelength: Any) -> Any:
    """Pixel edges from pixel centres, float64.

    Interior edges are midpoints of neighbouring centres; the two outer edges
    lie half a spacing beyond the first and last centres.

    Parameters
    ----------
    wavelength : array (..., n), increasing along the last axis, Å

    Returns
    -------
    array (..., n + 1) float64
    """
    xp = get_namespace(wavelength)
    w = xp.astype(wavelength, xp.float64)
    if w.shape[-1] < 2:
        raise ValueError(f"pixel_edges: need at least 2 wavelengths, got shape {tuple(w.shape)}")
    mid = 0.5 * (w[..., 1:] + w[..., :-1])
    first = w[..., :1] - 0.5 * (w[..., 1:2] - w[..., :1])
    last = w[..., -1:] + 0.5 * (w[..., -1:] - w[..., -2:-1])
    return xp.concat([first, mid, last], axis=-1)


def _quiet(xp: Any):
    """NumPy: silence floating-point warnings for values the code masks out anyway."""
    if is_numpy_namespace(xp):
        import numpy as np

        return np.errstate(divide="ignore", invalid="ignore", over="ignore")
    return contextlib.nullcontext()


def _check_increasing(xp: Any, w: Any, name: str) -> None:
    d = w[..., 1:] - w[..., :-1]
    if not bool(xp.all(d > 0)):
        raise ValueError(
            f"resample: {name} must be finite and strictly increasing along the wavelength axis "
            "(sort the grid, or drop NaN wavelengths)"
        )


# --------------------------------------------------------------------------------------
# Plans for a shared (1-D) input grid
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ResamplePlan:
    """Precomputed overlap weights for one (input grid, output grid, dtype).

    Built by :func:`resample_plan` (cached); pass it to :func:`resample` as
    ``plan=`` to skip even the cache lookup. Holds arrays of the data's namespace.
    """

    n_in: int
    """Number of input pixels."""
    n_out: int
    """Number of output pixels."""
    col_lo: int
    """First output pixel that overlaps the input grid at all."""
    col_hi: int
    """One past the last output pixel that overlaps the input grid."""
    blocks: tuple[tuple[int, int, int, int], ...]
    """(j0, j1, i0, i1): output columns [j0, j1) take input pixels [i0, i1)."""
    weights: tuple[Any, ...]
    """Per block, R restricted to the block, shape (i1-i0, j1-j0): p_ij / Δ_j."""
    weights_sq: tuple[Any, ...]
    """Per block, element-wise squares of ``weights`` (variance propagation)."""
    gather: Any
    """(K, col_hi-col_lo) input-pixel indices overlapping each output pixel (repeats allowed)."""
    full: Any
    """(n_out,) bool: output pixel lies wholly inside the input grid."""
    identity: bool
    """Input and output grids are the same: resampling is a copy."""
    full_lo: int = 0
    """First output pixel wholly inside the input grid (full pixels are [full_lo, full_hi))."""
    full_hi: int = 0
    """One past the last output pixel wholly inside the input grid."""
    csr_t: Any = None
    """NumPy only: R as a scipy CSR matrix of shape (n_out, n_in), for the fast path."""
    csr2_t: Any = None
    """NumPy only: R squared element-wise, CSR (n_out, n_in)."""


def _digest(xp: Any, w: Any) -> bytes:
    import numpy as np

    arr = np.ascontiguousarray(to_numpy(w), dtype=np.float64)
    return hashlib.blake2b(arr.tobytes(), digest_size=16).digest() + str(arr.shape).encode()


_PLAN_CACHE: OrderedDict[tuple, ResamplePlan] = OrderedDict()
_PLAN_LOCK = threading.Lock()
_PLAN_CACHE_SIZE = 16


def resample_plan(wave_in: Any, wave_out: Any, *, dtype: Any = None) -> ResamplePlan:
    """Overlap weights for resampling from ``wave_in`` to ``wave_out`` (both 1-D, Å).

    Cached on the grids' contents, namespace and ``dtype`` (LRU, 16 entries),
    so calling it per chunk costs one hash of each grid.

    Parameters
    ----------
    wave_in : array (n_in,) increasing
        Input pixel centres.
    wave_out : array (n_out,) increasing
        Output pixel centres (same namespace as ``wave_in``).
    dtype : dtype, optional
        Dtype of the data the plan will be applied to (default float32).
    """
    xp = get_namespace(wave_in, wave_out)
    dtype = xp.float32 if dtype is None else dtype
    key = (getattr(xp, "__name__", str(xp)), str(dtype), _digest(xp, wave_in), _digest(xp, wave_out))
    with _PLAN_LOCK:
        plan = _PLAN_CACHE.get(key)
        if plan is not None:
            _PLAN_CACHE.move_to_end(key)
            return plan
    plan = _build_plan(xp, wave_in, wave_out, dtype)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = plan
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    return plan


def _bin_index(xp: Any, E: Any, e: Any) -> tuple[Any, Any]:
    """For output edges e (n_out+1,) and input edges E (n_in+1,): index of the input
    pixel holding each output pixel's left edge (a) and right edge approached from
    the left (b). Values may be -1 or n_in (outside the input grid)."""
    a = xp.searchsorted(E, e[:-1], side="right") - 1
    b = xp.searchsorted(E, e[1:], side="left") - 1
    return a, b


def _build_plan(xp: Any, wave_in: Any, wave_out: Any, dtype: Any) -> ResamplePlan:
    if wave_in.ndim != 1 or wave_out.ndim != 1:
        raise ValueError("resample_plan: wave_in and wave_out must be 1-D")
    _check_increasing(xp, xp.astype(wave_in, xp.float64), "wave_in")
    _check_increasing(xp, xp.astype(wave_out, xp.float64), "wave_out")
    n_in, n_out = int(wave_in.shape[0]), int(wave_out.shape[0])
    E = pixel_edges(wave_in)
    e = pixel_edges(wave_out)
    width = e[1:] - e[:-1]
    lo_in, hi_in = E[0], E[-1]
    full = (e[:-1] >= lo_in) & (e[1:] <= hi_in)

    identity = n_in == n_out and bool(
        xp.all(xp.abs(xp.astype(wave_in, xp.float64) - xp.astype(wave_out, xp.float64)) <= 1e-12 * xp.abs(e[-1]))
    )

    a, b = _bin_index(xp, E, e)
    overlaps = (e[1:] > lo_in) & (e[:-1] < hi_in)
    cols = xp.nonzero(overlaps)[0]
    full_cols = xp.nonzero(full)[0]
    full_lo = int(full_cols[0]) if full_cols.shape[0] else 0
    full_hi = int(full_cols[-1]) + 1 if full_cols.shape[0] else 0
    if cols.shape[0] == 0:
        empty = xp.zeros((1, 0), dtype=xp.int64)
        return ResamplePlan(n_in, n_out, 0, 0, (), (), (), empty, full, False, full_lo, full_hi)
    col_lo, col_hi = int(cols[0]), int(cols[-1]) + 1
    a_c = xp.clip(a[col_lo:col_hi], 0, n_in - 1)
    b_c = xp.clip(b[col_lo:col_hi], 0, n_in - 1)
    K = int(xp.max(b_c - a_c)) + 1

    # Indices for the mask OR: a_j, a_j+1, ..., b_j, then b_j repeated (OR is idempotent).
    gather = xp.stack([xp.minimum(a_c + k, b_c) for k in range(K)], axis=0)

    # Dense blocks along the band. Block width: keep each block's input span
    # near 256 pixels (a good size for BLAS and for GPU matmul alike).
    ratio = max(n_in / max(col_hi - col_lo, 1), 1.0)
    B = int(min(256, max(16, round(256 / ratio))))
    blocks, weights, weights_sq = [], [], []
    a_host = to_numpy(a_c)
    b_host = to_numpy(b_c)
    for j0 in range(col_lo, col_hi, B):
        j1 = min(j0 + B, col_hi)
        i0 = int(a_host[j0 - col_lo:j1 - col_lo].min())
        i1 = int(b_host[j0 - col_lo:j1 - col_lo].max()) + 1
        Ei = E[i0:i1 + 1]
        left = xp.maximum(Ei[:-1, None], e[None, j0:j1])
        right = xp.minimum(Ei[1:, None], e[None, j0 + 1:j1 + 1])
        p = xp.clip(right - left, 0.0, None)
        w = p / width[None, j0:j1]
        blocks.append((j0, j1, i0, i1))
        weights.append(xp.astype(w, dtype))
        weights_sq.append(xp.astype(w * w, dtype))
    csr_t = csr2_t = None
    if is_numpy_namespace(xp):
        csr_t, csr2_t = _csr_from_blocks(blocks, weights, n_in, n_out)
    return ResamplePlan(
        n_in, n_out, col_lo, col_hi, tuple(blocks), tuple(weights), tuple(weights_sq), gather, full, identity,
        full_lo, full_hi, csr_t, csr2_t,
    )


def _csr_from_blocks(blocks, weights, n_in: int, n_out: int):
    """NumPy fast path: R and R² as scipy CSR matrices of shape (n_out, n_in)."""
    import numpy as np
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    for (j0, _j1, i0, _i1), w in zip(blocks, weights):
        r, c = np.nonzero(w)
        rows.append(c + j0)
        cols.append(r + i0)
        vals.append(w[r, c])
    R = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, n_in)
    )
    R.eliminate_zeros()
    R.sort_indices()
    R2 = R.multiply(R).tocsr()
    return R, R2


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------
