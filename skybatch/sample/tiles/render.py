"""The bands' PSFs and depths, the :class:`MultiBandTiles` container, source SEDs, and rendering
sources into one band's pixels (fluxes in nJy per pixel, AB zero point 31.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
