"""The same sky in every band: WCS footprints and resampling onto one sky grid (pure NumPy).

Rubin (0.2″/px), Euclid VIS (0.1″/px) and NISP (0.3″/px) images of one sky tile have different
pixel grids, and each band carries its own small astrometric offset. Cropping every plane to the
same number of *pixels* gives three different pieces of sky. Here a sample is a square **sky
region** of ``region_arcsec`` on a side around a sky position, and every band is resampled from
its own WCS onto one grid of ``size`` × ``size`` pixels on that region (north up, east left, a
gnomonic projection centred on the region):

- the band's WCS maps each grid point to the band's native pixel (scale, rotation and the
  sub-pixel offset all come from the WCS);
- each grid pixel averages ``k × k`` bilinear samples (``k = ceil(2 × grid scale / native scale)``),
  so a finer native grid (VIS) is area-averaged and a coarser one (NISP) interpolated;
- the image is resampled as surface brightness and returned as flux per grid pixel (total flux
  kept); the noise is the resampled RMS scaled by the pixel areas and by ``1/sqrt(native pixels
  per grid pixel)`` when several native pixels are averaged;
- grid pixels outside the band's footprint, or touching a bad native pixel, get image 0 and
  noise ``inf`` (no information).

:func:`band_geometry` gives what the encoder is told about each band image: the log ratio of the
native to the grid pixel scale and the sub-pixel phase (dy, dx) of the native grid at the
region centre.

WCS: :func:`parse_tan_header` reads a FITS TAN header string (``CRVAL``, ``CRPIX``, and ``CD`` or
``PC``/``CDELT`` or ``CDELT``/``CROTA2``) without astropy, so thousands of planes parse in
milliseconds; headers with other projections or distortion terms fall back to astropy's WCS,
linearised at the header's reference point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TanWCS",
    "parse_tan_header",
    "tan_header",
    "plane_centre",
    "region_inside",
    "resample_to_region",
    "band_geometry",
    "GEOMETRY_FEATURES",
]

#: Number of geometry features per band image (see :func:`band_geometry`).
GEOMETRY_FEATURES = 3
_D2R = math.pi / 180.0


@dataclass(frozen=True)
class TanWCS:
    """A linear gnomonic (TAN) WCS.

    crval: (ra, dec) of the reference point in degrees. crpix: (x, y) of the reference pixel,
    1-based (FITS). cd: (2, 2) degrees per pixel, rows = (RA-like, Dec-like) intermediate axes,
    columns = (x, y) pixel axes.
    """

    crval: tuple[float, float]
    crpix: tuple[float, float]
    cd: np.ndarray

    @property
    def pixel_scale_arcsec(self) -> float:
        """Mean pixel side in arcsec: sqrt(|det CD|) × 3600."""
        return float(math.sqrt(abs(np.linalg.det(self.cd))) * 3600.0)

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel (x, y) of sky positions (degrees); NaN on the far hemisphere."""
        xi, eta = _gnomonic(np.asarray(ra, np.float64), np.asarray(dec, np.float64), *self.crval)
        inv = np.linalg.inv(self.cd)
        x = inv[0, 0] * xi + inv[0, 1] * eta + self.crpix[0] - 1.0
        y = inv[1, 0] * xi + inv[1, 1] * eta + self.crpix[1] - 1.0
        return x, y

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky (ra, dec) in degrees of 0-based pixel positions."""
        dx = np.asarray(x, np.float64) - (self.crpix[0] - 1.0)
        dy = np.asarray(y, np.float64) - (self.crpix[1] - 1.0)
        xi = self.cd[0, 0] * dx + self.cd[0, 1] * dy
        eta = self.cd[1, 0] * dx + self.cd[1, 1] * dy
        return _inverse_gnomonic(xi, eta, *self.crval)


def _gnomonic(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (ξ east, η north) in degrees of (ra, dec) about (ra0, dec0)."""
    a, d, d0 = (ra - ra0) * _D2R, dec * _D2R, dec0 * _D2R
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    cosc = np.where(cosc > 0, cosc, np.nan)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return xi / _D2R, eta / _D2R


def _inverse_gnomonic(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of standard coordinates (ξ, η) in degrees about (ra0, dec0)."""
    x, y, d0 = xi * _D2R, eta * _D2R, dec0 * _D2R
    den = np.cos(d0) - y * np.sin(d0)
    ra = ra0 + np.arctan2(x, den) / _D2R
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den)) / _D2R
    return np.mod(ra, 360.0), dec


def _cards(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(header), 80):
        card = header[i : i + 80]
        if len(card) < 10 or card[8:10] != "= ":
            continue
        key = card[:8].strip().upper()
        value = card[10:].split("/", 1)[0].strip() if not card[10:].strip().startswith("'") else card[10:].strip()
        if value.startswith("'"):
            value = value[1:].split("'", 1)[0].strip()
        out[key] = value
    return out


def parse_tan_header(header: str) -> TanWCS | None:
    """A :class:`TanWCS` from a FITS header string (80-character cards); None for ``""``.

    Raises
    ------
    ValueError
        The header has no celestial WCS (names the missing keywords).
    """
    if not header or not header.strip():
        return None
    c = _cards(header)
    ctype = (c.get("CTYPE1", ""), c.get("CTYPE2", ""))
    simple = all(t.endswith("-TAN") for t in ctype) and not any(k.startswith(("A_", "B_", "PV")) for k in c)
    if not simple:
        return _astropy_tan(header)
    missing = [k for k in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2") if k not in c]
    if missing:
        raise ValueError(f"WCS header lacks {missing}; a tile plane needs a celestial WCS (RA---TAN/DEC--TAN)")
    f = lambda k, d=0.0: float(c[k]) if k in c else float(d)  # noqa: E731
    if any(k in c for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")):
        cd = np.array([[f("CD1_1"), f("CD1_2")], [f("CD2_1"), f("CD2_2")]])
    elif "CDELT1" in c:
        pc = np.array([[f("PC1_1", 1.0), f("PC1_2")], [f("PC2_1"), f("PC2_2", 1.0)]])
        if "CROTA2" in c and not any(k.startswith("PC") for k in c):
            r = f("CROTA2") * _D2R
            pc = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        cd = np.diag([f("CDELT1"), f("CDELT2")]) @ pc
    else:
        raise ValueError("WCS header has neither CD nor CDELT keywords; cannot tell the pixel scale")
    if abs(np.linalg.det(cd)) == 0:
        raise ValueError("WCS header has a singular CD matrix")
    return TanWCS((f("CRVAL1"), f("CRVAL2")), (f("CRPIX1"), f("CRPIX2")), cd)


def _astropy_tan(header: str) -> TanWCS:
    """Linearise any celestial astropy WCS at its reference pixel (other projections, SIP...)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(fits.Header.fromstring(header)).celestial
    if w.naxis != 2:
        raise ValueError("WCS header has no celestial axes")
    x0, y0 = w.wcs.crpix - 1.0
    ra0, dec0 = (float(v) for v in w.all_pix2world([[x0, y0]], 0)[0])
    h = 0.5
    pts = w.all_pix2world([[x0 + h, y0], [x0 - h, y0], [x0, y0 + h], [x0, y0 - h]], 0)
    xi, eta = _gnomonic(pts[:, 0], pts[:, 1], ra0, dec0)
    cd = np.array([[(xi[0] - xi[1]) / (2 * h), (xi[2] - xi[3]) / (2 * h)],
                   [(eta[0] - eta[1]) / (2 * h), (eta[2] - eta[3]) / (2 * h)]])
    return TanWCS((ra0, dec0), (x0 + 1.0, y0 + 1.0), cd)


def tan_header(ra: float, dec: float, crpix: tuple[float, float], scale_arcsec: float, rotation_deg: float = 0.0) -> str:
    """A TAN header string (north up, east left, optional rotation); ``crpix`` = (x, y) 1-based."""
    r = rotation_deg * _D2R
    s = scale_arcsec / 3600.0
    cd = np.array([[-s * math.cos(r), s * math.sin(r)], [s * math.sin(r), s * math.cos(r)]])

    def card(k: str, v: float | str) -> str:
        text = f"{k:<8}= " + (f"'{v:<8}'".ljust(20) if isinstance(v, str) else f"{float(v):>20.13G}")
        return text.ljust(80)

    cards = [card("WCSAXES", 2), card("CTYPE1", "RA---TAN"), card("CTYPE2", "DEC--TAN"), card("CUNIT1", "deg"),
             card("CUNIT2", "deg"), card("CRVAL1", ra), card("CRVAL2", dec), card("CRPIX1", crpix[0]),
             card("CRPIX2", crpix[1]), card("CD1_1", cd[0, 0]), card("CD1_2", cd[0, 1]), card("CD2_1", cd[1, 0]),
             card("CD2_2", cd[1, 1]), card("RADESYS", "ICRS")]
    return "".join(cards)


def plane_centre(wcs: TanWCS, shape: tuple[int, int]) -> tuple[float, float]:
    """Sky (ra, dec) in degrees of the centre of an image of ``shape`` = (H, W) pixels."""
    h, w = shape
    ra, dec = wcs.pixel_to_sky(np.array((w - 1) / 2.0), np.array((h - 1) / 2.0))
    return float(ra), float(dec)


def _region_offsets(size: int, scale_arcsec: float, oversample: int) -> tuple[np.ndarray, np.ndarray]:
    """(ξ, η) offsets in degrees of the k×k sub-points of every grid pixel: shape (size*k, size*k)."""
    k = oversample
    sub = (np.arange(size * k) + 0.5) / k - 0.5 - (size - 1) / 2.0  # grid-pixel units, centred
    u = sub * scale_arcsec / 3600.0
    eta, xi = np.meshgrid(u, -u, indexing="ij")  # rows go north, columns go west→east left
    return xi, eta


def region_inside(wcs: TanWCS, shape: tuple[int, int], centre: tuple[float, float], region_arcsec: float) -> float:
    """Fraction of a square sky region (side ``region_arcsec``, at ``centre``) inside an image's footprint."""
    xi, eta = _region_offsets(16, region_arcsec / 16.0, 1)
    ra, dec = _inverse_gnomonic(xi, eta, *centre)
    x, y = wcs.sky_to_pixel(ra, dec)
    h, w = shape
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    return float(np.mean(inside))


def resample_to_region(
    image: np.ndarray,
    noise: np.ndarray,
    wcs: TanWCS,
    centre: tuple[float, float],
    size: int,
    scale_arcsec: float,
    *,
    min_coverage: float = 0.999,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample one band image onto the sky grid of ``size`` px of ``scale_arcsec`` at ``centre``.

    Parameters
    ----------
    image, noise:
        (H, W) flux per native pixel and its 1σ RMS (non-finite or ≤ 0 noise = bad pixel).
    wcs:
        The image's WCS.
    centre:
        (ra, dec) of the region centre in degrees.
    size, scale_arcsec:
        Grid side in pixels and grid pixel scale (arcsec).
    min_coverage:
        A grid pixel is valid when at least this fraction of its bilinear weight falls on valid
        native pixels.

    Returns
    -------
    image (size, size) float32 (flux per grid pixel; 0 where invalid) and noise (size, size)
    float32 (1σ per grid pixel; ``inf`` where invalid).
    """
    native = wcs.pixel_scale_arcsec
    k = max(1, int(math.ceil(2.0 * scale_arcsec / native - 1e-6)))  # >= 2 samples per native pixel side
    xi, eta = _region_offsets(size, scale_arcsec, k)
    ra, dec = _inverse_gnomonic(xi, eta, *centre)
    x, y = wcs.sky_to_pixel(ra, dec)
    img = np.asarray(image, np.float64)
    rms = np.asarray(noise, np.float64)
    h, w = img.shape
    good = np.isfinite(img) & np.isfinite(rms) & (rms > 0)
    img0 = np.where(good, img, 0.0)
    rms0 = np.where(good, rms, 0.0)
    x = np.nan_to_num(x, nan=-10.0)
    y = np.nan_to_num(y, nan=-10.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    acc_i = np.zeros_like(x)
    acc_n = np.zeros_like(x)
    acc_w = np.zeros_like(x)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
            wt = wy * wx * (ok & good[yc, xc])
            acc_i += wt * img0[yc, xc]
            acc_n += wt * rms0[yc, xc]
            acc_w += wt
    # points outside the image half a pixel or more count as outside (no edge extrapolation)
    acc_w = np.where((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5), 0.0, acc_w)
    valid_pt = acc_w >= min_coverage
    sb = np.where(valid_pt, acc_i / np.maximum(acc_w, 1e-12), 0.0)
    sn = np.where(valid_pt, acc_n / np.maximum(acc_w, 1e-12), 0.0)
    blocks = lambda a: a.reshape(size, k, size, k)  # noqa: E731
    valid = blocks(valid_pt).all(axis=(1, 3))
    area = (scale_arcsec / native) ** 2  # native pixels per grid pixel
    out_img = blocks(sb).mean(axis=(1, 3)) * area
    out_rms = blocks(sn).mean(axis=(1, 3)) * area / math.sqrt(max(area, 1.0))
    out_img = np.where(valid, out_img, 0.0).astype(np.float32)
    out_rms = np.where(valid & (out_rms > 0), out_rms, np.inf).astype(np.float32)
    return out_img, out_rms


def band_geometry(wcs: TanWCS, centre: tuple[float, float], scale_arcsec: float) -> np.ndarray:
    """(3,) float32: ``[ln(native scale / grid scale), dy, dx]`` of one band image.

    ``dy``, ``dx`` in [-0.5, 0.5) are the sub-pixel phase of the native pixel grid at the region
    centre (where the centre falls relative to the nearest native pixel centre), in native pixels.
    """
    x, y = wcs.sky_to_pixel(np.array(centre[0]), np.array(centre[1]))
    frac = lambda v: float(v - np.floor(v + 0.5))  # noqa: E731
    return np.array([math.log(wcs.pixel_scale_arcsec / scale_arcsec), frac(y), frac(x)], np.float32)
