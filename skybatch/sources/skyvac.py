"""DESI DR1 sky-spectra VAC reader (``sky_spectra_vac_v1.fits``) and sky-condition cuts.

Layout (``formats.md`` §6): HDUs WAVELENGTH (7781,), FLUX (nspec, 7781) in
1e-17 erg/s/cm²/Å[/arcsec²] and METADATA (one row per spectrum: NIGHT,
EXPID, TILEID, TILERA, TILEDEC, MJD, AIRMASS, EBV, MOONFRAC, MOONALT,
MOONSEP, SUNALT, SUNSEP, OBSALT, TRANSPARENCY_GFA, ...).

What :class:`SkyVacReader` returns:

* flux on the desi-brz grid; WAVELENGTH must match it (7781 px, every pixel
  within 0.01 Å of 3600 + 0.8·k) or inspect raises ``off-grid``.
* **ivar rule**: the VAC has no uncertainties. ivar = 1 where the flux is
  finite and 0 where it is NaN/inf (those pixels get flux = 0, SPECMASK
  ``NODATA`` bit 8, and are counted in ``n_bad_pixels``). ivar is therefore
  a 0/1 weight, not an inverse variance in physical units. mask is 0 elsewhere.
* **targetid rule**: EXPID when METADATA has an EXPID column whose values are
  unique in the file (one sky spectrum per exposure, as in the DR1 VAC);
  otherwise the METADATA row index. Either way it is stable for a given file.
* meta: ra/dec = TILERA/TILEDEC (NaN if absent), healpix = nside-64 NESTED
  of (ra, dec), spectype = "SKY", z = NaN, zwarn = -1, survey/program from
  METADATA SURVEY/PROGRAM columns when present (else ""), source_row = row.
* **every METADATA column** becomes an extra per-spectrum column, named in
  lower case (prefixed ``vac_`` if that name is already a standard column);
  vector columns are split into ``name_0``, ``name_1``, ...

:func:`select_sky_conditions` gives desisky's dark / moon / twilight subsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _fits
from . import _fitsread
from ._common import DESI_BRZ_GRID, LayoutCache, clean_nonfinite, empty_meta, fits_dtype_name, healpix_nest64
from .base import META_COLUMNS, Grid, SourceError, SourceInfo, SpectraBlock

__all__ = ["SkyVacReader", "select_sky_conditions", "SKY_CONDITIONS"]

_NODATA_BIT = 8
_WAVE_TOL_A = 0.01
_CACHE = LayoutCache()

#: desisky's subsets (``SkySpecVAC.load_dark_time / load_moon_contaminated /
#: load_sun_contaminated``, desisky >= 0.4 where twilight uses SUNSEP):
#: column -> (operator, value), all ANDed.
SKY_CONDITIONS: dict[str, list[tuple[str, str, float]]] = {
    "dark": [("SUNALT", "<", -20.0), ("MOONALT", "<", -5.0), ("TRANSPARENCY_GFA", ">", 0.0)],
    "moon": [
        ("SUNALT", "<", -20.0),
        ("MOONALT", ">", 5.0),
        ("MOONFRAC", ">", 0.5),
        ("MOONSEP", "<=", 90.0),
        ("TRANSPARENCY_GFA", ">", 0.0),
    ],
    "twilight": [
        ("SUNALT", ">", -20.0),
        ("MOONALT", "<=", -5.0),
        ("SUNSEP", "<=", 110.0),
        ("TRANSPARENCY_GFA", ">", 0.0),
    ],
}
_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def select_sky_conditions(meta: Mapping[str, Any], name: str) -> np.ndarray:
    """Boolean selection of sky spectra observed in condition ``name``.

    The cuts are desisky's (MatthewDowicz/desisky, ``SkySpecVAC``):

    * ``"dark"``: SUNALT < -20 and MOONALT < -5 and TRANSPARENCY_GFA > 0
      (sun well below the horizon, moon down, valid transparency);
    * ``"moon"``: SUNALT < -20 and MOONALT > 5 and MOONFRAC > 0.5 and
      MOONSEP <= 90 and TRANSPARENCY_GFA > 0 (bright, high, nearby moon);
    * ``"twilight"``: SUNALT > -20 and MOONALT <= -5 and SUNSEP <= 110 and
      TRANSPARENCY_GFA > 0 (desisky < 0.4 used MOONSEP here; fixed since).

    Angles in degrees. NaN values never pass a cut. desisky additionally
    drops nights 20210604–20210612 (wildfire smoke) in its training sets;
    that is not applied here.

    Parameters
    ----------
    meta: mapping of column -> 1-D array, e.g. SpectraBlock.meta (lower-case
        names) or a METADATA table (upper-case); names match case-insensitively.
    name: "dark", "moon" or "twilight".

    Returns
    -------
    bool array, shape (n,).
    """
    key = name.strip().lower()
    if key not in SKY_CONDITIONS:
        raise ValueError(f"unknown sky condition {name!r}; choose one of {sorted(SKY_CONDITIONS)}")
    lower = {str(k).lower(): k for k in meta.keys()}
    sel = None
    for col, op, value in SKY_CONDITIONS[key]:
        k = lower.get(col.lower())
        if k is None:
            raise KeyError(f"sky condition {name!r} needs column {col!r}; available: {sorted(meta.keys())}")
        v = np.asarray(meta[k], dtype=np.float64)
        cut = _OPS[op](v, value) & np.isfinite(v)
        sel = cut if sel is None else sel & cut
    assert sel is not None
    return sel


class SkyVacReader:
    """Reader for the DESI sky-spectra VAC; ``format = "skyvac"``."""

    format = "skyvac"
    grid: Grid = DESI_BRZ_GRID
    nodata_bit = _NODATA_BIT

    def inspect(self, fs: Any, url: str, keep_nonscience: bool = False) -> SourceInfo:
        """Check headers, WAVELENGTH and METADATA; never reads FLUX.

        ``keep_nonscience`` has no effect (every row is kept).
        Raises SourceError: ``unreachable``, ``unknown-format``, ``corrupt``,
        ``truncated``, ``missing-hdu``, ``row-mismatch``, ``off-grid``.
        """
        plan = self._plan(fs, url)
        _CACHE.put((url, plan["size"], plan["checksum"]), plan)
        n = plan["nspec"]
        return SourceInfo(
            url=url, format=self.format, n_rows=n, rows=np.arange(n, dtype=np.int64), grid=self.grid,
            size=plan["size"], checksum=plan["checksum"], extra_columns=dict(plan["extra_columns"]),
        )

    def _plan(self, fs: Any, url: str) -> dict[str, Any]:
        size, finfo = _fits.file_size(fs, url)
        with _fits.open_source(fs, url, size) as f:
            layout = _fits.scan_fits(f, url, size)
            w_e = layout.require("WAVELENGTH")
            fl_e = layout.require("FLUX")
            md_e = layout.require("METADATA", "observing conditions, one row per spectrum")
            if len(fl_e.shape) != 2:
                raise SourceError(url, "corrupt", f"HDU FLUX has shape {fl_e.shape}, expected (nspec, nwave)")
            if md_e.xtension != "BINTABLE":
                raise SourceError(url, "corrupt", "HDU METADATA is not a binary table")
            nspec, nwave = fl_e.shape
            if len(w_e.shape) != 1 or w_e.shape[0] != nwave:
                raise SourceError(url, "row-mismatch", f"HDU WAVELENGTH has shape {w_e.shape} but FLUX has {nwave} pixels per row")
            if md_e.shape[0] != nspec:
                raise SourceError(
                    url, "row-mismatch",
                    f"HDU METADATA has {md_e.shape[0]} rows but FLUX has {nspec} spectra; the file is inconsistent, re-download it",
                )
            wave = _fitsread.read_image(f, w_e, url).astype(np.float64)
            g = self.grid
            if wave.size != g.n or not np.all(np.abs(wave - g.wavelength()) <= _WAVE_TOL_A):
                raise SourceError(
                    url, "off-grid",
                    f"HDU WAVELENGTH ({wave.size} px, {wave[0]:.3f}–{wave[-1]:.3f} Å) does not match the {g.name} grid "
                    f"({g.n} px, {g.start} + {g.step}·k Å); resample the VAC first",
                )
            md = _fitsread.read_table(f, md_e, url)
        columns, extra = _metadata_columns(md)
        if "expid" in columns and np.unique(columns["expid"]).size == nspec:
            targetid = columns["expid"].astype(np.int64)
        else:
            targetid = np.arange(nspec, dtype=np.int64)
        return {
            "layout": layout, "flux": fl_e, "nspec": nspec, "size": size, "columns": columns,
            "extra_columns": extra, "targetid": targetid, "checksum": _fits.file_identity(finfo, [layout]),
        }

    def read(self, fs: Any, info: SourceInfo, start: int, stop: int) -> SpectraBlock:
        """Read rows ``info.rows[start:stop]`` of FLUX (ranged reads) with their METADATA."""
        rows = np.asarray(info.rows[start:stop], dtype=np.int64)
        plan = _CACHE.plan_for(info, lambda: self._plan(fs, info.url), lambda p: p["checksum"])
        n = rows.size
        meta = empty_meta(n, plan["extra_columns"])
        if n == 0:
            z = np.zeros((0, self.grid.n), np.float32)
            return SpectraBlock(flux=z, ivar=z.copy(), mask=np.zeros((0, self.grid.n), np.uint32), meta=meta)
        with _fits.open_source(fs, info.url, info.size) as f:
            flux = np.ascontiguousarray(_fitsread.read_image_rows(f, plan["flux"], rows, info.url), dtype=np.float32)
        ivar = np.ones_like(flux)
        mask = np.zeros(flux.shape, dtype=np.uint32)
        n_bad = clean_nonfinite(flux, ivar, mask, self.nodata_bit)
        cols = plan["columns"]
        ra = cols["tilera"][rows].astype(np.float64) if "tilera" in cols else np.full(n, np.nan)
        dec = cols["tiledec"][rows].astype(np.float64) if "tiledec" in cols else np.full(n, np.nan)
        meta["targetid"] = plan["targetid"][rows].copy()
        meta["ra"], meta["dec"] = ra, dec
        meta["spectype"] = np.full(n, "SKY", dtype=object)
        for std in ("survey", "program"):
            if std in cols:
                meta[std] = np.array([str(v).strip() for v in cols[std][rows]], dtype=object)
        meta["healpix"] = healpix_nest64(ra, dec)
        meta["source_row"] = rows.copy()
        for name in plan["extra_columns"]:
            meta[name] = cols[name][rows].copy()
        return SpectraBlock(flux=flux, ivar=ivar, mask=mask, meta=meta, n_bad_pixels=int(n_bad))


def _metadata_columns(md) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All METADATA columns as native 1-D arrays under lower-case names.

    Returns (columns, extra_columns) where columns also holds the plain
    lower-case names used internally (``expid``, ``tilera``, ...).
    """
    columns: dict[str, np.ndarray] = {}
    extra: dict[str, str] = {}
    for raw_name in _fitsread.table_columns(md):
        col = _fitsread.native_column(md, raw_name)
        base = raw_name.strip().lower()
        parts = [(base, col)] if col.ndim == 1 else [
            (f"{base}_{i}", c) for i, c in enumerate(col.reshape(col.shape[0], -1).T)
        ]
        for nm, c in parts:
            c = np.ascontiguousarray(c)
            columns.setdefault(nm, c)
            out = f"vac_{nm}" if nm in META_COLUMNS else nm
            while out in extra:
                out = f"vac_{out}"
            extra[out] = fits_dtype_name(c)
            columns[out] = c
    return columns, extra
