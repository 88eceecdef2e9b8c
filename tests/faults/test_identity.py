"""Store identity: foreign targets refused and untouched; stale manifests never trusted."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr

from skybatch.pipeline.ingest import ingest
from skybatch.pipeline.preprocess import preprocess
from skybatch.store.identity import ForeignTargetError, JobRefused

from ._util import make_survey


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("id-survey"), n_healpix=2, per_file=20, seed=7)


def _tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(p.encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


def _user_zarr(path: str) -> None:
    ds = xr.Dataset({"temperature": (("x",), np.arange(5.0))}, attrs={"owner": "someone else"})
    ds.to_zarr(path, consolidated=False)


def test_foreign_targets_refused_untouched(dask_client, survey, tmp_path):
    mine = str(tmp_path / "mine.zarr")
    _user_zarr(mine)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    before = {p: _tree_digest(p) for p in (mine, str(folder))}
    for target in (mine, str(folder)):
        with pytest.raises(ForeignTargetError) as e:
            ingest(survey, target, chunk_spectra=16, client=dask_client, progress=False)
        print(f"ingest into {os.path.basename(target)}: refused: {e.value}")
        assert os.path.basename(target) in str(e.value)
    assert "temperature" in str(e.value) or "notes.txt" in str(e.value)
    # preprocess --out onto the user's store: refused too
    good = str(tmp_path / "good.zarr")
    assert ingest(survey, good, chunk_spectra=16, client=dask_client, progress=False).exit_code == 0
    with pytest.raises(ForeignTargetError) as e:
        preprocess(good, mine, client=dask_client, progress=False)
    print(f"preprocess --out mine.zarr: refused: {e.value}")
    assert {p: _tree_digest(p) for p in (mine, str(folder))} == before
    assert not os.path.exists(mine + ".manifest") and not os.path.exists(mine + ".lock")
    assert xr.open_zarr(mine, consolidated=False).temperature.values.tolist() == [0, 1, 2, 3, 4]
    # a store of the wrong kind: a spectra store given as a tile store target
    from skybatch.pipeline.tile_ingest import ingest_tiles

    with pytest.raises(ForeignTargetError, match="not a tiles store"):
        ingest_tiles([str(tmp_path / "nothing*.fits")], good, client=dask_client, progress=False)



def test_difference_refuses_foreign_and_wrong_kind_targets(dask_client, survey, tmp_path):
    """`difference --out` onto a user's Zarr store or a spectra store: refused, nothing changed."""
    from skybatch.pipeline.difference import difference

    mine = str(tmp_path / "mine.zarr")
    _user_zarr(mine)
    spectra = str(tmp_path / "spectra.zarr")
    assert ingest(survey, spectra, chunk_spectra=16, client=dask_client, progress=False).exit_code == 0
    before = {p: _tree_digest(p) for p in (mine, spectra)}
    for target, what in ((mine, "temperature"), (spectra, "not a difference store")):
        with pytest.raises(ForeignTargetError, match=what) as e:
            difference(str(tmp_path / "sci"), str(tmp_path / "ref"), target, client=dask_client)
        print(f"difference --out {os.path.basename(target)}: refused: {e.value}")
    assert {p: _tree_digest(p) for p in (mine, spectra)} == before
    assert not os.path.exists(mine + ".manifest") and not os.path.exists(mine + ".lock")


@pytest.mark.slow
def test_cli_refuses_foreign_store_exit_2(tmp_path, survey, prefect_server, dask_client):
    mine = str(tmp_path / "mine.zarr")
    _user_zarr(mine)
    before = _tree_digest(mine)
    # the session's Prefect server (PREFECT_API_URL) and Dask cluster: no temporary server or cluster start
    p = subprocess.run([sys.executable, "-m", "skybatch.cli", "run", "ingest", "--source", survey[0], "--store", mine,
                        "--no-progress", "--cluster", dask_client.scheduler.address], capture_output=True, text=True,
                       timeout=600)
    print("CLI exit", p.returncode, "stderr:", p.stderr.strip().splitlines()[-1])
    assert p.returncode == 2 and "did not create" in p.stderr and "temperature" in p.stderr
    assert _tree_digest(mine) == before


def test_stale_manifest_not_trusted_preprocess_and_ingest(dask_client, survey, tmp_path):
    raw = str(tmp_path / "raw.zarr")
    out = str(tmp_path / "out.zarr")
    assert ingest(survey, raw, chunk_spectra=16, client=dask_client, progress=False).exit_code == 0
    first = preprocess(raw, out, client=dask_client, progress=False)
    ref = xr.open_zarr(out).load()
    shutil.rmtree(out)  # the manifest out.zarr.manifest stays behind
    again = preprocess(raw, out, client=dask_client, progress=False)
    print(f"preprocess after deleting the output store: {again.chunks_written} written, "
          f"{again.chunks_skipped} already done")
    assert again.chunks_written == first.chunks_total and again.chunks_skipped == 0
    ds = xr.open_zarr(out)
    np.testing.assert_array_equal(ds.flux.values, ref.flux.values)
    assert ds.targetid.values.tolist() == ref.targetid.values.tolist()
    assert len(set(ds.targetid.values.tolist())) == ds.sizes["spectrum"]
    # a manifest copied from another store instance is not trusted either
    other = str(tmp_path / "other.zarr")
    preprocess(raw, other, client=dask_client, progress=False)
    shutil.rmtree(out + ".manifest")
    shutil.copytree(other + ".manifest", out + ".manifest")
    g = zarr.open_group(out, mode="r+")
    g["flux"][:16] = 0  # damage a chunk: the foreign manifest must not hide it
    rep = preprocess(raw, out, client=dask_client, progress=False)
    print(f"preprocess with another store's manifest: {rep.chunks_written} written")
    assert rep.chunks_written == rep.chunks_total
    np.testing.assert_array_equal(xr.open_zarr(out).flux.values, ref.flux.values)


def test_chunk_marker_checked_against_store(dask_client, survey, tmp_path):
    """A chunk rewritten by something else (its marker changed) is written again."""
    from skybatch.pipeline.jobcore import mark_store_chunk

    store = str(tmp_path / "s.zarr")
    ingest(survey, store, chunk_spectra=16, client=dask_client, progress=False)
    ref = xr.open_zarr(store).flux.values.copy()
    zarr.open_group(store, mode="r+")["flux"][16:32] = 7.0
    mark_store_chunk(store, None, "ingest", 1, "00000000000000ff")
    rep = ingest(survey, store, chunk_spectra=16, client=dask_client, progress=False)
    print(f"re-run after chunk 1 changed under it: {rep.chunks_written} written")
    assert rep.chunks_written == 1
    np.testing.assert_array_equal(xr.open_zarr(store).flux.values, ref)


def test_ingest_manifest_lost_refused(dask_client, survey, tmp_path):
    store = str(tmp_path / "s.zarr")
    ingest(survey[:1], store, chunk_spectra=16, client=dask_client, progress=False)
    shutil.rmtree(store + ".manifest")
    with pytest.raises(JobRefused, match="cannot be placed safely"):
        ingest(survey, store, chunk_spectra=16, client=dask_client, progress=False)
