"""Fixed-size cutout triplets (science, reference, difference) around candidates."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np

from skybatch.xp import get_namespace

Array = Any

__all__ = ["cutout_triplets", "cutouts"]


def cutouts(image: Array, x: Sequence[float], y: Sequence[float], size: int = 31) -> Array:
    """(n, size, size) cutouts of ``image`` centred on the pixels nearest (x, y).

    ``x`` (column) and ``y`` (row) are 0-based with pixel centres on integers; the
    cutout centre is ``[size//2, size//2]``. Parts outside the image are NaN. Same
    namespace and float dtype as ``image`` (integers become float32).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size={size}: cutouts need an odd size so the candidate sits on the centre pixel")
    xp = get_namespace(image)
    img = xp.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx); got shape {tuple(img.shape)}")
    dt = img.dtype if xp.isdtype(img.dtype, "real floating") else xp.float32
    ny, nx = img.shape
    cx = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
    cy = np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64)
    if cx.shape != cy.shape or cx.ndim != 1:
        raise ValueError("x and y must be 1-D sequences of the same length")
    h = size // 2
    out = xp.full((cx.size, size, size), float("nan"), dtype=dt)
    for k in range(cx.size):
        y0, y1 = int(cy[k]) - h, int(cy[k]) + h + 1
        x0, x1 = int(cx[k]) - h, int(cx[k]) + h + 1
        sy0, sy1 = max(y0, 0), min(y1, ny)
        sx0, sx1 = max(x0, 0), min(x1, nx)
        if sy0 >= sy1 or sx0 >= sx1:
            continue
        patch = img[sy0:sy1, sx0:sx1]
        if patch.dtype != dt:
            patch = xp.astype(patch, dt)
        out[k, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = patch
    return out


def cutout_triplets(
    science: Array,
    reference: Array,
    difference: Array,
    x: Sequence[float],
    y: Sequence[float],
    size: int = 31,
) -> Array:
    """(n, 3, size, size) cutouts: index 0 science, 1 reference, 2 difference.

    The three images must share one pixel grid (align the reference first). Parts
    outside the image are NaN. See :func:`cutouts` for conventions.
    """
    xp = get_namespace(science, reference, difference)
    shapes = {tuple(a.shape) for a in (science, reference, difference)}
    if len(shapes) != 1:
        raise ValueError(f"science, reference and difference differ in shape: {sorted(shapes)}")
    parts = [cutouts(a, x, y, size) for a in (science, reference, difference)]
    dt = parts[0].dtype
    parts = [p if p.dtype == dt else xp.astype(p, dt) for p in parts]
    return xp.stack(parts, axis=1)
