"""The DESI iron layout: arm wavelength grids, TARGETIDs, and the binary-table dtypes
(FIBERMAP, EXP_FIBERMAP, SCORES, REDSHIFTS, TSNR2) of ``formats.md`` §1–2.
"""

from __future__ import annotations

import numpy as np

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
