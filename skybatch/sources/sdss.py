"""SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` reader (lite or full; one spectrum per file).

Layout (``formats.md`` §5): PRIMARY header (COEFF0 = log10 λ of pixel 0,
COEFF1 = 1e-4, PLUG_RA/PLUG_DEC), COADD table with **lower-case** columns
(flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model; one row per
pixel), and the per-spectrum table SPALL (called SPECOBJ in older files:
both are accepted) with CLASS, Z, ZWARNING, SPECOBJID, THING_ID...

What :class:`SdssSpecReader` returns:

* flux / ivar / mask on ``Grid("loglam", 3.55, 1e-4, 4700, "sdss-loglam")``.
  The spectrum is **placed, not resampled**: pixel i of the file lands on
  store pixel ``round((COEFF0 - 3.55) / 1e-4) + i``. COEFF0 must sit on the
  1e-4 lattice (within 1e-3 pixel), COEFF1 must be 1e-4 and the whole
  spectrum must fit in the 4700 pixels, otherwise inspect raises
  ``SourceError(reason="off-grid")``.
* mask = the COADD ``and_mask`` (SPPIXMASK bits) as uint32. Store pixels the
  file does not cover get flux = 0, ivar = 0 and SPPIXMASK ``NODATA`` (bit 24).
  NaN/inf flux or ivar (and ivar < 0) become flux = 0, ivar = 0 with NODATA set,
  counted in ``n_bad_pixels``.
* meta: **targetid = the 64 bits of SPECOBJID read as int64**. SPECOBJID is a
  uint64 (stored as K with TZERO = 2**63); below 2**63 targetid equals it,
  above (plates >= 8192 in DR17) targetid is ``SPECOBJID - 2**64`` (negative).
  The mapping is lossless and unique: recover SPECOBJID with
  ``targetid.astype(np.uint64)``. THING_ID is not used because it is shared
  by repeat spectra and is -1 for sky fibres. Files without SPECOBJID get SDSS's
  own formula without the RUN2D field: ``(PLATE << 50) | (FIBERID << 38) |
  ((MJD - 50000) << 24)``.
  ra/dec = PLUG_RA/PLUG_DEC (primary header, else SPALL), z = Z,
  zwarn = ZWARNING, spectype = CLASS, survey = SPALL SURVEY (lower case,
  "sdss" when absent), program = PROGRAMNAME, healpix = nside-64 NESTED
  index of (ra, dec) (as DESI's), source_row = 0.
* extra columns: plate, mjd, fiberid, thing_id (int64), subclass (str).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _fits
from . import _fitsread
from ._common import SDSS_LOGLAM_GRID, LayoutCache, clean_nonfinite, empty_meta, healpix_nest64
from .base import Grid, SourceError, SourceInfo, SpectraBlock

__all__ = ["SdssSpecReader", "SPPIXMASK_NODATA_BIT", "specobjid_to_targetid"]

#: SPPIXMASK bit "NODATA": no data for this pixel.
SPPIXMASK_NODATA_BIT = 24
_LATTICE_TOL_PX = 1e-3
_NEEDED = ("flux", "ivar", "and_mask")

_CACHE = LayoutCache()


def specobjid_to_targetid(specobjid: np.ndarray) -> np.ndarray:
    """uint64 SPECOBJID -> int64 targetid, bit for bit (see module docstring)."""
    return np.asarray(specobjid, dtype=np.uint64).view(np.int64)


class SdssSpecReader:
    """Reader for SDSS/BOSS ``spec-*.fits`` files; ``format = "sdss"``."""

    format = "sdss"
    grid: Grid = SDSS_LOGLAM_GRID
    nodata_bit = SPPIXMASK_NODATA_BIT
    extra_columns: dict[str, str] = {
        "plate": "int64",
        "mjd": "int64",
        "fiberid": "int64",
        "thing_id": "int64",
        "subclass": "object",
    }

    def inspect(self, fs: Any, url: str, keep_nonscience: bool = False) -> SourceInfo:
        """Check headers (COEFF0/COEFF1, COADD, SPALL) without reading the pixels.

        ``keep_nonscience`` has no effect (one spectrum per file).
        Raises SourceError: ``unreachable``, ``unknown-format``, ``corrupt``,
        ``truncated``, ``missing-hdu``, ``off-grid``.
        """
        plan = self._plan(fs, url)
        _CACHE.put((url, plan["size"], plan["checksum"]), plan)
        return SourceInfo(
            url=url, format=self.format, n_rows=1, rows=np.zeros(1, dtype=np.int64), grid=self.grid,
            size=plan["size"], checksum=plan["checksum"], extra_columns=dict(self.extra_columns),
        )

    def _plan(self, fs: Any, url: str) -> dict[str, Any]:
        size, finfo = _fits.file_size(fs, url)
        with _fits.open_source(fs, url, size) as f:
            layout = _fits.scan_fits(f, url, size)
        coadd = layout.require("COADD", "the spectrum: flux, loglam, ivar, and_mask per pixel")
        spall = layout.get("SPALL") or layout.get("SPECOBJ")
        if spall is None:
            raise SourceError(
                url, "missing-hdu",
                f"neither SPALL nor SPECOBJ HDU is present (found {layout.names}); re-download the file",
            )
        if coadd.xtension != "BINTABLE" or len(coadd.shape) != 2:
            raise SourceError(url, "corrupt", "HDU COADD is not a binary table; re-download the file")
        names = {str(coadd.header.get(f"TTYPE{k}", "")).strip().lower(): k for k in range(1, int(coadd.header.get("TFIELDS", 0)) + 1)}
        missing = [c for c in _NEEDED if c not in names]
        if missing:
            raise SourceError(url, "corrupt", f"HDU COADD lacks column(s) {missing}; this is not an SDSS spec file COADD table")
        if spall.shape[0] < 1:
            raise SourceError(url, "row-mismatch", f"HDU {spall.name} has no rows; re-download the file")
        npix = coadd.shape[0]
        hdr = layout.primary
        c0, c1 = hdr.get("COEFF0"), hdr.get("COEFF1")
        if c0 is None or c1 is None:
            raise SourceError(url, "corrupt", "primary header lacks COEFF0/COEFF1 (log10 wavelength of pixel 0 and step); cannot place the spectrum")
        offset = self._offset(float(c0), float(c1), npix, url)
        return {
            "layout": layout, "coadd": coadd, "spall": spall, "npix": npix, "offset": offset, "size": size,
            "checksum": _fits.file_identity(finfo, [layout]),
        }

    def _offset(self, coeff0: float, coeff1: float, npix: int, url: str) -> int:
        g = self.grid
        if abs(coeff1 - g.step) > 1e-9:
            raise SourceError(
                url, "off-grid",
                f"COEFF1 = {coeff1} but the {g.name} grid has a log10 step of {g.step}; resample the spectrum first",
            )
        x = (coeff0 - g.start) / g.step
        off = int(round(x))
        if abs(x - off) > _LATTICE_TOL_PX:
            raise SourceError(
                url, "off-grid",
                f"COEFF0 = {coeff0!r} is {x - off:+.4f} px off the {g.name} lattice ({g.start} + {g.step}·k); "
                "this spectrum cannot be placed without resampling",
            )
        if off < 0 or off + npix > g.n:
            lo = 10 ** coeff0
            hi = 10 ** (coeff0 + (npix - 1) * coeff1)
            raise SourceError(
                url, "off-grid",
                f"spectrum covers {lo:.1f}–{hi:.1f} Å (store pixels {off}..{off + npix - 1}) and falls off the "
                f"{g.name} grid (pixels 0..{g.n - 1}, {g.wavelength()[0]:.1f}–{g.wavelength()[-1]:.1f} Å); "
                "use a store with a wider grid",
            )
        return off

    def read(self, fs: Any, info: SourceInfo, start: int, stop: int) -> SpectraBlock:
        """Read the spectrum (``info.rows[start:stop]`` is [0] or empty) onto the loglam grid."""
        rows = np.asarray(info.rows[start:stop], dtype=np.int64)
        n = rows.size
        meta = empty_meta(n, self.extra_columns)
        flux = np.zeros((n, self.grid.n), dtype=np.float32)
        ivar = np.zeros((n, self.grid.n), dtype=np.float32)
        mask = np.full((n, self.grid.n), np.uint32(1 << self.nodata_bit), dtype=np.uint32)
        if n == 0:
            return SpectraBlock(flux=flux, ivar=ivar, mask=mask, meta=meta)
        if np.any(rows != 0):
            raise SourceError(info.url, "row-mismatch", f"an SDSS spec file has one spectrum (row 0); rows {rows.tolist()} requested")
        plan = _CACHE.plan_for(info, lambda: self._plan(fs, info.url), lambda p: p["checksum"])
        with _fits.open_source(fs, info.url, info.size) as f:
            coadd = _fitsread.read_table(f, plan["coadd"], info.url)
            spall = _fitsread.read_table(f, plan["spall"], info.url)
        cc = {c.lower(): c for c in _fitsread.table_columns(coadd)}
        fl = _fitsread.native_column(coadd, cc["flux"]).astype(np.float32)
        iv = _fitsread.native_column(coadd, cc["ivar"]).astype(np.float32)
        am = _fitsread.native_column(coadd, cc["and_mask"])
        am = am.view(np.uint32) if am.dtype == np.int32 else am.astype(np.uint32)
        am = np.ascontiguousarray(am)
        n_bad = clean_nonfinite(fl, iv, am, self.nodata_bit)
        a, b = plan["offset"], plan["offset"] + plan["npix"]
        flux[:, a:b] = fl
        ivar[:, a:b] = iv
        mask[:, a:b] = am

        hdr = plan["layout"].primary
        sc = {c.upper(): c for c in _fitsread.table_columns(spall)}

        def sp(name: str, default: Any = None) -> Any:
            if name not in sc:
                return default
            v = _fitsread.native_column(spall, sc[name])[0]
            return v

        plate, mjd, fiber = sp("PLATE", hdr.get("PLATEID", -1)), sp("MJD", hdr.get("MJD", -1)), sp("FIBERID", hdr.get("FIBERID", -1))
        if "SPECOBJID" in sc:
            raw = np.asarray(spall[sc["SPECOBJID"]])[:1]
            targetid = specobjid_to_targetid(raw.astype(np.uint64))
        else:
            targetid = np.array([(int(plate) << 50) | (int(fiber) << 38) | ((int(mjd) - 50000) << 24)], dtype=np.int64)
        ra = hdr.get("PLUG_RA", sp("PLUG_RA", np.nan))
        dec = hdr.get("PLUG_DEC", sp("PLUG_DEC", np.nan))
        meta["targetid"][:] = targetid[0]
        meta["ra"][:] = float(ra)
        meta["dec"][:] = float(dec)
        meta["z"][:] = float(sp("Z", np.nan))
        meta["zwarn"][:] = int(sp("ZWARNING", -1))
        meta["spectype"][:] = str(sp("CLASS", "")).strip().upper()
        meta["survey"][:] = str(sp("SURVEY", "sdss")).strip().lower() or "sdss"
        meta["program"][:] = str(sp("PROGRAMNAME", "")).strip()
        meta["healpix"][:] = healpix_nest64(np.array([float(ra)]), np.array([float(dec)]))[0]
        meta["source_row"][:] = 0
        meta["plate"][:] = int(plate)
        meta["mjd"][:] = int(mjd)
        meta["fiberid"][:] = int(fiber)
        meta["thing_id"][:] = int(sp("THING_ID", -1))
        meta["subclass"][:] = str(sp("SUBCLASS", "")).strip()
        return SpectraBlock(flux=flux, ivar=ivar, mask=mask, meta=meta, n_bad_pixels=int(n_bad))
