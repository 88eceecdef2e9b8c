"""Veto regions around bright and saturated stars, where PSF-model residuals are expected.

A star of flux ``F`` differenced with PSFs accurate to a fraction ``accuracy`` of their
profile leaves a residual of order ``accuracy x S/N`` sigma in ``S_corr`` (a star of
S/N 1000 with PSFs good to 0.5 % leaves ~5 sigma): the matched filter cannot tell it from
a transient. Stars whose residual could reach half the detection threshold, and every
saturated star (whose core is not measured at all), get a veto disc:

* its radius is where the star's own light falls to the background noise (its 1-sigma
  isophote, for a Gaussian core of the measured FWHM: ``sigma_psf sqrt(2 ln(peak /
  sigma))``), plus one FWHM of the difference image's PSF (the matched filter spreads
  a residual by that much). Brighter stars get bigger discs, growing as sqrt(ln F).
* for a saturated region (bleed trails included) the peak is unknown; with the
  saturation level ``L`` reached on the region's edge, a Gaussian core gives
  ``r^2 = r_sat^2 + 2 sigma_psf^2 ln(L / sigma)`` with ``r_sat`` the region's
  equivalent radius; the disc is grown from the region's own pixels by ``r - r_sat``
  plus one FWHM of P_D, so bleed trails are covered along their length.

Nothing is dropped silently: the pipeline writes the veto into the mask map (its own
bit), counts the detections that fell in it, and lists the vetoed stars.
This is host-side (NumPy / scipy / sep) code, like star finding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.imaging.psf import FWHM_PER_SIGMA, find_stars
from skybatch.xp import to_numpy

__all__ = ["Veto", "bright_star_veto"]


@dataclass(frozen=True)
class Veto:
    """Output of :func:`bright_star_veto`.

    Attributes
    ----------
    mask : (ny, nx) bool, True = vetoed (a bright or saturated star's residual zone).
    stars : dict of (n,) NumPy arrays: ``x``, ``y`` (px), ``snr`` (PSF S/N, inf when
        saturated), ``radius`` (px), ``saturated`` (bool), one row per veto disc.
    """

    mask: np.ndarray
    stars: dict[str, np.ndarray]

    @property
    def fraction(self) -> float:
        """Fraction of the image vetoed."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _disc(mask: np.ndarray, x: float, y: float, r: float) -> None:
    ny, nx = mask.shape
    y0, y1 = max(math.floor(y - r), 0), min(math.ceil(y + r) + 1, ny)
    x0, x1 = max(math.floor(x - r), 0), min(math.ceil(x + r) + 1, nx)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def bright_star_veto(
    images: list[Any],
    sigmas: list[float],
    fwhm: float,
    pd_fwhm: float,
    *,
    saturated: Any = None,
    bad: Any = None,
    accuracy: float = 0.005,
    threshold: float = 5.0,
    min_growth: float = 0.0,
) -> Veto:
    """Veto discs around the bright and saturated stars of a pair.

    Parameters
    ----------
    images : background-subtracted (ny, nx) images on one grid (science, and the reference
        on the science grid); stars are found in each (static stars are in both).
    sigmas : their background noise (scalar, same units as each image).
    fwhm : PSF FWHM (px) of the broader image (sets the star's core profile).
    pd_fwhm : FWHM (px) of the difference image's PSF (how far the matched filter spreads).
    saturated : (ny, nx) bool, saturated pixels (either image, bleeds included).
    bad : (ny, nx) bool, pixels to ignore when finding stars.
    accuracy : fractional accuracy of the PSF models; stars with ``accuracy x S/N >
        threshold / 2`` are vetoed. 0 vetoes only saturated stars.
    threshold : the detection threshold (sigma).
    min_growth : saturated regions are grown by at least this much (px): a floor for PSFs
        whose wings are broader than a Gaussian core's (e.g. the P_D stamp's width).

    Returns
    -------
    Veto
    """
    import scipy.ndimage as ndi

    if not (accuracy >= 0 and math.isfinite(accuracy)):
        raise ValueError(f"accuracy={accuracy!r}: the PSF models' fractional accuracy must be >= 0")
    imgs = [np.asarray(to_numpy(a), dtype=np.float32) for a in images]
    ny, nx = imgs[0].shape
    mask = np.zeros((ny, nx), bool)
    s_psf = max(fwhm, 0.5) / FWHM_PER_SIGMA
    rows: dict[str, list] = {"x": [], "y": [], "snr": [], "radius": [], "saturated": []}
    sat = np.zeros((ny, nx), bool) if saturated is None else np.asarray(to_numpy(saturated), bool)
    ignore = sat if bad is None else (sat | np.asarray(to_numpy(bad), bool))

    if sat.any():
        # per saturated region (bleeds included), inside its bounding box grown by the margin:
        # cheap even on large images with a few saturated stars
        lab, n = ndi.label(sat, structure=np.ones((3, 3), bool))
        boxes = ndi.find_objects(lab)
        pad = int(math.ceil(pd_fwhm + max(min_growth, 0.0) + 3.0 * s_psf * math.sqrt(2.0 * math.log(1e6)))) + 2
        for k, sl in enumerate(boxes, start=1):
            if sl is None:
                continue
            y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, ny)
            x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, nx)
            own = lab[y0:y1, x0:x1] == k
            edge = ndi.binary_dilation(own, iterations=1) & ~own
            level = 1.0
            for img, sg in zip(imgs, sigmas):
                v = img[y0:y1, x0:x1][edge]
                v = v[np.isfinite(v)]
                if v.size:  # the level reached next to the region, in sigma; the larger of the images
                    level = max(level, float(np.median(v)) / float(sg))
            level = min(level, 1e6)  # (the box margin holds the growth up to this level)
            r_sat = math.sqrt(float(own.sum()) / math.pi)
            grow = max(math.sqrt(r_sat**2 + 2.0 * s_psf**2 * math.log(level)) - r_sat + pd_fwhm, min_growth)
            dist = ndi.distance_transform_edt(~own)
            mask[y0:y1, x0:x1] |= dist <= grow
            cy, cx = np.argwhere(own).mean(axis=0)
            rows["x"].append(float(cx + x0))
            rows["y"].append(float(cy + y0))
            rows["snr"].append(math.inf)
            rows["radius"].append(float(r_sat + grow))
            rows["saturated"].append(True)

    if accuracy > 0:
        snr_min = 0.5 * threshold / accuracy
        seen: list[tuple[float, float]] = []
        for img, sg in zip(imgs, sigmas):
            cat = find_stars(img, float(sg), threshold=10.0, mask=ignore)
            snr = cat["flux"] / (float(sg) * math.sqrt(4.0 * math.pi) * s_psf)
            for j in np.flatnonzero(snr > snr_min):
                x, y = float(cat["x"][j]), float(cat["y"][j])
                peak = cat["flux"][j] / (2.0 * math.pi * s_psf * s_psf) / float(sg)
                r = s_psf * math.sqrt(2.0 * math.log(max(peak, 1.0))) + pd_fwhm
                _disc(mask, x, y, r)
                if all((x - a) ** 2 + (y - b) ** 2 > 4.0 for a, b in seen):
                    seen.append((x, y))
                    rows["x"].append(x)
                    rows["y"].append(y)
                    rows["snr"].append(float(snr[j]))
                    rows["radius"].append(float(r))
                    rows["saturated"].append(False)
    stars = {k: np.asarray(v, dtype=bool if k == "saturated" else np.float64) for k, v in rows.items()}
    return Veto(mask, stars)
