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

from skybatch.imaging._util import dilate
from skybatch.xp import get_namespace

Array = Any

__all__ = ["HOLE_WIDTH", "HOLE_GROW", "split_bad", "fill_holes", "grow_bad"]

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


def _box_sum(xp: Any, a: Array, r: int) -> Array:
    ny, nx = a.shape
    p = xp.pad(a, r)
    out = xp.zeros_like(a)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out = out + p[dy : dy + ny, dx : dx + nx]
    return out


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
        w = _box_sum(xp, known.astype(image.dtype), 1)
        s = _box_sum(xp, xp.where(known, out, 0.0).astype(image.dtype), 1)
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
