"""Bad pixels for differencing: wide bad regions versus isolated holes, and filling the holes.

A survey image has two kinds of bad pixels. *Wide* regions (NaN borders, the part of the
science grid the resampled reference does not cover, masked blocks) cut sources: residuals
reach a P_D width from their edge, so detection keeps that far away. *Holes* (isolated bad
pixels, ``BLANK`` pixels, cosmic-ray tracks, bad columns) are a few pixels across; zeroing them
before ZOGY's convolutions would punch a PSF-sized negative residual into every star they touch,
and growing hundreds of them by a P_D width would mask most of the image. Holes are instead
filled with the mean of their good neighbours (:func:`fill_holes`) and kept out of detection
only over :data:`HOLE_GROW` px (:func:`grow_bad`). Pure array functions (NumPy or CuPy).
"""

from __future__ import annotations

from typing import Any

from skybatch.imaging._util import box_sum, dilate
from skybatch.xp import get_namespace

Array = Any

__all__ = ["HOLE_WIDTH", "HOLE_GROW", "split_bad", "fill_holes", "fill_error", "grow_bad"]

#: Bad regions narrower than this (px, in either direction) are holes, filled before ZOGY.
HOLE_WIDTH = 7
#: Detection keeps this far (px) from a hole: filled, it leaves no PSF-sized residual, and a
#: wider margin around the few hundred holes of a survey image would cost a large part of it.
HOLE_GROW = 2


def split_bad(bad: Array, min_width: int) -> tuple[Array, Array]:
    """(wide, holes): boolean (ny, nx) maps splitting ``bad`` (boolean (ny, nx), True = bad).

    wide: the bad pixels in regions at least ``min_width`` px across in both directions (a
    morphological opening by a ``min_width`` square; the image border counts as bad, so a NaN
    border of any width is wide); holes: the rest of ``bad``.
    """
    xp = get_namespace(bad)
    r = max((int(min_width) - 1) // 2, 0)
    if r == 0:
        return bad, xp.zeros_like(bad)
    core = ~dilate(xp, ~bad, r)  # erosion: centres of the wide regions
    wide = dilate(xp, core, r) & bad
    return wide, bad & ~wide


def fill_holes(image: Array, holes: Array, bad: Array, *, passes: int = 3) -> Array:
    """``image`` (float (ny, nx)) with the ``holes`` pixels replaced by the mean of their good
    3x3 neighbours (not ``bad``), repeated ``passes`` times so holes a few pixels across fill
    from their rim inwards; hole pixels still without a good neighbour become 0. Other bad
    pixels are left as they are. Returns a new array.
    """
    xp = get_namespace(image, holes, bad)
    out = xp.where(bad, 0.0, image).astype(image.dtype)
    known = ~bad
    todo = holes
    for _ in range(max(int(passes), 1)):
        w = box_sum(xp, known.astype(image.dtype), 1)
        s = box_sum(xp, xp.where(known, out, 0.0).astype(image.dtype), 1)
        now = todo & (w > 0)
        out = xp.where(now, s / xp.where(w > 0, w, 1.0), out)
        known = known | now
        todo = todo & ~now
    return out


def grow_bad(bad: Array, wide: int, narrow: int, *, min_width: int = HOLE_WIDTH) -> Array:
    """Bad pixels grown into the region where detections are not trusted, boolean (ny, nx).

    bad: boolean (ny, nx). wide: growth (px, square) of the regions at least ``min_width`` px
    across (:func:`split_bad`); narrow: growth of the holes.
    """
    xp = get_namespace(bad)
    w, h = split_bad(bad, min_width)
    return dilate(xp, w, int(wide)) | dilate(xp, h, int(narrow))


#: Offsets of the 3x3 ring and of the 5x5 border around a pixel (dy, dx).
_RING1 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_RING2 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2]


def fill_error(filled: Array, holes: Array, wide: Array) -> Array:
    """Estimated error of :func:`fill_holes` at each hole pixel, float (ny, nx), image units (0 off holes).

    A 3x3 mean misses a peaked profile's curvature: for a Gaussian core of FWHM 3 px the filled
    value is 0.37 of the peak too low. The estimate is |m1 - m2|, the mean of the filled image
    over the pixel's 3x3 ring (m1) minus that over its 5x5 border (m2), pixels in ``wide`` (boolean
    (ny, nx), zeroed regions) left out: 0.44 of a FWHM-3 peak (an upper bound of the true 0.37,
    twice the true error for wider cores), 0.43 sigma on pure noise.
    """
    xp = get_namespace(filled, holes, wide)
    out = xp.zeros(tuple(filled.shape), dtype=filled.dtype)
    iy, ix = xp.nonzero(holes)
    if int(iy.shape[0]) == 0:
        return out
    p = xp.pad(filled, 2)
    ok = xp.pad(~wide, 2, constant_values=False)
    means = []
    for ring in (_RING1, _RING2):
        s = xp.zeros(iy.shape, dtype=filled.dtype)
        w = xp.zeros(iy.shape, dtype=filled.dtype)
        for dy, dx in ring:
            k = ok[iy + 2 + dy, ix + 2 + dx]
            s = s + xp.where(k, p[iy + 2 + dy, ix + 2 + dx], 0.0)
            w = w + k
        means.append(s / xp.where(w > 0, w, 1.0))
    out[iy, ix] = xp.abs(means[0] - means[1]).astype(filled.dtype)
    return out
