"""The settings of one tile ingest run, checked when they are made."""

from __future__ import annotations

from dataclasses import dataclass

from skybatch.checks import check_tile_pattern
from skybatch.pipeline.sourcejob import SourcesConfig
from skybatch.store.fsutil import StorageSettings


@dataclass
class TileIngestConfig(SourcesConfig, StorageSettings):
    """Settings of one tile ingest run (CLI flags, YAML keys and flow parameters map onto these).

    sources: local paths, globs, directories, ``s3://`` URLs or prefixes of ``.npz`` / FITS tiles.
    store: where the Zarr tile store goes: a local path or an ``s3://`` URL.
    chunk_tiles: tiles per write unit (Zarr chunk or shard, and per Dask task). A task holds
        chunk_tiles x bands x H x W x 9 bytes (image, noise, mask) in memory: 4 tiles of 6 x
        4096^2 px take 3.6 GB, so use 1 for such tiles.
    instrument: force the instrument of every source (``rubin``, ``euclid``, ...); default: infer
        it per file (see :mod:`skybatch.sources.tiles`).
    tile_pattern: a regular expression with a named group ``tile`` that takes the tile id from
        each file's URL, e.g. ``r"/(?P<tile>tile_\\d+)[_.]"``; default: from the file's keys or name.
    shard_planes: store each (tile, band) plane as its own inner chunk inside shards of
        chunk_tiles tiles; ``None`` = when a plane is at least 4 MiB (1024^2 float32). Fixed
        per view when the view is created.
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    endpoint_url: an S3-compatible endpoint for sources and store (default AWS / $AWS_ENDPOINT_URL).
    anon: anonymous S3 access; ``None`` = anonymous when no credentials are configured.
    source_options / store_options: extra fsspec options for sources / store.
    retries: attempts for a chunk task that fails on a transient error.
    progress: show a progress bar on the terminal.
    """

    sources: list[str]
    store: str
    chunk_tiles: int = 4
    instrument: str | None = None
    tile_pattern: str | None = None
    shard_planes: bool | None = None
    cluster: str = "auto"
    retries: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        self._check_sources(" of tiles", "tile store")
        if isinstance(self.chunk_tiles, bool) or not isinstance(self.chunk_tiles, int) or self.chunk_tiles < 1:
            raise ValueError(f"chunk_tiles: must be a positive integer, got {self.chunk_tiles!r} (--chunk-tiles)")
        if self.instrument is not None and not str(self.instrument).strip():
            raise ValueError("instrument: give a name such as 'rubin' or 'euclid', or leave it unset (--instrument)")
        check_tile_pattern(self.tile_pattern)
        self._check_retries()
