"""Writing DESI ``coadd-*.fits`` and ``redrock-*.fits`` files: the iron primary header, the HDUs
in iron order, per-arm resolution data, CHECKSUM / DATASUM on every HDU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .layout import arm_wavelength

_FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
_IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"


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
    for key, v in (extra or {}).items():
        h[key] = v
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
