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

from .healpix import DesiHealpixFiles, write_desi_healpix
from .layout import (
    ARMS,
    EXP_FIBERMAP_DTYPE,
    FIBERMAP_DTYPE,
    REDSHIFTS_DTYPE,
    SCORES_DTYPE,
    SKY_TARGETID_BIT,
    TSNR2_DTYPE,
    arm_wavelength,
    brz_wavelength,
    targetid_from_parts,
)
from .tables import make_exp_fibermap, make_fibermap, make_redshifts, make_scores, make_tsnr2, points_in_healpix
from .write import resolution_data, write_desi_coadd, write_redrock

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
