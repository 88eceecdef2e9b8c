"""Generating tiles: :func:`make_multiband_tiles` (every band, one grid or the real grids) and
:func:`make_survey_views` (a sky field at the surveys' real pixel scales).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skybatch.models.band_sampling import SURVEY_BANDS, BandInfo, band_table

from .render import _AB_ZP_NJY, BAND_DEPTH_AB, BAND_PSF_FWHM_ARCSEC, MultiBandTiles, _render, _source_seds
from .views import REAL_PIXEL_SCALES, SurveyViews, _grid_groups, _view_name


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
    views = make_multiband_tiles(n_tiles, size, seed=seed, pixel_scale_arcsec=ref, pixel_scales=scales,
                                 source_density=source_density_arcsec2 * ref * ref, **kwargs)
    assert isinstance(views, SurveyViews)  # pixel_scales given: one view per survey grid
    return views
