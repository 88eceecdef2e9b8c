"""The outcome of an ingest run: :class:`IngestReport` (counts, set-aside sources, exit status)."""

from __future__ import annotations

from dataclasses import dataclass, field

from skybatch.pipeline.sourcejob import SourcesReport

__all__ = ["IngestReport"]


@dataclass(kw_only=True)
class IngestReport(SourcesReport):
    """The outcome of an ingest run (the counts of :class:`SourcesReport`, and these).

    n_spectra: spectra in the store after the run.
    spectra_written: spectra written by this run.
    n_bad_pixels: NaN/inf pixels found and zeroed (ivar=0, mask bit set).
    duplicate_targets: rows sharing (TARGETID, survey, program) with another row of the store.
    duplicate_examples: a few of those keys with the sources they come from.
    """

    n_spectra: int
    spectra_written: int
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
