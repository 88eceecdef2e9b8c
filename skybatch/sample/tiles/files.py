"""Files of generated tiles: ``.npz`` per tile and instrument (or view), with FITS TAN WCS header strings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .render import MultiBandTiles
    from .views import SurveyViews

__all__ = ["write_npz_tiles"]


def _card(key: str, value: float | str) -> str:
    """One 80-character FITS header card (fixed format)."""
    if isinstance(value, str):
        text = f"{key:<8}= {chr(39) + value.ljust(8) + chr(39):<20}"
    else:
        text = f"{key:<8}= {float(value):>20.13G}"
    return text.ljust(80)


def _wcs_header(ra: float, dec: float, size: int, scale_arcsec: float, dy: float, dx: float) -> str:
    """TAN WCS header string for one band image whose content is shifted by (dy, dx) px.

    The reference pixel (tile centre) holds (ra, dec) in the band's own pixel frame, so the
    band's sub-pixel offset is in CRPIX. Readable with ``astropy.wcs.WCS(fits.Header.fromstring(s))``.
    """
    cards = [
        _card("WCSAXES", 2),
        _card("CTYPE1", "RA---TAN"),
        _card("CTYPE2", "DEC--TAN"),
        _card("CUNIT1", "deg"),
        _card("CUNIT2", "deg"),
        _card("CRVAL1", ra),
        _card("CRVAL2", dec),
        _card("CRPIX1", (size + 1) / 2.0 + dx),
        _card("CRPIX2", (size + 1) / 2.0 + dy),
        _card("CDELT1", -scale_arcsec / 3600.0),
        _card("CDELT2", scale_arcsec / 3600.0),
        _card("RADESYS", "ICRS"),
    ]
    return "".join(cards)


def write_npz_tiles(tiles: MultiBandTiles | SurveyViews, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write one ``.npz`` per tile and instrument (or view): ``OUT/<instrument or view>/<tile_id>.npz``.

    Each file holds ``image`` and ``rms`` float32 (n_bands_of_instrument, H, W) (NaN where a
    band is missing), ``band`` (filter names, e.g. ``["u", …]`` or ``["VIS", "Y", "J", "H"]``),
    ``band_key`` (skybatch keys), ``wavelength_nm``, ``band_present`` (bool), ``tile_id``,
    ``instrument``, ``pixel_scale_arcsec`` and ``wcs`` (one FITS TAN header string per band,
    the band's sub-pixel offset in CRPIX). Tile names match across instruments. Load with
    ``np.load(path)`` (no pickle needed). :class:`SurveyViews` (real pixel grids) are written
    one directory per view (``rubin/``, ``euclid_vis/``, ``euclid_nisp/``).

    Returns
    -------
    ``{instrument or view: [paths in tile order]}``.
    """
    from .views import SurveyViews as _SurveyViews

    out = Path(out_dir)
    if isinstance(tiles, _SurveyViews):
        return {name: _write_group(v, out / name, np.arange(len(v.bands))) for name, v in tiles.views.items()}
    insts = np.array(tiles.instruments)
    return {inst: _write_group(tiles, out / inst, np.flatnonzero(insts == inst))
            for inst in dict.fromkeys(tiles.instruments)}


def _write_group(tiles: MultiBandTiles, d: Path, sel: np.ndarray) -> list[Path]:
    size = tiles.image.shape[-1]
    inst = tiles.instruments[sel[0]]
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, tid in enumerate(tiles.tile_id):
        ra, dec = tiles.center_radec[t]
        headers = [_wcs_header(ra, dec, size, tiles.pixel_scale_arcsec, *tiles.band_offset_px[t, b]) for b in sel]
        path = d / f"{tid}.npz"
        np.savez(
            path,
            image=tiles.image[t, sel],
            rms=tiles.noise[t, sel],
            band=np.array([tiles.filters[b] for b in sel]),
            band_key=np.array([tiles.bands[b] for b in sel]),
            wavelength_nm=tiles.wavelength_nm[sel],
            band_present=tiles.band_present[t, sel],
            tile_id=np.array(str(tid)),
            instrument=np.array(inst),
            pixel_scale_arcsec=np.array(tiles.pixel_scale_arcsec),
            wcs=np.array(headers),
        )
        paths.append(path)
    return paths
