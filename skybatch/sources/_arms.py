"""Combine spectrograph arms straight from FITS bytes into a chunk's buffers.

:func:`combine_arms_into` gives, bit for bit, what cleaning each arm
(:func:`~skybatch.sources._common.clean_nonfinite`) and then
:func:`skybatch.spectra.camera_coadd.coadd_cameras` give, but writes into
preallocated (n, n_wave) rows of the chunk being built: pixels covered by
one arm are byte-swapped from the read buffer into place and cleaned there
(one copy), and only the overlap pixels (177 of DESI's 7781) go through
float64 temporaries, in the same order of operations as ``coadd_cameras``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skybatch.spectra.camera_coadd import arm_runs

from ._common import clean_nonfinite

__all__ = ["combine_arms_into"]


def _as_u32(raw: np.ndarray) -> np.ndarray:
    """A 32-bit integer array reinterpreted bit for bit as unsigned (keeping its byte order)."""
    bo = raw.dtype.byteorder
    return raw.view(np.dtype("u4").newbyteorder(bo if bo in "<>" else "="))


def combine_arms_into(
    flux_arms: Sequence[np.ndarray],
    ivar_arms: Sequence[np.ndarray],
    mask_arms: Sequence[np.ndarray],
    offsets: Sequence[int],
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    *,
    nodata_bit: int,
    mask_xor: Sequence[int] | None = None,
) -> int:
    """Clean and combine arms into ``flux``/``ivar``/``mask`` (each (n, n_wave)), in place.

    flux_arms / ivar_arms: per arm (n, n_k) floats in any byte order (e.g. big-endian views of
        the FITS bytes), 1e-17 erg/s/cm^2/Angstrom and its inverse variance.
    mask_arms: per arm (n, n_k) 32-bit integers, reinterpreted as uint32 bit for bit, then
        XOR-ed with ``mask_xor[k]`` (2**31 for the FITS unsigned convention, BZERO = 2**31).
    offsets: first output pixel of each arm.
    flux / ivar (float32) and mask (uint32): the output rows, written whole.
    nodata_bit: NaN/inf (or negative ivar) pixels get flux = ivar = 0 and this bit, before
        combining; output pixels no arm covers get this bit too.

    Returns the number of arm pixels cleaned (as the per-arm cleaning counts them).
    """
    n_wave = flux.shape[1]
    xors = list(mask_xor) if mask_xor is not None else [0] * len(flux_arms)
    n_bad = 0

    def arm_mask(k: int, sl: slice) -> np.ndarray:
        m = np.array(_as_u32(mask_arms[k])[:, sl], dtype=np.uint32)
        if xors[k]:
            m ^= np.uint32(xors[k])
        return m

    for a, b, arms in arm_runs(offsets, [f.shape[1] for f in flux_arms], n_wave):
        f_out, i_out, m_out = flux[:, a:b], ivar[:, a:b], mask[:, a:b]
        if not arms:
            f_out[...] = 0.0
            i_out[...] = 0.0
            m_out[...] = np.uint32(1 << int(nodata_bit))
            continue
        if len(arms) == 1:  # copied as they are (byte-swapped into place), cleaned in place
            k = arms[0]
            sl = slice(a - int(offsets[k]), b - int(offsets[k]))
            f_out[...] = flux_arms[k][:, sl]
            i_out[...] = ivar_arms[k][:, sl]
            m_out[...] = _as_u32(mask_arms[k])[:, sl]
            if xors[k]:
                m_out ^= np.uint32(xors[k])
            n_bad += clean_nonfinite(f_out, i_out, m_out, nodata_bit)
            continue
        # overlap: inverse-variance weighted mean in float64, arms in wavelength order (as coadd_cameras)
        fsum = np.zeros((flux.shape[0], b - a), dtype=np.float64)
        isum = np.zeros((flux.shape[0], b - a), dtype=np.float64)
        msum = np.zeros((flux.shape[0], b - a), dtype=np.uint32)
        for k in arms:
            sl = slice(a - int(offsets[k]), b - int(offsets[k]))
            fk = np.array(flux_arms[k][:, sl], dtype=np.float32)
            ik = np.array(ivar_arms[k][:, sl], dtype=np.float32)
            mk = arm_mask(k, sl)
            n_bad += clean_nonfinite(fk, ik, mk, nodata_bit)
            iv = ik.astype(np.float64)
            fsum = fsum + iv * fk.astype(np.float64)
            isum = isum + iv
            msum = msum | mk
        f_out[...] = (fsum / (isum + (isum == 0.0).astype(np.float64))).astype(np.float32)
        i_out[...] = isum.astype(np.float32)
        m_out[...] = msum
    if len(flux_arms) > 1:
        np.putmask(mask, ivar > 0, np.uint32(0))
    return n_bad
