"""Combine spectrograph arms (cameras) onto one wavelength grid.

DESI spectra come in three arms, b (3600–5800 Å), r (5760–7620 Å) and
z (7520–9824 Å), all on one 0.8 Å lattice anchored at 3600 Å, so each arm
maps onto the 7781-pixel brz grid by an integer pixel offset (0, 2700, 4900).
The arms overlap at 5760–5800 Å (51 px) and 7520–7620 Å (126 px).

:func:`coadd_cameras` reproduces the rules of
``desispec.coaddition.coadd_cameras`` (desispec 0.70):

* a pixel covered by one arm only is **copied**: flux, ivar and mask as they
  are (also when ivar = 0; the flux is then kept as it is);
* a pixel covered by several arms gets the inverse-variance weighted mean
  ``flux = sum(ivar_k * flux_k) / sum(ivar_k)`` (0 when ``sum(ivar_k) == 0``),
  ``ivar = sum(ivar_k)`` and ``mask = OR(mask_k)``;
* finally, with more than one arm, every pixel with ivar > 0 gets mask 0
  (mask = 0 means good). With a single arm the arrays are returned as given.

Sums are taken in float64 in increasing-wavelength arm order, as desispec
does, and the result is cast to ``out_dtype``.

Pure array code: no I/O; runs on NumPy and CuPy through
:func:`skybatch.xp.get_namespace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skybatch.xp import get_namespace

__all__ = ["coadd_cameras", "arm_offsets"]


def arm_offsets(arm_starts: Sequence[float], grid_start: float, grid_step: float, *, tol: float = 1e-3) -> list[int]:
    """Integer pixel offset of each arm's first wavelength on a linear grid.

    arm_starts: first wavelength of each arm, Angstrom.
    grid_start, grid_step: the combined grid (Angstrom).
    tol: largest allowed distance from the lattice, in pixels.

    Raises ValueError if an arm does not start on the grid's lattice.
    """
    out = []
    for w0 in arm_starts:
        x = (float(w0) - grid_start) / grid_step
        k = int(round(x))
        if abs(x - k) > tol:
            raise ValueError(f"arm starting at {w0} Å is {x - k:+.4f} px off the {grid_step} Å lattice anchored at {grid_start} Å")
        out.append(k)
    return out


def coadd_cameras(
    flux_arms: Sequence[Any],
    ivar_arms: Sequence[Any],
    mask_arms: Sequence[Any] | None,
    offsets: Sequence[int],
    n_wave: int,
    *,
    nodata_bit: int | None = None,
    out_dtype: Any = None,
) -> tuple[Any, Any, Any]:
    """Combine per-arm spectra onto one grid, as desispec's ``coadd_cameras``.

    Parameters
    ----------
    flux_arms: one array per arm, shape (n_spec, n_k), flux
        (1e-17 erg/s/cm^2/Å for DESI). NaN/inf must be cleaned beforehand.
    ivar_arms: same shapes, inverse variance of flux (0 = no information).
    mask_arms: same shapes, unsigned bit masks (0 = good), or None for all 0.
    offsets: index of each arm's first pixel on the output grid.
    n_wave: number of output pixels.
    nodata_bit: if given, output pixels that no arm covers get this bit set
        in the mask (they always get flux = 0, ivar = 0).
    out_dtype: dtype of the returned flux and ivar (default float32).

    Returns
    -------
    flux, ivar: shape (n_spec, n_wave), ``out_dtype``.
    mask: shape (n_spec, n_wave), uint32.
    """
    if not (len(flux_arms) == len(ivar_arms) == len(offsets)) or (mask_arms is not None and len(mask_arms) != len(flux_arms)):
        raise ValueError("flux_arms, ivar_arms, mask_arms and offsets need one entry per arm")
    if len(flux_arms) == 0:
        raise ValueError("coadd_cameras needs at least one arm")
    xp = get_namespace(*flux_arms, *ivar_arms, *(mask_arms or []))
    out_dtype = xp.float32 if out_dtype is None else out_dtype
    n_spec = flux_arms[0].shape[0]
    for k, (f, iv, off) in enumerate(zip(flux_arms, ivar_arms, offsets)):
        if f.shape != iv.shape or f.shape[0] != n_spec or (mask_arms is not None and mask_arms[k].shape != f.shape):
            raise ValueError(f"arm {k}: flux {f.shape}, ivar {iv.shape} and mask must have the same shape with {n_spec} spectra")
        if off < 0 or off + f.shape[1] > n_wave:
            raise ValueError(f"arm {k} (offset {off}, {f.shape[1]} px) does not fit in the {n_wave}-pixel output grid")

    flux = xp.zeros((n_spec, n_wave), dtype=out_dtype)
    ivar = xp.zeros((n_spec, n_wave), dtype=out_dtype)
    mask = xp.zeros((n_spec, n_wave), dtype=xp.uint32)
    for a, b, arms in arm_runs(offsets, [f.shape[1] for f in flux_arms], n_wave):
        if not arms:  # no arm covers these pixels
            if nodata_bit is not None:
                mask[:, a:b] = xp.full((n_spec, b - a), 1 << int(nodata_bit), dtype=xp.uint32)
            continue
        if len(arms) == 1:  # copied as they are
            k = arms[0]
            sl = slice(a - int(offsets[k]), b - int(offsets[k]))
            flux[:, a:b] = xp.astype(flux_arms[k][:, sl], out_dtype)
            ivar[:, a:b] = xp.astype(ivar_arms[k][:, sl], out_dtype)
            if mask_arms is not None:
                mask[:, a:b] = xp.astype(mask_arms[k][:, sl], xp.uint32)
            continue
        # overlap: inverse-variance weighted mean, accumulated in float64 in wavelength order
        fsum = xp.zeros((n_spec, b - a), dtype=xp.float64)
        isum = xp.zeros((n_spec, b - a), dtype=xp.float64)
        msum = xp.zeros((n_spec, b - a), dtype=xp.uint32)
        for k in arms:
            sl = slice(a - int(offsets[k]), b - int(offsets[k]))
            iv = xp.astype(ivar_arms[k][:, sl], xp.float64)
            fsum = fsum + iv * xp.astype(flux_arms[k][:, sl], xp.float64)
            isum = isum + iv
            if mask_arms is not None:
                msum = msum | xp.astype(mask_arms[k][:, sl], xp.uint32)
        flux[:, a:b] = xp.astype(fsum / (isum + xp.astype(isum == 0.0, xp.float64)), out_dtype)
        ivar[:, a:b] = xp.astype(isum, out_dtype)
        mask[:, a:b] = msum
    if len(flux_arms) > 1:
        mask = xp.where(ivar > 0, xp.zeros_like(mask), mask)
    return flux, ivar, mask


def arm_runs(offsets: Sequence[int], widths: Sequence[int], n_wave: int) -> list[tuple[int, int, list[int]]]:
    """Split [0, n_wave) into runs of pixels covered by the same arms (arms in wavelength order).

    ``offsets``/``widths``: each arm's first output pixel and its number of pixels. Returns
    (first pixel, stop pixel, arm indices) per run; a run no arm covers has no indices.
    """
    order = sorted(range(len(offsets)), key=lambda k: offsets[k])
    spans = [(int(offsets[k]), int(offsets[k]) + int(widths[k]), k) for k in order]
    edges = sorted({0, n_wave, *[a for a, _, _ in spans], *[b for _, b, _ in spans]})
    out: list[tuple[int, int, list[int]]] = []
    for a, b in zip(edges[:-1], edges[1:]):
        if a >= n_wave or b <= 0 or a == b:
            continue
        arms = [k for (s, e, k) in spans if s <= a and b <= e]
        if out and out[-1][2] == arms and out[-1][1] == a:
            out[-1] = (out[-1][0], b, arms)
        else:
            out.append((a, b, arms))
    return out
