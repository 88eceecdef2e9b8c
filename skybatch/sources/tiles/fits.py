"""Reading FITS tiles: the LSST (IMAGE/VARIANCE/MASK) and Euclid (SCI/RMS/FLG) layouts, with
detector prefixes, and any other image as a plain image (:mod:`skybatch.sources._plain`).
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import _fits, _plain
from .. import _fitsread
from ..base import SourceError
from .naming import (
    INSTRUMENT_BANDS,
    _instrument_from_bands,
    _instrument_from_path,
    _stem,
    _tile_from_pattern,
    normalize_band,
    normalize_instrument,
)
from .planes import (
    TilePlane,
    TilePlaneInfo,
    TileSourceInfo,
    _check_unchanged,
    _finish_plane,
    _identity,
    _noise_from,
    wcs_header_string,
)

_BAND_KEYWORDS = ("BAND", "FILTER", "FILTNAM", "FILTER1")
_TILE_KEYWORDS = ("TILE_ID", "TILEID", "TILENAME")
_IMAGE_KINDS = {"IMAGE": "lsst", "SCI": "euclid"}
_NOISE_KINDS = {"VARIANCE": "variance", "VAR": "variance", "RMS": "rms", "ERR": "rms"}
_MASK_KINDS = ("MASK", "FLG", "FLAG", "DQ")
#: The EXTNAME fpack / astropy give a tile-compressed image whose header had none (not "<det>_IMAGE").
_FPACK_DEFAULT_NAME = "COMPRESSED_IMAGE"
#: EXTNAMEs of tile HDUs, with an optional detector prefix: "SCI", "1-1.SCI", "DET11.SCI", "CCD_3_VARIANCE".
_EXT_RE = re.compile(
    r"^(?:(?P<det>.+?)[._])?(?P<kind>" + "|".join([*_IMAGE_KINDS, *_NOISE_KINDS, *_MASK_KINDS]) + r")$"
)


def _is_compressed(e) -> bool:
    return e.xtension == "BINTABLE" and bool(e.header.get("ZIMAGE", False))


def _image_shape(e) -> tuple[int, ...]:
    """NumPy shape of an image HDU (tile-compressed ones too); ``()`` for tables.

    Degenerate leading axes are dropped: a cube with ``NAXIS3 = 1`` (SkyView / DSS cutouts,
    radio-style ``NAXIS3 = NAXIS4 = 1``) is the 2-D image it holds.
    """
    if _is_compressed(e):
        n = int(e.header.get("ZNAXIS", 0))
        shape = tuple(int(e.header[f"ZNAXIS{k}"]) for k in range(n, 0, -1))
    elif e.xtension not in ("", "IMAGE"):
        return ()
    else:
        shape = e.shape
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _first(headers, keys) -> str | None:
    for h in headers:
        for k in keys:
            v = h.get(k)
            if v is not None and str(v).strip():
                return str(v).strip()
    return None


def _fits_groups(lay: _fits.FitsLayout):
    """{detector or '': {'image': entry, 'noise': (entry, kind), 'mask': entry}} from EXTNAMEs."""
    groups: dict[str, dict[str, Any]] = {}
    for e in lay.entries:
        if e.name == _FPACK_DEFAULT_NAME:  # fpack's name for a compressed image that had none: a plain image
            continue
        m = _EXT_RE.match(e.name)
        if not m:
            continue
        det = m.group("det") or ""
        kind = m.group("kind")
        g = groups.setdefault(det, {})
        if kind in _IMAGE_KINDS:
            g["image"] = e
            g["family"] = _IMAGE_KINDS[kind]
        elif kind in _NOISE_KINDS:
            g["noise"] = (e, _NOISE_KINDS[kind])
        else:
            g["mask"] = e
    return {d: g for d, g in groups.items() if g}


def _fits_planes(url: str, lay: _fits.FitsLayout, instrument: str | None, tile_pattern: str | None,
                 hdu: str | None = None):
    groups = {} if hdu is not None else _fits_groups(lay)
    groups = {d: g for d, g in groups.items() if "image" in g}  # e.g. an unrelated "BAD_PIXEL_MASK" HDU
    if not groups:  # a plain image (primary HDU or any image extension; see skybatch.sources._plain)
        groups = {"": _plain.plain_group(url, lay, hdu, _image_shape)}
    primary = lay.primary
    planes: list[TilePlaneInfo] = []
    mask_bits: dict[str, int] = {}
    base = _tile_from_pattern(url, tile_pattern)
    from_header = _first([primary], _TILE_KEYWORDS)
    multi = len(groups) > 1
    for det in sorted(groups):
        g = groups[det]
        where = f"detector {det!r}: " if det else ""
        img = g["image"]
        plain = g["family"] == "plain"
        if g.get("noise") is None and not plain:
            want = "VARIANCE" if g["family"] == "lsst" else "RMS"
            raise SourceError(url, "missing-hdu", f"{where}{img.name} has no noise extension ({want} expected; HDUs: "
                              f"{lay.names}); re-download the file, or leave it out")
        nse, kind = g["noise"] if g.get("noise") is not None else (None, "estimate")
        shape = _image_shape(img)
        if len(shape) != 2 or 0 in shape:
            raise SourceError(url, "not-an-image", f"{img.name} has shape {shape}; expected a 2-D image")
        nshape = shape if nse is None else _image_shape(nse)
        if nse is not None and nshape != shape:
            raise SourceError(url, "shape-mismatch", f"{img.name} has shape {shape} but {nse.name} has shape {nshape}; "
                              "the noise must match the image pixel for pixel")
        msk = g.get("mask")
        if msk is not None and _image_shape(msk) != shape:
            raise SourceError(url, "shape-mismatch", f"{img.name} has shape {shape} but {msk.name} has shape "
                              f"{_image_shape(msk)}")
        headers = [img.header, primary]
        inst = normalize_instrument(instrument) if instrument else None
        inst = inst or normalize_instrument(_first(headers, ("INSTRUME", "TELESCOP")))
        inst = inst or _instrument_from_path(url)
        raw_band = _first(headers, _BAND_KEYWORDS)
        stem = _stem(url)
        stem_band = re.split(r"[_\-.]", stem)[-1] if re.search(r"[_\-.]", stem) else None
        if plain:
            stem_band = _plain.band_token(stem)
            inst = inst or _plain.GENERIC_INSTRUMENT
        if inst is None:
            inst = _instrument_from_bands([b for b in (raw_band, stem_band) if b][:1]) or (
                "rubin" if g["family"] == "lsst" else "euclid"
            )
        band = normalize_band(inst, raw_band) if raw_band else None
        if plain and inst not in INSTRUMENT_BANDS and raw_band:
            band = _plain.generic_band(raw_band)
        band_from_stem = False
        if band is None and stem_band:
            band = normalize_band(inst, stem_band)
            band_from_stem = band is not None
        if band is None and plain:
            band = _plain.UNKNOWN_BAND
        if band is None:
            raise SourceError(url, "unknown-band",
                              f"no usable band: keyword {raw_band!r} is not a {inst} band and the file name has no "
                              "band token; add a BAND keyword or name the file <tile>_<band>.fits")
        tile = base or from_header
        if tile is None:
            tile = stem
            if stem_band and (band_from_stem or normalize_band(inst, stem_band) == band):
                tile = stem[: -len(stem_band) - 1] or stem
        if multi and det:
            tile = f"{tile}.{det}"
        unit = _first(headers, ("BUNIT",)) or ""
        if plain:
            loc = (f"fits:{_plain.locator_name(lay, img)}|{_plain.locator_name(lay, nse)}|{kind}|"
                   f"{_plain.locator_name(lay, msk)}")
        else:
            assert nse is not None  # a non-plain group without a noise extension was refused above
            loc = f"fits:{img.name}|{nse.name}|{kind}|{msk.name if msk is not None else ''}"
        meta = _plain.header_meta(headers)
        planes.append(TilePlaneInfo(tile, inst, band, shape[0], shape[1], loc, unit, meta))
        if msk is not None:
            for k, v in msk.header.items():
                if k.startswith("MP_") and isinstance(v, int) and k[3:] not in mask_bits:
                    mask_bits[k[3:]] = int(v)
    return planes, sorted({p.tile_id for p in planes}), mask_bits


def _scan_fits(f, url: str, size: int) -> _fits.FitsLayout:
    try:
        return _fits.scan_fits(f, url, size)
    except SourceError as e:
        if e.reason != "unknown-format":
            raise
        raise SourceError(url, "corrupt", "does not start like a FITS file (no 'SIMPLE  =  T' card): the file is "
                          "damaged or not FITS; re-download it, or leave it out") from None


def _is_gzip(url: str) -> bool:
    return url.lower().endswith(".gz")


@contextmanager
def _open_fits(fs: Any, url: str) -> Iterator[tuple[Any, int, dict[str, Any]]]:
    """(file, size, info): a seekable binary file of the FITS bytes, their length, and ``fs.info``.

    Whole-file gzip (``.fits.gz``) has no byte ranges: the file is read and decompressed in
    memory (the image's bytes, once per open); anything else is opened for ranged reads.
    """
    size, info = _identity(fs, url)
    if not _is_gzip(url):
        with _fits.open_source(fs, url) as f:
            yield f, size, info
        return
    with _fits.open_source(fs, url) as f:
        packed = f.read()
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as ex:
        raise SourceError(url, "corrupt", f"cannot gunzip it ({type(ex).__name__}: {ex}): the file is damaged or "
                          "truncated; re-download it") from None
    yield io.BytesIO(raw), len(raw), info


def _scan(fs: Any, url: str):
    with _open_fits(fs, url) as (f, size, info):
        lay = _scan_fits(f, url, size)
    return size, info, lay


def _inspect_fits(fs: Any, url: str, instrument: str | None, tile_pattern: str | None,
                  hdu: str | None = None) -> TileSourceInfo:
    size, info, lay = _scan(fs, url)
    planes, tiles, bits = _fits_planes(url, lay, instrument, tile_pattern, hdu)
    return TileSourceInfo(url, "fits", size, _fits.file_identity(info, [lay]), planes, tiles, bits, 0)


def _read_hdu(f, e, url: str) -> tuple[np.ndarray, Any]:
    """(data, header) of an image HDU, its degenerate axes dropped (:func:`_image_shape`), integer
    ``BLANK`` pixels NaN; tile-compressed HDUs are decompressed with astropy."""
    if not _is_compressed(e):
        return _fitsread.read_image(f, e, url, blank_to_nan=True).reshape(_image_shape(e)), e.header
    from astropy.io import fits

    f.seek(e.header_offset)
    n = e.padded_end - e.header_offset
    raw = f.read(n)
    if len(raw) < e.data_offset - e.header_offset + e.data_size:
        raise SourceError(url, "truncated", f"HDU {e.name} ended early while reading it; re-download the file")
    raw = raw + b"\x00" * (n - len(raw))
    prim = fits.PrimaryHDU().header.tostring().encode("ascii")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(prim + raw), memmap=False) as hdul:
                hdu = hdul[1]
                return np.array(hdu.data).reshape(_image_shape(e)), hdu.header.copy()
    except Exception as ex:
        raise SourceError(url, "corrupt", f"cannot decompress HDU {e.name} ({type(ex).__name__}: {ex}); "
                          "re-download the file") from None


def _hdu(lay: _fits.FitsLayout, name: str):
    return lay.entries[int(name[1:])] if name.startswith("#") else lay.require(name)


def _estimated_noise(image: np.ndarray, mask: np.ndarray | None, meta: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(noise, mask) of a plain image without a noise HDU: estimated from the image; a plain
    mask HDU's non-zero pixels become bad (noise inf) and the mask is dropped."""
    import json

    from skybatch.imaging.noise import image_noise

    m = json.loads(meta) if meta else {}
    img = np.asarray(image, dtype=np.float32)
    bad = ~np.isfinite(img)
    if mask is not None:
        bad |= np.asarray(mask) != 0
    if bad.all():
        return np.full(img.shape, np.inf, np.float32), None
    est = image_noise(np.where(bad, np.nan, img), gain=m.get("gain"), read_noise=m.get("read_noise"), mask=bad)
    return np.asarray(est.sigma, np.float32), None


def _read_fits(fs: Any, url: str, want: list[TilePlaneInfo], instrument, tile_pattern,
               hdu: str | None = None) -> list[TilePlane]:
    out = []
    with _open_fits(fs, url) as (f, size, _info):
        lay = _scan_fits(f, url, size)
        planes, _, _ = _fits_planes(url, lay, instrument, tile_pattern, hdu)
        _check_unchanged(url, planes, want)
        for p in want:
            img_name, nse_name, kind, msk_name = p.locator.split(":", 1)[1].split("|")
            image, header = _read_hdu(f, _hdu(lay, img_name), url)
            mask = _read_hdu(f, _hdu(lay, msk_name), url)[0] if msk_name else None
            if kind == "estimate":
                noise, mask = _estimated_noise(image, mask, p.meta)
            else:
                noise = _noise_from(kind, _read_hdu(f, _hdu(lay, nse_name), url)[0])
                if img_name.startswith("#") and mask is not None:  # a plain mask: non-zero = bad
                    noise = np.where(np.asarray(mask) != 0, np.inf, noise).astype(np.float32)
                    mask = None
            wcs = wcs_header_string(header) or wcs_header_string(lay.primary)
            out.append(_finish_plane(image, noise, mask, wcs))
    return out
