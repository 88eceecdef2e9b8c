"""Per-pixel noise of an image that ships without a noise map.

Most single-HDU survey images (ZTF, Pan-STARRS, DECam stacks, cutout services) carry
no variance plane. :func:`image_noise` builds one from the image itself:

``var = max(rms_bkg^2, (read_noise / gain)^2) + max(image - background, 0) / gain``

- ``rms_bkg``: the robust background noise map (sep's mesh RMS on NumPy, the xp mesh
  elsewhere; sources masked) of the background-subtracted image, which already contains the sky's Poisson noise and the
  read noise, so read noise only enters as a floor (a sky-subtracted image whose
  measured RMS is below the read noise is mislabelled or rescaled);
- source (Poisson) noise from ``gain`` (e-/ADU) when known; without a gain sources get
  the background noise only (their significance is then overestimated near bright
  stars; give the gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.imaging.background import estimate_background
from skybatch.xp import get_namespace

Array = Any

__all__ = ["ImageNoise", "image_noise"]


@dataclass(frozen=True)
class ImageNoise:
    """Output of :func:`image_noise`.

    sigma : (ny, nx) 1-sigma noise (image units), ``inf`` at masked / non-finite pixels.
    background_rms : the global robust background RMS (image units).
    read_noise_floor : ``read_noise / gain`` (image units) when both were given, else 0.
    source_term : True when the gain added the sources' Poisson noise.
    """

    sigma: Array
    background_rms: float
    read_noise_floor: float
    source_term: bool


def image_noise(image: Array, *, gain: float | None = None, read_noise: float | None = None,
                mask: Array | None = None, box: int = 64) -> ImageNoise:
    """Noise map of a raw image (background included) from the image itself.

    image: (ny, nx) image in ADU (or any linear unit ``gain`` converts to electrons).
    gain: e- per image unit; read_noise: e- RMS per pixel (``RDNOISE``); mask: True = bad.
    box: background mesh (px); smaller than the scale of sky variations.
    """
    xp = get_namespace(image)
    img = xp.asarray(image, dtype=xp.float32)
    bad = ~xp.isfinite(img)
    if mask is not None:
        bad = bad | xp.asarray(mask)
    ny, nx = (int(s) for s in img.shape)
    box = max(8, min(int(box), max(8, min(ny, nx) // 2)))
    bkg = estimate_background(img, mask=bad, box=box)
    # the RMS of the background-subtracted image: a sky gradient inside a mesh box would
    # otherwise count as noise (10-15 % too much for a 30 % gradient across the image)
    # (the sources found for the first background are masked again: no second extraction)
    src = bad if bkg.sources is None else (bad | bkg.sources)
    flat = estimate_background(xp.where(bad, 0.0, img - bkg.background), mask=src, box=box, mask_sources=False)
    rms = xp.asarray(flat.rms, dtype=xp.float32)
    floor = 0.0
    if gain and read_noise and gain > 0 and read_noise > 0:
        floor = float(read_noise) / float(gain)
        rms = xp.maximum(rms, xp.float32(floor))
    var = rms * rms
    if gain and gain > 0:
        src = xp.where(bad, 0.0, img - bkg.background)
        var = var + xp.maximum(src, 0.0) / xp.float32(gain)
    sigma = xp.where(bad, xp.inf, xp.sqrt(var)).astype(xp.float32)
    return ImageNoise(sigma, float(flat.global_rms), floor, bool(gain and gain > 0))
