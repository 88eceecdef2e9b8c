"""The outcome of an ingest run: :class:`IngestReport` (counts, set-aside sources, exit status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skybatch.pipeline.sourcejob import SourcesReport

__all__ = ["IngestReport"]


@dataclass
class IngestReport(SourcesReport):
    """The outcome of an ingest run.

    n_spectra: spectra in the store after the run.
    spectra_written: spectra written by this run.
    chunks_written / chunks_skipped / chunks_total: per-chunk counts.
    failed_chunks: chunks that failed after retries, with the error (re-run to retry).
    set_aside: sources set aside (url, reason, message): fix them and re-run.
    n_bad_pixels: NaN/inf pixels found and zeroed (ivar=0, mask bit set).
    duplicate_targets: rows sharing (TARGETID, survey, program) with another row of the store.
    duplicate_examples: a few of those keys with the sources they come from.
    """

    store: str
    manifest: str
    n_spectra: int
    spectra_written: int
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    new_sources: int
    failed_chunks: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    n_bad_pixels: int
    seconds: float
    run_id: str
    duplicate_targets: int = 0
    duplicate_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"store: {self.store}",
            f"spectra in store: {self.n_spectra} ({self.spectra_written} written by this run)",
            self._chunks_line(),
        ]
        if self.n_bad_pixels:
            lines.append(f"NaN/inf pixels zeroed (ivar=0, mask bit set): {self.n_bad_pixels}")
        lines += self._set_aside_lines()
        if self.duplicate_targets:
            lines.append(f"WARNING {self.duplicate_targets} spectra share (TARGETID, survey, program) with another "
                         "row, e.g. " + "; ".join(self.duplicate_examples))
        for c in self.failed_chunks:
            what = f"chunk {c['chunk']}" if c.get("chunk") is not None else f"source {c.get('url')}"
            lines.append(f"FAILED {what}: {c['error']} -- re-run the same command to retry")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)
