"""The manifest: atomic sources table, quarantine history, chunk records found by listing."""

from __future__ import annotations

import pandas as pd

from skybatch.store.manifest import Manifest, chunk_fingerprint


def test_fingerprint_changes_with_plan():
    a = chunk_fingerprint([("f1", 0, 10)], 0, 10)
    assert a == chunk_fingerprint([("f1", 0, 10)], 0, 10)
    assert a != chunk_fingerprint([("f1", 0, 10), ("f2", 0, 5)], 0, 15)


def test_sources_round_trip(tmp_path):
    m = Manifest(str(tmp_path / "s.zarr"))
    assert len(m.read_sources()) == 0
    df = pd.DataFrame([
        {"url": "b.fits", "format": "desi", "n_rows": 3, "spectrum_start": 5, "size": 10, "checksum": "x",
         "rows": [0, 1, 2], "run_id": "r", "planned_at": "t"},
        {"url": "a.fits", "format": "desi", "n_rows": 5, "spectrum_start": 0, "size": 10, "checksum": "y",
         "rows": [0, 1, 2, 3, 4], "run_id": "r", "planned_at": "t"},
    ])
    m.write_sources(df)
    back = m.read_sources()
    assert back["url"].tolist() == ["a.fits", "b.fits"]
    assert list(back["rows"][1]) == [0, 1, 2]
    assert not list((tmp_path).glob("s.zarr.manifest/*.tmp-*"))


def test_quarantine_latest_and_cleared_when_planned(tmp_path):
    m = Manifest(str(tmp_path / "s.zarr"))
    m.add_quarantine([{"url": "bad.fits", "reason": "truncated", "message": "bad.fits: truncated"},
                      {"url": "x.fits", "reason": "corrupt", "message": "x.fits: corrupt"}], "run1")
    assert set(m.quarantined()["url"]) == {"bad.fits", "x.fits"}
    m.write_sources(pd.DataFrame([{"url": "x.fits", "format": "desi", "n_rows": 1, "spectrum_start": 0, "size": 1,
                                   "checksum": "", "rows": [0], "run_id": "run2", "planned_at": "t"}]))
    q = m.quarantined()
    assert q["url"].tolist() == ["bad.fits"] and q["reason"].tolist() == ["truncated"]


def test_done_chunks_by_listing(tmp_path):
    m = Manifest(str(tmp_path / "s.zarr"))
    assert m.done_chunks() == {}
    for k, fp in [(0, "aa"), (1, "bb"), (1, "cc")]:
        m.mark_chunk_done({"chunk": k, "start": k * 4, "stop": k * 4 + 4, "fingerprint": fp, "n_bad_pixels": 0,
                           "sources": ["f"], "run_id": "r", "written_at": "t"})
    assert m.done_chunks() == {0: {"aa"}, 1: {"bb", "cc"}}
    assert m.chunks()["chunk"].tolist() == [0, 1, 1]
