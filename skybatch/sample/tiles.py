"""Generated multi-band Rubin + Euclid image tiles with known ground truth.

The same sources (stars and small galaxies) are rendered in all ten bands (Rubin u g r i z y,
Euclid VIS Y J H) on one common pixel grid, with what changes between bands in real data:

- **PSF**: Gaussian, FWHM from the band (Rubin seeing ~0.65–0.80", Euclid VIS 0.18", NISP
  0.36–0.46"), plus the pixel response (a 1/12 px² variance term).
- **Depth / noise**: sky noise per pixel from each band's 5σ point-source depth (AB), a smooth
  ±10 % variation across the tile, and source Poisson noise; the noise map is the 1σ RMS.
- **Colours**: per-source SEDs. Stars are black bodies (3500–11000 K); galaxies have a blue
  exponential-ish disk and a red, compact bulge with a 4000 Å break at their redshift, so
  morphology changes with band.
- **Sources missing in some bands**: Lyman-break dropouts (zero flux blueward of
  121.6 nm × (1 + z), z = 3.5–6.5) and single-epoch transients seen by one instrument only.
- **Astrometry**: a small sub-pixel offset per tile and band (recorded, and written into the
  WCS of the ``.npz`` files).
- **Missing bands**: some tiles lack a band (not observed) or all of Euclid (outside the
  footprint); those planes are NaN and ``band_present`` is False.

Fluxes are in nJy per pixel (AB zero point 31.4). Pure NumPy; 300 tiles of 64×64 px in all
ten bands take about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skybatch.models.band_sampling import SURVEY_BANDS, BandInfo, band_table

__all__ = [
    "BAND_PSF_FWHM_ARCSEC",
    "BAND_DEPTH_AB",
    "MultiBandTiles",
    "REAL_PIXEL_SCALES",
    "SurveyViews",
    "make_multiband_tiles",
    "make_survey_views",
    "write_npz_tiles",
]

#: PSF FWHM per band (arcsec): Rubin median seeing scaled as λ^-0.2, Euclid VIS and NISP.
BAND_PSF_FWHM_ARCSEC: dict[str, float] = {
    "rubin_u": 0.80, "rubin_g": 0.76, "rubin_r": 0.72, "rubin_i": 0.69, "rubin_z": 0.67,
    "rubin_y": 0.65, "euclid_vis": 0.18, "euclid_y": 0.36, "euclid_j": 0.40, "euclid_h": 0.46,
}  # fmt: skip
#: 5σ point-source depth per band (AB mag): Rubin 10-year coadd, Euclid Wide survey.
BAND_DEPTH_AB: dict[str, float] = {
    "rubin_u": 25.6, "rubin_g": 26.9, "rubin_r": 26.9, "rubin_i": 26.4, "rubin_z": 25.6,
    "rubin_y": 24.8, "euclid_vis": 26.2, "euclid_y": 24.3, "euclid_j": 24.3, "euclid_h": 24.3,
}  # fmt: skip

_AB_ZP_NJY = 31.4  # m_AB = -2.5 log10(f / nJy) + 31.4
_REF_NM = 700.0  # magnitudes are drawn at this wavelength
_H_OVER_K_NM = 1.4387769e7  # h c / k in nm K


@dataclass(frozen=True)
class MultiBandTiles:
    """A set of generated tiles seen in several bands.

    Attributes
    ----------
    image:
        (n_tiles, n_bands, H, W) float32, background-subtracted flux in nJy per pixel;
        NaN where the band is missing.
    noise:
        (n_tiles, n_bands, H, W) float32, 1σ RMS per pixel in nJy; NaN where missing.
    band_present:
        (n_tiles, n_bands) bool.
    bands:
        Band keys in axis order (``"rubin_u"`` … ``"euclid_h"``).
    instruments, filters:
        Instrument and filter name per band.
    wavelength_nm:
        (n_bands,) effective wavelengths.
    tile_id:
        (n_tiles,) str, the same name for a tile in every band and instrument.
    pixel_scale_arcsec:
        Common pixel scale of all bands.
    psf_fwhm_px:
        (n_bands,) PSF FWHM in pixels (without the pixel response).
    band_offset_px:
        (n_tiles, n_bands, 2) sub-pixel offset (dy, dx) of each band's image relative to the
        sky position, in pixels.
    center_radec:
        (n_tiles, 2) tile centre RA, Dec in degrees.
    sources:
        Truth catalogue, one row per source: ``tile`` (int), ``x``, ``y`` (pixel, before the
        band offset), ``kind`` (0 star, 1 galaxy), ``flux`` (n_src, n_bands) total flux in nJy
        (0 where the source is absent), ``redshift`` (NaN for stars), ``dropout`` and
        ``single_instrument`` (bool).
    truth:
        (n_tiles, n_bands, H, W) float32 noiseless model (NaN where missing), or None.
    """

    image: np.ndarray
    noise: np.ndarray
    band_present: np.ndarray
    bands: tuple[str, ...]
    instruments: tuple[str, ...]
    filters: tuple[str, ...]
    wavelength_nm: np.ndarray
    tile_id: np.ndarray
    pixel_scale_arcsec: float
    psf_fwhm_px: np.ndarray
    band_offset_px: np.ndarray
    center_radec: np.ndarray
    sources: dict[str, np.ndarray] = field(repr=False)
    truth: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_tiles(self) -> int:
        return self.image.shape[0]

    @property
    def n_bands(self) -> int:
        return self.image.shape[1]

    def band_index(self, band: str) -> int:
        """Position of ``band`` on the band axis (KeyError naming the bands if absent)."""
        try:
            return self.bands.index(band)
        except ValueError:
            raise KeyError(f"band {band!r} not in these tiles; bands are {list(self.bands)}") from None


def _blackbody_fnu(lam_nm: np.ndarray, temp_k: np.ndarray) -> np.ndarray:
    """Relative f_ν of a black body: ν³ / (exp(hν/kT) − 1), shape (n, n_lam)."""
    x = _H_OVER_K_NM / (lam_nm[None, :] * temp_k[:, None])
    return (1.0 / lam_nm[None, :] ** 3) / np.expm1(np.minimum(x, 500.0))


def _source_seds(
    rng: np.random.Generator,
    kind: np.ndarray,
    lam: np.ndarray,
    instruments: np.ndarray,
    p_dropout: float,
    p_single_instrument: float,
) -> dict[str, np.ndarray]:
    """Per-source, per-band flux factors relative to the 700 nm flux, for bulge and disk."""
    n = kind.size
    ref = np.array([_REF_NM])
    star = kind == 0
    redshift = np.where(star, np.nan, rng.uniform(0.05, 1.2, n))
    dropout = (~star) & (rng.random(n) < p_dropout)
    redshift[dropout] = rng.uniform(3.5, 6.5, dropout.sum())

    # stars: black bodies
    temp = rng.uniform(3500.0, 11000.0, n)
    bb = _blackbody_fnu(lam, temp) / _blackbody_fnu(ref, temp)
    # galaxies: blue disk, red bulge with a 4000 Å break
    beta_disk = rng.uniform(-0.3, 0.8, n)
    beta_bulge = rng.uniform(1.0, 2.2, n)
    brk = rng.uniform(0.3, 1.2, n)
    blue_of_break = lam[None, :] < 400.0 * (1.0 + np.nan_to_num(redshift)[:, None])
    bulge = (lam[None, :] / _REF_NM) ** beta_bulge[:, None] * np.where(blue_of_break, 10 ** (-0.4 * brk[:, None]), 1.0)
    disk = (lam[None, :] / _REF_NM) ** beta_disk[:, None] * np.where(
        blue_of_break, 10 ** (-0.4 * 0.3 * brk[:, None]), 1.0
    )
    bulge = np.where(star[:, None], bb, bulge)
    disk = np.where(star[:, None], 0.0, disk)

    # absent in some bands
    lyman = dropout[:, None] & (lam[None, :] < 121.6 * (1.0 + np.nan_to_num(redshift)[:, None]))
    single = rng.random(n) < p_single_instrument
    inst_names = np.unique(instruments)
    seen_by = inst_names[rng.integers(0, inst_names.size, n)]
    unseen = single[:, None] & (instruments[None, :] != seen_by[:, None])
    absent = lyman | unseen
    bulge = np.where(absent, 0.0, bulge)
    disk = np.where(absent, 0.0, disk)
    return {"bulge": bulge, "disk": disk, "redshift": redshift, "dropout": dropout, "single": single}


def _render(
    tile: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    cov: np.ndarray,
    flux: np.ndarray,
    shape: tuple[int, int, int, int],
) -> np.ndarray:
    """Sum of elliptical Gaussians, each evaluated on a stamp of at least ±4σ (major axis).

    tile: (C,) tile index of each component; x, y: (C, B) centres in pixels per band;
    cov: (C, B, 3) = (sxx, sxy, syy) in px²; flux: (C, B) total flux.
    ``shape`` = (n_tiles, B, H, W). Returns that shape, float32 (flux per pixel).
    Components are grouped by stamp size so that small sources cost a small stamp; each stamp
    is normalised to the component's flux (before clipping at the tile edge) and the stamps are
    added into the output with ``bincount``.
    """
    n_tiles, n_b, height, width = shape
    out = np.zeros(n_tiles * n_b * height * width, dtype=np.float64)
    sxx, sxy, syy = cov[..., 0], cov[..., 1], cov[..., 2]
    det = sxx * syy - sxy * sxy
    ia, ib, ic = (v.astype(np.float32) for v in (syy / det, -2.0 * sxy / det, sxx / det))
    lam_max = 0.5 * (sxx + syy) + np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)
    need = np.ceil(4.0 * np.sqrt(lam_max.max(axis=1)))  # ±4σ holds > 99.9 % of the flux
    buckets = np.unique(np.round(3 * 1.15 ** np.arange(40)).astype(np.int64))
    radius = buckets[np.minimum(np.searchsorted(buckets, need), buckets.size - 1)]
    radius = np.minimum(radius, max(height, width))
    band = np.arange(n_b)
    for r in np.unique(radius):
        sel = np.flatnonzero(radius == r)
        off = np.arange(-r, r + 1)
        per_chunk = max(1, int(4e6 // (n_b * off.size**2)))
        for c0 in range(0, sel.size, per_chunk):
            c = sel[c0 : c0 + per_chunk]
            px = np.rint(x[c, :1]).astype(np.int64) + off  # (c, S): one stamp grid for all bands
            py = np.rint(y[c, :1]).astype(np.int64) + off
            dx = (px[:, None, :] - x[c, :, None]).astype(np.float32)  # (c, B, S)
            dy = (py[:, None, :] - y[c, :, None]).astype(np.float32)
            q = ib[c, :, None, None] * dy[..., :, None] * dx[..., None, :]
            q += ia[c, :, None, None] * dx[..., None, :] ** 2
            q += ic[c, :, None, None] * dy[..., :, None] ** 2
            q *= np.float32(-0.5)
            np.exp(q, out=q)
            # normalise each stamp to its flux: pixel-centre sampling of an undersampled PSF
            # (Euclid VIS, σ ≈ 0.5 px) would otherwise miss the total by ~1 %
            q *= (flux[c, :, None, None] / np.maximum(q.sum(axis=(2, 3), keepdims=True), 1e-30)).astype(np.float32)
            ok = ((py >= 0) & (py < height))[:, :, None] & ((px >= 0) & (px < width))[:, None, :]  # (c,S,S)
            q *= ok[:, None]
            base = (tile[c, None] * n_b + band) * height  # (c, B)
            flat = (base[:, :, None] + np.clip(py, 0, height - 1)[:, None, :]) * width  # (c, B, S)
            flat = flat[..., None] + np.clip(px, 0, width - 1)[:, None, None, :]  # (c, B, S, S)
            out += np.bincount(flat.ravel(), weights=q.ravel(), minlength=out.size)
    return out.reshape(shape).astype(np.float32)


def make_multiband_tiles(
    n_tiles: int = 64,
    size: int = 32,
    *,
    bands: Sequence[str | BandInfo] = SURVEY_BANDS,
    seed: int = 0,
    pixel_scale_arcsec: float = 0.2,
    source_density: float = 0.004,
    min_sources: int = 2,
    mag_range: tuple[float, float] = (19.5, 25.0),
    star_fraction: float = 0.35,
    p_dropout: float = 0.08,
    p_single_instrument: float = 0.05,
    p_missing_band: float = 0.04,
    p_missing_instrument: float = 0.03,
    max_offset_px: float = 0.3,
    keep_truth: bool = True,
    pixel_scales: dict[str, float] | None = None,
) -> MultiBandTiles | SurveyViews:
    """Generate ``n_tiles`` square tiles of ``size`` px seen in every band.

    Parameters
    ----------
    n_tiles, size:
        Number of tiles and their side in pixels.
    bands:
        Band keys (from :data:`skybatch.models.band_sampling.SURVEY_BANDS`) or ``BandInfo``
        records; a ``BandInfo`` for a band without a PSF/depth entry gets 0.5" and AB 25.
    seed:
        Everything is deterministic given the seed.
    pixel_scale_arcsec:
        Common pixel scale (arcsec/px) of all bands.
    source_density:
        Mean sources per px² (on top of ``min_sources`` per tile).
    mag_range:
        AB magnitude range at 700 nm (uniform).
    star_fraction:
        Fraction of sources that are stars.
    p_dropout:
        Fraction of galaxies that are Lyman-break dropouts (absent in blue bands).
    p_single_instrument:
        Fraction of sources seen by one instrument only.
    p_missing_band:
        Probability that a tile lacks a given band.
    p_missing_instrument:
        Probability that a tile lacks all Euclid bands (outside the footprint).
    max_offset_px:
        Per-tile, per-band sub-pixel offsets are uniform in ±max_offset_px.
    keep_truth:
        Keep the noiseless model images in ``truth``.
    pixel_scales:
        Per-band pixel scale (arcsec/px), e.g. :data:`REAL_PIXEL_SCALES`. Then the tile covers
        ``size × pixel_scale_arcsec`` arcsec on a side, each (instrument, scale) group of bands is
        rendered on its own grid (PSF, depth and the sub-pixel offset in that grid's pixels) and
        a :class:`SurveyViews` is returned. ``None``: every band on one grid.

    Returns
    -------
    :class:`MultiBandTiles` (one grid), or :class:`SurveyViews` with ``pixel_scales``.
    """
    if n_tiles < 1 or size < 8:
        raise ValueError(f"need n_tiles >= 1 and size >= 8 px (got {n_tiles}, {size})")
    info = band_table(bands)
    n_b = len(info)
    names = tuple(b.name for b in info)
    lam = np.array([b.wavelength_nm for b in info])
    instruments = np.array([b.instrument for b in info])
    rng = np.random.default_rng(seed)

    fwhm_as = np.array([BAND_PSF_FWHM_ARCSEC.get(n, 0.5) for n in names])
    depth = np.array([BAND_DEPTH_AB.get(n, 25.0) for n in names])

    # sources
    counts = min_sources + rng.poisson(source_density * size * size, n_tiles)
    n_src = int(counts.sum())
    tile_of = np.repeat(np.arange(n_tiles), counts)
    margin = 1.5
    sx = rng.uniform(margin, size - 1 - margin, n_src)
    sy = rng.uniform(margin, size - 1 - margin, n_src)
    kind = (rng.random(n_src) >= star_fraction).astype(np.int8)
    mag = rng.uniform(*mag_range, n_src)
    f_ref = 10 ** (-0.4 * (mag - _AB_ZP_NJY))
    sed = _source_seds(rng, kind, lam, instruments, p_dropout, p_single_instrument)
    bulge_frac = np.where(kind == 0, 1.0, rng.uniform(0.0, 0.7, n_src))
    flux_bulge = f_ref[:, None] * bulge_frac[:, None] * sed["bulge"]
    flux_disk = f_ref[:, None] * (1 - bulge_frac[:, None]) * sed["disk"]

    # galaxy shapes (px²): disk half-light radius 0.25–1.2", bulge 0.35× the disk
    r_e = np.exp(rng.uniform(np.log(0.25), np.log(1.2), n_src)) / pixel_scale_arcsec
    sig_d = r_e / 1.1774
    q = rng.uniform(0.3, 1.0, n_src)
    theta = rng.uniform(0.0, np.pi, n_src)

    def shape_cov(sig: np.ndarray, axis_ratio: np.ndarray) -> np.ndarray:
        a2, b2 = sig**2 / axis_ratio, sig**2 * axis_ratio
        c, s = np.cos(theta), np.sin(theta)
        return np.stack([a2 * c * c + b2 * s * s, (a2 - b2) * c * s, a2 * s * s + b2 * c * c], axis=-1)

    cov_disk = shape_cov(sig_d, q)
    cov_bulge = shape_cov(0.35 * sig_d, np.maximum(q, 0.7))
    cov_bulge[kind == 0] = 0.0  # stars are points

    # per-band sub-pixel offsets and missing bands
    offset = rng.uniform(-max_offset_px, max_offset_px, (n_tiles, n_b, 2))
    present = rng.random((n_tiles, n_b)) >= p_missing_band
    no_euclid = rng.random(n_tiles) < p_missing_instrument
    present[np.ix_(no_euclid, instruments == "euclid")] = False
    for t in np.flatnonzero(present.sum(axis=1) < 2):  # keep every tile usable for pairs
        present[t, rng.choice(np.flatnonzero(instruments == instruments[0]), 2, replace=False)] = True

    # components: bulges (and stars) then disks (galaxies only)
    gal = kind == 1
    comp_tile = np.concatenate([tile_of, tile_of[gal]])
    comp_src = np.concatenate([np.arange(n_src), np.flatnonzero(gal)])
    comp_cov = np.concatenate([cov_bulge, cov_disk[gal]])
    comp_flux = np.concatenate([flux_bulge, flux_disk[gal]])

    # tile centres on a grid around COSMOS
    side = int(np.ceil(np.sqrt(n_tiles)))
    step_deg = size * pixel_scale_arcsec / 3600.0
    idx = np.arange(n_tiles)
    dec = 2.2 + (idx // side) * step_deg
    ra = 150.1 + (idx % side) * step_deg / np.cos(np.deg2rad(dec))
    grad = None
    groups = [(pixel_scale_arcsec, np.arange(n_b))] if pixel_scales is None else _grid_groups(names, pixel_scales)
    out = []
    centre_ref = (size - 1) / 2.0
    for scale, sel in groups:
        zoom = pixel_scale_arcsec / scale  # reference px -> this grid's px
        size_g = size if pixel_scales is None else int(round(size * zoom))
        centre_g = (size_g - 1) / 2.0
        psf_var = (fwhm_as[sel] / scale / 2.3548) ** 2 + 1.0 / 12.0  # PSF ⊗ pixel response, this grid's px²
        f5 = 10 ** (-0.4 * (depth[sel] - _AB_ZP_NJY))
        sky_rms = f5 / (5.0 * np.sqrt(4.0 * np.pi * psf_var))  # 5σ for an optimally weighted point source
        cx = centre_g + (sx[comp_src, None] - centre_ref) * zoom + offset[comp_tile][:, sel, 1]  # (C, B)
        cy = centre_g + (sy[comp_src, None] - centre_ref) * zoom + offset[comp_tile][:, sel, 0]
        cv = comp_cov[:, None, :] * zoom**2 + np.array([1.0, 0.0, 1.0]) * psf_var[None, :, None]
        model = _render(comp_tile, cx, cy, cv, comp_flux[:, sel], (n_tiles, sel.size, size_g, size_g))

        # noise: sky (with a smooth ±10 % gradient) + source Poisson term
        yy, xx = np.mgrid[0:size_g, 0:size_g].astype(np.float32) / max(size_g - 1, 1) - 0.5
        if grad is None:
            grad = rng.uniform(-0.2, 0.2, (n_tiles, n_b, 2)).astype(np.float32)
        g = grad[:, sel]
        sky = sky_rms.astype(np.float32)[None, :, None, None] * (
            1.0 + g[..., 0, None, None] * yy + g[..., 1, None, None] * xx
        )
        var = sky**2 * (1.0 + np.maximum(model, 0.0) / (25.0 * sky))
        noise = np.sqrt(var).astype(np.float32)
        image = model + noise * rng.standard_normal(model.shape, dtype=np.float32)
        missing = ~present[:, sel]
        image[missing] = np.nan
        noise[missing] = np.nan
        if keep_truth:
            model[missing] = np.nan

        flux_total = flux_bulge[:, sel] + flux_disk[:, sel]
        out.append(MultiBandTiles(
            image=image,
            noise=noise,
            band_present=present[:, sel],
            bands=tuple(names[b] for b in sel),
            instruments=tuple(str(instruments[b]) for b in sel),
            filters=tuple(info[b].filter for b in sel),
            wavelength_nm=lam[sel],
            tile_id=np.array([f"tile_{i:05d}" for i in range(n_tiles)]),
            pixel_scale_arcsec=float(scale),
            psf_fwhm_px=fwhm_as[sel] / scale,
            band_offset_px=offset[:, sel],
            center_radec=np.stack([ra, dec], axis=1),
            sources={
                "tile": tile_of,
                "x": centre_g + (sx - centre_ref) * zoom,
                "y": centre_g + (sy - centre_ref) * zoom,
                "kind": kind,
                "flux": flux_total,
                "redshift": sed["redshift"],
                "dropout": sed["dropout"],
                "single_instrument": sed["single"],
            },
            truth=model if keep_truth else None,
        ))
    if pixel_scales is None:
        return out[0]
    return SurveyViews(views={_view_name(v): v for v in out})


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

    def subset(self, rows: np.ndarray) -> "SurveyViews":
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


def make_survey_views(n_tiles: int = 64, field_arcsec: float = 9.6, *, seed: int = 0,
                      pixel_scales: dict[str, float] | None = None, source_density_arcsec2: float = 0.1,
                      **kwargs) -> SurveyViews:
    """Tiles of ``field_arcsec`` on a side in the surveys' real pixel grids (:data:`REAL_PIXEL_SCALES`).

    Rubin u g r i z y at 0.2″/px, Euclid VIS at 0.1″/px and NISP Y J H at 0.3″/px by default: a
    9.6″ tile is 48, 96 and 32 px. Same sources, PSFs, depths, offsets (±``max_offset_px`` native
    pixels per band) and drop-outs as :func:`make_multiband_tiles` (``kwargs`` go there);
    ``source_density_arcsec2`` is the mean number of sources per arcsec² (on top of ``min_sources``).
    """
    scales = dict(pixel_scales or REAL_PIXEL_SCALES)
    ref = min(scales.values())
    size = int(round(field_arcsec / ref))
    return make_multiband_tiles(n_tiles, size, seed=seed, pixel_scale_arcsec=ref, pixel_scales=scales,
                                source_density=source_density_arcsec2 * ref * ref, **kwargs)


from skybatch.sample.tile_files import _wcs_header, write_npz_tiles  # noqa: E402  (re-exported)
