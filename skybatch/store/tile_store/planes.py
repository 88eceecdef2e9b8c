"""Reading one (tile, band) plane (image, noise, mask, WCS) straight from Zarr: the
difference pipeline's door into a tile store.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from skybatch.sources.tiles import normalize_band, normalize_instrument
from skybatch.store.schema import StoreSchemaError

from .read import open_tile_store
from .views import SCHEMA_NAME, ViewSpec
from .write import open_tile_group


def wcs_from_header(header: str):
    """An ``astropy.wcs.WCS`` from a stored header string; None for ``""``."""
    if not header:
        return None
    from astropy.io import fits
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(fits.Header.fromstring(header))


@dataclass
class StoredPlane:
    """One (tile, band) plane read from a tile store.

    image, noise: float32 (H, W) (noise = 1-sigma RMS, inf = no information); mask: uint32 (H, W).
    wcs_header: FITS header string ("" if none); ``wcs`` parses it (astropy WCS or None).
    present: False when the store has no data for this plane (image NaN, noise inf).
    view, tile_index, band_index: where it is; tile_id, band, instrument, unit, source: what it is.
    """

    image: np.ndarray
    noise: np.ndarray
    mask: np.ndarray
    wcs_header: str
    present: bool
    view: str
    tile_index: int
    band_index: int
    tile_id: str
    band: str
    instrument: str
    unit: str
    source: str

    @property
    def wcs(self):
        return wcs_from_header(self.wcs_header)

    @property
    def weight(self) -> np.ndarray:
        """Inverse variance 1/noise^2, float32 (H, W); 0 where noise is inf."""
        return (1.0 / np.square(self.noise)).astype(np.float32)


class TileStore:
    """A tile store opened for reading single planes by (tile id, band).

    ``TileStore(url).plane("tile_00012", "r")`` reads one plane straight from Zarr (one
    chunk, or one inner chunk when the view is sharded). ``band`` is a band name (``"r"``,
    ``"VIS"``) or a band key (``"rubin_r"``, ``"euclid_vis"``); ``instrument`` settles
    ``"y"``-like ambiguities. ``views`` gives the xarray Datasets for chunk-wise work.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url
        self.storage_options = storage_options
        self.group = open_tile_group(url, storage_options, mode="r", consolidated=True)
        attrs = dict(self.group.attrs)
        if attrs.get("skybatch_schema") != SCHEMA_NAME:
            raise StoreSchemaError(f"{url} is not a skybatch tile store; create one with `skybatch run ingest-tiles`")
        self.specs = {n: ViewSpec.from_attrs(n, d) for n, d in attrs.get("views", {}).items()}
        self.tile_ids: list[str] = []
        for name in self.specs:
            self.tile_ids = [str(t) for t in self.group[name]["tile_id"][:]]
            break
        self._index = {t: i for i, t in enumerate(self.tile_ids)}
        self._views: dict[str, xr.Dataset] | None = None

    @property
    def views(self) -> dict[str, xr.Dataset]:
        """Every view as a lazy xarray Dataset (checked once)."""
        if self._views is None:
            self._views = open_tile_store(self.url, self.storage_options)
        return self._views

    def tile_index(self, tile_id: str) -> int:
        try:
            return self._index[tile_id]
        except KeyError:
            raise KeyError(f"tile {tile_id!r} is not in {self.url} ({len(self.tile_ids)} tiles)") from None

    def candidates(self, band: str, instrument: str | None = None) -> list[tuple[str, int]]:
        """(view, band index) of every view holding ``band`` (of ``instrument``)."""
        inst = normalize_instrument(instrument) if instrument else None
        want = band
        if inst is None and "_" in band:
            head, tail = band.split("_", 1)
            if normalize_instrument(head) in {s.instrument for s in self.specs.values()}:
                inst, want = normalize_instrument(head), tail
        specs = {n: s for n, s in self.specs.items() if inst is None or s.instrument == inst}
        exact = [(n, s.bands.index(want)) for n, s in specs.items() if want in s.bands]
        if exact:  # "y" is Rubin's y, "Y" Euclid's Y
            return exact
        out = []
        for name, s in specs.items():
            b = normalize_band(s.instrument, want)
            if b is not None and b in s.bands:
                out.append((name, s.bands.index(b)))
        return out

    def locate(self, tile_id: str, band: str, instrument: str | None = None) -> tuple[str, int, int]:
        """(view, tile index, band index) of a plane; a view where it is present wins."""
        ti = self.tile_index(tile_id)
        cands = self.candidates(band, instrument)
        if not cands:
            known = sorted({f"{s.instrument}_{b}" for s in self.specs.values() for b in s.bands})
            raise KeyError(f"no band {band!r} (instrument {instrument}) in {self.url}; bands are {known}")
        for view, bi in cands:
            if bool(self.group[view]["present"][ti, bi]):
                return view, ti, bi
        return cands[0][0], ti, cands[0][1]

    def plane(self, tile_id: str, band: str, instrument: str | None = None) -> StoredPlane:
        """Read one (tile, band) plane: image, noise, mask, WCS header, present flag."""
        view, ti, bi = self.locate(tile_id, band, instrument)
        v = self.group[view]
        spec = self.specs[view]
        units = dict(v.attrs.get("band_units", {}))
        b = spec.bands[bi]
        return StoredPlane(
            image=np.asarray(v["image"][ti, bi]), noise=np.asarray(v["noise"][ti, bi]),
            mask=np.asarray(v["mask"][ti, bi]),
            wcs_header=str(v["wcs"][ti, bi]), present=bool(v["present"][ti, bi]), view=view, tile_index=ti,
            band_index=bi, tile_id=tile_id, band=b, instrument=spec.instrument, unit=str(units.get(b, "")),
            source=str(v["source"][ti, bi]),
        )


def read_plane(
    url: str, tile_id: str, band: str, instrument: str | None = None, storage_options: dict[str, Any] | None = None
) -> StoredPlane:
    """Read one (tile, band) plane of the tile store at ``url`` (see :class:`TileStore`)."""
    return TileStore(url, storage_options).plane(tile_id, band, instrument)
