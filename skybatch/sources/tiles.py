"""Readers for image tiles: ``.npz`` tiles and FITS images (local paths or ``s3://`` URLs).

A tile source holds one or more **planes**: one (tile, band) image with its noise, on one pixel
grid. Ingest uses the readers in two steps, like the spectra readers
(:mod:`skybatch.sources.base`):

1. **plan**: :func:`inspect_tile_source` reads headers only (FITS headers through ranged reads;
   the ``.npy`` headers inside an ``.npz`` plus its small metadata arrays), and returns a
   :class:`TileSourceInfo` listing every plane: tile id, instrument, band, shape. Anything
   unusable raises :class:`~skybatch.sources.base.SourceError` with a reason tag.
2. **read**: :func:`read_tile_planes` reads the pixels of the planes asked for and returns
   :class:`TilePlane` objects: ``image`` and ``noise`` (1-sigma RMS) float32 (H, W), native byte
   order, ``mask`` uint32, and the WCS as a FITS header string.

Formats
-------
``npz`` (``*.npz``; :func:`skybatch.sample.tiles.write_npz_tiles` writes them):
    ``image`` (n_bands, H, W) or (H, W); the noise as ``rms`` (or ``noise``/``sigma``, 1-sigma),
    ``variance`` (or ``var``) or ``ivar``; optional ``band`` / ``bands`` / ``filter`` (names),
    ``band_key`` (``"rubin_r"``), ``instrument``, ``tile_id``, ``wcs`` (one FITS header string
    per band, or one for all), ``band_present`` / ``present`` (bool per band; absent planes are
    skipped), ``mask`` (integer, same shape as ``image``), ``unit`` / ``bunit``.
``fits`` (``*.fits``, ``*.fit``, ``*.fits.fz``):
    HDUs found by EXTNAME, in the two common survey layouts: LSST/Rubin calexp-like
    ``IMAGE`` + ``VARIANCE`` (+ ``MASK``), and Euclid-like ``SCI`` + ``RMS`` (+ ``FLG``). An
    EXTNAME may carry a detector prefix (``"1-1.SCI"``, ``"DET11.SCI"``): each detector is then
    its own tile, ``<tile>.<detector>``. The band comes from the ``BAND``, ``FILTER``,
    ``FILTNAM`` or ``FILTER1`` keyword (image HDU, then primary), else from the last token of
    the file name (``tile_0001_r.fits``); the WCS from the image header (astropy.wcs), else the
    primary header; the unit from ``BUNIT``. Big-endian data come back native; variance becomes
    RMS = sqrt(variance). Tile-compressed HDUs (fpack, ``ZIMAGE``) are decompressed with
    astropy; whole-file gzip (``.fits.gz``) cannot be read in ranges and is refused
    (``unsupported-compression``: decompress it, or fpack it).
    Any other FITS image is read as a **plain image** (:mod:`skybatch.sources._plain`): the
    image in the primary HDU or the first 2-D image extension (or the ``hdu`` asked for), the
    noise from a VARIANCE / WEIGHT / RMS HDU of the same shape or else estimated from the image
    (``GAIN``, ``RDNOISE``), a MASK / DQ HDU's non-zero pixels bad; instrument ``INSTRUME``
    (else ``generic``), band from ``FILTER`` reduced to its letter (else ``unknown``). Header
    numbers (``SATURATE``, ``GAIN``, ``RDNOISE``, zero point, ``EXPTIME``) of every layout are
    kept in :attr:`TilePlaneInfo.meta`.

Inference rules (documented contract)
-------------------------------------
**instrument**, first that applies: the ``instrument`` argument (a run setting); the npz
``instrument`` key or the ``band_key`` prefix; the FITS ``INSTRUME`` / ``TELESCOP`` keyword
(anything containing LSST, RUBIN, COMCAM or LATISS is ``rubin``; EUCLID, VIS or NISP is
``euclid``; else its lower-case name); a directory in the path named ``rubin``, ``lsst``,
``lsstcam``, ``comcam`` (-> ``rubin``) or ``euclid``, ``nisp`` (-> ``euclid``), deepest first;
the band names (all in u g r i z y, lower case -> ``rubin``; all in VIS Y J H, upper case ->
``euclid``); for FITS the layout (IMAGE/VARIANCE -> ``rubin``, SCI/RMS -> ``euclid``). Failing
all: ``unknown-instrument``.

**band** names are normalised per instrument: Rubin ``u g r i z y`` (lower case; ``r_sim_1.4``,
``LSST_R`` -> ``r``), Euclid ``VIS Y J H`` (upper case; ``NIR_H``, ``NISP_Y``, ``euclid_vis``
accepted). Other instruments keep their names. An npz without band names is accepted when it
has exactly the instrument's full band set, in the canonical order.

**tile id**, first that applies: a ``tile_pattern`` regular expression with a named group
``tile`` matched against the URL; the npz ``tile_id`` key, or the FITS ``TILE_ID`` /
``TILEID`` / ``TILENAME`` keyword; the file name without its extension, and (FITS) without a
trailing ``_<band>`` / ``-<band>`` token.

Pixels: NaN/inf image values and NaN/inf/non-positive noise are **bad**: image = 0, noise = inf
(zero weight), counted in ``n_bad_pixels``. A plane with no finite image pixel at all is
**absent** (``present=False``; image NaN, noise inf), not counted.
"""

from __future__ import annotations

import io
import posixpath
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _fits, _plain
from .base import SourceError

__all__ = [
    "TILE_FORMATS",
    "TILE_SUFFIXES",
    "INSTRUMENT_BANDS",
    "TilePlaneInfo",
    "TileSourceInfo",
    "TilePlane",
    "tile_format",
    "inspect_tile_source",
    "read_tile_planes",
    "normalize_band",
    "normalize_instrument",
    "band_key",
    "clean_plane",
    "wcs_header_string",
]

TILE_FORMATS = ("npz", "fits")
#: File name endings that tile ingest looks for in directories and prefixes.
TILE_SUFFIXES = (".npz", ".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")
#: Canonical band order of the known instruments.
INSTRUMENT_BANDS: dict[str, tuple[str, ...]] = {
    "rubin": ("u", "g", "r", "i", "z", "y"),
    "euclid": ("VIS", "Y", "J", "H"),
}
_RUBIN_ALIASES = ("lsst", "rubin", "comcam", "latiss")
_EUCLID_NAMES = ("vis", "nisp", "nir", "euclid_vis", "euclid_nisp")
_PATH_INSTRUMENT = {
    "rubin": "rubin", "lsst": "rubin", "lsstcam": "rubin", "lsstcomcam": "rubin", "comcam": "rubin",
    "euclid": "euclid", "nisp": "euclid",
}  # fmt: skip
_BAND_KEYWORDS = ("BAND", "FILTER", "FILTNAM", "FILTER1")
_TILE_KEYWORDS = ("TILE_ID", "TILEID", "TILENAME")
_IMAGE_KINDS = {"IMAGE": "lsst", "SCI": "euclid"}
_NOISE_KINDS = {"VARIANCE": "variance", "VAR": "variance", "RMS": "rms", "ERR": "rms"}
_MASK_KINDS = ("MASK", "FLG", "FLAG", "DQ")
#: EXTNAMEs of tile HDUs, with an optional detector prefix: "SCI", "1-1.SCI", "DET11.SCI", "CCD_3_VARIANCE".
_EXT_RE = re.compile(
    r"^(?:(?P<det>.+?)[._])?(?P<kind>" + "|".join([*_IMAGE_KINDS, *_NOISE_KINDS, *_MASK_KINDS]) + r")$"
)


@dataclass(frozen=True)
class TilePlaneInfo:
    """One (tile, band) image in a source, as planning sees it (no pixels).

    tile_id: the tile's name (matched across instruments).
    instrument: ``"rubin"``, ``"euclid"`` or another lower-case name.
    band: normalised band name (``"r"``, ``"VIS"``...).
    height, width: image shape in pixels (y, x).
    locator: where the plane is in its file: npz ``"npz:<band index>"``; FITS
        ``"fits:<image ext>|<noise ext>|<noise kind>|<mask ext or ''>"``.
    unit: the image unit (``BUNIT`` / npz ``unit``), ``""`` when unknown.
    meta: JSON of header numbers (saturate, gain, read_noise, zero_point, exptime;
        :func:`skybatch.sources._plain.header_meta`), ``""`` when none.
    """

    tile_id: str
    instrument: str
    band: str
    height: int
    width: int
    locator: str
    unit: str = ""
    meta: str = ""


@dataclass
class TileSourceInfo:
    """What planning learns about one tile source without reading its pixels.

    url: the source as given. format: ``"npz"`` or ``"fits"``.
    size: bytes. checksum: a cheap content identity (FITS CHECKSUM, ETag or mtime, and size).
    planes: every present plane, in file order.
    tile_ids: every tile the source names (also tiles whose planes are all absent).
    mask_bits: mask plane name -> bit, from LSST ``MP_*`` header keywords (else empty).
    n_absent: planes the file marks as absent (npz ``band_present`` False), not planned.
    """

    url: str
    format: str
    size: int
    checksum: str
    planes: list[TilePlaneInfo]
    tile_ids: list[str]
    mask_bits: dict[str, int] = field(default_factory=dict)
    n_absent: int = 0


@dataclass
class TilePlane:
    """The pixels of one (tile, band) plane.

    image: float32 (H, W), the source's unit, native byte order; 0 at bad pixels, NaN if absent.
    noise: float32 (H, W), 1-sigma RMS in the image's unit; inf = no information.
    mask: uint32 (H, W), the survey's bit mask as stored (0 where the file has none).
    wcs: FITS header string (80-character cards, no END) of the plane's WCS; ``""`` if none.
    present: False when the plane holds no finite pixel.
    n_bad_pixels: bad pixels found and neutralised (image 0, noise inf).
    """

    image: np.ndarray
    noise: np.ndarray
    mask: np.ndarray
    wcs: str
    present: bool
    n_bad_pixels: int = 0


# -- names -----------------------------------------------------------------------------------


def normalize_instrument(value: Any) -> str | None:
    """Canonical instrument name of a header or npz value (``"LSSTCam"`` -> ``"rubin"``); None if empty."""
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    low = s.lower()
    if "euclid" in low or low in _EUCLID_NAMES:
        return "euclid"
    if any(a in low for a in _RUBIN_ALIASES):
        return "rubin"
    return re.sub(r"[^a-z0-9]+", "_", low).strip("_") or None


def normalize_band(instrument: str | None, value: Any) -> str | None:
    """The canonical name of band ``value`` for ``instrument``; None if it is not a band of it.

    Rubin: ``u g r i z y`` (``"R"``, ``"r_sim_1.4"``, ``"LSST_R"`` -> ``"r"``). Euclid:
    ``VIS Y J H`` (``"nir_h"``, ``"NISP_Y"``, ``"euclid_vis"`` -> ``"H"``, ``"Y"``, ``"VIS"``).
    Other (or unknown) instruments: the stripped value itself.
    """
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    if instrument == "rubin":
        t = s.lower()
        t = re.sub(r"^(lsstcam|lsstcomcam|comcam|lsst|rubin)[_\-\s]", "", t)
        if t in INSTRUMENT_BANDS["rubin"]:
            return t
        head = re.split(r"[_\-\s.]", t)[0]
        return head if head in INSTRUMENT_BANDS["rubin"] else None
    if instrument == "euclid":
        t = s.upper()
        t = re.sub(r"^(EUCLID|NISP|NIR)[_\-\s]", "", t)
        t = re.sub(r"^(NISP|NIR)[_\-\s]", "", t)
        return t if t in INSTRUMENT_BANDS["euclid"] else None
    return s


def band_key(instrument: str, band: str) -> str:
    """skybatch's band key ``"<instrument>_<band lower case>"`` (``"rubin_r"``, ``"euclid_vis"``)."""
    return f"{instrument}_{band.lower()}"


def _instrument_from_path(url: str) -> str | None:
    parts = url.split("://", 1)[-1].split("/")[:-1]
    for p in reversed(parts):
        inst = _PATH_INSTRUMENT.get(p.strip().lower())
        if inst:
            return inst
    return None


def _instrument_from_bands(bands: list[str]) -> str | None:
    if bands and all(b in INSTRUMENT_BANDS["rubin"] for b in bands):
        return "rubin"
    if bands and all(b in INSTRUMENT_BANDS["euclid"] for b in bands):
        return "euclid"
    return None


def _stem(url: str) -> str:
    name = posixpath.basename(url.split("://", 1)[-1])
    for suf in (".fits.fz", ".fits.gz", ".npz", ".fits", ".fit", ".fts", ".fz"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name.rsplit(".", 1)[0] if "." in name else name


def _tile_from_pattern(url: str, tile_pattern: str | None) -> str | None:
    if not tile_pattern:
        return None
    m = re.search(tile_pattern, url)
    if m is None or not m.groupdict().get("tile"):
        raise SourceError(
            url, "no-tile-id",
            f"the tile pattern {tile_pattern!r} does not match this path (or its 'tile' group is empty); "
            "fix the pattern (--tile-pattern) or leave this file out",
        )
    return m.group("tile")


def tile_format(url: str) -> str:
    """``"npz"`` or ``"fits"`` from the file name; SourceError for anything else."""
    low = url.lower()
    if low.endswith(".npz"):
        return "npz"
    if low.endswith(".gz"):
        raise SourceError(
            url, "unsupported-compression",
            "whole-file gzip FITS cannot be read in byte ranges; decompress it (gunzip) or tile-compress it "
            "(fpack -> .fits.fz) and ingest that",
        )
    if low.endswith((".fits", ".fit", ".fts", ".fits.fz", ".fz")):
        return "fits"
    raise SourceError(
        url, "unknown-format",
        "not a tile file skybatch reads (expected .npz with image + rms arrays, or FITS: a 2-D image in any "
        "HDU, IMAGE/VARIANCE or SCI/RMS extensions); leave it out of the sources",
    )


def _identity(fs: Any, url: str) -> tuple[int, dict[str, Any]]:
    return _fits.file_size(fs, url)


# -- cleaning ----------------------------------------------------------------------------------


def clean_plane(image: np.ndarray, noise: np.ndarray, finite: np.ndarray | None = None) -> int:
    """Neutralise bad pixels of one plane in place; returns how many there were.

    Bad: image NaN/inf, or noise NaN/inf/<= 0. They get image = 0 and noise = inf.
    image, noise: float32 (H, W); finite: ``np.isfinite(image)`` if already computed.
    """
    good = np.isfinite(image) if finite is None else finite.copy()
    good &= noise > 0
    good &= noise < np.inf
    n = int(good.size - np.count_nonzero(good))
    if n:
        bad = ~good
        image[bad] = 0.0
        noise[bad] = np.inf
    return n


def _finish_plane(image: np.ndarray, noise: np.ndarray, mask: np.ndarray | None, wcs: str) -> TilePlane:
    """A TilePlane from raw arrays: float32 copies we own, bad pixels neutralised, absent if no finite pixel."""
    image = np.array(image, dtype=np.float32, copy=None)
    noise = np.array(noise, dtype=np.float32, copy=None)
    finite = np.isfinite(image)
    if not finite.any():
        return TilePlane(
            image=np.full(image.shape, np.nan, np.float32), noise=np.full(image.shape, np.inf, np.float32),
            mask=np.zeros(image.shape, np.uint32), wcs=wcs, present=False, n_bad_pixels=0,
        )
    if image.base is not None or not image.flags.writeable:
        image = image.copy()
    if noise.base is not None or not noise.flags.writeable:
        noise = noise.copy()
    n_bad = clean_plane(image, noise, finite)
    mask = np.zeros(image.shape, np.uint32) if mask is None else _as_uint32(mask)
    return TilePlane(image=image, noise=noise, mask=mask, wcs=wcs, present=True, n_bad_pixels=n_bad)


def _as_uint32(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype.kind == "f":
        m = np.nan_to_num(m, nan=0.0).astype(np.int64)
    if m.dtype.kind == "b":
        m = m.astype(np.uint32)
    if m.dtype.byteorder not in ("=", "|"):
        m = m.astype(m.dtype.newbyteorder("="))
    if m.dtype.kind in "iu" and m.dtype.itemsize == 4:
        return np.ascontiguousarray(m).view(np.uint32)
    return (m.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _noise_from(kind: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "variance":
            return np.sqrt(v)
        if kind == "ivar":
            return np.where(v > 0, 1.0 / np.sqrt(v), np.inf).astype(np.float32)
    return v


def wcs_header_string(header: Any) -> str:
    """The celestial WCS of a FITS header as a header string (cards, no END); ``""`` if none."""
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(header, naxis=2)
            if not w.has_celestial:
                return ""
            hdr = w.to_header(relax=True)
    except Exception:  # a broken WCS is not a reason to lose the pixels
        return ""
    return "".join(card.image for card in hdr.cards)


# -- npz -----------------------------------------------------------------------------------------

_NPZ_NOISE = (("rms", "rms"), ("noise", "rms"), ("sigma", "rms"), ("variance", "variance"), ("var", "variance"),
              ("ivar", "ivar"))  # fmt: skip
_NPZ_BANDS = ("band", "bands", "filter", "filters")


def _open_zip(fs: Any, url: str, *, ranged: bool = True):
    """(file, ZipFile) of an npz. ``ranged``: no read-ahead (planning reads headers only);
    otherwise fsspec's default buffering, for reading whole arrays."""
    if ranged:
        f = _fits.open_source(fs, url)
    else:
        try:
            f = fs.open(url, "rb")
        except (FileNotFoundError, PermissionError, OSError) as e:
            raise SourceError(url, "unreachable",
                              f"cannot open file ({e}); check the URL, credentials and network") from e
    try:
        head = f.read(4)
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            f.close()
            if head == b"PK\x03\x04":
                raise SourceError(url, "truncated", f"the .npz (zip) archive has no central directory ({e}): the file "
                                  "is truncated; re-download or re-write it") from None
            raise SourceError(url, "corrupt", f"not a readable .npz (zip) archive ({e}); re-write the file") from None
    except SourceError:
        raise
    except Exception as e:
        f.close()
        raise SourceError(url, "corrupt", f"cannot open as .npz ({type(e).__name__}: {e}); re-write the file") from None
    return f, zf


def _damaged(url: str, member: str, e: Exception) -> SourceError:
    return SourceError(url, "corrupt", f"array {member[:-4]!r} in the .npz is damaged ({e}); re-write the file")


def _npy_header(zf: zipfile.ZipFile, member: str, url: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with zf.open(member) as m:
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(m)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(m)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _damaged(url, member, e) from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npy_read(zf: zipfile.ZipFile, member: str, url: str) -> np.ndarray:
    try:
        with zf.open(member) as m:
            a = np.lib.format.read_array(m, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SourceError(url, "bad-metadata", f"array {member[:-4]!r} holds Python objects (pickled); store "
                              "strings as numpy str arrays") from None
        raise _damaged(url, member, e) from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _damaged(url, member, e) from None
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _strs(a: np.ndarray, strip: bool = True) -> list[str]:
    out = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(a).ravel()]
    return [s.strip() for s in out] if strip else out


@dataclass
class _NpzLayout:
    members: dict[str, str]
    n_bands: int
    shape: tuple[int, int]
    noise_key: str
    noise_kind: str
    two_d: bool
    small: dict[str, np.ndarray]


def _npz_layout(zf: zipfile.ZipFile, url: str) -> _NpzLayout:
    members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
    if "image" not in members:
        raise SourceError(url, "missing-array", f"no 'image' array in the .npz (arrays: {sorted(members)}); "
                          "write image (n_bands, H, W) and rms arrays")
    noise_key = next(((k, kind) for k, kind in _NPZ_NOISE if k in members), None)
    if noise_key is None:
        raise SourceError(url, "missing-array", f"no noise array in the .npz (arrays: {sorted(members)}); add "
                          "'rms' (1-sigma), 'variance' or 'ivar' with the image's shape")
    shape, dtype = _npy_header(zf, members["image"], url)
    nshape, ndtype = _npy_header(zf, members[noise_key[0]], url)
    if dtype.kind not in "fiu" or len(shape) not in (2, 3) or 0 in shape:
        raise SourceError(url, "not-an-image", f"'image' has shape {shape} and dtype {dtype}; expected a numeric "
                          "(n_bands, H, W) or (H, W) array")
    if ndtype.kind not in "fiu":
        raise SourceError(url, "not-an-image", f"noise array {noise_key[0]!r} has dtype {ndtype}; expected numbers")
    if nshape != shape:
        raise SourceError(url, "shape-mismatch", f"'image' has shape {shape} but {noise_key[0]!r} has shape "
                          f"{nshape}; write them with the same shape")
    if "mask" in members:
        mshape, _ = _npy_header(zf, members["mask"], url)
        if mshape != shape:
            raise SourceError(url, "shape-mismatch", f"'image' has shape {shape} but 'mask' has shape {mshape}")
    two_d = len(shape) == 2
    n_bands = 1 if two_d else shape[0]
    small_keys = ("instrument", "tile_id", "wcs", "band_present", "present", "band_key", "unit", "bunit") + _NPZ_BANDS
    small = {k: _npy_read(zf, members[k], url) for k in small_keys if k in members}
    return _NpzLayout(members, n_bands, (shape[-2], shape[-1]), noise_key[0], noise_key[1], two_d, small)


def _npz_planes(url: str, lay: _NpzLayout, instrument: str | None, tile_pattern: str | None):
    """(planes, tile_ids, n_absent) of an npz layout."""
    small = lay.small
    nb = lay.n_bands
    raw_bands = None
    for k in _NPZ_BANDS:
        if k in small:
            raw_bands = _strs(small[k])
            break
    keys = _strs(small["band_key"]) if "band_key" in small else None
    insts: list[str | None]
    if instrument:
        insts = [normalize_instrument(instrument)] * nb
    elif "instrument" in small:
        v = _strs(small["instrument"])
        if len(v) not in (1, nb):
            raise SourceError(url, "bad-metadata", f"'instrument' has {len(v)} values for {nb} bands")
        insts = [normalize_instrument(x) for x in (v * nb if len(v) == 1 else v)]
    elif keys is not None and len(keys) == nb and all("_" in k for k in keys):
        insts = [normalize_instrument(k.split("_", 1)[0]) for k in keys]
    else:
        insts = [_instrument_from_path(url)] * nb
    if raw_bands is None and keys is not None and len(keys) == nb:
        raw_bands = [k.split("_", 1)[1] if "_" in k else k for k in keys]
    if raw_bands is not None and len(raw_bands) != nb:
        raise SourceError(url, "bad-metadata", f"{len(raw_bands)} band names for {nb} image planes; give one "
                          "name per plane")
    if any(i is None for i in insts):
        guess = _instrument_from_bands(raw_bands or [])
        insts = [i or guess for i in insts]
    if any(i is None for i in insts):
        raise SourceError(
            url, "unknown-instrument",
            "cannot tell the instrument: add an 'instrument' array to the .npz, put the file under a rubin/ or "
            "euclid/ directory, or set the instrument of the run (--instrument)",
        )
    bands: list[str] = []
    for j in range(nb):
        inst = insts[j]
        if raw_bands is None:
            canon = INSTRUMENT_BANDS.get(inst, ())
            if len(canon) != nb:
                raise SourceError(url, "unknown-band", f"no band names in the .npz and {nb} planes do not make the "
                                  f"full {inst} band set; add a 'band' array of names")
            bands.append(canon[j])
            continue
        b = normalize_band(inst, raw_bands[j])
        if b is None:
            raise SourceError(url, "unknown-band", f"band {raw_bands[j]!r} is not a {inst} band "
                              f"({list(INSTRUMENT_BANDS.get(inst, ()))}); fix the 'band' array or the instrument")
        bands.append(b)
    tile = _tile_from_pattern(url, tile_pattern)
    if tile is None and "tile_id" in small:
        v = _strs(small["tile_id"])
        tile = v[0] if v and v[0] else None
    tile = tile or _stem(url)
    present = np.ones(nb, bool)
    for k in ("band_present", "present"):
        if k in small:
            p = np.atleast_1d(small[k]).astype(bool)
            if p.size != nb:
                raise SourceError(url, "bad-metadata", f"{k!r} has {p.size} values for {nb} bands")
            present = p
            break
    unit = ""
    for k in ("unit", "bunit"):
        if k in small:
            unit = _strs(small[k])[0]
    planes = [
        TilePlaneInfo(tile, insts[j], bands[j], lay.shape[0], lay.shape[1], f"npz:{j}", unit)
        for j in range(nb) if present[j]
    ]
    return planes, [tile], int(nb - present.sum())


def _inspect_npz(fs: Any, url: str, instrument: str | None, tile_pattern: str | None) -> TileSourceInfo:
    size, info = _identity(fs, url)
    f, zf = _open_zip(fs, url)
    with f, zf:
        lay = _npz_layout(zf, url)
    planes, tiles, n_absent = _npz_planes(url, lay, instrument, tile_pattern)
    return TileSourceInfo(url, "npz", size, _fits.file_identity(info, []), planes, tiles, {}, n_absent)


def _read_npz(fs: Any, url: str, want: list[TilePlaneInfo], instrument, tile_pattern) -> list[TilePlane]:
    f, zf = _open_zip(fs, url, ranged=False)
    with f, zf:
        lay = _npz_layout(zf, url)
        planes, _, _ = _npz_planes(url, lay, instrument, tile_pattern)
        _check_unchanged(url, planes, want)
        image = _npy_read(zf, lay.members["image"], url)
        noise = _noise_from(lay.noise_kind, _npy_read(zf, lay.members[lay.noise_key], url))
        mask = _npy_read(zf, lay.members["mask"], url) if "mask" in lay.members else None
    if lay.two_d:
        image, noise = image[None], noise[None]
        mask = mask[None] if mask is not None else None
    wcs = _strs(lay.small["wcs"], strip=False) if "wcs" in lay.small else [""]
    out = []
    for p in want:
        j = int(p.locator.split(":", 1)[1])
        w = wcs[j] if len(wcs) == lay.n_bands else wcs[0]
        out.append(_finish_plane(image[j], noise[j], None if mask is None else mask[j], w))
    return out


# -- FITS ----------------------------------------------------------------------------------------


def _is_compressed(e) -> bool:
    return e.xtension == "BINTABLE" and bool(e.header.get("ZIMAGE", False))


def _image_shape(e) -> tuple[int, ...]:
    if _is_compressed(e):
        n = int(e.header.get("ZNAXIS", 0))
        return tuple(int(e.header[f"ZNAXIS{k}"]) for k in range(n, 0, -1))
    if e.xtension not in ("", "IMAGE"):
        return ()
    return e.shape


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
        if nshape != shape:
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


def _scan(fs: Any, url: str):
    size, info = _identity(fs, url)
    with _fits.open_source(fs, url) as f:
        lay = _scan_fits(f, url, size)
    return size, info, lay


def _inspect_fits(fs: Any, url: str, instrument: str | None, tile_pattern: str | None,
                  hdu: str | None = None) -> TileSourceInfo:
    size, info, lay = _scan(fs, url)
    planes, tiles, bits = _fits_planes(url, lay, instrument, tile_pattern, hdu)
    return TileSourceInfo(url, "fits", size, _fits.file_identity(info, [lay]), planes, tiles, bits, 0)


def _read_hdu(f, e, url: str) -> tuple[np.ndarray, Any]:
    """(data, header) of an image HDU; tile-compressed HDUs are decompressed with astropy."""
    if not _is_compressed(e):
        return _fits.read_image(f, e, url), e.header
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
                return np.array(hdu.data), hdu.header.copy()
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
    size, _info = _identity(fs, url)
    out = []
    with _fits.open_source(fs, url) as f:
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


# -- public entry points ---------------------------------------------------------------------


def _check_unchanged(url: str, planes: list[TilePlaneInfo], want: list[TilePlaneInfo]) -> None:
    have = {(p.tile_id, p.band, p.locator): p for p in planes}
    for w in want:
        p = have.get((w.tile_id, w.band, w.locator))
        if p is None or (p.height, p.width) != (w.height, w.width):
            raise SourceError(
                url, "changed",
                f"changed since it was planned (plane {w.tile_id}/{w.band} {w.height}x{w.width} is no longer "
                "there); restore the original file, or ingest the new version into a new store",
            )


def inspect_tile_source(
    fs: Any, url: str, *, instrument: str | None = None, tile_pattern: str | None = None, hdu: str | None = None
) -> TileSourceInfo:
    """Read the headers of one tile source and list its planes (no pixels are read).

    fs: an fsspec filesystem for ``url``. instrument: force the instrument of every plane.
    tile_pattern: a regular expression with a named group ``tile`` giving the tile id from the URL.
    hdu: FITS only: read this HDU (EXTNAME or number) as a plain image (see
    :mod:`skybatch.sources._plain`); default the survey layouts, else the first 2-D image.
    Raises SourceError (reason tags: unknown-format, unsupported-compression, truncated, corrupt,
    missing-hdu, missing-array, not-an-image, unknown-layout, shape-mismatch, unknown-instrument,
    unknown-band, bad-metadata, no-tile-id, unreachable).
    """
    fmt = tile_format(url)
    if fmt == "npz":
        return _inspect_npz(fs, url, instrument, tile_pattern)
    return _inspect_fits(fs, url, instrument, tile_pattern, hdu)


def read_tile_planes(
    fs: Any,
    url: str,
    planes: list[TilePlaneInfo],
    *,
    instrument: str | None = None,
    tile_pattern: str | None = None,
    hdu: str | None = None,
) -> list[TilePlane]:
    """Read the pixels of ``planes`` (from :func:`inspect_tile_source` of the same file and settings).

    The file's headers are checked again first: a plane that is no longer there (or changed
    shape) raises SourceError ``changed``. Returns one :class:`TilePlane` per requested plane,
    in order.
    """
    fmt = tile_format(url)
    if fmt == "npz":
        return _read_npz(fs, url, planes, instrument, tile_pattern)
    return _read_fits(fs, url, planes, instrument, tile_pattern, hdu)


