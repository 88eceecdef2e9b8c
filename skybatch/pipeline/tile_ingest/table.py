"""The plan table (``URL.manifest/tile_plan.parquet``): one row per planned plane, plus one
row per source whose planes are all absent; and the manifest stage of each view.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skybatch.store.fsutil import atomic_write_bytes, join
from skybatch.store.manifest import Manifest

#: The plan table inside the manifest folder.
PLAN_FILE = "tile_plan.parquet"
_PLAN_COLUMNS = {
    "url": object, "format": object, "size": "int64", "checksum": object, "run_id": object, "planned_at": object,
    "tile_id": object, "tile_index": "int64", "view": object, "band": object, "band_index": "int64",
    "instrument": object, "locator": object, "height": "int64", "width": "int64", "unit": object,
    "read_instrument": object, "read_tile_pattern": object,
}  # fmt: skip


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=t) for k, t in _PLAN_COLUMNS.items()})


def read_plan_table(manifest: Manifest) -> pd.DataFrame:
    """The planned planes of a tile store (empty frame if none)."""
    fs = manifest.fs
    path = join(manifest.url, PLAN_FILE)
    if not fs.exists(path):
        return _empty_table()
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def _write_plan_table(manifest: Manifest, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df[list(_PLAN_COLUMNS)], preserve_index=False), buf)
    atomic_write_bytes(manifest.fs, join(manifest.url, PLAN_FILE), buf.getvalue())


def _stage(view: str) -> str:
    return f"tiles-{view}"
