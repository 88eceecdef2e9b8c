"""Chunk and shard shapes from the data size: a DR1-size store stays <= 10^4 objects per variable."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, LoggingStore

from skybatch.store.codecs import MAX_OBJECTS, PIXEL_CODEC, chunk_shard_shape, spectra_layout

DR1 = (18_000_000, 7781)


def test_dr1_spectra_store_is_under_ten_thousand_objects_per_variable():
    lay = spectra_layout(*DR1)
    row = DR1[1] * 4
    assert lay.objects(DR1[0]) <= MAX_OBJECTS
    assert lay.objects(DR1[0]) == math.ceil(DR1[0] / lay.shard_rows) == 8273
    assert lay.shard_rows % lay.chunk_rows == 0
    assert 32 * 2**20 <= lay.shard_rows * row <= 128 * 2**20  # one task writes 32-128 MB
    assert lay.chunk_rows * row <= 4 * 2**20  # a partial read is one ranged GET of <= 4 MB
    assert lay.pixel(*DR1) == {"chunks": (128, 7781), "shards": (2176, 7781)}
    assert lay.column() == {"chunks": (2176,), "shards": None}


@pytest.mark.parametrize("n", [1, 100, 2000, 10**5, 10**6, 18 * 10**6, 10**8])
def test_any_size_stays_under_the_object_limit(n):
    chunks, shards = chunk_shard_shape((n, 7781), "float32")
    rows = (shards or chunks)[0]
    assert math.ceil(n / rows) <= MAX_OBJECTS
    assert rows % chunks[0] == 0 and rows <= max(n, chunks[0]) + chunks[0]
    assert chunks[1:] == (7781,)


def test_columns_share_the_pixel_arrays_shard_rows():
    lay = spectra_layout(*DR1)
    # per-spectrum columns (8-byte ids) are written by the same tasks: same rows per object
    chunks, shards = chunk_shard_shape((DR1[0],), "int64", rows_per_shard=lay.shard_rows)
    assert (shards or chunks)[0] == lay.shard_rows
    # a 3-D tile array: whole images per chunk
    chunks, shards = chunk_shard_shape((50_000, 192, 192), "float32")
    assert chunks[1:] == (192, 192) and shards[0] % chunks[0] == 0
    # a store created empty and grown later is sized from the byte targets
    assert spectra_layout(0, 7781) == spectra_layout(10**6, 7781)
    with pytest.raises(ValueError, match="rows_per_shard"):
        chunk_shard_shape((10, 5), "float32", rows_per_shard=0)


def test_sharded_array_on_disk_objects_and_requests(tmp_path):
    """Real Zarr: one file per shard; a task's whole-shard read is 1 request, a chunk read 2 (index + chunk)."""
    n, nw = 1000, 7781
    chunks, shards = chunk_shard_shape((n, nw), "float32", chunk_bytes=2**20, shard_bytes=8 * 2**20)
    assert chunks == (32, nw) and shards == (288, nw)
    arr = zarr.create_array(LocalStore(str(tmp_path)), name="flux", shape=(n, nw), chunks=chunks, shards=shards,
                            dtype="float32", compressors=PIXEL_CODEC, fill_value=0)
    x = np.random.default_rng(0).normal(size=(n, nw)).astype("float32")
    arr[:] = x
    assert len(os.listdir(tmp_path / "flux" / "c")) == math.ceil(n / shards[0]) == 4
    store = LoggingStore(LocalStore(str(tmp_path), read_only=True), log_level="CRITICAL")
    back = zarr.open_array(store, path="flux", mode="r")
    store.counter.clear()
    np.testing.assert_array_equal(back[: shards[0]], x[: shards[0]])
    assert store.counter["get"] == 1
    store.counter.clear()
    np.testing.assert_array_equal(back[300:310], x[300:310])
    assert store.counter["get"] == 2
