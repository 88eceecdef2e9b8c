"""Write DESI iron-layout healpix ``coadd-*.fits`` / ``redrock-*.fits`` pairs.

The files follow ``formats.md`` §1–2 byte for byte where it matters to a
reader: HDU order and EXTNAMEs, the 67-column main-survey FIBERMAP
(317 B/row), the 26-column EXP_FIBERMAP (162 B/row, exposure-ordered), the
42-column SCORES (172 B/row), per-arm WAVELENGTH (f8) / FLUX / IVAR (f4) /
MASK (int32 as in iron, or uint32 via BZERO = 2**31 as in EDR) /
RESOLUTION (f4, (nspec, 11, nwave)), big-endian on disk (FITS), CHECKSUM
and DATASUM on every HDU, and the iron primary-header keywords (SPGRP,
SPGRPVAL, HPXPIXEL, HPXNSIDE=64, HPXNEST='True' as a string, SURVEY,
PROGRAM, a negative FIBERMIN placeholder, INFIL000, DEPNAMnn/DEPVERnn).

Low level: :func:`make_fibermap`, :func:`make_exp_fibermap`,
:func:`make_scores`, :func:`make_redshifts`, :func:`make_tsnr2`,
:func:`resolution_data`, :func:`write_desi_coadd`, :func:`write_redrock`.
High level: :func:`write_desi_healpix` renders a population (see
:mod:`skybatch.sample.spectra`) into one healpix pair and returns its truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .spectra import add_noise, noise_sigma, render_spectra, sky_spectrum

__all__ = [
    "ARMS",
    "arm_wavelength",
    "brz_wavelength",
    "targetid_from_parts",
    "FIBERMAP_DTYPE",
    "EXP_FIBERMAP_DTYPE",
    "SCORES_DTYPE",
    "REDSHIFTS_DTYPE",
    "TSNR2_DTYPE",
    "make_fibermap",
    "make_exp_fibermap",
    "make_scores",
    "make_redshifts",
    "make_tsnr2",
    "resolution_data",
    "write_desi_coadd",
    "write_redrock",
    "write_desi_healpix",
    "DesiHealpixFiles",
    "points_in_healpix",
    "SKY_TARGETID_BIT",
]

#: arm -> (first, last) wavelength in Angstrom, 0.8 Å steps.
ARMS: dict[str, tuple[float, float]] = {"b": (3600.0, 5800.0), "r": (5760.0, 7620.0), "z": (7520.0, 9824.0)}
SKY_TARGETID_BIT = 59
_STEP = 0.8
_TSNR_KINDS = ("GPBDARK", "ELG", "GPBBRIGHT", "LYA", "BGS", "GPBBACKUP", "QSO", "LRG")


def arm_wavelength(arm: str) -> np.ndarray:
    """DESI arm grid, bit-identical to desispec: ``np.arange(w0, w1 + 0.4, 0.8)``."""
    w0, w1 = ARMS[arm]
    return np.arange(w0, w1 + _STEP / 2, _STEP)


def brz_wavelength() -> np.ndarray:
    """The 7781-pixel brz grid, 3600–9824 Å."""
    return np.arange(3600.0, 9824.0 + _STEP / 2, _STEP)


def _arm_slice(arm: str) -> slice:
    off = int(round((ARMS[arm][0] - 3600.0) / _STEP))
    return slice(off, off + arm_wavelength(arm).size)


def targetid_from_parts(objid: np.ndarray, brickid: np.ndarray, release: np.ndarray, *, sky: bool | np.ndarray = False) -> np.ndarray:
    """DESI TARGETID: OBJID (22 bits) | BRICKID << 22 | RELEASE << 42 | SKY << 59, int64."""
    t = (np.asarray(objid, np.int64) | (np.asarray(brickid, np.int64) << 22) | (np.asarray(release, np.int64) << 42))
    return t | (np.asarray(sky, np.int64) << SKY_TARGETID_BIT)


_FM = [
    ("TARGETID", ">i8"), ("COADD_FIBERSTATUS", ">i4"), ("TARGET_RA", ">f8"), ("TARGET_DEC", ">f8"), ("PMRA", ">f4"),
    ("PMDEC", ">f4"), ("REF_EPOCH", ">f4"), ("FA_TARGET", ">i8"), ("FA_TYPE", "u1"), ("OBJTYPE", "S3"),
    ("SUBPRIORITY", ">f8"), ("OBSCONDITIONS", ">i4"), ("RELEASE", ">i2"), ("BRICKNAME", "S8"), ("BRICKID", ">i4"),
    ("BRICK_OBJID", ">i4"), ("MORPHTYPE", "S4"), ("EBV", ">f4"),
]
_FM += [(f"FLUX_{b}", ">f4") for b in ("G", "R", "Z", "W1", "W2")]
_FM += [(f"FLUX_IVAR_{b}", ">f4") for b in ("G", "R", "Z", "W1", "W2")]
_FM += [(f"FIBERFLUX_{b}", ">f4") for b in ("G", "R", "Z")]
_FM += [(f"FIBERTOTFLUX_{b}", ">f4") for b in ("G", "R", "Z")]
_FM += [
    ("MASKBITS", ">i2"), ("SERSIC", ">f4"), ("SHAPE_R", ">f4"), ("SHAPE_E1", ">f4"), ("SHAPE_E2", ">f4"), ("REF_ID", ">i8"),
    ("REF_CAT", "S2"), ("GAIA_PHOT_G_MEAN_MAG", ">f4"), ("GAIA_PHOT_BP_MEAN_MAG", ">f4"), ("GAIA_PHOT_RP_MEAN_MAG", ">f4"),
    ("PARALLAX", ">f4"), ("PHOTSYS", "S1"), ("PRIORITY_INIT", ">i8"), ("NUMOBS_INIT", ">i8"), ("DESI_TARGET", ">i8"),
    ("BGS_TARGET", ">i8"), ("MWS_TARGET", ">i8"), ("SCND_TARGET", ">i8"), ("PLATE_RA", ">f8"), ("PLATE_DEC", ">f8"),
    ("COADD_NUMEXP", ">i2"), ("COADD_EXPTIME", ">f4"), ("COADD_NUMNIGHT", ">i2"), ("COADD_NUMTILE", ">i2"),
    ("MEAN_DELTA_X", ">f4"), ("RMS_DELTA_X", ">f4"), ("MEAN_DELTA_Y", ">f4"), ("RMS_DELTA_Y", ">f4"),
    ("MEAN_FIBER_RA", ">f8"), ("STD_FIBER_RA", ">f4"), ("MEAN_FIBER_DEC", ">f8"), ("STD_FIBER_DEC", ">f4"),
    ("MEAN_PSF_TO_FIBER_SPECFLUX", ">f4"),
]
#: iron main-survey FIBERMAP: 67 columns, 317 bytes per row.
FIBERMAP_DTYPE = np.dtype(_FM)

#: EXP_FIBERMAP: 26 columns, 162 bytes per row.
EXP_FIBERMAP_DTYPE = np.dtype([
    ("TARGETID", ">i8"), ("PRIORITY", ">i4"), ("SUBPRIORITY", ">f8"), ("NIGHT", ">i4"), ("EXPID", ">i4"), ("MJD", ">f8"),
    ("TILEID", ">i4"), ("EXPTIME", ">f8"), ("PETAL_LOC", ">i2"), ("DEVICE_LOC", ">i4"), ("LOCATION", ">i8"), ("FIBER", ">i4"),
    ("FIBERSTATUS", ">i4"), ("FIBERASSIGN_X", ">f4"), ("FIBERASSIGN_Y", ">f4"), ("LAMBDA_REF", ">f4"), ("PLATE_RA", ">f8"),
    ("PLATE_DEC", ">f8"), ("NUM_ITER", ">i8"), ("FIBER_X", ">f8"), ("FIBER_Y", ">f8"), ("DELTA_X", ">f8"), ("DELTA_Y", ">f8"),
    ("FIBER_RA", ">f8"), ("FIBER_DEC", ">f8"), ("PSF_TO_FIBER_SPECFLUX", ">f8"),
])

_SC: list[tuple[str, str]] = [("TARGETID", ">i8")]
for _a in "BRZ":
    _SC += [(f"INTEG_COADD_FLUX_{_a}", ">f4"), (f"MEDIAN_COADD_FLUX_{_a}", ">f4"), (f"MEDIAN_COADD_SNR_{_a}", ">f4")]
    _SC += [(f"TSNR2_{k}_{_a}", ">f4") for k in _TSNR_KINDS]
_SC += [(f"TSNR2_{k}", ">f4") for k in _TSNR_KINDS]
#: SCORES: 42 columns, 172 bytes per row.
SCORES_DTYPE = np.dtype(_SC)

#: redrock REDSHIFTS: 11 columns, 170 bytes per row.
REDSHIFTS_DTYPE = np.dtype([
    ("TARGETID", ">i8"), ("CHI2", ">f8"), ("COEFF", ">f8", (10,)), ("Z", ">f8"), ("ZERR", ">f8"), ("ZWARN", ">i8"),
    ("NPIXELS", ">i8"), ("SPECTYPE", "S6"), ("SUBTYPE", "S20"), ("NCOEFF", ">i8"), ("DELTACHI2", ">f8"),
])
#: redrock TSNR2: TARGETID + 32 TSNR2 columns.
TSNR2_DTYPE = np.dtype([("TARGETID", ">i8")] + [(f"TSNR2_{k}_{a}", ">f4") for a in "BRZ" for k in _TSNR_KINDS]
                       + [(f"TSNR2_{k}", ">f4") for k in _TSNR_KINDS])

_FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
_IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"


def points_in_healpix(healpix: int, n: int, rng: np.random.Generator, nside: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random (ra, dec) in degrees inside one NESTED healpix pixel."""
    from astropy import units as u
    from astropy_healpix import healpix_to_lonlat, lonlat_to_healpix

    lon, lat = healpix_to_lonlat(healpix, nside, order="nested")
    ra0, dec0 = float(lon.to_value(u.deg)), float(lat.to_value(u.deg))
    ra_out, dec_out = np.empty(0), np.empty(0)
    half = 1.2  # degrees; an nside-64 pixel is ~0.92° across
    while ra_out.size < n:
        m = 4 * n + 16
        dec = np.clip(dec0 + rng.uniform(-half, half, m), -89.9, 89.9)
        ra = np.mod(ra0 + rng.uniform(-half, half, m) / max(np.cos(np.radians(dec0)), 0.05), 360.0)
        inside = lonlat_to_healpix(ra * u.deg, dec * u.deg, nside, order="nested") == healpix
        ra_out = np.concatenate([ra_out, ra[inside]])
        dec_out = np.concatenate([dec_out, dec[inside]])
    return ra_out[:n], dec_out[:n]


def make_fibermap(
    targetid: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    objtype: np.ndarray,
    rng: np.random.Generator,
    *,
    spectype: np.ndarray | None = None,
    mag_r: np.ndarray | None = None,
    coadd_numexp: np.ndarray | None = None,
) -> np.ndarray:
    """A FIBERMAP table (structured, big-endian, :data:`FIBERMAP_DTYPE`).

    targetid, ra, dec, objtype ('TGT', 'SKY', 'NON'), shape (n,). Photometry
    follows ``mag_r``; target bits follow ``spectype`` (LRG/ELG for galaxies,
    QSO, MWS for stars, SKY for sky fibres). Rows with OBJTYPE 'NON' have
    COADD_NUMEXP = 0, like unassigned fibres.
    """
    n = len(targetid)
    fm = np.zeros(n, dtype=FIBERMAP_DTYPE)
    objtype = np.asarray(objtype, dtype=object)
    spectype = np.full(n, "GALAXY", dtype=object) if spectype is None else np.asarray(spectype, dtype=object)
    mag_r = rng.uniform(19.0, 22.0, n) if mag_r is None else np.asarray(mag_r, dtype=float)
    if coadd_numexp is None:
        coadd_numexp = np.where(objtype == "NON", 0, rng.integers(1, 5, n))
    tid = np.asarray(targetid, np.int64)
    fm["TARGETID"] = tid
    fm["TARGET_RA"], fm["TARGET_DEC"] = ra, dec
    fm["REF_EPOCH"] = 2015.5
    fm["FA_TARGET"] = tid & ((1 << 42) - 1)
    fm["FA_TYPE"] = np.where(objtype == "TGT", 1, 4)
    fm["OBJTYPE"] = np.array([str(o) for o in objtype], dtype="S3")
    fm["SUBPRIORITY"] = rng.random(n)
    fm["OBSCONDITIONS"] = 1
    fm["RELEASE"] = np.where(tid > 0, (tid >> 42) & 0xFFFF, 0)
    fm["BRICKID"] = np.where(tid > 0, (tid >> 22) & 0xFFFFF, 0)
    fm["BRICK_OBJID"] = np.where(tid > 0, tid & 0x3FFFFF, 0)
    fm["BRICKNAME"] = np.array([f"{int(r * 10) % 3600:04d}p{int(abs(d) * 10) % 1000:03d}" for r, d in zip(ra, dec)], dtype="S8")
    morph = np.where(spectype == "GALAXY", rng.choice(np.array(["EXP", "DEV", "REX", "SER"]), n), "PSF")
    fm["MORPHTYPE"] = morph.astype("S4")
    fm["EBV"] = rng.uniform(0.01, 0.08, n)
    flux_r = 10 ** (-0.4 * (mag_r - 22.5))
    for b, col in (("G", 0.6), ("R", 1.0), ("Z", 1.5), ("W1", 1.8), ("W2", 1.6)):
        fm[f"FLUX_{b}"] = flux_r * col * rng.uniform(0.8, 1.2, n)
        fm[f"FLUX_IVAR_{b}"] = rng.uniform(20.0, 400.0, n)
    for b in ("G", "R", "Z"):
        fm[f"FIBERFLUX_{b}"] = fm[f"FLUX_{b}"] * 0.6
        fm[f"FIBERTOTFLUX_{b}"] = fm[f"FLUX_{b}"] * 0.62
    fm["SERSIC"] = np.where(morph == "DEV", 4.0, np.where(morph == "PSF", 0.0, 1.0))
    fm["SHAPE_R"] = np.where(morph == "PSF", 0.0, rng.uniform(0.3, 2.0, n))
    fm["SHAPE_E1"], fm["SHAPE_E2"] = rng.normal(0, 0.1, n), rng.normal(0, 0.1, n)
    star = spectype == "STAR"
    fm["REF_ID"] = np.where(star, rng.integers(1, 2**60, n), -1)
    fm["REF_CAT"] = np.where(star, "G2", "").astype("S2")
    for b, dm in (("G", 0.0), ("BP", 0.3), ("RP", -0.4)):
        fm[f"GAIA_PHOT_{b}_MEAN_MAG"] = np.where(star, mag_r + dm, 0.0)
    fm["PARALLAX"] = np.where(star, rng.uniform(0.05, 2.0, n), 0.0)
    fm["PHOTSYS"] = np.where(dec > 32.375, "N", "S").astype("S1")
    desi = np.zeros(n, dtype=np.int64)
    desi[spectype == "GALAXY"] = np.where(rng.random((spectype == "GALAXY").sum()) < 0.5, 1 << 0, 1 << 1)
    desi[spectype == "QSO"] = 1 << 2
    desi[star] = 1 << 61
    desi[objtype == "SKY"] = 1 << 32
    desi[objtype == "NON"] = 0
    fm["DESI_TARGET"] = desi
    fm["MWS_TARGET"] = np.where(star, 1 << 1, 0)
    fm["PRIORITY_INIT"] = np.where(objtype == "TGT", 3000, 0)
    fm["NUMOBS_INIT"] = np.where(objtype == "TGT", 1, 0)
    fm["PLATE_RA"], fm["PLATE_DEC"] = ra, dec
    fm["COADD_NUMEXP"] = coadd_numexp
    fm["COADD_EXPTIME"] = np.asarray(coadd_numexp) * 900.0
    fm["COADD_NUMNIGHT"] = np.minimum(coadd_numexp, 2)
    fm["COADD_NUMTILE"] = np.minimum(coadd_numexp, 1)
    fm["MEAN_DELTA_X"], fm["MEAN_DELTA_Y"] = rng.normal(0, 0.003, n), rng.normal(0, 0.003, n)
    fm["RMS_DELTA_X"], fm["RMS_DELTA_Y"] = rng.uniform(0, 0.005, n), rng.uniform(0, 0.005, n)
    fm["MEAN_FIBER_RA"], fm["MEAN_FIBER_DEC"] = ra, dec
    fm["STD_FIBER_RA"], fm["STD_FIBER_DEC"] = rng.uniform(0, 0.05, n), rng.uniform(0, 0.05, n)
    fm["MEAN_PSF_TO_FIBER_SPECFLUX"] = np.where(morph == "PSF", 0.78, rng.uniform(0.3, 0.7, n))
    fm["COADD_FIBERSTATUS"] = 0
    return fm


def make_exp_fibermap(fibermap: np.ndarray, rng: np.random.Generator, *, n_exposures: int = 4) -> np.ndarray:
    """EXP_FIBERMAP rows for every target × exposure it appears in.

    Target i appears in COADD_NUMEXP[i] of ``n_exposures`` exposures (rows
    with 0 exposures appear once, like unassigned fibres). Rows are ordered by
    exposure, then fibre — **not** grouped by target.
    """
    n = len(fibermap)
    numexp = np.asarray(fibermap["COADD_NUMEXP"], dtype=int)
    expids = 100000 + np.arange(n_exposures) * 7 + int(rng.integers(0, 1000))
    nights = 20220101 + np.arange(n_exposures) // 2
    fiber = rng.permutation(5000)[:n]
    rows = []
    for e in range(n_exposures):
        sel = np.flatnonzero((numexp > e) | ((numexp == 0) & (e == 0)))
        sel = sel[np.argsort(fiber[sel], kind="stable")]
        for i in sel:
            rows.append((i, e))
    out = np.zeros(len(rows), dtype=EXP_FIBERMAP_DTYPE)
    idx = np.array([r[0] for r in rows], dtype=int)
    exp = np.array([r[1] for r in rows], dtype=int)
    out["TARGETID"] = fibermap["TARGETID"][idx]
    out["PRIORITY"] = fibermap["PRIORITY_INIT"][idx]
    out["SUBPRIORITY"] = fibermap["SUBPRIORITY"][idx]
    out["NIGHT"], out["EXPID"] = nights[exp], expids[exp]
    out["MJD"] = 59580.0 + exp * 0.5 + 0.1
    out["TILEID"] = 1000 + exp // 2
    out["EXPTIME"] = 900.0
    out["PETAL_LOC"] = fiber[idx] // 500
    out["DEVICE_LOC"] = fiber[idx] % 500
    out["LOCATION"] = 1000 * (fiber[idx] // 500) + fiber[idx] % 500
    out["FIBER"] = fiber[idx]
    out["FIBERSTATUS"] = 0
    out["LAMBDA_REF"] = 5400.0
    out["PLATE_RA"], out["PLATE_DEC"] = fibermap["TARGET_RA"][idx], fibermap["TARGET_DEC"][idx]
    out["FIBER_RA"], out["FIBER_DEC"] = fibermap["TARGET_RA"][idx], fibermap["TARGET_DEC"][idx]
    out["NUM_ITER"] = 2
    out["FIBERASSIGN_X"], out["FIBERASSIGN_Y"] = rng.uniform(-400, 400, idx.size), rng.uniform(-400, 400, idx.size)
    out["FIBER_X"], out["FIBER_Y"] = out["FIBERASSIGN_X"], out["FIBERASSIGN_Y"]
    out["PSF_TO_FIBER_SPECFLUX"] = fibermap["MEAN_PSF_TO_FIBER_SPECFLUX"][idx]
    return out


def make_scores(targetid: np.ndarray, flux: dict[str, np.ndarray], ivar: dict[str, np.ndarray]) -> np.ndarray:
    """SCORES table computed from the per-arm flux/ivar (TSNR2 ∝ median S/N²)."""
    n = len(targetid)
    sc = np.zeros(n, dtype=SCORES_DTYPE)
    sc["TARGETID"] = targetid
    tot = {k: np.zeros(n) for k in _TSNR_KINDS}
    for a in "brz":
        f, iv = flux[a].astype(np.float64), ivar[a].astype(np.float64)
        A = a.upper()
        sc[f"INTEG_COADD_FLUX_{A}"] = np.sum(f, axis=1) * _STEP
        sc[f"MEDIAN_COADD_FLUX_{A}"] = np.median(f, axis=1)
        snr = np.median(f * np.sqrt(iv), axis=1)
        sc[f"MEDIAN_COADD_SNR_{A}"] = snr
        for j, k in enumerate(_TSNR_KINDS):
            v = np.maximum(snr, 0) ** 2 * (1.0 + 0.1 * j) * 4.0
            sc[f"TSNR2_{k}_{A}"] = v
            tot[k] += v
    for k in _TSNR_KINDS:
        sc[f"TSNR2_{k}"] = tot[k]
    return sc


def make_tsnr2(scores: np.ndarray) -> np.ndarray:
    """Redrock TSNR2 table (TARGETID + the 32 TSNR2 columns of SCORES)."""
    out = np.zeros(len(scores), dtype=TSNR2_DTYPE)
    for name in TSNR2_DTYPE.names:
        out[name] = scores[name]
    return out


def make_redshifts(
    targetid: np.ndarray,
    z: np.ndarray,
    zerr: np.ndarray,
    zwarn: np.ndarray,
    spectype: np.ndarray,
    subtype: np.ndarray,
    deltachi2: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """REDSHIFTS table (:data:`REDSHIFTS_DTYPE`); NCOEFF 10/4/5 for GALAXY/QSO/STAR."""
    n = len(targetid)
    rr = np.zeros(n, dtype=REDSHIFTS_DTYPE)
    rr["TARGETID"] = targetid
    rr["Z"], rr["ZERR"], rr["ZWARN"] = z, zerr, zwarn
    rr["SPECTYPE"] = np.array([str(s) for s in spectype], dtype="S6")
    rr["SUBTYPE"] = np.array([str(s) for s in subtype], dtype="S20")
    ncoeff = np.array([{"GALAXY": 10, "QSO": 4, "STAR": 5}.get(str(s), 10) for s in spectype])
    rr["NCOEFF"] = ncoeff
    coeff = rng.normal(0, 1, (n, 10))
    coeff[np.arange(10)[None, :] >= ncoeff[:, None]] = 0.0
    rr["COEFF"] = coeff
    rr["NPIXELS"] = 7929
    rr["CHI2"] = rng.uniform(7000, 9000, n)
    rr["DELTACHI2"] = deltachi2
    return rr


def resolution_data(wave: np.ndarray, nspec: int, sigma_pix: float = 0.85, ndiag: int = 11) -> np.ndarray:
    """Banded Gaussian resolution matrices, shape (nspec, ndiag, nwave), float32.

    ``R[i, d, j]`` is the matrix element of diagonal offset ``ndiag//2 - d``
    at column j (``scipy.sparse.dia_matrix((R[i], offsets))`` convention);
    columns sum to 1 away from the edges. The same LSF is used for every
    spectrum (a broadcast view: write it, do not modify it).
    """
    offsets = ndiag // 2 - np.arange(ndiag)
    kern = np.exp(-0.5 * (offsets / sigma_pix) ** 2)
    kern = (kern / kern.sum()).astype(np.float32)
    one = np.repeat(kern[:, None], wave.size, axis=1)
    return np.broadcast_to(one, (nspec, ndiag, wave.size))


def _primary_header(kind: str, healpix: int, survey: str, program: str, extra: dict[str, Any] | None = None):
    from astropy.io import fits

    h = fits.Header()
    h["SPGRP"] = "healpix"
    h["SPGRPVAL"] = int(healpix)
    h["HPXPIXEL"] = int(healpix)
    h["HPXNSIDE"] = 64
    h["HPXNEST"] = "True"
    h["SURVEY"] = survey
    h["PROGRAM"] = program
    h["SPECPROD"] = "iron"
    if kind == "coadd":
        h["FIBERMIN"] = -2147483648
        h["INFIL000"] = f"spectra-{survey}-{program}-{healpix}.fits"
        deps = [("python", "3.10.13"), ("numpy", "1.22.4"), ("astropy", "5.3.4"), ("desispec", "0.56.5"), ("desiutil", "3.4.2")]
    else:
        h["RRVER"] = "0.21.0"
        temps = [("GALAXY", "2.6"), ("QSO:::HIZ", "1.0"), ("QSO:::LOZ", "1.0")] + [(f"STAR:::{s}", "0.1") for s in "A B CV F G K M WD".split()]
        for k, (nm, ver) in enumerate(temps):
            h[f"TEMNAM{k:02d}"] = nm
            h[f"TEMVER{k:02d}"] = ver
        deps = [("python", "3.10.13"), ("numpy", "1.22.4"), ("redrock", "0.21.0"), ("desispec", "0.56.5")]
    for k, (nm, ver) in enumerate(deps):
        h[f"DEPNAM{k:02d}"] = nm
        h[f"DEPVER{k:02d}"] = ver
    for k, v in (extra or {}).items():
        h[k] = v
    return h


def write_desi_coadd(
    path: str | os.PathLike,
    *,
    healpix: int,
    survey: str,
    program: str,
    fibermap: np.ndarray,
    exp_fibermap: np.ndarray,
    scores: np.ndarray,
    flux: dict[str, np.ndarray],
    ivar: dict[str, np.ndarray],
    mask: dict[str, np.ndarray],
    resolution: dict[str, np.ndarray] | None = None,
    mask_dtype: str = "int32",
    header_extra: dict[str, Any] | None = None,
) -> Path:
    """Write one coadd file in the iron HDU order.

    flux/ivar/mask: arm ('b', 'r', 'z') -> (nspec, nwave_arm) arrays on
    :func:`arm_wavelength` grids. mask_dtype: ``"int32"`` (iron) or
    ``"uint32"`` (EDR/fuji, stored as BITPIX 32 + BZERO 2**31).
    resolution: arm -> (nspec, 11, nwave_arm); default :func:`resolution_data`.
    """
    from astropy.io import fits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nspec = len(fibermap)
    hdus = [fits.PrimaryHDU(header=_primary_header("coadd", healpix, survey, program, header_extra))]
    hdus.append(fits.BinTableHDU(fibermap, name="FIBERMAP"))
    hdus.append(fits.BinTableHDU(exp_fibermap, name="EXP_FIBERMAP"))
    mdt = {"int32": np.int32, "uint32": np.uint32}[mask_dtype]
    for a in "brz":
        w = arm_wavelength(a)
        A = a.upper()
        h = fits.ImageHDU(w.astype(">f8"), name=f"{A}_WAVELENGTH")
        h.header["BUNIT"] = "Angstrom"
        hdus.append(h)
        h = fits.ImageHDU(np.asarray(flux[a], dtype=np.float32), name=f"{A}_FLUX")
        h.header["BUNIT"] = _FLUX_UNIT
        hdus.append(h)
        h = fits.ImageHDU(np.asarray(ivar[a], dtype=np.float32), name=f"{A}_IVAR")
        h.header["BUNIT"] = _IVAR_UNIT
        hdus.append(h)
        hdus.append(fits.ImageHDU(np.asarray(mask[a]).astype(mdt), name=f"{A}_MASK"))
        res = resolution[a] if resolution is not None else resolution_data(w, nspec)
        hdus.append(fits.ImageHDU(np.ascontiguousarray(res, dtype=np.float32), name=f"{A}_RESOLUTION"))
    hdus.append(fits.BinTableHDU(scores, name="SCORES"))
    fits.HDUList(hdus).writeto(path, overwrite=True, checksum=True)
    return path


def write_redrock(
    path: str | os.PathLike,
    *,
    healpix: int,
    survey: str,
    program: str,
    redshifts: np.ndarray,
    fibermap: np.ndarray,
    exp_fibermap: np.ndarray,
    tsnr2: np.ndarray,
) -> Path:
    """Write a redrock file: PRIMARY, REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.

    ``fibermap`` and ``tsnr2`` must be row-matched to ``redshifts``.
    """
    from astropy.io import fits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus = [
        fits.PrimaryHDU(header=_primary_header("redrock", healpix, survey, program)),
        fits.BinTableHDU(redshifts, name="REDSHIFTS"),
        fits.BinTableHDU(fibermap, name="FIBERMAP"),
        fits.BinTableHDU(exp_fibermap, name="EXP_FIBERMAP"),
        fits.BinTableHDU(tsnr2, name="TSNR2"),
    ]
    fits.HDUList(hdus).writeto(path, overwrite=True, checksum=True)
    return path


@dataclass
class DesiHealpixFiles:
    """What :func:`write_desi_healpix` wrote.

    coadd, redrock: file paths (redrock None when not written).
    truth: per science row, dict of arrays (see :func:`write_desi_healpix`).
    science_rows / nonscience_rows: FIBERMAP row indices.
    targetid: TARGETID of every FIBERMAP row, file order.
    """

    coadd: Path
    redrock: Path | None
    truth: dict[str, np.ndarray]
    science_rows: np.ndarray
    nonscience_rows: np.ndarray
    targetid: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def write_desi_healpix(
    directory: str | os.PathLike,
    healpix: int,
    population: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    survey: str = "main",
    program: str = "dark",
    n_sky: int = 2,
    n_unassigned: int = 1,
    mask_dtype: str = "int32",
    redrock: bool = True,
    redrock_order: str = "fibermap",
    sigma0_range: tuple[float, float] = (0.3, 0.7),
) -> DesiHealpixFiles:
    """Render ``population`` into ``coadd-`` and ``redrock-{survey}-{program}-{healpix}.fits``.

    The science targets get random positions inside ``healpix`` (nside 64,
    NESTED) and DESI-encoded TARGETIDs (> 2**53); ``n_sky`` SKY fibres
    (TARGETID bit 59, sky-subtracted noise) and ``n_unassigned`` unassigned
    fibres (negative TARGETID, OBJTYPE 'NON', all-zero flux/ivar/resolution)
    are inserted at random rows. Each arm gets its own noise realisation
    (arm-edge throughput and sky lines shape the noise); about 0.1 % of pixels
    are masked (ivar = 0, COSMIC bit).

    redrock_order: ``"fibermap"`` (REDSHIFTS row-matched to FIBERMAP, as in
        real files) or ``"shuffled"`` (a random row order, for join tests).

    Returns DesiHealpixFiles whose ``truth`` has, per science row (file
    order): targetid, source_row, ra, dec, healpix, spectype, subtype,
    z_true, z (catalogue), zerr, zwarn, deltachi2, mag_r, is_anomaly,
    anomaly_kind.
    """
    directory = Path(directory)
    n_sci = population["z_true"].size
    n = n_sci + n_sky + n_unassigned
    kinds = np.array(["TGT"] * n_sci + ["SKY"] * n_sky + ["NON"] * n_unassigned, dtype=object)
    perm = rng.permutation(n)
    objtype = kinds[perm]  # objtype[row]
    src = np.empty(n, dtype=np.int64)  # row -> index into [science..., sky..., non...]
    src[:] = perm
    sci_rows = np.flatnonzero(objtype == "TGT")
    sci_idx = src[sci_rows]  # population index per science row, in row order
    order = np.argsort(sci_idx)
    sci_rows = sci_rows[order]  # science row of population object k
    non_rows = np.flatnonzero(objtype != "TGT")

    ra, dec = points_in_healpix(healpix, n, rng)
    release = rng.choice(np.array([9010, 9011]), n)
    brickid = rng.integers(1, 600000, n)
    objid = rng.permutation(2**20)[:n]
    targetid = targetid_from_parts(objid, brickid, release, sky=(objtype == "SKY"))
    unassigned = objtype == "NON"
    targetid[unassigned] = -(rng.permutation(np.arange(1, 5000))[: unassigned.sum()] + 10000 * rng.integers(0, 10))
    spectype_rows = np.full(n, "", dtype=object)
    spectype_rows[sci_rows] = population["spectype"]
    mag_rows = np.full(n, 25.0)
    mag_rows[sci_rows] = population["mag_r"]
    fm = make_fibermap(targetid, ra, dec, objtype, rng, spectype=spectype_rows, mag_r=mag_rows)

    wave = brz_wavelength()
    model_sci = render_spectra(wave, population, lsf_sigma=0.7)
    model = np.zeros((n, wave.size), dtype=np.float32)
    model[sci_rows] = model_sci
    sigma0 = rng.uniform(*sigma0_range, n)
    sky = sky_spectrum(wave)[0]
    flux, ivar, mask = {}, {}, {}
    for a in "brz":
        sl = _arm_slice(a)
        w = wave[sl]
        sig = noise_sigma(w, sigma0, arm_edges=ARMS[a], sky=sky[sl])
        f, iv, m = add_noise(model[:, sl], sig, rng)
        f[unassigned] = 0.0
        iv[unassigned] = 0.0
        m[unassigned] = 0
        flux[a], ivar[a], mask[a] = f, iv, m
    resolution = {}
    for a in "brz":
        r = np.array(resolution_data(arm_wavelength(a), n))
        r[unassigned] = 0.0
        resolution[a] = r
    efm = make_exp_fibermap(fm, rng)
    scores = make_scores(targetid, flux, ivar)
    name = f"{survey}-{program}-{healpix}.fits"
    coadd_path = write_desi_coadd(
        directory / f"coadd-{name}", healpix=healpix, survey=survey, program=program, fibermap=fm, exp_fibermap=efm,
        scores=scores, flux=flux, ivar=ivar, mask=mask, resolution=resolution, mask_dtype=mask_dtype,
    )
    del resolution

    z_rows = np.zeros(n)
    zerr_rows = np.zeros(n)
    zwarn_rows = np.zeros(n, dtype=np.int64)
    dchi2_rows = np.zeros(n)
    st_rows = np.full(n, "GALAXY", dtype=object)
    sub_rows = np.full(n, "", dtype=object)
    z_rows[sci_rows] = population["z"]
    zerr_rows[sci_rows] = population["zerr"]
    zwarn_rows[sci_rows] = population["zwarn"]
    dchi2_rows[sci_rows] = population["deltachi2"]
    st_rows[sci_rows] = population["spectype"]
    sub_rows[sci_rows] = population["subtype"]
    zwarn_rows[objtype == "SKY"] = 1  # SKY
    zwarn_rows[unassigned] = 512  # NODATA: SPECTYPE GALAXY, Z = 0
    rr_path = None
    if redrock:
        if redrock_order not in ("fibermap", "shuffled"):
            raise ValueError("redrock_order must be 'fibermap' or 'shuffled'")
        rr_order = np.arange(n) if redrock_order == "fibermap" else rng.permutation(n)
        red = make_redshifts(targetid, z_rows, zerr_rows, zwarn_rows, st_rows, sub_rows, dchi2_rows, rng)[rr_order]
        rr_path = write_redrock(
            directory / f"redrock-{name}", healpix=healpix, survey=survey, program=program, redshifts=red,
            fibermap=fm[rr_order], exp_fibermap=efm, tsnr2=make_tsnr2(scores)[rr_order],
        )

    rows_in_order = np.sort(sci_rows)
    k_of_row = np.empty(n, dtype=np.int64)
    k_of_row[sci_rows] = np.arange(n_sci)
    k = k_of_row[rows_in_order]
    truth = {
        "targetid": targetid[rows_in_order],
        "source_row": rows_in_order.astype(np.int64),
        "ra": ra[rows_in_order],
        "dec": dec[rows_in_order],
        "healpix": np.full(rows_in_order.size, healpix, dtype=np.int64),
        "spectype": population["spectype"][k],
        "subtype": population["subtype"][k],
        "z_true": population["z_true"][k],
        "z": population["z"][k],
        "zerr": population["zerr"][k],
        "zwarn": population["zwarn"][k],
        "deltachi2": population["deltachi2"][k],
        "mag_r": population["mag_r"][k],
        "is_anomaly": population["is_anomaly"][k],
        "anomaly_kind": population["anomaly_kind"][k],
        "anomaly_strength": population.get("anomaly_strength", np.zeros(n_sci))[k],
    }
    return DesiHealpixFiles(
        coadd=coadd_path, redrock=rr_path, truth=truth, science_rows=rows_in_order,
        nonscience_rows=non_rows, targetid=targetid,
    )
