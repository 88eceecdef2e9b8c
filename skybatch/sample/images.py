"""Sample science/reference image pairs on disk, with ground truth, to try differencing and tiles.

:func:`write_sample_images` writes, under ``OUT``::

    plain/sci/field_000_r.fits  plain/ref/field_000_r.fits     one image in the primary HDU,
    ...                                                        WCS + FILTER GAIN RDNOISE SATURATE
                                                               MAGZP EXPTIME keywords, no noise map
    rubin/sci/tile_000_r.fits   rubin/ref/tile_000_r.fits      LSST calexp-like IMAGE/MASK/VARIANCE
    euclid/sci/tile_000_VIS.fits euclid/ref/tile_000_VIS.fits  Euclid-like SCI/RMS/FLG
    tiles/rubin/*.npz tiles/euclid/*.npz                       multi-band tiles for the tile encoder
    truth/transients.parquet                                   every transient: layout, file, x, y,
                                                               ra, dec, flux, snr_new, on_galaxy
    truth/stars.parquet                                        the static stars: layout, pair_id, x,
                                                               y, flux_new, snr_new, saturated
    README.txt                                                 the commands to run on them

The plain pairs are the hard case: the first has a reference on the same grid, the second a
reference with another pixel scale, rotated and shifted (aligned only through the WCSs) and of
another size; science images have a sky gradient, a NaN region, saturated stars with bleed
trails, a PSF that varies across the field, and transients on galaxies as well as on empty sky.
The last plain pair (with ``n_pairs >= 3``) is a null pair: nothing changed.

:func:`make_rotated_pair` builds such a pair in memory (an :class:`~skybatch.sample.imaging.ImagePair`
whose reference is re-rendered on another grid). Pure NumPy + astropy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skybatch.sample.imaging import FWHM_PER_SIGMA, ImagePair, _galaxy_stamps, make_image_pair, render_sources

__all__ = [
    "SampleImages",
    "write_sample_images",
    "make_rotated_pair",
    "rotated_wcs",
    "add_bleeds",
    "write_plain_fits",
    "write_calexp_fits",
    "write_euclid_fits",
]

ZP_REF = 27.0  # the reference's MAGZP (total counts); the science's follows from the flux ratio


def rotated_wcs(shape: tuple[int, int], *, scale_arcsec: float = 0.2, rotation_deg: float = 0.0,
                shift: tuple[float, float] = (0.0, 0.0), ra: float = 150.1, dec: float = 2.2):
    """TAN WCS of a (ny, nx) grid centred on (ra, dec), ``scale_arcsec`` px, rotated, with CRPIX shifted."""
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2.0 + shift[0], (ny + 1) / 2.0 + shift[1]]
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    d = scale_arcsec / 3600.0
    w.wcs.cd = [[-d * c, d * s], [d * s, d * c]]
    w.pixel_shape = (nx, ny)
    return w


def make_rotated_pair(shape: tuple[int, int] = (512, 512), *, ref_shape: tuple[int, int] | None = None,
                      ref_scale: float = 0.25, rotation_deg: float = 30.0, ref_shift: tuple[float, float] = (0.4, -0.3),
                      seed: int = 0, **kwargs: Any) -> ImagePair:
    """A pair whose reference is on another grid: ``ref_scale`` arcsec px (science 0.2), rotated by
    ``rotation_deg``, CRPIX shifted, of ``ref_shape`` (default covering the science field).

    The science side comes from :func:`~skybatch.sample.imaging.make_image_pair` (``kwargs`` go
    there); the reference is re-rendered from the same stars and galaxies on its own grid (PSF
    FWHM and galaxy sizes converted to its pixels, the same total counts). ``shift`` of the
    returned pair is meaningless; use ``ref_wcs``.
    """
    p = make_image_pair(shape, seed=seed, **kwargs)
    k = 0.2 / ref_scale  # science pixels per reference pixel (linear)
    if ref_shape is None:
        n = int(math.ceil(max(shape) * k * 1.15)) + 16
        ref_shape = (n, n)
    ref_wcs = rotated_wcs(ref_shape, scale_arcsec=ref_scale, rotation_deg=rotation_deg, shift=ref_shift)
    rng = np.random.default_rng([seed, 7])
    size = p.new_psf.shape[0]
    kw = dict(size=size, profile=p.psf_profile, moffat_beta=p.moffat_beta)

    def to_ref(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rx, ry = ref_wcs.world_to_pixel_values(*p.new_wcs.pixel_to_world_values(x, y))
        return np.asarray(rx, float), np.asarray(ry, float)

    st = p.stars
    rx, ry = to_ref(st["x"], st["y"])
    model = render_sources(ref_shape, rx, ry, st["flux_ref"], p.fwhm_at(st["x"], "ref") * k, **kw)
    g = p.galaxies
    if len(g["x"]):
        gx, gy = to_ref(g["x"], g["y"])
        gstamp = size + 2 * int(math.ceil(4 * g["size"].max() * k)) | 1
        ix, iy = np.rint(gx), np.rint(gy)
        stamps = _galaxy_stamps(g["size"] * k, gx - ix, gy - iy, p.fwhm_at(g["x"], "ref") * k, gstamp,
                                p.psf_profile, p.moffat_beta)
        model += render_sources(ref_shape, ix, iy, g["flux_ref"], 0.0, size=gstamp, stamps=stamps)
    sky = float(np.median(p.ref_background))
    img = rng.standard_normal(ref_shape).astype(np.float32) * np.float32(p.ref_sigma) + np.float32(sky)
    img += (rng.poisson(np.clip(model, 0, None) * p.ref_gain) / p.ref_gain).astype(np.float32)
    img = np.minimum(img, p.saturation).astype(np.float32)
    p.ref = img
    p.ref_model = model.astype(np.float32)
    p.ref_background = np.full(ref_shape, sky, np.float32)
    p.ref_var = (p.ref_sigma**2 + np.clip(model, 0, None) / p.ref_gain).astype(np.float32)
    p.ref_saturated = img >= p.saturation
    p.ref_wcs = ref_wcs
    p.extra["ref_scale"] = ref_scale
    p.extra["rotation_deg"] = rotation_deg
    return p


def add_transients_on_galaxies(p: ImagePair, n: int, snr: tuple[float, float], seed: int) -> None:
    """Add ``n`` point sources at (near) the centres of the brightest galaxies of the science image,
    with Poisson noise; appended to ``p.transients`` (``on_galaxy`` True)."""
    g = p.galaxies
    if n <= 0 or not len(g["x"]):
        p.transients.setdefault("on_galaxy", np.zeros(len(p.transients["x"]), bool))
        return
    rng = np.random.default_rng([seed, 11])
    ny, nx = p.new.shape
    m = 3 * p.new_psf.shape[0] // 2
    ok = (g["x"] > m) & (g["x"] < nx - 1 - m) & (g["y"] > m) & (g["y"] < ny - 1 - m)
    order = np.argsort(-g["flux_ref"] * ok)[: min(n, int(ok.sum()))]
    x = g["x"][order] + rng.uniform(-1.0, 1.0, order.size)
    y = g["y"][order] + rng.uniform(-1.0, 1.0, order.size)
    s = np.exp(rng.uniform(math.log(snr[0]), math.log(snr[1]), order.size))
    sig = p.fwhm_at(x, "new") / FWHM_PER_SIGMA
    flux = s * p.new_sigma * np.sqrt(4.0 * math.pi) * sig
    model = render_sources(p.new.shape, x, y, flux, p.fwhm_at(x, "new"), size=p.new_psf.shape[0],
                           profile=p.psf_profile, moffat_beta=p.moffat_beta)
    p.new = np.minimum(p.new + rng.poisson(model * p.new_gain) / p.new_gain, p.saturation).astype(np.float32)
    p.new_model = (p.new_model + model).astype(np.float32)
    p.new_var = (p.new_var + model / p.new_gain).astype(np.float32)
    t = p.transients
    flags = np.r_[t.get("on_galaxy", np.zeros(len(t["x"]), bool)), np.ones(order.size, bool)]
    p.transients = {"x": np.r_[t["x"], x], "y": np.r_[t["y"], y], "flux": np.r_[t["flux"], flux],
                    "snr_new": np.r_[t["snr_new"], s], "on_galaxy": flags}


def add_bleeds(image: np.ndarray, saturation: float, *, length: int = 25, seed: int = 0) -> np.ndarray:
    """Bleed trails: every saturated pixel's column is set to ``saturation`` up and down for
    ``length`` px (charge overflowing along the readout direction). Returns the bleed mask."""
    sat = image >= saturation
    if not sat.any():
        return sat
    rng = np.random.default_rng(seed)
    trail = sat.copy()
    ys, xs = np.nonzero(sat)
    for x in np.unique(xs):
        col = ys[xs == x]
        n = int(length * rng.uniform(0.6, 1.4))
        lo, hi = max(0, col.min() - n), min(image.shape[0], col.max() + n + 1)
        trail[lo:hi, x] = True
    image[trail] = saturation
    return trail


def _header(wcs: Any, band: str, extra: dict[str, Any]) -> Any:
    h = wcs.to_header() if wcs is not None else None
    if h is None:
        from astropy.io import fits

        h = fits.Header()
    h["FILTER"] = band
    for k, v in extra.items():
        h[k] = v
    return h


def write_plain_fits(path: str | os.PathLike, image: np.ndarray, wcs: Any, band: str = "r", **keywords: Any) -> None:
    """One image in the primary HDU (float32), its WCS, ``FILTER`` and the given keywords
    (``GAIN=2.0``, ``RDNOISE=5.0``, ``SATURATE=6e4``, ``MAGZP=27.3``, ``EXPTIME=30.0``...)."""
    from astropy.io import fits

    fits.PrimaryHDU(image.astype(">f4"), header=_header(wcs, band, keywords)).writeto(path, overwrite=True)


#: The MASK planes (name -> bit) of the calexp-like files written here, as ``MP_<NAME>`` keywords.
CALEXP_MASK_PLANES: dict[str, int] = {"BAD": 0, "SAT": 1}


def calexp_headers(image_header: Any, band: str, *, bunit: str = "adu",
                   mask_planes: dict[str, int] | None = None, **primary: Any) -> tuple[Any, Any, Any]:
    """The headers of an LSST calexp-like file: (primary HDU, IMAGE header, MASK header).

    The primary HDU holds ``INSTRUME = LSSTCam``, ``FILTER = <band>_sim_1.4`` and the ``primary`` keywords
    (e.g. ``TILE_ID``); the IMAGE header is ``image_header`` (the WCS; changed in place) with ``EXTNAME``
    and ``BUNIT``; the MASK header names each plane's bit (``MP_<NAME>``, default
    :data:`CALEXP_MASK_PLANES`)."""
    from astropy.io import fits

    ph = fits.PrimaryHDU()
    ph.header["INSTRUME"] = "LSSTCam"
    ph.header["FILTER"] = f"{band}_sim_1.4"
    for k, v in primary.items():
        ph.header[k] = v
    image_header["EXTNAME"] = "IMAGE"
    image_header["BUNIT"] = bunit
    mh = fits.Header()
    mh["EXTNAME"] = "MASK"
    for name, bit in (CALEXP_MASK_PLANES if mask_planes is None else mask_planes).items():
        key = f"MP_{name}"
        mh[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    return ph, image_header, mh


def write_calexp_fits(path: str | os.PathLike, image: np.ndarray, variance: np.ndarray, wcs: Any, band: str = "r",
                      saturated: np.ndarray | None = None) -> None:
    """LSST calexp-like: primary (INSTRUME, FILTER) + IMAGE (WCS) + MASK (``MP_*`` planes) + VARIANCE."""
    from astropy.io import fits

    ph, h, mh = calexp_headers(wcs.to_header(), band)
    mask = np.zeros(image.shape, np.int32)
    if saturated is not None:
        mask[saturated] |= 1 << 1
    fits.HDUList([ph, fits.ImageHDU(image.astype(">f4"), header=h), fits.ImageHDU(mask.astype(">i4"), header=mh),
                  fits.ImageHDU(variance.astype(">f4"), name="VARIANCE")]).writeto(path, overwrite=True)


def write_euclid_fits(path: str | os.PathLike, image: np.ndarray, variance: np.ndarray, wcs: Any,
                      band: str = "VIS", saturation: float | None = None) -> None:
    """Euclid-like: primary (TELESCOP, FILTER) + SCI (WCS, ``SATURATE`` when given) + RMS + FLG (bit 0 = saturated)."""
    from astropy.io import fits

    ph = fits.PrimaryHDU()
    ph.header["TELESCOP"] = "EUCLID"
    ph.header["FILTER"] = band
    h = wcs.to_header()
    h["EXTNAME"] = "SCI"
    flg = np.zeros(image.shape, ">i4")
    if saturation is not None:
        h["SATURATE"] = float(saturation)
        flg[image >= saturation] = 1
    fits.HDUList([ph, fits.ImageHDU(image.astype(">f4"), header=h),
                  fits.ImageHDU(np.sqrt(variance).astype(">f4"), name="RMS"),
                  fits.ImageHDU(flg, name="FLG")]).writeto(path, overwrite=True)


@dataclass
class SampleImages:
    """What :func:`write_sample_images` wrote (paths as strings).

    root: the output directory. science / reference: {layout: directory}. tiles: {instrument:
    [npz paths]}. truth: the transients Parquet. pairs: {layout: [pair names]}. readme: the
    commands to run.
    """

    root: str
    science: dict[str, str]
    reference: dict[str, str]
    tiles: dict[str, list[str]]
    truth: str
    pairs: dict[str, list[str]]
    readme: str


def _plain_pair(i: int, n_pairs: int, shape: tuple[int, int], seed: int) -> ImagePair:
    common: dict[str, Any] = dict(n_stars=max(120, shape[0] * shape[1] // 350), n_galaxies=max(8, shape[0] * shape[1] // 12000),
                  transient_snr=(6.0, 40.0), psf_gradient=0.1, sky_gradient=0.3, n_saturated=3)
    null = n_pairs >= 3 and i == n_pairs - 1
    nt = 0 if null else 6
    if i % 2 == 1 and not null:
        p = make_rotated_pair(shape, seed=seed + i, n_transients=nt, **common)
    else:
        p = make_image_pair(shape, seed=seed + i, n_transients=nt, shift=(0.35, -0.25) if i else (0.0, 0.0),
                            **common)
    add_transients_on_galaxies(p, 0 if null else 3, (10.0, 40.0), seed + i)
    ny, nx = p.new.shape
    if not null:  # a NaN region (a dead amplifier corner) in the science image
        p.new[: ny // 8, nx - nx // 6 :] = np.nan
    p.extra["bleed_new"] = add_bleeds(p.new, p.saturation, seed=seed + i)
    p.extra["bleed_ref"] = add_bleeds(p.ref, p.saturation, seed=seed + i + 100)
    p.extra["null"] = null
    return p


def write_sample_images(out: str | os.PathLike, *, n_pairs: int = 3, size: int = 512, seed: int = 0,
                        layouts: tuple[str, ...] = ("plain", "rubin", "euclid"), n_tiles: int = 32,
                        tile_size: int = 32) -> SampleImages:
    """Write sample pairs in each of ``layouts`` (``n_pairs`` each, ``size`` px square science
    images), ``n_tiles`` multi-band tiles for the tile encoder (0 = none), the transients
    Parquet and a README under ``out``; see the module docstring. Deterministic given ``seed``.
    Refuses to write into a directory that already has files other than its own outputs.
    """
    import pandas as pd

    if n_pairs < 1 or size < 96:
        raise ValueError(f"n_pairs={n_pairs}, size={size}: need at least one pair of at least 96 px")
    bad = [x for x in layouts if x not in ("plain", "rubin", "euclid")]
    if bad:
        raise ValueError(f"layouts: {bad} are not among plain, rubin, euclid")
    root = Path(out)
    ours = {"plain", "rubin", "euclid", "tiles", "truth", "README.txt"}
    if root.exists() and any(e.name not in ours for e in root.iterdir()):
        raise FileExistsError(f"{root} holds other files; choose a new or empty directory for the sample images")
    shape = (int(size), int(size))
    rows: list[dict[str, Any]] = []
    star_rows: list[Any] = []
    sci_dirs: dict[str, Any] = {}
    ref_dirs: dict[str, Any] = {}
    pairs: dict[str, list[str]] = {}
    for layout in layouts:
        sd, rd = root / layout / "sci", root / layout / "ref"
        sd.mkdir(parents=True, exist_ok=True)
        rd.mkdir(parents=True, exist_ok=True)
        sci_dirs[layout], ref_dirs[layout] = str(sd), str(rd)
        pairs[layout] = []
        for i in range(n_pairs):
            off = {"plain": 0, "rubin": 1000, "euclid": 2000}[layout]
            if layout == "plain":
                p = _plain_pair(i, n_pairs, shape, seed + off)
                name, band = f"field_{i:03d}", "r"
                zp_new = ZP_REF + 2.5 * math.log10(p.flux_ratio)
                common = dict(GAIN=p.new_gain, RDNOISE=3.0, SATURATE=p.saturation, INSTRUME="SIMCAM")
                write_plain_fits(sd / f"{name}_{band}.fits", p.new, p.new_wcs, band, MAGZP=zp_new, EXPTIME=60.0,
                                 **common)
                write_plain_fits(rd / f"{name}_{band}.fits", p.ref, p.ref_wcs, band, MAGZP=ZP_REF, EXPTIME=300.0,
                                 **{**common, "GAIN": p.ref_gain})
            else:
                p = make_image_pair(shape, seed=seed + off + i, n_transients=6, transient_snr=(6.0, 40.0),
                                    n_stars=max(120, size * size // 350), shift=(0.3, -0.2) if i % 2 else (0.0, 0.0))
                p.transients["on_galaxy"] = np.zeros(len(p.transients["x"]), bool)
                name = f"tile_{i:03d}"
                band = "r" if layout == "rubin" else "VIS"
                if layout == "rubin":
                    write_calexp_fits(sd / f"{name}_{band}.fits", p.new, p.new_var, p.new_wcs, band, p.new_saturated)
                    write_calexp_fits(rd / f"{name}_{band}.fits", p.ref, p.ref_var, p.ref_wcs, band, p.ref_saturated)
                else:
                    write_euclid_fits(sd / f"{name}_{band}.fits", p.new, p.new_var, p.new_wcs, band, p.saturation)
                    write_euclid_fits(rd / f"{name}_{band}.fits", p.ref, p.ref_var, p.ref_wcs, band, p.saturation)
            pairs[layout].append(f"{name}/{band}")
            st = p.stars
            star_rows.append(pd.DataFrame({
                "layout": layout, "pair_id": f"{name}/{band}", "x": st["x"], "y": st["y"], "flux_new": st["flux_new"],
                "snr_new": st["flux_new"] / (p.new_sigma * np.sqrt(4.0 * math.pi) * p.new_fwhm / FWHM_PER_SIGMA),
                "saturated": st["saturated"]}))
            t = p.transients
            if len(t["x"]):
                ra, dec = p.new_wcs.pixel_to_world_values(t["x"], t["y"])
            else:
                ra = dec = np.zeros(0)
            for j in range(len(t["x"])):
                rows.append({"layout": layout, "pair_id": f"{name}/{band}", "science": str(sd / f"{name}_{band}.fits"),
                             "x": float(t["x"][j]), "y": float(t["y"][j]), "ra": float(ra[j]), "dec": float(dec[j]),
                             "flux": float(t["flux"][j]), "snr_new": float(t["snr_new"][j]),
                             "on_galaxy": bool(t["on_galaxy"][j])})
    tiles: dict[str, list[str]] = {}
    if n_tiles:
        from skybatch.sample.tiles import make_multiband_tiles, write_npz_tiles

        mt = make_multiband_tiles(n_tiles=n_tiles, size=tile_size, seed=seed)
        tiles = {k: [str(p) for p in v] for k, v in write_npz_tiles(mt, root / "tiles").items()}
    (root / "truth").mkdir(parents=True, exist_ok=True)
    truth = root / "truth" / "transients.parquet"
    cols = ["layout", "pair_id", "science", "x", "y", "ra", "dec", "flux", "snr_new", "on_galaxy"]
    pd.DataFrame(rows, columns=cols).to_parquet(truth, index=False)
    pd.concat(star_rows, ignore_index=True).to_parquet(root / "truth" / "stars.parquet", index=False)
    readme = root / "README.txt"
    lines = ["Sample images written by skybatch (skybatch.sample.images.write_sample_images).", ""]
    for layout in layouts:
        lines.append(f"skybatch run difference --science {root / layout / 'sci'} --reference {root / layout / 'ref'} "
                     f"--out {root / 'out' / (layout + '.zarr')}")
    if tiles:
        lines.append(f"skybatch run ingest-tiles --source '{root / 'tiles' / 'rubin'}/*.npz' --source "
                     f"'{root / 'tiles' / 'euclid'}/*.npz' --store {root / 'out' / 'tiles.zarr'}")
    lines += ["", f"ground truth: {truth} (one row per transient; x, y on the science grid, 0-based)"]
    readme.write_text("\n".join(lines) + "\n")
    return SampleImages(str(root), sci_dirs, ref_dirs, tiles, str(truth), pairs, str(readme))
