"""Ingest settings and the plan's data types: :class:`IngestConfig`, :class:`ChunkTask`, :class:`IngestPlan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from skybatch.pipeline.sourcejob import SourcesConfig
from skybatch.sources.base import Grid, SourceInfo
from skybatch.store.fsutil import StorageSettings

__all__ = ["FORMATS", "IngestConfig", "ChunkTask", "IngestPlan"]

FORMATS = ("auto", "desi", "sdss", "skyvac")


@dataclass
class IngestConfig(SourcesConfig, StorageSettings):
    """Settings of one ingest run (CLI flags, YAML keys and flow parameters map onto these).

    sources: local paths, globs, directories, ``s3://`` URLs or prefixes of FITS files.
    store: where the Zarr store goes: a local path or an ``s3://`` URL.
    format: ``auto`` (detect per file), ``desi``, ``sdss`` or ``skyvac``.
    chunk_spectra: spectra per stored object (a Zarr v3 shard of the pixel arrays, split
        into ~4 MiB inner chunks) and per Dask task; a chunk of DESI spectra takes
        12 bytes x 7781 pixels = 93 kB per spectrum in memory. The default, 2048, keeps a
        DR1-size store (18 M spectra) at 8,790 objects per variable.
    keep_nonscience: keep sky fibres and negative-TARGETID rows of DESI coadds.
    cluster: a cluster profile name (``auto``, ``local``, ``local-cuda``,
        ``slurm``, ``kubernetes``, ``address``), a YAML path, or a scheduler address.
    endpoint_url: an S3-compatible endpoint for sources and store (default: AWS,
        or ``$AWS_ENDPOINT_URL``).
    anon: anonymous S3 access; ``None`` = anonymous when no credentials are configured.
    source_options / store_options: extra fsspec options for sources / store
        (e.g. a public source bucket and a private store bucket).
    retries: attempts for a chunk task that fails on a transient error.
    progress: show a progress bar on the terminal.
    verify_checksums: verify FITS CHECKSUM/DATASUM keywords of the HDUs read, on the bytes read
        (DESI: FIBERMAP/WAVELENGTH when planning, the flux/ivar/mask images in the chunk read, so
        no extra pass over the files; other formats: one pass over each new file when planning);
        a mismatch sets the file aside with reason ``checksum`` (found in a chunk: its rows stay
        flagged, see :data:`~skybatch.pipeline.ingest.chunk.SET_ASIDE_MASK_BIT`).
    dedupe_files: read a file reached under two names (same bytes) once and set the other
        name aside as ``duplicate`` (False: ingest every name, e.g. benchmarks built of symlinks).
    wait_lock: seconds to wait while another job writes the store (``--wait-lock``);
        None: ``$SKYBATCH_WAIT_LOCK`` or 0 (stop at once, naming the other writer).
    """

    sources: list[str]
    store: str
    format: str = "auto"
    chunk_spectra: int = 2048
    keep_nonscience: bool = False
    cluster: str = "auto"
    retries: int = 3
    progress: bool = True
    verify_checksums: bool = True
    dedupe_files: bool = True
    wait_lock: float | None = None

    not_recorded: ClassVar[tuple[str, ...]] = ("progress", "wait_lock")

    def __post_init__(self) -> None:
        self._check_sources()
        if self.format not in FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {FORMATS} (--format)")
        if not isinstance(self.chunk_spectra, int) or self.chunk_spectra < 1:
            raise ValueError(f"chunk_spectra: must be a positive integer, got {self.chunk_spectra!r} (--chunk-spectra)")
        self._check_retries()


@dataclass
class ChunkTask:
    """One store chunk to write: rows ``start:stop`` filled from ``pieces``.

    pieces: (source url, first kept row, stop kept row) in store order.
    """

    chunk: int
    start: int
    stop: int
    pieces: list[tuple[str, int, int]]
    fingerprint: str
    #: url -> planned format, n_rows and kept rows of each source in ``pieces`` (filled before submission)
    source_rows: dict[str, dict[str, Any]] | None = None


@dataclass
class IngestPlan:
    """What :func:`execute_plan` will do; built by :func:`plan_ingest`."""

    config: IngestConfig
    run_id: str
    grid: Grid | None
    n_spectra: int
    sources: pd.DataFrame
    todo: list[ChunkTask]
    n_chunks: int
    new_sources: list[str]
    set_aside: list[dict[str, Any]]
    formats: dict[str, str]
    #: what this run's inspection learnt per new source (saves re-reading headers when writing)
    infos: dict[str, SourceInfo] = field(default_factory=dict)
    #: sources whose inspection hit an unexpected error (a bug): url, error, traceback
    failed_sources: list[dict[str, Any]] = field(default_factory=list)
    #: the uuid of the store the plan was made for (None: no store yet)
    store_uuid: str | None = None
