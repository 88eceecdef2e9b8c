"""Pieces shared by the jobs that read sources into a store (ingest, tile ingest): the checks and the
recorded form of their settings, the counts and exit code of their reports, and ``run`` on a cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

from skybatch.pipeline.jobcore import exit_status
from skybatch.store.fsutil import public_options

__all__ = ["SOURCE_EXAMPLES", "SourcesConfig", "SourcesReport", "bounded_list", "run_on_cluster",
           "source_provenance"]

R = TypeVar("R")

#: Sources (paths, globs, URLs) a store's attrs name; the full list lives in the manifest (Parquet).
SOURCE_EXAMPLES = 5


def bounded_list(values: Any, keep: int = SOURCE_EXAMPLES) -> list[Any]:
    """The first ``keep`` of ``values`` (a list, or a string as a list of one): what store attrs record of a
    list that grows with the number of input files; its length is recorded beside it."""
    items = [values] if isinstance(values, str) else list(values or [])
    return items[:keep]


class SourcesConfig:
    """Mixin for the dataclass config of a job that reads ``sources`` into ``store``.

    ``not_recorded``: settings of the run, not of the store, left out of :meth:`public_dict`."""

    sources: list[str]
    store: str
    retries: int
    source_options: dict[str, Any]
    store_options: dict[str, Any]
    not_recorded: ClassVar[tuple[str, ...]] = ("progress",)

    def _check_sources(self, of: str = "", store: str = "store") -> None:
        """Check ``sources`` (a string becomes a list of one) and ``store``; ``of`` and ``store`` name
        what they hold in the messages (e.g. ``" of tiles"``, ``"tile store"``)."""
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        if not self.sources:
            raise ValueError(f"sources: give at least one path, glob or s3:// URL{of} (--source)")
        if not self.store:
            raise ValueError(f"store: give a local path or s3:// URL for the Zarr {store} (--store)")

    def _check_retries(self) -> None:
        if self.retries < 0:
            raise ValueError("retries: must be >= 0")

    def public_dict(self) -> dict[str, Any]:
        """The settings as recorded in store attrs (no credentials). Of ``sources`` only the first
        :data:`SOURCE_EXAMPLES` are kept, and their number as ``n_sources_given``: the attrs stay small
        however many files a run names (the manifest's sources table lists every file read)."""
        d = asdict(self)  # type: ignore[call-overload]
        d["n_sources_given"] = 1 if isinstance(self.sources, str) else len(self.sources)
        d["sources"] = bounded_list(self.sources)
        d["source_options"] = public_options(self.source_options)
        d["store_options"] = public_options(self.store_options)
        for k in self.not_recorded:
            d.pop(k, None)
        return d


@dataclass(kw_only=True)
class SourcesReport:
    """The counts every report of a job that reads sources into chunks of a store has (keyword-only: the
    job's own fields come first).

    store / manifest: the store written and its manifest (Parquet).
    chunks_written / chunks_skipped / chunks_total: per-chunk counts.
    new_sources: sources this run saw for the first time.
    failed_chunks: chunks that failed after retries, with the error (re-run to retry).
    set_aside: sources set aside (url, reason, message): fix them and re-run.
    n_bad_pixels: NaN/inf pixels neutralised by this run.
    seconds / run_id: wall time of the run and its id.
    """

    store: str
    manifest: str
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    new_sources: int
    failed_chunks: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    n_bad_pixels: int
    seconds: float
    run_id: str

    @property
    def ok(self) -> bool:
        return not self.failed_chunks and not self.set_aside

    @property
    def exit_code(self) -> int:
        """0: all done; 3: done, but sources were set aside; 1: chunks failed (re-run)."""
        return exit_status(self.failed_chunks, self.set_aside)

    def _chunks_line(self) -> str:
        return (f"chunks: {self.chunks_written} written, {self.chunks_skipped} already done, "
                f"{self.chunks_total} total")

    def _set_aside_lines(self) -> list[str]:
        return [f"SET ASIDE [{s['reason']}] {s['message']}" for s in self.set_aside]


def run_on_cluster(run_with_client: Callable[[Any, Any], R], config: Any) -> R:
    """``run_with_client(config, client)`` on the current Dask client if there is one, else on a cluster
    started from ``config.cluster`` (:func:`skybatch.cluster.client_for`)."""
    from skybatch.cluster import client_for

    with client_for(None, config.cluster) as client:
        return run_with_client(config, client)


def source_provenance(src: Any, columns: list[str], sources_table: str, config: Any, run_id: str,
                      store_options: dict[str, Any], **counts: int) -> dict[str, Any]:
    """The ``provenance`` attrs of a store after a run: how many sources (``src``, a DataFrame with a row
    per source and a ``url`` and ``size`` column), a SHA-256 of their ``columns``, where the full table is
    (``sources_table``), the settings (``config.public_dict()``) and storage options without credentials,
    the run and the time (UTC). ``counts`` follow ``n_sources`` (e.g. ``n_planes``)."""
    import hashlib
    import json
    import time

    import skybatch

    digest = hashlib.sha256(json.dumps(src[columns].values.tolist(), default=str).encode()).hexdigest()
    return {
        "n_sources": int(len(src)),
        **counts,
        "total_source_bytes": int(src["size"].sum()) if len(src) else 0,
        "sources_sha256": digest,
        "sources_table": sources_table,
        "source_examples": src["url"].head(SOURCE_EXAMPLES).tolist(),
        "skybatch_version": skybatch.__version__,
        "settings": config.public_dict(),
        "store_options": public_options(store_options),
        "last_run_id": run_id,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
