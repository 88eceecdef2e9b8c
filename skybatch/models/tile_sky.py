"""Tiles of several views (instrument + pixel grid) joined on tile id into one sky cube (pure NumPy).

A tile store keeps each view on its own pixel grid. :func:`sky_cube` turns the planes of a set of
tiles into what the encoder sees: for every tile a square sky region of ``region_arcsec`` around
the tile's WCS centre, every band resampled onto one ``size`` × ``size`` grid
(:func:`skybatch.models.tile_geometry.resample_to_region`), in a fixed band order.

- **Join on tile id**: views are matched by their ``tile_id`` values, never by row position.
  A tile id missing from a view leaves that view's bands absent for the tile.
- **WCS check**: each present plane's footprint centre comes from its WCS; the tile centre is
  the median of them. A plane whose centre is more than ``max_centre_offset_arcsec`` from it
  (``wcs-centre-mismatch``), that has no usable WCS (``no-wcs``) or covers less than
  ``min_coverage`` of the region (``outside-footprint``) is set aside, with the reason, and
  the band counts as absent for that tile.

:func:`auto_region_arcsec` picks the largest region inside every view's footprint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from skybatch.models.tile_geometry import (
    GEOMETRY_FEATURES,
    TanWCS,
    band_geometry,
    parse_tan_header,
    plane_centre,
    region_inside,
    resample_to_region,
)

__all__ = ["ViewPlanes", "sky_cube", "auto_region_arcsec", "tile_centres"]


@dataclass
class ViewPlanes:
    """The planes of one view for a run of tiles (as read from a tile store).

    tile_id (n,) str; band_key (Bv,) str; present (n, Bv) bool; wcs (n, Bv) FITS header strings;
    image, noise (n, Bv, H, W) float32 (flux and 1σ RMS per native pixel).
    """

    tile_id: np.ndarray
    band_key: Sequence[str]
    present: np.ndarray
    wcs: np.ndarray
    image: np.ndarray
    noise: np.ndarray


def _parse(header: str, cache: dict[str, TanWCS | None]) -> TanWCS | None:
    if header not in cache:
        try:
            cache[header] = parse_tan_header(str(header))
        except (ValueError, KeyError, TypeError):
            cache[header] = None
    return cache[header]


def _sep_arcsec(a: tuple[float, float], b: tuple[float, float]) -> float:
    dra = (a[0] - b[0] + 180.0) % 360.0 - 180.0
    return 3600.0 * math.hypot(dra * math.cos(math.radians(0.5 * (a[1] + b[1]))), a[1] - b[1])


def tile_centres(views: Mapping[str, ViewPlanes], tile_ids: Sequence[str]) -> dict[str, list]:
    """Per tile id, the (view, band index, row, centre, wcs) of every present plane with a usable WCS,
    plus ``"_no_wcs"``: (tile id, band key) of present planes without one."""
    cache: dict[str, TanWCS | None] = {}
    out: dict[str, list] = {str(t): [] for t in tile_ids}
    bad: list[tuple[str, str]] = []
    for name, v in views.items():
        rows = {str(t): i for i, t in enumerate(v.tile_id)}
        shape = v.image.shape[-2:]
        for t in out:
            r = rows.get(t)
            if r is None:
                continue
            for j, key in enumerate(v.band_key):
                if not v.present[r, j]:
                    continue
                w = _parse(v.wcs[r, j], cache)
                if w is None:
                    bad.append((t, str(key)))
                    continue
                out[t].append((name, j, r, plane_centre(w, shape), w))
    out["_no_wcs"] = bad  # type: ignore[assignment]
    return out


def sky_cube(
    views: Mapping[str, ViewPlanes],
    bands: Sequence[str],
    region_arcsec: float,
    size: int,
    *,
    tile_ids: Sequence[str] | None = None,
    max_centre_offset_arcsec: float = 1.0,
    min_coverage: float = 0.5,
) -> dict[str, np.ndarray | list]:
    """The sky cube of a run of tiles: every band of every view on one sky grid.

    Parameters
    ----------
    views:
        View name -> :class:`ViewPlanes` (any tile order; joined on tile id).
    bands:
        Band keys in output order (e.g. the encoder's bands); bands no view has stay absent.
    region_arcsec, size:
        Side of the sky region (arcsec) and of the output grid (px); grid scale region/size.
    tile_ids:
        Output tile order (default: the first view's tile ids).
    max_centre_offset_arcsec, min_coverage:
        The WCS checks (module doc).

    Returns
    -------
    dict with ``image``, ``noise`` (n, B, size, size) float32 (image 0 and noise inf where
    absent or outside the footprint), ``present`` (n, B) bool, ``geometry`` (n, B, 3) float32,
    ``centre`` (n, 2) float64 (ra, dec in degrees; NaN when no plane has a WCS), ``tile_id``
    (n,) str, ``set_aside``: list of (tile id, band key, reason).
    """
    if tile_ids is None:
        tile_ids = [str(t) for t in next(iter(views.values())).tile_id]
    tile_ids = [str(t) for t in tile_ids]
    scale = region_arcsec / size
    n, nb = len(tile_ids), len(bands)
    bidx = {b: i for i, b in enumerate(bands)}
    image = np.zeros((n, nb, size, size), np.float32)
    noise = np.full((n, nb, size, size), np.inf, np.float32)
    present = np.zeros((n, nb), bool)
    geometry = np.zeros((n, nb, GEOMETRY_FEATURES), np.float32)
    centre = np.full((n, 2), np.nan)
    set_aside: list[tuple[str, str, str]] = []
    planes = tile_centres(views, tile_ids)
    set_aside += [(t, b, "no-wcs") for t, b in planes.pop("_no_wcs")]  # type: ignore[arg-type]
    for i, t in enumerate(tile_ids):
        found = planes[t]
        if not found:
            continue
        cs = np.array([p[3] for p in found])
        ra0 = cs[0, 0]
        ras = (cs[:, 0] - ra0 + 180.0) % 360.0 - 180.0 + ra0
        c = (float(np.median(ras)) % 360.0, float(np.median(cs[:, 1])))
        centre[i] = c
        for name, j, r, pc, w in found:
            v = views[name]
            key = str(v.band_key[j])
            if key not in bidx:
                continue
            if _sep_arcsec(pc, c) > max_centre_offset_arcsec:
                set_aside.append((t, key, "wcs-centre-mismatch"))
                continue
            if region_inside(w, v.image.shape[-2:], c, region_arcsec) < min_coverage:
                set_aside.append((t, key, "outside-footprint"))
                continue
            b = bidx[key]
            image[i, b], noise[i, b] = resample_to_region(v.image[r, j], v.noise[r, j], w, c, size, scale)
            present[i, b] = bool(np.isfinite(noise[i, b]).any())
            geometry[i, b] = band_geometry(w, c, scale)
    return {"image": image, "noise": noise, "present": present, "geometry": geometry, "centre": centre,
            "tile_id": np.array(tile_ids), "set_aside": set_aside}


def auto_region_arcsec(views: Mapping[str, ViewPlanes], *, quantile: float = 0.1, step: float = 0.1) -> float:
    """Side (arcsec) of the largest square region around the tile centres inside every view's footprint.

    For each tile, the smallest half-extent over its present planes (distance from the tile
    centre to the nearest image edge, in arcsec, along the image axes); the ``quantile`` over
    tiles, doubled and rounded down to ``step``.

    Raises
    ------
    ValueError
        No plane with a usable WCS.
    """
    tile_ids = [str(t) for t in next(iter(views.values())).tile_id]
    planes = tile_centres(views, tile_ids)
    planes.pop("_no_wcs")
    half = []
    for t in tile_ids:
        found = planes[t]
        if not found:
            continue
        cs = np.array([p[3] for p in found])
        c = (float(np.median(cs[:, 0])), float(np.median(cs[:, 1])))
        h_t = np.inf
        for name, _, _, _, w in found:
            hh, ww = views[name].image.shape[-2:]
            x, y = w.sky_to_pixel(np.array(c[0]), np.array(c[1]))
            edge = min(float(x) + 0.5, ww - 0.5 - float(x), float(y) + 0.5, hh - 0.5 - float(y))
            h_t = min(h_t, edge * w.pixel_scale_arcsec)
        half.append(h_t)
    if not half:
        raise ValueError("no tile plane has a usable celestial WCS; cannot place the sky region "
                         "(give --region-arcsec, and check the sources' WCS headers)")
    side = 2.0 * float(np.quantile(half, quantile))
    return max(step, math.floor(side / step + 1e-6) * step)
