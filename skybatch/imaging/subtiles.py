"""Spatially varying PSFs: ZOGY on overlapping sub-tiles, interiors stitched.

:func:`plan_subtiles` cuts an image into a grid of interiors that tile it
exactly, each grown by ``overlap`` pixels on every side (clipped at the image
border) into the window that is actually differenced. ZOGY runs on every window
with that window's own PSFs; only the interior is kept, so the circular-
convolution wrap at window edges never reaches the output as long as
``overlap`` exceeds the kernel half-width (a few PSF FWHM). The pipeline uses
the same plan to make one Dask task per sub-tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable


from skybatch.imaging.zogy import ZogyResult, zogy
from skybatch.imaging.zogy.core import MAP_NAMES, ZogyMaps
from skybatch.xp import get_namespace

Array = Any

__all__ = ["SubTile", "plan_subtiles", "zogy_subtiles", "StitchedZogy"]


@dataclass(frozen=True)
class SubTile:
    """One sub-tile of an image.

    Attributes
    ----------
    index : (row, column) in the sub-tile grid.
    window : (y0, y1, x0, x1) of the differenced window in image pixels (half-open).
    interior : (y0, y1, x0, x1) of the kept interior in image pixels.
    """

    index: tuple[int, int]
    window: tuple[int, int, int, int]
    interior: tuple[int, int, int, int]

    @property
    def window_slices(self) -> tuple[slice, slice]:
        """Slices selecting the window from the full image."""
        y0, y1, x0, x1 = self.window
        return slice(y0, y1), slice(x0, x1)

    @property
    def interior_slices(self) -> tuple[slice, slice]:
        """Slices selecting the interior from the full image."""
        y0, y1, x0, x1 = self.interior
        return slice(y0, y1), slice(x0, x1)

    @property
    def interior_in_window(self) -> tuple[slice, slice]:
        """Slices selecting the interior from the window's own arrays."""
        y0, y1, x0, x1 = self.interior
        wy0, _, wx0, _ = self.window
        return slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0)

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) centre of the interior in image pixels (for PSF look-up)."""
        y0, y1, x0, x1 = self.interior
        return (0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1))


def plan_subtiles(shape: tuple[int, int], tile: int = 512, overlap: int = 64) -> list[SubTile]:
    """Plan sub-tile windows for an image.

    Parameters
    ----------
    shape : (ny, nx) of the image.
    tile : target interior size (px). The number of tiles per axis is
        ``ceil(n / tile)``; interiors are then as equal as possible (sizes differ by at
        most one pixel), so no sliver tiles appear.
    overlap : pixels added on each side of an interior to form its window (clipped at
        the image border). Use more than the ZOGY kernel half-width (~3 FWHM of the
        broader PSF plus the PSF stamp half-width).

    Returns
    -------
    list of :class:`SubTile` in row-major order; the interiors partition the image.
    """
    ny, nx = int(shape[0]), int(shape[1])
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile={tile}, overlap={overlap}: need tile >= 1 and overlap >= 0")
    nty, ntx = max(1, math.ceil(ny / tile)), max(1, math.ceil(nx / tile))
    ey = [round(i * ny / nty) for i in range(nty + 1)]
    ex = [round(j * nx / ntx) for j in range(ntx + 1)]
    out = []
    for i in range(nty):
        for j in range(ntx):
            interior = (ey[i], ey[i + 1], ex[j], ex[j + 1])
            window = (
                max(0, ey[i] - overlap), min(ny, ey[i + 1] + overlap),
                max(0, ex[j] - overlap), min(nx, ex[j + 1] + overlap),
            )
            out.append(SubTile((i, j), window, interior))
    return out


@dataclass(frozen=True)
class StitchedZogy(ZogyMaps):
    """ZOGY maps stitched from sub-tiles (each (ny, nx)), plus per-tile details.

    ``tiles`` lists (SubTile, ZogyResult-without-maps dict: F_D, F_S, flux_ratio, P_D).
    """

    tiles: list
    bad: Array | None = None


def zogy_subtiles(
    new: Array,
    ref: Array,
    psfs: Callable[[SubTile], tuple[Array, Array]],
    new_sigma: float | Array,
    ref_sigma: float | Array,
    flux_ratio: float | None = None,
    *,
    tile: int = 512,
    overlap: int = 64,
    new_var: Array | None = None,
    ref_var: Array | None = None,
    **zogy_kwargs: Any,
) -> StitchedZogy:
    """Run :func:`~skybatch.imaging.zogy.zogy` per sub-tile with per-tile PSFs and stitch.

    Parameters
    ----------
    new, ref : (ny, nx) registered, background-subtracted images.
    psfs : callable ``psfs(subtile) -> (new_psf, ref_psf)`` giving the PSF stamps valid
        in that sub-tile (e.g. evaluated at ``subtile.centre`` from a PSF model, or
        estimated from the window with :func:`~skybatch.imaging.psf.estimate_psf`).
    new_sigma, ref_sigma : scalars or (ny, nx) maps (maps are cut per window).
    flux_ratio : one value for the whole image; ``None`` fits it per tile (fit it once on
        the full image instead when tiles have few stars).
    tile, overlap : see :func:`plan_subtiles`.
    new_var, ref_var : optional (ny, nx) variance maps (cut per window).
    **zogy_kwargs : passed on (gains, astrometric_sigma, dtype, fft_workers, mask...;
        a ``mask`` map is cut per window).

    Returns
    -------
    StitchedZogy; its ``P_D`` is the P_D of the tile nearest the image centre.
    """
    xp = get_namespace(new, ref)
    ny, nx = new.shape
    plan = plan_subtiles((ny, nx), tile, overlap)
    maps: dict[str, Any] = dict.fromkeys(MAP_NAMES)
    bad_full = None
    tiles = []
    centre_tile, best = None, math.inf

    def cut(a: Any, sl: tuple[slice, slice]) -> Any:
        if a is None or isinstance(a, (int, float)) or getattr(a, "ndim", 0) < 2:
            return a
        return a[sl]

    for st in plan:
        ws = st.window_slices
        pn, pr = psfs(st)
        kw = dict(zogy_kwargs)
        if "mask" in kw:
            kw["mask"] = cut(kw["mask"], ws)
        res: ZogyResult = zogy(
            new[ws], ref[ws], pn, pr, cut(new_sigma, ws), cut(ref_sigma, ws), flux_ratio,
            new_var=cut(new_var, ws), ref_var=cut(ref_var, ws), **kw,
        )
        ins, iw = st.interior_slices, st.interior_in_window
        for k in maps:
            part = getattr(res, k)
            if maps[k] is None:
                maps[k] = xp.zeros((ny, nx), dtype=part.dtype)
            maps[k][ins] = part[iw]
        if res.bad is not None:
            if bad_full is None:
                bad_full = xp.zeros((ny, nx), dtype=xp.bool)
            bad_full[ins] = res.bad[iw]
        cx, cy = st.centre
        d = (cx - nx / 2) ** 2 + (cy - ny / 2) ** 2
        if d < best:
            best, centre_tile = d, res.P_D
        tiles.append((st, {"F_D": res.F_D, "F_S": res.F_S, "flux_ratio": res.flux_ratio, "P_D": res.P_D}))
    return StitchedZogy(maps["D"], maps["S"], maps["S_corr"], maps["F_psf"], maps["F_psf_err"],
                        centre_tile, tiles, bad_full)
