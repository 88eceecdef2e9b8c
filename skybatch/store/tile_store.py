"""The tile store: image tiles of several instruments in one Zarr v3 group that xarray reads.

Layout (the contract is ``schemas/tile_store.json``, checked by :func:`check_tile_store`)::

    STORE/                     root attrs: schema, store_uuid, chunk_tiles, views, n_tiles, provenance
      rubin/                   one child group per *view* = one instrument on one pixel grid
        image  (tile, band, y, x) float32     the source's unit (attrs band_units)
        noise  (tile, band, y, x) float32     1-sigma RMS; inf = no information
        mask   (tile, band, y, x) uint32      the survey's bit mask as stored
        tile_id (tile) str   band (band) str   band_key (band) str   instrument (band) str
        wcs (tile, band) str  present (tile, band) bool  source (tile, band) str
      euclid/ ...

``xr.open_zarr(STORE, group="rubin")`` is a plain Dataset of one view; :func:`open_tile_store`
returns every view (checked) and :func:`open_tile_tree` an ``xarray.DataTree``.

**One tile axis.** Every view has the same ``tile`` axis: index i is the same ``tile_id`` in
every view, so Rubin tile i and Euclid tile i cover the same sky tile and chunk k of one view
matches chunk k of another. Planes a view lacks are ``present=False`` (image NaN, noise inf).

**Views** (:func:`assign_views`): planes are grouped by (instrument, height, width). A grid
that matches an existing view goes there. Otherwise, when it is the instrument's only grid
(in the store and in this run), the view is named after the instrument (``rubin``,
``euclid``) and its band axis is the instrument's full band list (Rubin u g r i z y, Euclid
VIS Y J H; another instrument: the bands seen, sorted). When an instrument comes on several
grids, each new grid is named after its camera if all its bands belong to one (Euclid
``euclid_vis``: VIS; ``euclid_nisp``: Y J H), else ``<instrument>_<H>x<W>`` with the full
band list. Band axes never change after a view is created.

**Chunks.** The write unit is ``chunk_tiles`` tiles x all bands x the full image, and an
ingest task writes whole units only. With ``shard_planes`` (automatic for planes of at least
4 MiB, i.e. 1024^2 float32) that unit is a Zarr *shard* whose inner chunks are single
(tile, band) planes, so reading one band of one tile fetches only that plane; otherwise it
is one plain chunk. ``xr.open_zarr`` gives dask chunks equal to the Zarr chunks (one plane when
sharded; pass ``chunks={"tile": chunk_tiles, "band": -1}`` for one dask chunk per shard).

For the difference pipeline: :class:`TileStore` (``TileStore(url).plane(tile_id, band)``) or
:func:`read_plane` read one (tile, band) image, noise, mask and WCS straight from Zarr.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr

from skybatch.sources.tiles import INSTRUMENT_BANDS, band_key, normalize_band, normalize_instrument
from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.schema import StoreSchemaError, dataset_problems, load_schema, raise_problems

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "SHARD_PLANE_BYTES",
    "CAMERAS",
    "ViewSpec",
    "assign_views",
    "open_tile_group",
    "create_tile_store",
    "tile_store_exists",
    "ensure_view",
    "resize_tiles",
    "write_tile_ids",
    "write_tile_chunk",
    "open_tile_store",
    "open_tile_tree",
    "check_tile_store",
    "check_tile_view",
    "StoredPlane",
    "TileStore",
    "read_plane",
    "wcs_from_header",
    "consolidate",
]

SCHEMA_NAME = "skybatch.tiles"
SCHEMA_VERSION = 1
#: Planes at least this big (bytes of float32) are stored one per inner chunk in shards.
SHARD_PLANE_BYTES = 4 * 2**20
#: Cameras of instruments whose bands may come on different grids: instrument -> camera -> bands.
CAMERAS: dict[str, dict[str, tuple[str, ...]]] = {"euclid": {"vis": ("VIS",), "nisp": ("Y", "J", "H")}}

_PLANE_COORDS = "tile_id band_key instrument wcs present source"


@dataclass(frozen=True)
class ViewSpec:
    """One view: an instrument on one pixel grid.

    name: the Zarr child group (``"rubin"``, ``"euclid_vis"``...).
    instrument: ``"rubin"``, ``"euclid"``, ...
    bands: the band axis, fixed at creation.
    height, width: the pixel grid (y, x).
    shard_planes: store one (tile, band) plane per inner chunk inside shards.
    """

    name: str
    instrument: str
    bands: tuple[str, ...]
    height: int
    width: int
    shard_planes: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.instrument, self.height, self.width)

    def to_attrs(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "bands": list(self.bands), "shape": [self.height, self.width],
                "shard_planes": bool(self.shard_planes)}

    @classmethod
    def from_attrs(cls, name: str, d: dict[str, Any]) -> "ViewSpec":
        h, w = d["shape"]
        return cls(name, d["instrument"], tuple(d["bands"]), int(h), int(w), bool(d.get("shard_planes", False)))


def _auto_shard(height: int, width: int, shard_planes: bool | None) -> bool:
    return bool(shard_planes) if shard_planes is not None else height * width * 4 >= SHARD_PLANE_BYTES


def assign_views(
    existing: dict[str, ViewSpec],
    groups: dict[tuple[str, int, int], set[str]],
    shard_planes: bool | None = None,
) -> dict[tuple[str, int, int], ViewSpec]:
    """The view of every (instrument, height, width) group of planes (the rule in the module doc).

    existing: views already in the store, by name. groups: the bands seen per grid in this run.
    Returns group key -> ViewSpec (existing ones reused, new ones named and given band axes).
    """
    by_key = {v.key: v for v in existing.values()}
    taken = set(existing)
    out: dict[tuple[str, int, int], ViewSpec] = {}
    for key in sorted(groups):
        if key in by_key:
            out[key] = by_key[key]
    for key in sorted(groups):
        if key in out:
            continue
        inst, h, w = key
        seen = groups[key]
        canon = INSTRUMENT_BANDS.get(inst)
        full = tuple(canon) if canon else tuple(sorted(seen))
        grids = {k for k in groups if k[0] == inst} | {v.key for v in existing.values() if v.instrument == inst}
        name, bands = None, full
        if len(grids) == 1 and inst not in taken:
            name = inst
        else:
            for cam, cam_bands in CAMERAS.get(inst, {}).items():
                if seen <= set(cam_bands) and f"{inst}_{cam}" not in taken:
                    name, bands = f"{inst}_{cam}", cam_bands
                    break
        if name is None:
            name = f"{inst}_{h}x{w}"
        spec = ViewSpec(name, inst, bands, h, w, _auto_shard(h, w, shard_planes))
        taken.add(name)
        out[key] = spec
    return out


# -- create / write ------------------------------------------------------------------------------


def _kw(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    return {"storage_options": storage_options or {}} if "://" in url and not url.startswith("file://") else {}


def open_tile_group(
    url: str, storage_options: dict[str, Any] | None = None, mode: str = "r+", *, consolidated: bool = False
) -> zarr.Group:
    """The store's root Zarr group. Writers leave ``consolidated`` False: a group opened from
    consolidated metadata does not see children created after it was opened."""
    kw: dict[str, Any] = {"mode": mode, **_kw(url, storage_options)}
    if not consolidated:
        kw["use_consolidated"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return zarr.open_group(url, **kw)


def _zarr_store(url: str, storage_options: dict[str, Any] | None, read_only: bool = False):
    """A zarr store object for ``url``: the path itself locally, an FsspecStore for remote URLs."""
    if not _kw(url, storage_options):
        return url
    return zarr.storage.FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def consolidate(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Rewrite the consolidated metadata of the whole store (root and every view)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(_zarr_store(url, storage_options))


def tile_store_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` holds a skybatch tile store."""
    try:
        g = open_tile_group(url, storage_options, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, zarr.errors.NodeTypeValidationError):
        return False
    return g.attrs.get("skybatch_schema") == SCHEMA_NAME


def create_tile_store(
    url: str, chunk_tiles: int, attrs: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """Create an empty tile store (no views yet) with a fresh ``store_uuid``.

    chunk_tiles: tiles per write unit (chunk or shard). attrs: provenance and settings.
    """
    from skybatch.store.identity import IDENTITY_ATTR, new_identity

    g = open_tile_group(url, storage_options, mode="w-")  # never over anything already there
    ident = new_identity("tiles")
    g.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "store_uuid": ident["uuid"],
        IDENTITY_ATTR: ident,
        "chunk_tiles": int(chunk_tiles),
        "views": {},
        "n_tiles": 0,
        **attrs,
    })
    return g


def ensure_view(g: zarr.Group, spec: ViewSpec, chunk_tiles: int, n_tiles: int, attrs: dict[str, Any]) -> zarr.Group:
    """The view's group, created (empty, ``n_tiles`` long) if it is not there yet.

    attrs: view attributes to set (skybatch_version, manifest...). The band axis is fixed here.
    """
    if spec.name in g:
        return g[spec.name]
    schema = load_schema("tile_store")["view"]
    v = g.create_group(spec.name)
    nb, h, w = len(spec.bands), spec.height, spec.width
    unit_chunk = (chunk_tiles, nb, h, w)
    kw = {"chunks": (1, 1, h, w), "shards": unit_chunk} if spec.shard_planes else {"chunks": unit_chunk}
    dims4 = ["tile", "band", "y", "x"]
    for name, dtype, fill in (("image", "float32", np.nan), ("noise", "float32", np.inf), ("mask", "uint32", 0)):
        codec = {"compressors": PIXEL_CODEC} if dtype == "float32" else {}
        v.create_array(
            name, shape=(n_tiles, nb, h, w), dtype=dtype, fill_value=fill, dimension_names=dims4,
            attributes={"long_name": schema["variables"][name]["long_name"], "coordinates": _PLANE_COORDS},
            **kw, **codec,
        )
    for name, dtype, fill in (("wcs", str, ""), ("present", "bool", False), ("source", str, "")):
        v.create_array(
            name, shape=(n_tiles, nb), chunks=(chunk_tiles, nb), dtype=dtype, fill_value=fill,
            dimension_names=["tile", "band"], attributes={"long_name": schema["coords"][name]["long_name"]},
        )
    v.create_array("tile_id", shape=(n_tiles,), chunks=(chunk_tiles,), dtype=str, fill_value="",
                   dimension_names=["tile"], attributes={"long_name": schema["coords"]["tile_id"]["long_name"]})
    for name, values in (
        ("band", list(spec.bands)),
        ("band_key", [band_key(spec.instrument, b) for b in spec.bands]),
        ("instrument", [spec.instrument] * nb),
    ):
        a = v.create_array(name, shape=(nb,), chunks=(nb,), dtype=str, fill_value="", dimension_names=["band"],
                           attributes={"long_name": schema["coords"][name]["long_name"]})
        a[:] = np.asarray(values, dtype=object)
    v.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "view": spec.name,
        **spec.to_attrs(),
        "chunk_tiles": int(chunk_tiles),
        "band_units": {},
        "mask_bits": {},
        "provenance": {},
        **attrs,
    })
    return v


def resize_tiles(g: zarr.Group, n_tiles: int) -> None:
    """Set the length of the ``tile`` axis of every array of every view (idempotent)."""
    for _name, v in g.groups():
        for _aname, arr in v.arrays():
            dims = arr.metadata.dimension_names or ()
            if dims and dims[0] == "tile" and arr.shape[0] != n_tiles:
                arr.resize((n_tiles,) + tuple(arr.shape[1:]))


def write_tile_ids(v: zarr.Group, start: int, tile_ids: list[str]) -> None:
    """Write ``tile_id[start : start + len(tile_ids)]`` of one view."""
    if tile_ids:
        v["tile_id"][start : start + len(tile_ids)] = np.asarray([str(t) for t in tile_ids], dtype=object)


def write_tile_chunk(v: zarr.Group, start: int, data: dict[str, np.ndarray]) -> None:
    """Write tiles ``start : start + n`` of the named arrays of one view.

    data: ``image``/``noise`` float32 and ``mask`` uint32 (n, bands, H, W); ``present`` bool,
    ``wcs`` / ``source`` str (n, bands). The caller guarantees the range is a whole write unit
    (or the store's tail), so no other task writes the same chunk or shard.
    """
    for name, values in data.items():
        arr = v[name]
        if values.dtype.kind in ("O", "U", "T"):
            values = np.asarray(values, dtype=object)
        arr[start : start + len(values)] = values


# -- open / check --------------------------------------------------------------------------------


def check_tile_view(ds: xr.Dataset, where: str = "view") -> None:
    """Check one opened view against ``tile_store.json``; StoreSchemaError lists every problem."""
    problems = dataset_problems(ds, load_schema("tile_store"), "view")
    raise_problems(problems, f"{where} does not follow the tile store schema")


def check_tile_store(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, xr.Dataset]:
    """Check a whole tile store (root attrs, every view, one shared tile axis); returns the views."""
    return open_tile_store(url, storage_options, check=True)


def open_tile_store(
    url: str, storage_options: dict[str, Any] | None = None, *, check: bool = True
) -> dict[str, xr.Dataset]:
    """Every view of a tile store as a lazy ``xarray.Dataset``, by view name.

    Each is ``xr.open_zarr(url, group=name)``. With ``check`` the root attributes and every
    view are checked against the schema, and all views must share one tile axis
    (StoreSchemaError naming what is wrong).
    """
    try:
        g = open_tile_group(url, storage_options, mode="r", consolidated=True)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreSchemaError(
            f"{url}: no Zarr store here ({e}); create one with `skybatch run ingest-tiles`"
        ) from None
    root = dict(g.attrs)
    if check:
        schema = load_schema("tile_store")
        if root.get("skybatch_schema") != schema["schema"]:
            raise StoreSchemaError(f"{url} is not a skybatch tile store (skybatch_schema is "
                                   f"{root.get('skybatch_schema')!r}, expected {schema['schema']!r})")
        missing = [k for k in schema["root_attrs"]["required"] if k not in root]
        if missing:
            raise StoreSchemaError(f"{url} does not follow the tile store schema: missing root attributes {missing}")
    views = {}
    for name in root.get("views", {}):
        ds = xr.open_zarr(url, group=name, **_kw(url, storage_options))
        if check:
            check_tile_view(ds, f"{url} view {name!r}")
        views[name] = ds
    if check and views:
        ref_name, ref = next(iter(views.items()))
        ids = ref["tile_id"].values
        for name, ds in views.items():
            if ds.sizes["tile"] != ref.sizes["tile"] or not np.array_equal(ds["tile_id"].values, ids):
                raise StoreSchemaError(f"{url}: views {ref_name!r} and {name!r} do not share one tile axis; "
                                       "re-run the ingest to finish it")
    return views


def open_tile_tree(url: str, storage_options: dict[str, Any] | None = None) -> xr.DataTree:
    """The whole store as an ``xarray.DataTree`` (one child node per view)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_datatree(url, engine="zarr", **_kw(url, storage_options))


# -- reading planes (the difference pipeline's door) -------------------------------------------


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
