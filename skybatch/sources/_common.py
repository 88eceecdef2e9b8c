"""Helpers shared by the survey readers: grids, healpix, cleaning, meta columns."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import META_COLUMNS, Grid, SourceError

__all__ = [
    "DESI_BRZ_GRID",
    "SDSS_LOGLAM_GRID",
    "HEALPIX_NSIDE",
    "healpix_nest64",
    "clean_nonfinite",
    "empty_meta",
    "fits_dtype_name",
    "LayoutCache",
]

#: The DESI coadd_cameras / sky-VAC grid: 3600–9824 Å at 0.8 Å, 7781 pixels.
DESI_BRZ_GRID = Grid("linear", 3600.0, 0.8, 7781, "desi-brz")
#: SDSS/BOSS store grid: log10(λ/Å) = 3.55 + i·1e-4, 4700 pixels (3548–10468 Å).
SDSS_LOGLAM_GRID = Grid("loglam", 3.55, 1e-4, 4700, "sdss-loglam")
#: healpix scheme used for every reader's ``healpix`` column (DESI's: nside 64, NESTED).
HEALPIX_NSIDE = 64


def healpix_nest64(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """nside-64 NESTED healpix index of (ra, dec) in degrees; -1 where not finite.

    Returns int64 of the same shape as ``ra``.
    """
    from astropy import units as u
    from astropy_healpix import lonlat_to_healpix

    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    out = np.full(ra.shape, -1, dtype=np.int64)
    if ok.any():
        out[ok] = lonlat_to_healpix(
            np.mod(ra[ok], 360.0) * u.deg, dec[ok] * u.deg, HEALPIX_NSIDE, order="nested"
        ).astype(np.int64)
    return out


def clean_nonfinite(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, bit: int) -> int:
    """Zero pixels whose flux or ivar is NaN/inf (or ivar < 0), in place.

    Such pixels get flux = 0, ivar = 0 and mask bit ``bit`` set.
    Returns the number of pixels cleaned.
    """
    if flux.size == 0:
        return 0
    # the usual case, no bad pixel, in three reductions (a float64 sum of float32 cannot overflow)
    if np.isfinite(flux.sum(dtype=np.float64)) and np.isfinite(ivar.sum(dtype=np.float64)) and ivar.min() >= 0:
        return 0
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    n = int(np.count_nonzero(bad))
    if n:
        flux[bad] = 0.0
        ivar[bad] = 0.0
        mask[bad] |= np.uint32(1 << bit)
    return n


def empty_meta(n: int, extra: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Per-spectrum columns filled with the contract's missing values."""
    out: dict[str, np.ndarray] = {}
    for name, dt in {**META_COLUMNS, **(extra or {})}.items():
        if dt == "object":
            out[name] = np.full(n, "", dtype=object)
        elif name == "zwarn" or name == "healpix":
            out[name] = np.full(n, -1, dtype=dt)
        elif np.dtype(dt).kind == "f":
            out[name] = np.full(n, np.nan, dtype=dt)
        else:
            out[name] = np.zeros(n, dtype=dt)
    return out


def fits_dtype_name(col: np.ndarray) -> str:
    """The extra-column dtype name for a native column (strings -> ``object``)."""
    if col.dtype.kind in "OSU":
        return "object"
    return np.dtype(col.dtype).newbyteorder("=").name


class LayoutCache:
    """A tiny per-process LRU of file layouts and small tables.

    Keyed by (url, size, checksum), so a changed file is never served from
    the cache. Lets several ``read`` calls on one file (one per chunk) skip
    re-scanning headers and re-reading FIBERMAP / REDSHIFTS.
    """

    def __init__(self, maxsize: int = 32):
        self.maxsize = maxsize
        self._d: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()  # Dask workers run several reads in threads

    def get(self, key: tuple) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def plan_for(self, info: Any, make: Callable[[], Any], checksum_of: Callable[[Any], str], *key: Any) -> Any:
        """The plan of the file ``info`` (a SourceInfo) from the cache, else ``make()``, which must have the
        identity the file was planned with (``checksum_of(plan)`` vs ``info.checksum``; a SourceError
        ``changed`` if not) and is cached under (url, size, checksum, ``*key``)."""
        k = (info.url, info.size, info.checksum, *key)
        plan = self.get(k)
        if plan is None:
            plan = make()
            got = checksum_of(plan)
            if info.checksum and got != info.checksum:
                raise SourceError(
                    info.url, "changed",
                    f"file changed since it was planned (identity {info.checksum} -> {got}); re-plan the ingest",
                )
            self.put(k, plan)
        return plan
