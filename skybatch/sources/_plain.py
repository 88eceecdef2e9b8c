"""Plain FITS images: one image in the primary HDU or in any image extension.

The layout of most survey images and cutouts (ZTF, Pan-STARRS, DECam stacks, SkyView / DSS
cutouts): no IMAGE/VARIANCE or SCI/RMS naming, the WCS and the CCD keywords in the image's
header. Rules (the documented contract, used by :mod:`skybatch.sources.tiles`):

- **image**: the HDU named by the ``hdu`` setting (EXTNAME, or its number: ``0``, ``1``...),
  else the first HDU holding a 2-D image (primary first) that is not itself a noise or mask
  extension by name.
- **noise**: another HDU of the same shape named ``VARIANCE``/``VAR`` (variance),
  ``WEIGHT``/``WHT``/``IVAR``/``INVVAR`` (inverse variance), or ``RMS``/``ERR``/``ERROR``/
  ``SIGMA``/``NOISE``/``STD``/``UNC`` (1-sigma); else it is estimated from the image
  (:func:`skybatch.imaging.noise.image_noise`: robust background RMS, plus Poisson noise from
  ``GAIN`` and a read-noise floor from ``RDNOISE``/``READNOI``).
- **mask**: an HDU of the same shape named ``MASK``/``FLAGS``/``FLAG``/``DQ``/``BPM``: any
  non-zero value makes the pixel bad (there are no named planes to choose from).
- **header numbers** (:func:`header_meta`): saturation ``SATURATE``/``SATURATION``/
  ``SATLEVEL``/``SATURLEV``; gain ``GAIN``/``EGAIN``/``CCDGAIN``; read noise ``RDNOISE``/
  ``READNOI``/``READNOIS``/``RON``; zero point ``MAGZP``/``MAGZPT``/``ZEROPT``/``PHOTZP``/
  ``MAGZERO``/``ZP``; exposure time ``EXPTIME``/``EXPOSURE``/``TEXPTIME`` (image header first,
  then the primary).
- **band**: the ``FILTER``-like keyword, reduced to its band letter when it has one
  (``"ZTF_r"``, ``"r.00000"``, ``"g DECam SDSS c0001"`` -> ``r``, ``r``, ``g``), else the file
  name's last token when it is a band letter, else ``unknown``; **instrument**: ``INSTRUME`` /
  ``TELESCOP`` (lower case), else ``generic``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from collections.abc import Callable

from .base import SourceError

__all__ = ["NOISE_NAMES", "MASK_NAMES", "header_meta", "plain_group", "generic_band", "GENERIC_INSTRUMENT"]

NOISE_NAMES = {
    "VARIANCE": "variance", "VAR": "variance", "WEIGHT": "ivar", "WHT": "ivar", "IVAR": "ivar", "INVVAR": "ivar",
    "RMS": "rms", "ERR": "rms", "ERROR": "rms", "SIGMA": "rms", "NOISE": "rms", "STD": "rms", "UNC": "rms",
}  # fmt: skip
MASK_NAMES = ("MASK", "FLAGS", "FLAG", "DQ", "BPM")
GENERIC_INSTRUMENT = "generic"
UNKNOWN_BAND = "unknown"
_KEYS = {
    "saturate": ("SATURATE", "SATURATION", "SATLEVEL", "SATURLEV"),
    "gain": ("GAIN", "EGAIN", "CCDGAIN", "GAINEFF"),
    "read_noise": ("RDNOISE", "READNOI", "READNOIS", "RON"),
    "zero_point": ("MAGZP", "MAGZPT", "ZEROPT", "PHOTZP", "MAGZERO", "ZP"),
    "exptime": ("EXPTIME", "EXPOSURE", "TEXPTIME"),
}
_BAND_LETTERS = set("ugrizyUBVRIYJHK")


def header_meta(headers: list[Any]) -> str:
    """JSON of the numbers the differencing uses (saturate, gain, read_noise, zero_point, exptime).

    Keywords are looked up in ``headers`` in order; non-numeric or non-finite values are
    skipped, as are non-positive ones except the zero point. Empty keys are left out.
    """
    out: dict[str, float] = {}
    for name, keys in _KEYS.items():
        for h in headers:
            v = next((h.get(k) for k in keys if h.get(k) is not None), None)
            if v is None:
                continue
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f) and (f > 0 or name == "zero_point"):
                out[name] = f
                break
    return json.dumps(out, sort_keys=True) if out else ""


def generic_band(raw: str | None) -> str | None:
    """A band letter out of a filter keyword (``"ZTF_r"`` -> ``"r"``), else the stripped value."""
    if raw is None or not str(raw).strip():
        return None
    s = str(raw).strip()
    for tok in re.split(r"[_\-\s.:/]+", s):
        if len(tok) == 1 and tok in _BAND_LETTERS:
            return tok
    low = s.lower()
    m = re.match(r"^(?:sdss|ps1|ztf|decam|hsc|lsst)?[_\-\s]?([ugrizy])(?:[^a-z]|$)", low)
    return m.group(1) if m else s


def band_token(stem: str) -> str | None:
    """The file name's last token when it is a band letter (``field12_r`` -> ``r``)."""
    tok = re.split(r"[_\-.]", stem)[-1] if re.search(r"[_\-.]", stem) else None
    return tok if tok and len(tok) == 1 and tok in _BAND_LETTERS else None


def _select(lay: Any, hdu: str | None, image_shape: Callable[[Any], tuple[int, ...]], url: str):
    entries = list(lay.entries)
    if hdu is not None:
        h = str(hdu).strip()
        if h.isdigit():
            i = int(h)
            if i >= len(entries):
                raise SourceError(url, "missing-hdu", f"--hdu {h}: the file has only {len(entries)} HDUs "
                                  f"({lay.names}); choose one of them")
            e = entries[i]
        else:
            matches = [e for e in entries if e.name == h.upper()]
            if not matches:
                raise SourceError(url, "missing-hdu", f"--hdu {h!r}: no HDU of that name (HDUs: {lay.names}); "
                                  "choose one of them, or leave --hdu out for the first 2-D image")
            e = matches[0]
        shape = image_shape(e)
        if len(shape) != 2 or 0 in shape:
            raise SourceError(url, "not-an-image", f"--hdu {h!r}: HDU {e.name} has shape {shape}; expected a 2-D "
                              "image")
        return e
    skip = set(NOISE_NAMES) | set(MASK_NAMES)
    for e in entries:
        shape = image_shape(e)
        if len(shape) == 2 and 0 not in shape and e.name not in skip:
            return e
    raise SourceError(url, "not-an-image", f"no 2-D image HDU in this file (HDUs: {lay.names} with shapes "
                      f"{[image_shape(e) for e in entries]}); skybatch differences 2-D images")


def plain_group(url: str, lay: Any, hdu: str | None, image_shape: Callable[[Any], tuple[int, ...]]) -> dict[str, Any]:
    """``{"image": entry, "noise": (entry, kind) or None, "mask": entry or None, "family": "plain"}``."""
    img = _select(lay, hdu, image_shape, url)
    shape = image_shape(img)
    noise = mask = None
    for e in lay.entries:
        if e is img or image_shape(e) != shape:
            continue
        if noise is None and e.name in NOISE_NAMES:
            noise = (e, NOISE_NAMES[e.name])
        elif mask is None and e.name in MASK_NAMES:
            mask = e
    return {"image": img, "noise": noise, "mask": mask, "family": "plain"}


def locator_name(lay: Any, e: Any | None) -> str:
    """``#<index>`` of an HDU (EXTNAMEs of plain files need not be unique), or ``""``."""
    return "" if e is None else f"#{lay.entries.index(e)}"
