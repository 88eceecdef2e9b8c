"""DESI healpix coadd reader (``coadd-{SURVEY}-{PROGRAM}-{HPX}.fits`` + redrock).

Layout (see ``formats.md`` §1–2): HDUs are found **by EXTNAME**. Each arm
``X`` in b, r, z has ``X_WAVELENGTH`` (nwave,), ``X_FLUX``, ``X_IVAR``,
``X_MASK`` (nspec, nwave) and ``X_RESOLUTION`` (nspec, 11, nwave); FIBERMAP
row i describes image row i. A file already combined across cameras
(``BRZ_*`` HDUs) is read as one arm.

What :class:`DesiCoaddReader` returns, per kept FIBERMAP row:

* flux / ivar / mask on the 7781-pixel brz grid, arms combined exactly as
  ``desispec.coaddition.coadd_cameras`` does
  (:func:`skybatch.spectra.camera_coadd.coadd_cameras`);
* NaN/inf flux or ivar (and negative ivar) become flux = 0, ivar = 0 with
  the SPECMASK ``NODATA`` bit (8) set, before the arms are combined; they
  are counted in ``n_bad_pixels``;
* masks: iron int32 masks and EDR/fuji uint32 masks (BITPIX 32 + BZERO 2**31)
  both come back as the same uint32 bit pattern;
* meta: targetid (exact int64) from FIBERMAP.TARGETID, ra/dec from
  TARGET_RA/TARGET_DEC, survey/program from the primary header, healpix
  from HPXPIXEL (or nside-64 NESTED from ra/dec when the header has none),
  source_row = FIBERMAP row, and z/zwarn/spectype joined **by TARGETID**
  from the REDSHIFTS HDU of the redrock file in the same directory
  (``coadd-`` replaced by ``redrock-`` in the file name);
* extra columns: objtype, coadd_fiberstatus, zerr, deltachi2, subtype.

**Missing redrock file**: not an error. z = NaN, zwarn = -1, spectype = ""
(and zerr/deltachi2 = NaN, subtype = "") for every row. A TARGETID absent
from REDSHIFTS gets the same missing values. A redrock file that exists but
is truncated or damaged *is* an error (the coadd is quarantined with a
message naming the redrock file).

**Non-science rows** (negative TARGETID, OBJTYPE other than ``TGT`` such
as SKY fibres, or TARGETID bit 59 set) are left out unless
``keep_nonscience=True``.

RESOLUTION HDUs are never read (only their headers are checked for shape).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

import numpy as np

from skybatch.spectra.camera_coadd import coadd_cameras

from . import _fits
from . import _fitssum
from . import _fitsread
from ._armsread import BLOCK_BYTES, read_arms_into
from ._desi_layout import _REDSHIFT_COLUMNS, _Arm, _as_uint32, _fibermap_columns, _Plan, _redshift_table
from ._common import DESI_BRZ_GRID, LayoutCache, clean_nonfinite, empty_meta, healpix_nest64
from .base import Grid, SourceError, SourceInfo, SpectraBlock

__all__ = ["DesiCoaddReader", "redrock_url_for", "SPECMASK_NODATA_BIT", "TARGETID_SKY_BIT"]

#: desispec SPECMASK bit "No data exists"; set on cleaned NaN/inf pixels.
SPECMASK_NODATA_BIT = 8
#: TARGETID bit flagging sky fibres.
TARGETID_SKY_BIT = 59
_ARM_RE = re.compile(r"^([A-Z]+)_FLUX$")
#: wavelength pixels may sit at most this many pixels off the brz lattice.
_LATTICE_TOL_PX = 1e-3


def redrock_url_for(url: str) -> str | None:
    """The redrock file next to a coadd: ``coadd-`` -> ``redrock-`` in the file name.

    Returns None when the file name does not start with ``coadd-``.
    """
    head, base = posixpath.split(url)
    if not base.startswith("coadd-"):
        return None
    return posixpath.join(head, "redrock-" + base[len("coadd-") :])


#: File plans (layout, parsed headers, FIBERMAP columns: ~0.6 MB of a worker's RSS each) kept per process.
#: A chunk task reads a few consecutive files and the next one on the worker shares its first, so a few
#: plans are all chunk tasks reuse; planning a 200-file set used to leave 64 here (~30 MB more per worker
#: than a 20-file set), and a file inspected while planning is long evicted by the time its chunk is
#: written once there are more files than this anyway.
_CACHE = LayoutCache(maxsize=16)
#: (url, size, checksum) of files whose arm images passed DATASUM/CHECKSUM in this process.
_VERIFIED = LayoutCache(maxsize=4096)


class DesiCoaddReader:
    """Reader for DESI healpix (or tile) coadd files; ``format = "desi"``.

    Grid: ``Grid("linear", 3600.0, 0.8, 7781, "desi-brz")``.

    Parameters
    ----------
    redshifts: join z/zwarn/spectype from the redrock file (default True).
        False skips the redrock file entirely (z = NaN etc.).
    verify_checksums: check the FITS ``DATASUM``/``CHECKSUM`` of every HDU whose bytes are
        read, on those bytes (FIBERMAP, WAVELENGTH and REDSHIFTS when planning; the FLUX, IVAR and
        MASK images in :meth:`read_into`, once per file per process); RESOLUTION is never read,
        so never verified. A mismatch raises ``SourceError(reason="checksum")``.
    """

    format = "desi"
    grid: Grid = DESI_BRZ_GRID
    nodata_bit = SPECMASK_NODATA_BIT
    extra_columns: dict[str, str] = {
        "objtype": "object",
        "coadd_fiberstatus": "int64",
        "zerr": "float64",
        "deltachi2": "float64",
        "subtype": "object",
    }

    #: ingest leaves checksum verification to this reader's reads (no whole-file pass when planning)
    checksums_in_read = True

    def __init__(self, *, redshifts: bool = True, verify_checksums: bool = False):
        self.redshifts = redshifts
        self.verify_checksums = verify_checksums

    # ------------------------------------------------------------------ plan
    def inspect(self, fs: Any, url: str, keep_nonscience: bool = False) -> SourceInfo:
        """Check the file from its headers and FIBERMAP; list the rows to ingest.

        Reads every HDU header, the small WAVELENGTH images, FIBERMAP and the
        redrock file's headers; never FLUX/IVAR/MASK/RESOLUTION data.

        Raises SourceError: ``unreachable``, ``unknown-format``, ``corrupt``,
        ``truncated``, ``missing-hdu``, ``row-mismatch``, ``off-grid``.
        """
        plan = self._plan(fs, url)
        keep = np.ones(plan.nspec, dtype=bool) if keep_nonscience else plan.science
        rows = np.flatnonzero(keep).astype(np.int64)
        _CACHE.put((url, plan.layout.size, plan.checksum, self.redshifts), plan)
        return SourceInfo(
            url=url,
            format=self.format,
            n_rows=int(rows.size),
            rows=rows,
            grid=self.grid,
            size=plan.layout.size,
            checksum=plan.checksum,
            extra_columns=dict(self.extra_columns),
        )

    def _plan(self, fs: Any, url: str) -> _Plan:
        size, finfo = _fits.file_size(fs, url)
        with _fits.open_source(fs, url, size) as f:
            layout = _fits.scan_fits(f, url, size, fast_headers=True)
            if "FIBERMAP" not in layout and not any(_ARM_RE.match(n) for n in layout.names):
                raise SourceError(
                    url, "unknown-format",
                    f"not a DESI coadd: no FIBERMAP and no B/R/Z_FLUX HDUs (found {layout.names}); "
                    "give a coadd-*.fits file or choose the right format",
                )
            fm_entry = layout.require("FIBERMAP", "one row per target")
            arms = self._arms(f, layout, url)
            nspec = self._check_rows(layout, fm_entry, arms, url)
            verify = self.verify_checksums
            if verify:
                for e in layout.entries:  # header-only HDUs (the primary): CHECKSUM from the header alone
                    if e.data_size == 0:
                        _fitssum.check_hdu(e, 0, url)
            fm = _fibermap_columns(f, fm_entry, url, verify)
        if "TARGETID" not in fm:
            raise SourceError(url, "corrupt", "FIBERMAP has no TARGETID column; this is not a DESI coadd FIBERMAP")
        targetid = fm["TARGETID"].astype(np.int64)
        if len(targetid) != nspec:
            raise SourceError(url, "row-mismatch", f"FIBERMAP data has {len(targetid)} rows, header says {nspec}; re-download the file")

        def col(name: str, dtype, missing) -> np.ndarray:
            return fm[name].astype(dtype) if name in fm else np.full(nspec, missing, dtype=dtype)

        ra = col("TARGET_RA", np.float64, np.nan)
        dec = col("TARGET_DEC", np.float64, np.nan)
        objtype = fm["OBJTYPE"] if "OBJTYPE" in fm else np.full(nspec, "TGT", dtype=object)
        fiberstatus = col("COADD_FIBERSTATUS", np.int64, 0)
        sky_bit = (targetid >> TARGETID_SKY_BIT) & 1
        science = (targetid >= 0) & (objtype == "TGT") & (sky_bit == 0)

        hdr = layout.primary
        survey = str(hdr.get("SURVEY", "")).strip()
        program = str(hdr.get("PROGRAM", "")).strip()
        hpx = hdr.get("HPXPIXEL")
        if hpx is None and str(hdr.get("SPGRP", "")).strip().lower() == "healpix":
            hpx = hdr.get("SPGRPVAL")
        if hpx is not None and int(hpx) >= 0 and int(hdr.get("HPXNSIDE", 64)) == 64:
            healpix = np.full(nspec, int(hpx), dtype=np.int64)
        else:
            healpix = healpix_nest64(ra, dec)

        rr_url, rr_layout = (None, None)
        if self.redshifts:
            rr_url, rr_layout = self._scan_redrock(fs, url)
        checksum = _fits.file_identity(finfo, [layout] + ([rr_layout] if rr_layout is not None else []))
        return _Plan(
            layout=layout, arms=arms, nspec=nspec, targetid=targetid, ra=ra, dec=dec, objtype=objtype,
            fiberstatus=fiberstatus, science=science, survey=survey, program=program, healpix=healpix,
            redrock_url=rr_url, redrock_layout=rr_layout, checksum=checksum,
        )

    def _arms(self, f, layout: _fits.FitsLayout, url: str) -> list[_Arm]:
        found = [m.group(1) for m in (_ARM_RE.match(n) for n in layout.names) if m]
        if "BRZ" in found:
            names = ["BRZ"]
        else:
            missing = [a for a in ("B", "R", "Z") if a not in found]
            if missing:
                raise SourceError(
                    url, "missing-hdu",
                    f"arm(s) {missing} have no {'/'.join(a + '_FLUX' for a in missing)} HDU (found HDUs {layout.names}); "
                    "a DESI coadd needs B, R and Z arms. Re-download the file, or remove it from the input list.",
                )
            names = ["B", "R", "Z"]
        arms = []
        grid_wave = self.grid.wavelength()
        for a in names:
            w_e = layout.require(f"{a}_WAVELENGTH", f"wavelength of arm {a}")
            fl = layout.require(f"{a}_FLUX")
            iv = layout.require(f"{a}_IVAR")
            mk = layout.require(f"{a}_MASK")
            if len(w_e.shape) != 1 or w_e.shape[0] == 0:
                raise SourceError(url, "corrupt", f"HDU {a}_WAVELENGTH has shape {w_e.shape}, expected (nwave,)")
            wave = _fitsread.read_image(f, w_e, url, verify=self.verify_checksums).astype(np.float64)
            step = self.grid.step
            x = (wave[0] - self.grid.start) / step
            off = int(round(x))
            ok = off >= 0 and off + wave.size <= self.grid.n
            if ok:
                ok = bool(np.all(np.abs(wave - grid_wave[off : off + wave.size]) <= _LATTICE_TOL_PX * step))
            if not ok:
                dw = float(np.median(np.diff(wave))) if wave.size > 1 else float("nan")
                raise SourceError(
                    url, "off-grid",
                    f"HDU {a}_WAVELENGTH ({wave.size} px from {wave[0]:.4f} Å, step {dw:.5f} Å) is not on the "
                    f"{self.grid.name} grid ({self.grid.start} + {step}·k Å, {self.grid.n} px); ingest it into a "
                    "store with a matching grid, or resample it first",
                )
            arms.append(_Arm(a, off, int(wave.size), fl, iv, mk))
        return arms

    @staticmethod
    def _check_rows(layout: _fits.FitsLayout, fm_entry: _fits.HduEntry, arms: list[_Arm], url: str) -> int:
        if fm_entry.xtension != "BINTABLE" or len(fm_entry.shape) != 2:
            raise SourceError(url, "corrupt", f"HDU FIBERMAP is a {fm_entry.xtension or 'primary'} HDU, expected a BINTABLE")
        nspec = fm_entry.shape[0]
        for arm in arms:
            for e in (arm.flux, arm.ivar, arm.mask):
                if e.shape != (nspec, arm.nwave):
                    raise SourceError(
                        url, "row-mismatch",
                        f"HDU {e.name} has shape {e.shape} but FIBERMAP has {nspec} rows and {arm.name}_WAVELENGTH "
                        f"{arm.nwave} pixels (expected ({nspec}, {arm.nwave})); the file is inconsistent, re-download it",
                    )
            res = layout.get(f"{arm.name}_RESOLUTION")
            if res is not None and (len(res.shape) != 3 or res.shape[0] != nspec or res.shape[2] != arm.nwave):
                raise SourceError(
                    url, "row-mismatch",
                    f"HDU {res.name} has shape {res.shape}, expected ({nspec}, ndiag, {arm.nwave}); the file is inconsistent, re-download it",
                )
        return nspec

    def _scan_redrock(self, fs: Any, url: str) -> tuple[str | None, _fits.FitsLayout | None]:
        rr = redrock_url_for(url)
        if rr is None:
            return None, None
        try:
            info = fs.info(rr)
        except FileNotFoundError:
            return None, None
        try:
            with _fits.open_source(fs, rr, int(info["size"])) as f:
                lay = _fits.scan_fits(f, rr, int(info["size"]), fast_headers=True)
            red = lay.require("REDSHIFTS", "redrock redshift table")
            if red.xtension != "BINTABLE":
                raise SourceError(rr, "corrupt", "REDSHIFTS is not a binary table")
        except SourceError as e:
            raise SourceError(
                url, e.reason,
                f"matching redrock file {rr}: {e.message}. Fix or re-download it, or delete it to ingest the coadd "
                "without redshifts",
            ) from e
        return rr, lay

    # ------------------------------------------------------------------ read
    def _get_plan(self, fs: Any, info: SourceInfo) -> _Plan:
        return _CACHE.plan_for(info, lambda: self._plan(fs, info.url), lambda p: p.checksum, self.redshifts)

    def _redshift_columns(self, fs: Any, plan: _Plan, url: str) -> dict[str, np.ndarray]:
        if plan.redshifts is not None:
            return plan.redshifts
        n = plan.nspec
        out = {
            "z": np.full(n, np.nan), "zwarn": np.full(n, -1, dtype=np.int64), "spectype": np.full(n, "", dtype=object),
            "zerr": np.full(n, np.nan), "deltachi2": np.full(n, np.nan), "subtype": np.full(n, "", dtype=object),
        }
        if plan.redrock_url is not None and plan.redrock_layout is not None:
            try:
                with _fits.open_source(fs, plan.redrock_url, plan.redrock_layout.size) as f:
                    red = _redshift_table(f, plan.redrock_layout.require("REDSHIFTS"), plan.redrock_url,
                                          self.verify_checksums)
            except SourceError as e:
                raise SourceError(url, e.reason, f"matching redrock file {plan.redrock_url}: {e.message}") from e
            if "TARGETID" not in red:
                raise SourceError(url, "corrupt", f"REDSHIFTS of {plan.redrock_url} has no TARGETID column; re-download it")
            rr_tid = red["TARGETID"].astype(np.int64)
            order = np.argsort(rr_tid, kind="stable")
            pos = np.searchsorted(rr_tid[order], plan.targetid, side="left")
            pos_c = np.minimum(pos, max(rr_tid.size - 1, 0))
            hit = (pos < rr_tid.size) & (rr_tid[order][pos_c] == plan.targetid) if rr_tid.size else np.zeros(n, bool)
            src = order[pos_c]
            for name, col, dt in _REDSHIFT_COLUMNS:
                if col in red:
                    v = red[col]
                    v = v.astype(dt) if dt is not object else v
                    out[name][hit] = v[src[hit]]
        plan.redshifts = out
        return out

    def read(self, fs: Any, info: SourceInfo, start: int, stop: int) -> SpectraBlock:
        """Read kept rows ``info.rows[start:stop]`` onto the brz grid.

        Reads only those rows of each FLUX/IVAR/MASK image (one ranged read
        per contiguous run of rows), plus FIBERMAP and REDSHIFTS (cached per
        process). Never reads RESOLUTION.
        """
        rows = np.asarray(info.rows[start:stop], dtype=np.int64)
        plan = self._get_plan(fs, info)
        n = rows.size
        nwave = self.grid.n
        if n == 0:
            z = np.zeros((0, nwave), dtype=np.float32)
            return SpectraBlock(flux=z, ivar=z.copy(), mask=np.zeros((0, nwave), np.uint32),
                                meta=empty_meta(0, self.extra_columns))
        fl_arms, iv_arms, mk_arms = [], [], []
        n_bad = 0
        with _fits.open_source(fs, info.url, info.size) as f:
            for arm in plan.arms:
                fl = np.ascontiguousarray(_fitsread.read_image_rows(f, arm.flux, rows, info.url), dtype=np.float32)
                iv = np.ascontiguousarray(_fitsread.read_image_rows(f, arm.ivar, rows, info.url), dtype=np.float32)
                mk = _fitsread.read_image_rows(f, arm.mask, rows, info.url)
                mk = _as_uint32(mk, arm.mask.name, info.url)
                n_bad += clean_nonfinite(fl, iv, mk, self.nodata_bit)
                fl_arms.append(fl)
                iv_arms.append(iv)
                mk_arms.append(mk)
        flux, ivar, mask = coadd_cameras(
            fl_arms, iv_arms, mk_arms, [a.offset for a in plan.arms], nwave, nodata_bit=self.nodata_bit
        )
        return SpectraBlock(flux=flux, ivar=ivar, mask=mask, meta=self._meta(fs, plan, info.url, rows),
                            n_bad_pixels=int(n_bad))

    def _meta(self, fs: Any, plan: _Plan, url: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-spectrum columns of file rows ``rows`` (FIBERMAP, primary header, redrock join)."""
        n = rows.size
        meta = empty_meta(n, self.extra_columns)
        if n == 0:
            return meta
        red = self._redshift_columns(fs, plan, url)
        meta["targetid"] = plan.targetid[rows].copy()
        meta["ra"] = plan.ra[rows].copy()
        meta["dec"] = plan.dec[rows].copy()
        meta["survey"] = np.full(n, plan.survey, dtype=object)
        meta["program"] = np.full(n, plan.program, dtype=object)
        meta["healpix"] = plan.healpix[rows].copy()
        meta["source_row"] = rows.copy()
        meta["objtype"] = plan.objtype[rows].copy()
        meta["coadd_fiberstatus"] = plan.fiberstatus[rows].copy()
        for k in ("z", "zwarn", "spectype", "zerr", "deltachi2", "subtype"):
            meta[k] = red[k][rows].copy()
        return meta

    def read_into(self, fs: Any, info: SourceInfo, start: int, stop: int, flux: np.ndarray, ivar: np.ndarray,
                  mask: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        """Read kept rows ``info.rows[start:stop]`` straight into a chunk's rows; same values as :meth:`read`.

        flux / ivar (float32) and mask (uint32): the (stop - start, 7781) rows of the chunk to fill
        (every pixel is written). The file rows spanned are read block by block into reused
        buffers (one read per image per block: one block on a remote filesystem), byte-swapped
        into place and the arms combined there (:func:`~skybatch.sources._armsread.read_arms_into`).
        With ``verify_checksums`` each image's DATASUM is checked once per file per process, on
        the bytes read plus the rest of its data, streamed.
        Returns (per-spectrum columns, number of NaN/inf pixels cleaned).
        """
        rows = np.asarray(info.rows[start:stop], dtype=np.int64)
        plan = self._get_plan(fs, info)
        meta = self._meta(fs, plan, info.url, rows)
        n = rows.size
        if n == 0:
            return meta, 0
        direct = [arm.direct() for arm in plan.arms]
        if not all(ok for ok, _ in direct) or (n > 1 and not bool(np.all(np.diff(rows) > 0))):  # (plans sort rows)
            block = self.read(fs, info, start, stop)
            flux[:], ivar[:], mask[:] = block.flux, block.ivar, block.mask
            return block.meta, int(block.n_bad_pixels)
        key = (info.url, info.size, info.checksum)
        verify = self.verify_checksums and _VERIFIED.get(key) is None
        proto = getattr(fs, "protocol", ())
        local = bool({"file", "local"} & set((proto,) if isinstance(proto, str) else proto))
        with _fits.open_source(fs, info.url, info.size) as f:
            n_bad = read_arms_into(
                f, [(arm.flux, arm.ivar, arm.mask) for arm in plan.arms], [arm.offset for arm in plan.arms],
                [x for _, x in direct], rows, info.url, flux, ivar, mask, nodata_bit=self.nodata_bit,
                verify=verify, block_bytes=BLOCK_BYTES if local else 1 << 40,
            )
        if verify:
            _VERIFIED.put(key, True)
        return meta, int(n_bad)
