"""The outcome of a tile ingest run, and its summary for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.pipeline.sourcejob import SourcesReport


@dataclass
class TileIngestReport(SourcesReport):
    """The outcome of a tile ingest run.

    n_tiles: tiles in the store after the run. views: planes planned per view.
    planes_written: planes written by this run.
    chunks_written / chunks_skipped / chunks_total: per (view, chunk) counts.
    failed_chunks: chunks that failed after retries, with the error (re-run to retry).
    set_aside: sources set aside (url, reason, message): fix them and re-run.
    n_bad_pixels: NaN/inf pixels neutralised (image 0, noise inf) by this run.
    n_absent: planes the sources mark as absent, or found empty (all NaN), by this run.
    """

    store: str
    manifest: str
    n_tiles: int
    views: dict[str, int]
    planes_written: int
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    new_sources: int
    failed_chunks: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    n_bad_pixels: int
    n_absent: int
    seconds: float
    run_id: str

    def summary(self) -> str:
        views = ", ".join(f"{k}: {v} planes" for k, v in self.views.items()) or "none"
        lines = [
            f"store: {self.store}",
            f"tiles in store: {self.n_tiles}; views: {views}",
            f"planes written by this run: {self.planes_written}",
            self._chunks_line(),
        ]
        if self.n_bad_pixels:
            lines.append(f"NaN/inf pixels neutralised (image 0, noise inf): {self.n_bad_pixels}")
        if self.n_absent:
            lines.append(f"planes absent in their sources (present=False): {self.n_absent}")
        lines += self._set_aside_lines()
        for c in self.failed_chunks:
            lines.append(f"FAILED view {c.get('view')} chunk {c['chunk']}: {c['error']} "
                         "-- re-run the same command to retry")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)
