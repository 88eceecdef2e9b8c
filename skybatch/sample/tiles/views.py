"""Tiles on the surveys' real pixel grids: one :class:`SurveyViews` view per (instrument, pixel scale)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .render import MultiBandTiles

#: The surveys' real pixel grids (arcsec/px): Rubin 0.2, Euclid VIS 0.1, Euclid NISP Y J H 0.3.
REAL_PIXEL_SCALES: dict[str, float] = {
    "rubin_u": 0.2, "rubin_g": 0.2, "rubin_r": 0.2, "rubin_i": 0.2, "rubin_z": 0.2, "rubin_y": 0.2,
    "euclid_vis": 0.1, "euclid_y": 0.3, "euclid_j": 0.3, "euclid_h": 0.3,
}  # fmt: skip


@dataclass(frozen=True)
class SurveyViews:
    """The same generated tiles seen on several pixel grids: one :class:`MultiBandTiles` per view.

    ``views``: view name (``"rubin"``, ``"euclid_vis"``, ``"euclid_nisp"``; else
    ``"<instrument>_<scale>"``) -> tiles of that view's bands on its own grid. Every view
    covers the same sky (same ``tile_id`` and ``center_radec``); sources sit at the same sky
    positions, so their pixel positions differ by the ratio of the pixel scales.
    """

    views: dict[str, MultiBandTiles]

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(b for v in self.views.values() for b in v.bands)

    @property
    def n_tiles(self) -> int:
        return next(iter(self.views.values())).n_tiles

    def band_view(self, band: str) -> tuple[MultiBandTiles, int]:
        """(view, band index in that view) of ``band``."""
        for v in self.views.values():
            if band in v.bands:
                return v, v.bands.index(band)
        raise KeyError(f"band {band!r} not in these views; bands are {list(self.bands)}")

    def subset(self, rows: np.ndarray) -> SurveyViews:
        """The same views restricted to tile rows ``rows`` (e.g. a held-out split)."""
        rows = np.asarray(rows)
        out = {}
        for name, v in self.views.items():
            keep = np.isin(v.sources["tile"], rows)
            remap = np.full(v.n_tiles, -1)
            remap[rows] = np.arange(rows.size)
            src = {k: (a[keep] if np.ndim(a) else a) for k, a in v.sources.items()}
            src["tile"] = remap[src["tile"]]
            out[name] = MultiBandTiles(
                image=v.image[rows], noise=v.noise[rows], band_present=v.band_present[rows], bands=v.bands,
                instruments=v.instruments, filters=v.filters, wavelength_nm=v.wavelength_nm,
                tile_id=v.tile_id[rows], pixel_scale_arcsec=v.pixel_scale_arcsec, psf_fwhm_px=v.psf_fwhm_px,
                band_offset_px=v.band_offset_px[rows], center_radec=v.center_radec[rows], sources=src,
                truth=None if v.truth is None else v.truth[rows])
        return SurveyViews(out)


def _grid_groups(names: Sequence[str], pixel_scales: dict[str, float]) -> list[tuple[float, np.ndarray]]:
    """Bands grouped by (instrument, pixel scale), in band order of first appearance."""
    missing = [n for n in names if n not in pixel_scales]
    if missing:
        raise KeyError(f"pixel_scales has no scale for bands {missing}; give one per band (arcsec/px)")
    keys: dict[tuple[str, float], list[int]] = {}
    for i, n in enumerate(names):
        keys.setdefault((n.split("_", 1)[0], float(pixel_scales[n])), []).append(i)
    return [(scale, np.array(idx)) for (_, scale), idx in keys.items()]


def _view_name(v: MultiBandTiles) -> str:
    inst = v.instruments[0]
    if inst == "euclid" and set(v.bands) == {"euclid_vis"}:
        return "euclid_vis"
    if inst == "euclid" and set(v.bands) <= {"euclid_y", "euclid_j", "euclid_h"}:
        return "euclid_nisp"
    if inst == "rubin":
        return "rubin"
    return f"{inst}_{v.pixel_scale_arcsec:g}"
