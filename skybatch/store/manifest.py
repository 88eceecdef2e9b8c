"""The ingest manifest: Parquet files beside a store that make runs resumable.

For a store at ``URL`` the manifest lives at ``URL.manifest/``:

``sources.parquet``
    Every planned source: url, format, n_rows, spectrum_start (its first row in
    the store), size, checksum, the kept file rows, run id and time. Rewritten
    atomically when a run plans new sources; rows once assigned never move.
``identity.json``
    The uuid and kind of the store these records belong to (its ``skybatch_store``
    attr); records of a manifest whose uuid is not the store's are never trusted.
``quarantine/<run_id>.parquet``
    Sources a run set aside, with a reason tag and a message saying what to do.
``chunks/chunk-<index>-<fingerprint>.parquet`` (``stages/<stage>/...`` for later stages)
    One small file per finished store chunk, written by the Dask task *after*
    its region write. The fingerprint hashes the chunk's planned pieces, so a
    chunk whose plan changed (the last, partial chunk when sources are
    appended) is written again; listing the folder is enough to know what is
    done, whatever the number of chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skybatch.store.fsutil import atomic_write_bytes, filesystem, join

__all__ = ["Manifest", "chunk_fingerprint"]

_CHUNK_RE = re.compile(r"chunk-(\d+)-([0-9a-f]+)\.parquet$")


def chunk_fingerprint(pieces: list[Any], start: int, stop: int) -> str:
    """A short hash of a chunk's plan: its store rows and the source rows filling them."""
    h = hashlib.sha256(json.dumps([start, stop, pieces], separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


@dataclass
class Manifest:
    """The manifest of the store at ``store_url`` (see module docstring)."""

    store_url: str
    storage_options: dict[str, Any] | None = None
    stage: str = "ingest"

    @property
    def url(self) -> str:
        return self.store_url.rstrip("/") + ".manifest"

    @property
    def fs(self):
        return filesystem(self.store_url, self.storage_options)

    def _read(self, path: str) -> pd.DataFrame | None:
        fs = self.fs
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return pq.read_table(f).to_pandas()

    # -- identity ----------------------------------------------------------
    def read_identity(self) -> dict[str, Any] | None:
        """The identity of the store this manifest belongs to (None if unrecorded)."""
        p = join(self.url, "identity.json")
        fs = self.fs
        if not fs.exists(p):
            return None
        with fs.open(p, "rb") as f:
            try:
                return json.loads(f.read().decode())
            except ValueError:
                return None

    def write_identity(self, identity: dict[str, Any]) -> None:
        atomic_write_bytes(self.fs, join(self.url, "identity.json"), json.dumps(identity).encode())

    def reset(self, keep_sources: bool = False) -> None:
        """Forget every chunk record (and the planned sources unless ``keep_sources``); keep quarantine history.

        Only the manifest's own entries are removed.
        """
        fs = self.fs
        names = ["chunks", "stages", "identity.json"] + ([] if keep_sources else ["sources.parquet", "tile_plan.parquet"])
        for name in names:
            p = join(self.url, name)
            if fs.exists(p):
                fs.rm(p, recursive=True)

    # -- sources -----------------------------------------------------------
    def read_sources(self) -> pd.DataFrame:
        """Planned sources, ordered by ``spectrum_start`` (empty frame if none)."""
        df = self._read(join(self.url, "sources.parquet"))
        if df is None:
            return pd.DataFrame(
                {
                    "url": pd.Series([], dtype=object),
                    "format": pd.Series([], dtype=object),
                    "n_rows": pd.Series([], dtype="int64"),
                    "spectrum_start": pd.Series([], dtype="int64"),
                    "size": pd.Series([], dtype="int64"),
                    "checksum": pd.Series([], dtype=object),
                    "rows": pd.Series([], dtype=object),
                    "run_id": pd.Series([], dtype=object),
                    "planned_at": pd.Series([], dtype=object),
                }
            )
        return df.sort_values("spectrum_start", kind="stable").reset_index(drop=True)

    def write_sources(self, df: pd.DataFrame) -> None:
        atomic_write_bytes(self.fs, join(self.url, "sources.parquet"), _table_bytes(df))

    # -- quarantine --------------------------------------------------------
    def add_quarantine(self, records: list[dict[str, Any]], run_id: str) -> None:
        """Record sources set aside by run ``run_id`` (url, reason, message)."""
        df = pd.DataFrame(
            [{"url": r["url"], "reason": r["reason"], "message": r["message"], "run_id": run_id,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} for r in records],
            columns=["url", "reason", "message", "run_id", "time"],
        )
        atomic_write_bytes(self.fs, join(self.url, "quarantine", f"{run_id}.parquet"), _table_bytes(df))

    def quarantined(self) -> pd.DataFrame:
        """Sources currently set aside: the latest record per url, minus any planned since."""
        fs = self.fs
        qdir = join(self.url, "quarantine")
        frames = []
        if fs.exists(qdir):
            for p in sorted(fs.ls(qdir, detail=False)):
                if str(p).endswith(".parquet"):
                    with fs.open(p, "rb") as f:
                        frames.append(pq.read_table(f).to_pandas())
        if not frames:
            return pd.DataFrame(columns=["url", "reason", "message", "run_id", "time"])
        q = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable")
        q = q.drop_duplicates("url", keep="last")
        planned = set(self.read_sources()["url"])
        return q[~q["url"].isin(planned)].reset_index(drop=True)

    # -- chunks ------------------------------------------------------------
    @property
    def chunk_dir(self) -> str:
        """Where this stage's chunk records go (``chunks/`` for ingest, ``stages/<stage>/`` otherwise)."""
        return join(self.url, "chunks") if self.stage == "ingest" else join(self.url, "stages", self.stage)

    def chunk_path(self, index: int, fingerprint: str) -> str:
        return join(self.chunk_dir, f"chunk-{index:09d}-{fingerprint}.parquet")

    def done_chunks(self) -> dict[int, set[str]]:
        """Finished chunks: chunk index -> the fingerprints written for it."""
        fs = self.fs
        cdir = self.chunk_dir
        done: dict[int, set[str]] = {}
        if not fs.exists(cdir):
            return done
        for p in fs.ls(cdir, detail=False):
            m = _CHUNK_RE.search(str(p))
            if m:
                done.setdefault(int(m.group(1)), set()).add(m.group(2))
        return done

    def mark_chunk_done(self, record: dict[str, Any]) -> None:
        """Write the completion record of one chunk (called on the worker after its write)."""
        df = pd.DataFrame([record])
        atomic_write_bytes(self.fs, self.chunk_path(record["chunk"], record["fingerprint"]), _table_bytes(df))

    def chunks(self) -> pd.DataFrame:
        """All chunk completion records as one table (reads every record: for reports, not planning)."""
        fs = self.fs
        cdir = self.chunk_dir
        frames = []
        if fs.exists(cdir):
            for p in sorted(fs.ls(cdir, detail=False)):
                if _CHUNK_RE.search(str(p)):
                    with fs.open(p, "rb") as f:
                        frames.append(pq.read_table(f).to_pandas())
        if not frames:
            return pd.DataFrame(columns=["chunk", "start", "stop", "fingerprint", "n_bad_pixels", "sources", "run_id"])
        return pd.concat(frames, ignore_index=True).sort_values("chunk").reset_index(drop=True)
