"""The model feeders: whole-chunk reads (sharded and unsharded stores), the shuffled batch stream, prefetch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zarr

from skybatch.pipeline.batches import StoreBatches, shuffled_pieces
from skybatch.pipeline.chunk_reader import ChunkReader, _read_into, object_rows
from skybatch.pipeline.hostbuf import is_aligned
from skybatch.pipeline.prefetch import BackgroundIterator, BufferPool, Prefetcher
from skybatch.sources.base import Grid
from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.spectra_store import consolidate, create_spectra_store, open_group, resize_spectra_store, write_rows

NW, CHUNK, N = 97, 64, 300  # the last chunk is partial
TYPES = np.array(["GALAXY", "QSO ", "star", "BAD"])


def _make_store(path: str, sharded: bool) -> dict[str, np.ndarray]:
    """A small spectra store with known values; ``sharded``: flux/ivar as one shard per chunk of 4 inner chunks."""
    rng = np.random.default_rng(3)
    g = create_spectra_store(path, Grid("linear", 3600.0, 1.0, NW, "test"), CHUNK,
                             {"skybatch_version": "test", "formats": ["test"], "manifest": "", "provenance": {}})
    resize_spectra_store(g, N)
    truth = {"flux": rng.standard_normal((N, NW)).astype(np.float32),
             "ivar": rng.uniform(0.5, 2.0, (N, NW)).astype(np.float32),
             "healpix": rng.integers(0, 40, N).astype(np.int64),
             "spectype": TYPES[rng.integers(0, len(TYPES), N)]}
    if sharded:
        for name in ("flux", "ivar"):
            del g[name]
            g.create_array(name, shape=(N, NW), chunks=(CHUNK // 4, NW), shards=(CHUNK, NW), dtype="float32",
                           fill_value=0, compressors=PIXEL_CODEC, dimension_names=["spectrum", "wavelength"])
    for a in range(0, N, CHUNK):
        write_rows(g, a, {k: v[a : a + CHUNK] for k, v in truth.items()})
    consolidate(path)
    return truth


@pytest.fixture(scope="module", params=["unsharded", "sharded"])
def store(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("feed") / f"{request.param}.zarr")
    truth = _make_store(path, request.param == "sharded")
    return path, truth, request.param == "sharded"


def test_chunk_reader_reads_whole_objects_into_its_buffers(store):
    path, truth, sharded = store
    g = open_group(path, mode="r")
    assert (g["flux"].shards is not None) == sharded
    assert object_rows(g["flux"]) == CHUNK  # a whole shard (sharded) or a whole chunk is one read
    reader = ChunkReader(path, None, ("flux", "ivar", "healpix", "spectype"))
    assert reader.chunk_rows == CHUNK
    buf = reader.new_buffers()
    assert all(is_aligned(v) for v in buf.values())
    for a in range(0, N, CHUNK):
        b = min(a + CHUNK, N)
        got = reader.read(a, b, out=buf)
        for k in ("flux", "ivar", "healpix"):
            np.testing.assert_array_equal(got[k], truth[k][a:b])
            assert np.shares_memory(got[k], buf[k])  # read straight into the reused buffer
        assert got["spectype"].tolist() == truth["spectype"][a:b].tolist()
    # Zarr's out= path (no intermediate array) is the one taken, sharded or not
    dest = np.empty((CHUNK, NW), np.float32)
    _read_into(g["flux"], CHUNK, 2 * CHUNK, dest)
    np.testing.assert_array_equal(dest, truth["flux"][CHUNK : 2 * CHUNK])
    with pytest.raises(KeyError, match="nope"):
        ChunkReader(path, None, ("flux", "nope"))
    with pytest.raises(ValueError, match="outside"):
        reader.read(0, N + 1)


def test_batches_follow_the_documented_row_stream(store):
    """Batch i is rows [iB, (i+1)B) of the shuffled piece stream; labels mapped; resumable at any step."""
    path, truth, _ = store
    label_map = {"GALAXY": 0, "QSO": 1, "STAR": 2}
    b = StoreBatches(path, batch_size=48, val_fraction=0.2, label="spectype", label_map=label_map, seed=4,
                     prefetch=2)
    usable = np.isin(np.char.upper(np.char.strip(truth["spectype"].astype(str))), list(label_map))
    assert b.n_train + b.n_val == usable.sum()
    pieces = shuffled_pieces(b._chunks, b.n_train, b.seed, 0)
    rows = np.concatenate([next(pieces)[2] for _ in range(3 * len(b._chunks))])
    stream = b.make_batches(0)
    try:
        for i in range(int(2.5 * b.n_train / 48)):  # more than two epochs
            batch = next(stream)
            want = rows[i * 48 : (i + 1) * 48]
            np.testing.assert_array_equal(batch["flux"], truth["flux"][want])
            np.testing.assert_array_equal(batch["ivar"], truth["ivar"][want])
            codes = [label_map[str(s).strip().upper()] for s in truth["spectype"][want]]
            assert batch["label"].tolist() == codes and batch["label"].dtype == np.int32
            assert batch["flux"].dtype == np.float32 and batch["flux"].shape == (48, NW)
            assert all(is_aligned(v) for v in batch.values())  # so that fit()'s device copy aliases them
    finally:
        stream.close()
    resumed = b.make_batches(7)
    try:
        np.testing.assert_array_equal(next(resumed)["flux"], truth["flux"][rows[7 * 48 : 8 * 48]])
    finally:
        resumed.close()
    picked = np.array([250, 3, 70, 3])
    got = b.read(picked)
    np.testing.assert_array_equal(got["flux"], truth["flux"][picked])
    val = b.val_batches()
    assert sum(int(v["weight"].sum()) for v in val) == b.n_val


def test_prefetcher_keeps_order_and_depth_and_reraises():
    running, peak = [0], [0]
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if i == 7:
            raise RuntimeError("item 7 broke")
        return i * i

    with Prefetcher(work, range(20), depth=3) as p:
        got = [next(p) for _ in range(7)]
        with pytest.raises(RuntimeError, match="item 7"):
            next(p)
    assert got == [i * i for i in range(7)]
    assert 2 <= peak[0] <= 3


def test_background_iterator_reraises_and_stops():
    def gen():
        yield 1
        yield 2
        raise ValueError("bad batch")

    it = BackgroundIterator(gen, depth=1)
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(ValueError, match="bad batch"):
        next(it)
    endless = BackgroundIterator(lambda: iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()
    assert not endless._thread.is_alive()
    pool = BufferPool(lambda: np.zeros(3), 2)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    assert pool.acquire() is a and b is not a


def test_sharded_array_created_with_zarr_create_array_reads_like_unsharded(tmp_path):
    x = np.arange(40 * 6, dtype=np.float32).reshape(40, 6)
    s = zarr.create_array(str(tmp_path / "s.zarr"), shape=x.shape, chunks=(5, 6), shards=(20, 6), dtype="float32")
    s[:] = x
    buf = np.empty((20, 6), np.float32)
    _read_into(s, 20, 40, buf)
    np.testing.assert_array_equal(buf, x[20:])
