"""Generated science/reference image pairs with known PSFs, noise, stars and transients.

:func:`make_image_pair` renders the same static sky (stars, optional galaxies) into
a reference and a science ("new") image with different PSFs (Gaussian or Moffat,
optionally varying across the field), background levels, noise, gains and flux
scale (``flux_ratio`` = new counts / reference counts), clips both at a saturation
level, adds point-source transients to the science image only, and returns
everything a test needs as ground truth: the true PSF stamps, noise levels,
noiseless models, variance maps and per-source tables. Vectorised NumPy: a
1024^2 pair with ~1500 stars takes ~0.2 s.

Conventions: pixel coordinates are 0-based with pixel centres on integers
(``x`` = column, ``y`` = row), as in sep and astropy's ``pixel_to_world``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImagePair", "make_image_pair", "render_sources", "make_wcs"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class ImagePair:
    """A generated pair; every image is float32 (ny, nx), ADU.

    Attributes
    ----------
    new, ref : raw images (background included, clipped at ``saturation``).
    new_background, ref_background : true sky background maps (ADU).
    new_sigma, ref_sigma : background noise sigma (ADU), uniform over the image.
    new_gain, ref_gain : e-/ADU; source (Poisson) noise has variance ``model / gain``.
    new_var, ref_var : true per-pixel variance ``sigma^2 + model / gain`` (ADU^2).
    new_model, ref_model : noiseless source images without background (before clipping).
    new_psf, ref_psf : true PSF stamps at the image centre (odd, unit sum, centred).
    new_fwhm, ref_fwhm : their FWHM at the image centre (px).
    psf_gradient : fractional FWHM change across the x axis (0 = constant PSF).
    flux_ratio : new counts per reference count for static sources.
    saturation : raw saturation level (ADU); ``new_saturated`` / ``ref_saturated`` mark it.
    new_wcs, ref_wcs : astropy WCS of each image (the ref grid is offset by ``shift``).
    shift : (dx, dy) of the reference grid: a source at new pixel (x, y) is at ref
        pixel (x + dx, y + dy).
    stars : dict of arrays ``x``, ``y`` (new grid), ``flux_ref`` (ref counts),
        ``flux_new`` (new counts), ``saturated`` (bool).
    galaxies : same keys plus ``size`` (Gaussian sigma of the intrinsic profile, px).
    transients : dict of arrays ``x``, ``y`` (new grid), ``flux`` (new counts), ``snr_new``
        (background-limited PSF S/N in the new image alone).
    """

    new: np.ndarray
    ref: np.ndarray
    new_background: np.ndarray
    ref_background: np.ndarray
    new_sigma: float
    ref_sigma: float
    new_gain: float
    ref_gain: float
    new_var: np.ndarray
    ref_var: np.ndarray
    new_model: np.ndarray
    ref_model: np.ndarray
    new_psf: np.ndarray
    ref_psf: np.ndarray
    new_fwhm: float
    ref_fwhm: float
    psf_gradient: float
    flux_ratio: float
    saturation: float
    new_saturated: np.ndarray
    ref_saturated: np.ndarray
    new_wcs: Any
    ref_wcs: Any
    shift: tuple[float, float]
    stars: dict[str, np.ndarray]
    galaxies: dict[str, np.ndarray]
    transients: dict[str, np.ndarray]
    psf_profile: str = "gaussian"
    moffat_beta: float = 3.0
    extra: dict[str, Any] = field(default_factory=dict)

    def source_free(self, level: float = 0.02) -> np.ndarray:
        """Boolean (ny, nx): pixels where both noiseless models (transients included) are
        below ``level`` x the local background sigma, and not saturated."""
        return (
            (self.new_model < level * self.new_sigma)
            & (self.ref_model < level * self.ref_sigma)
            & ~self.new_saturated
            & ~self.ref_saturated
        )

    def new_subtracted(self) -> np.ndarray:
        """``new`` minus its true background (float32)."""
        return (self.new - self.new_background).astype(np.float32)

    def ref_subtracted(self) -> np.ndarray:
        """``ref`` minus its true background (float32)."""
        return (self.ref - self.ref_background).astype(np.float32)

    def fwhm_at(self, x: np.ndarray, which: str) -> np.ndarray:
        """True FWHM (px) at new-grid column ``x`` for ``which`` = "new" or "ref"."""
        nx = self.new.shape[1]
        f0 = self.new_fwhm if which == "new" else self.ref_fwhm
        return f0 * (1.0 + self.psf_gradient * (np.asarray(x, dtype=np.float64) / nx - 0.5))

    def psf_at(self, x: float, y: float, which: str) -> np.ndarray:
        """True PSF stamp (centred, unit sum) at new-grid position (x, y)."""
        size = self.new_psf.shape[0]
        fwhm = float(self.fwhm_at(np.asarray([x]), which)[0])
        stamp = _profile(self.psf_profile, np.zeros(1), np.zeros(1), np.array([fwhm]), size, self.moffat_beta)[0]
        return (stamp / stamp.sum()).astype(np.float32)


def make_wcs(shape: tuple[int, int], *, ra: float = 150.1, dec: float = 2.2,
             pixel_scale: float = 0.2, shift: tuple[float, float] = (0.0, 0.0)):
    """TAN WCS with ``pixel_scale`` arcsec/px centred on (ra, dec) deg; ``shift`` moves the
    reference pixel so that sky positions land at pixel + shift."""
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    # FITS CRPIX is 1-based: 0-based centre (nx-1)/2 -> (nx+1)/2
    w.wcs.crpix = [(nx + 1) / 2.0 + shift[0], (ny + 1) / 2.0 + shift[1]]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    w.wcs.cunit = ["deg", "deg"]
    w.pixel_shape = (nx, ny)
    return w


def _profile(kind: str, dx: np.ndarray, dy: np.ndarray, fwhm: np.ndarray, size: int,
             moffat_beta: float = 3.0) -> np.ndarray:
    """(n, size, size) PSF values for sources offset (dx, dy) from stamp centres."""
    h = size // 2
    ax = np.arange(-h, h + 1, dtype=np.float64)
    xx = ax[None, None, :] - dx[:, None, None]
    yy = ax[None, :, None] - dy[:, None, None]
    r2 = xx * xx + yy * yy
    f = fwhm[:, None, None]
    if kind == "gaussian":
        s = f / FWHM_PER_SIGMA
        return np.exp(-0.5 * r2 / (s * s))
    if kind == "moffat":
        alpha = f / (2.0 * math.sqrt(2.0 ** (1.0 / moffat_beta) - 1.0))
        return (1.0 + r2 / (alpha * alpha)) ** (-moffat_beta)
    raise ValueError(f"psf_profile={kind!r}: use 'gaussian' or 'moffat'")


def render_sources(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: np.ndarray | float,
    *,
    size: int,
    profile: str = "gaussian",
    moffat_beta: float = 3.0,
    stamps: np.ndarray | None = None,
) -> np.ndarray:
    """Render point sources (or given (n, size, size) ``stamps``) into a float64 image.

    Each source's PSF is sampled on a ``size`` stamp at its sub-pixel position and
    normalised by the sum of the *centred* stamp of the same FWHM, so the flux matches
    a unit-sum PSF stamp of that size.
    """
    ny, nx = shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    n = x.size
    out = np.zeros(ny * nx, dtype=np.float64)
    if n == 0:
        return out.reshape(shape)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    if stamps is None:
        fw = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), (n,))
        vals = _profile(profile, x - ix, y - iy, fw, size, moffat_beta)
        norm = _profile(profile, np.zeros(n), np.zeros(n), fw, size, moffat_beta).sum(axis=(1, 2))
        vals *= (flux / norm)[:, None, None]
    else:
        vals = stamps * flux[:, None, None]
    h = size // 2
    off = np.arange(-h, h + 1)
    gy = iy[:, None, None] + off[None, :, None]
    gx = ix[:, None, None] + off[None, None, :]
    gy, gx = np.broadcast_to(gy, vals.shape), np.broadcast_to(gx, vals.shape)
    ok = (gy >= 0) & (gy < ny) & (gx >= 0) & (gx < nx)
    out += np.bincount((gy[ok] * nx + gx[ok]), weights=vals[ok], minlength=ny * nx)
    return out.reshape(shape)


def _galaxy_stamps(sizes: np.ndarray, dx: np.ndarray, dy: np.ndarray, psf_fwhm: np.ndarray,
                   stamp: int, profile: str, beta: float) -> np.ndarray:
    """(n, stamp, stamp) unit-flux images of Gaussian galaxies convolved with the PSF."""
    n = sizes.size
    if n == 0:
        return np.zeros((0, stamp, stamp))
    gal = _profile("gaussian", dx, dy, sizes * FWHM_PER_SIGMA, stamp)
    gal /= gal.sum(axis=(1, 2), keepdims=True)
    psf = _profile(profile, np.zeros(n), np.zeros(n), psf_fwhm, stamp, beta)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    psf = np.fft.ifftshift(psf, axes=(1, 2))
    conv = np.fft.irfft2(np.fft.rfft2(gal) * np.fft.rfft2(psf), s=(stamp, stamp))
    return conv


def make_image_pair(
    shape: tuple[int, int] = (1024, 1024),
    *,
    seed: int = 0,
    n_stars: int = 1500,
    n_galaxies: int = 0,
    n_transients: int = 0,
    transient_snr: tuple[float, float] = (3.0, 30.0),
    transient_margin: int | None = None,
    new_fwhm: float = 3.0,
    ref_fwhm: float = 2.2,
    psf_profile: str = "gaussian",
    moffat_beta: float = 3.0,
    psf_gradient: float = 0.0,
    psf_size: int | None = None,
    new_sigma: float = 8.0,
    ref_sigma: float = 4.0,
    new_sky: float = 300.0,
    ref_sky: float = 150.0,
    sky_gradient: float = 0.0,
    new_gain: float = 2.0,
    ref_gain: float = 2.0,
    flux_ratio: float = 1.3,
    saturation: float = 60000.0,
    n_saturated: int = 5,
    star_snr_min: float = 3.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> ImagePair:
    """Generate a science/reference pair with ground truth.

    Parameters
    ----------
    shape : (ny, nx) of both images.
    seed : random seed (everything is reproducible from it).
    n_stars : static stars (log-flux distribution N(>F) ~ 1/F, from ``star_snr_min`` S/N
        in the reference up to saturation); ``n_saturated`` of them are made bright enough
        to saturate both images.
    n_galaxies : static Gaussian galaxies (sigma 1.5-4 px) convolved with each PSF.
    n_transients : point sources added to the science image only, with background-limited
        S/N (new image alone) log-uniform in ``transient_snr``, placed at least
        ``transient_margin`` px (default 3 PSF stamps / 2) from the edges, two PSF stamps
        from saturated stars and one PSF stamp from each other (fewer than asked when the
        field is too small: check ``len(pair.transients["x"])``).
    new_fwhm, ref_fwhm : PSF FWHM (px) at the image centre. ``psf_profile``: "gaussian" or
        "moffat" (``moffat_beta``). ``psf_gradient``: FWHM scales by
        ``1 + psf_gradient * (x / nx - 0.5)`` across the field (spatially varying PSF).
    psf_size : odd PSF stamp size (default ~6x the larger FWHM, ~9x for Moffat).
    new_sigma, ref_sigma : background noise sigma (ADU). ``new_sky``, ``ref_sky``: sky level
        (ADU); ``sky_gradient`` adds that fraction of the sky as a linear ramp in y.
    new_gain, ref_gain : e-/ADU for the Poisson noise of sources.
    flux_ratio : new counts per reference count (F_n / F_r).
    saturation : raw level where pixels clip (ADU).
    shift : sub-pixel (dx, dy) offset of the reference grid (its WCS says so too).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    big_fwhm = max(new_fwhm, ref_fwhm) * (1.0 + abs(psf_gradient) / 2.0)
    if psf_size is None:
        psf_size = int(math.ceil((9.0 if psf_profile == "moffat" else 6.0) * big_fwhm)) | 1
        psf_size = max(psf_size, 11)
    if psf_size % 2 == 0:
        raise ValueError(f"psf_size={psf_size} must be odd")
    if psf_size > min(ny, nx):
        raise ValueError(f"psf_size={psf_size} does not fit in an image of shape {shape}")

    def fwhm_at(x: np.ndarray, f0: float) -> np.ndarray:
        return f0 * (1.0 + psf_gradient * (x / nx - 0.5))

    # --- static stars (positions on the new grid)
    sx = rng.uniform(-0.5, nx - 0.5, n_stars)
    sy = rng.uniform(-0.5, ny - 0.5, n_stars)
    s_ref = ref_fwhm / FWHM_PER_SIGMA
    f_min = star_snr_min * ref_sigma * math.sqrt(4.0 * math.pi) * s_ref
    peak_frac = 1.0 / (2.0 * math.pi * s_ref * s_ref)
    f_sat = (saturation - max(new_sky, ref_sky)) / (peak_frac * max(1.0, flux_ratio))
    f_max = 0.7 * f_sat
    u = rng.uniform(0.0, 1.0, n_stars)
    flux_ref = f_min / np.maximum(1.0 - u * (1.0 - f_min / f_max), f_min / f_max)
    k_sat = min(n_saturated, n_stars)
    if k_sat:
        flux_ref[:k_sat] = f_sat * rng.uniform(3.0, 20.0, k_sat)
        # keep saturated stars away from the borders so their cores are visible
        sx[:k_sat] = rng.uniform(0.1 * nx, 0.9 * nx, k_sat)
        sy[:k_sat] = rng.uniform(0.1 * ny, 0.9 * ny, k_sat)
    flux_new = flux_ratio * flux_ref

    # --- galaxies
    gx = rng.uniform(0, nx - 1, n_galaxies)
    gy = rng.uniform(0, ny - 1, n_galaxies)
    g_size = rng.uniform(1.5, 4.0, n_galaxies)
    g_flux_ref = f_min * 10 ** rng.uniform(1.0, 2.5, n_galaxies)

    # --- transients (new image only)
    margin = (3 * psf_size) // 2 if transient_margin is None else int(transient_margin)
    tx = np.zeros(0)
    ty = np.zeros(0)
    if n_transients:
        cand_x = rng.uniform(margin, nx - 1 - margin, 8 * n_transients + 16)
        cand_y = rng.uniform(margin, ny - 1 - margin, 8 * n_transients + 16)
        if k_sat:
            d2 = (cand_x[:, None] - sx[None, :k_sat]) ** 2 + (cand_y[:, None] - sy[None, :k_sat]) ** 2
            far = d2.min(axis=1) > (2.0 * psf_size) ** 2
            cand_x, cand_y = cand_x[far], cand_y[far]
        # greedy: keep candidates at least one PSF stamp from every transient kept so far
        keep_x: list[float] = []
        keep_y: list[float] = []
        for cx_, cy_ in zip(cand_x, cand_y):
            if len(keep_x) == n_transients:
                break
            if all((cx_ - kx) ** 2 + (cy_ - ky) ** 2 >= psf_size**2 for kx, ky in zip(keep_x, keep_y)):
                keep_x.append(float(cx_))
                keep_y.append(float(cy_))
        tx, ty = np.asarray(keep_x), np.asarray(keep_y)
    t_snr = np.exp(rng.uniform(math.log(transient_snr[0]), math.log(transient_snr[1]), tx.size))
    t_s = fwhm_at(tx, new_fwhm) / FWHM_PER_SIGMA
    t_flux = t_snr * new_sigma * np.sqrt(4.0 * math.pi) * t_s

    # --- render
    ox, oy = shift
    kw: dict[str, Any] = dict(size=psf_size, profile=psf_profile, moffat_beta=moffat_beta)
    ref_model = render_sources(shape, sx + ox, sy + oy, flux_ref, fwhm_at(sx, ref_fwhm), **kw)
    new_model = render_sources(shape, sx, sy, flux_new, fwhm_at(sx, new_fwhm), **kw)
    if n_galaxies:
        gstamp = psf_size + 2 * int(math.ceil(4 * g_size.max())) | 1
        for model, fw0, gxx, gyy, scale in (
            (ref_model, ref_fwhm, gx + ox, gy + oy, 1.0),
            (new_model, new_fwhm, gx, gy, flux_ratio),
        ):
            ixg, iyg = np.rint(gxx), np.rint(gyy)
            st = _galaxy_stamps(g_size, gxx - ixg, gyy - iyg, fwhm_at(gx, fw0), gstamp, psf_profile, moffat_beta)
            model += render_sources(shape, ixg, iyg, g_flux_ref * scale, 0.0, size=gstamp, stamps=st)
    if tx.size:
        new_model += render_sources(shape, tx, ty, t_flux, fwhm_at(tx, new_fwhm), **kw)

    yy = (np.arange(ny, dtype=np.float64) / max(ny - 1, 1) - 0.5)[:, None]
    new_bkg = (new_sky * (1.0 + sky_gradient * yy) * np.ones((1, nx))).astype(np.float32)
    ref_bkg = (ref_sky * (1.0 + sky_gradient * yy) * np.ones((1, nx))).astype(np.float32)

    def noisy(model: np.ndarray, bkg: np.ndarray, sigma: float, gain: float) -> np.ndarray:
        img = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
        img += bkg
        lam = np.clip(model, 0.0, None) * gain
        img += rng.poisson(lam) / gain
        return np.minimum(img, saturation).astype(np.float32)

    new = noisy(new_model, new_bkg, new_sigma, new_gain)
    ref = noisy(ref_model, ref_bkg, ref_sigma, ref_gain)

    # true PSF stamps at the image centre
    def stamp(f0: float) -> np.ndarray:
        p = _profile(psf_profile, np.zeros(1), np.zeros(1), np.array([f0]), psf_size, moffat_beta)[0]
        return (p / p.sum()).astype(np.float32)

    sat_stars = np.zeros(n_stars, dtype=bool)
    sat_stars[:k_sat] = True
    return ImagePair(
        new=new,
        ref=ref,
        new_background=new_bkg,
        ref_background=ref_bkg,
        new_sigma=float(new_sigma),
        ref_sigma=float(ref_sigma),
        new_gain=float(new_gain),
        ref_gain=float(ref_gain),
        new_var=(new_sigma**2 + np.clip(new_model, 0, None) / new_gain).astype(np.float32),
        ref_var=(ref_sigma**2 + np.clip(ref_model, 0, None) / ref_gain).astype(np.float32),
        new_model=new_model.astype(np.float32),
        ref_model=ref_model.astype(np.float32),
        new_psf=stamp(new_fwhm),
        ref_psf=stamp(ref_fwhm),
        new_fwhm=float(new_fwhm),
        ref_fwhm=float(ref_fwhm),
        psf_gradient=float(psf_gradient),
        flux_ratio=float(flux_ratio),
        saturation=float(saturation),
        new_saturated=new >= saturation,
        ref_saturated=ref >= saturation,
        new_wcs=make_wcs(shape),
        ref_wcs=make_wcs(shape, shift=shift),
        shift=(float(ox), float(oy)),
        stars={"x": sx, "y": sy, "flux_ref": flux_ref, "flux_new": flux_new, "saturated": sat_stars},
        galaxies={"x": gx, "y": gy, "flux_ref": g_flux_ref, "flux_new": g_flux_ref * flux_ratio, "size": g_size},
        transients={"x": tx, "y": ty, "flux": t_flux, "snr_new": t_snr},
        psf_profile=psf_profile,
        moffat_beta=float(moffat_beta),
    )
