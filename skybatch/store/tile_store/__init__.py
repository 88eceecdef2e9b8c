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

from skybatch.store.zarr_group import consolidate

from .planes import StoredPlane, TileStore, read_plane, wcs_from_header
from .read import check_tile_store, check_tile_view, open_tile_store, open_tile_tree
from .views import CAMERAS, SCHEMA_NAME, SCHEMA_VERSION, SHARD_PLANE_BYTES, ViewSpec, assign_views
from .write import (
    create_tile_store,
    ensure_view,
    open_tile_group,
    resize_tiles,
    tile_store_exists,
    write_tile_chunk,
    write_tile_ids,
)

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
