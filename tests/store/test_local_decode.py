"""store.local_decode: whole stored objects of local Blosc arrays decoded into the caller's buffer, equal to Zarr."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.local_decode import local_blosc_reader

NW = 53


def _array(path, n, chunk, shard, fill=0.0, **kw):
    g = zarr.open_group(str(path), mode="w")
    return g.create_array("flux", shape=(n, NW), chunks=(chunk, NW), shards=None if shard is None else (shard, NW),
                          dtype="float32", fill_value=fill, compressors=kw.pop("compressors", PIXEL_CODEC), **kw)


@pytest.mark.parametrize("shard", [None, 64], ids=["unsharded", "sharded"])
def test_equal_to_zarr_with_missing_objects_and_chunks_and_a_partial_last_one(tmp_path, shard):
    n = 300  # last object partial (and, sharded, its last inner chunk too)
    arr = _array(tmp_path / "s.zarr", n, 16 if shard else 64, shard, fill=np.float32(-1.5))
    rng = np.random.default_rng(1)
    data = rng.standard_normal((n, NW)).astype(np.float32)
    data[16:32] = -1.5  # all fill: Zarr stores no inner chunk (sharded) for these rows
    arr[:128] = data[:128]
    arr[192:] = data[192:]  # rows 128:192 never written: a missing object
    reader = local_blosc_reader(arr)
    assert reader is not None and reader.sharded == (shard is not None)
    want = arr[:]
    for a in range(0, n, 64):
        b = min(a + 64, n)
        out = np.full((b - a, NW), np.nan, np.float32)
        assert reader.can_read(a, b, out)
        reader.read(a, b, out)
        np.testing.assert_array_equal(out, want[a:b])
    out = np.empty((n, NW), np.float32)
    reader.read(0, n, out)  # several objects in one call
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out[128:192], -1.5)
    np.testing.assert_array_equal(out[192:], data[192:])


def test_refuses_what_it_does_not_read(tmp_path):
    arr = _array(tmp_path / "s.zarr", 128, 16, 64)
    reader = local_blosc_reader(arr)
    assert reader is not None
    assert not reader.can_read(10, 64, np.empty((54, NW), np.float32))  # not on an object boundary
    assert not reader.can_read(0, 64, np.empty((64, NW), np.float64))  # another dtype
    assert not reader.can_read(0, 64, np.empty((64, NW + 1), np.float32)[:, :NW])  # not contiguous
    with pytest.raises(ValueError, match="whole stored objects"):
        reader.read(10, 64, np.empty((54, NW), np.float32))
    zstd = _array(tmp_path / "z.zarr", 128, 16, 64, compressors=zarr.codecs.ZstdCodec())
    assert local_blosc_reader(zstd) is None  # another codec: the caller reads through Zarr
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=(128, NW), chunks=(16, NW), dtype="float32",
                            compressors=PIXEL_CODEC)
    assert local_blosc_reader(mem) is None  # not a local directory store
    cols = _array(tmp_path / "c.zarr", 128, 16, None)
    assert local_blosc_reader(cols) is not None


def test_a_corrupt_shard_index_is_an_error(tmp_path):
    arr = _array(tmp_path / "s.zarr", 64, 16, 64)
    arr[:] = np.ones((64, NW), np.float32)
    reader = local_blosc_reader(arr)
    assert reader is not None
    path = os.path.join(reader.root, reader.key(0))
    raw = bytearray(open(path, "rb").read())
    raw[-10] ^= 0xFF  # a byte of the index (it sits at the end, before its CRC32C)
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        reader.read(0, 64, np.empty((64, NW), np.float32))


def test_a_truncated_object_is_an_error_not_a_crash(tmp_path):
    for shard in (64, None):
        arr = _array(tmp_path / f"t{shard}.zarr", 64, 16 if shard else 64, shard)
        arr[:] = np.random.default_rng(0).standard_normal((64, NW)).astype(np.float32)
        reader = local_blosc_reader(arr)
        assert reader is not None
        path = os.path.join(reader.root, reader.key(0))
        os.truncate(path, os.path.getsize(path) // 2)
        with pytest.raises((ValueError, RuntimeError)):
            reader.read(0, 64, np.empty((64, NW), np.float32))
