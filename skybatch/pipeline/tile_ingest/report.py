"""The outcome of a tile ingest run, and its summary for people."""

from __future__ import annotations

from dataclasses import dataclass

from skybatch.pipeline.sourcejob import SourcesReport


@dataclass(kw_only=True)
class TileIngestReport(SourcesReport):
    """The outcome of a tile ingest run (the counts of :class:`SourcesReport`, and these).

    n_tiles: tiles in the store after the run. views: planes planned per view.
    planes_written: planes written by this run.
    chunks_written / chunks_skipped / chunks_total: per (view, chunk) counts.
    n_bad_pixels: NaN/inf pixels neutralised (image 0, noise inf) by this run.
    n_absent: planes the sources mark as absent, or found empty (all NaN), by this run.
    """

    n_tiles: int
    views: dict[str, int]
    planes_written: int
    n_absent: int

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
