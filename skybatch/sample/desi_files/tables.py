"""Generated DESI tables: sky positions in a healpix pixel, FIBERMAP, EXP_FIBERMAP, SCORES,
TSNR2 and redrock REDSHIFTS rows for a population of targets.
"""

from __future__ import annotations

import numpy as np

from .layout import _STEP, _TSNR_KINDS, EXP_FIBERMAP_DTYPE, FIBERMAP_DTYPE, REDSHIFTS_DTYPE, SCORES_DTYPE, TSNR2_DTYPE


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
    for name in TSNR2_DTYPE.names or ():  # a structured dtype: names is never None
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
