"""Tile encoder over a tile store in the real pixel grids: stream, train (short), embed, resume."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from skybatch.pipeline.tile_ingest import ingest_tiles
from skybatch.pipeline.tile_model import TileTrainConfig, embed_tiles_store, store_bands, train_tile_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from distributed import Client

    from skybatch.sample.tiles import make_survey_views, write_npz_tiles

    d = tmp_path_factory.mktemp("tiles")
    write_npz_tiles(make_survey_views(40, 6.4, seed=7), d / "npz")
    url = str(d / "tiles.zarr")
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        rep = ingest_tiles([str(d / "npz")], url, chunk_tiles=8, client=c, progress=False)
    assert rep.exit_code == 0, rep.summary()
    return url


def test_stream_replays_any_step_and_holds_only_the_prefetched_chunks(store):
    from skybatch.pipeline.tile_batches import TileSkyBatches

    sb = TileSkyBatches(store, store_bands(store), 6.0, 16, batch_size=6, seed=3, prefetch=1)
    it = sb.make_batches(0)
    first = [next(it) for _ in range(8)]  # 48 tiles: past the 40-tile epoch
    again = next(sb.make_batches(5))
    for k in first[5]:
        np.testing.assert_array_equal(first[5][k], again[k])
    b = first[0]
    assert b["image_a"].shape == (6, 16, 16) and b["geom_a"].shape == (6, 3)
    assert (b["band_a"] != b["band_b"]).all()
    # geometry tells the encoder each band's native pixel scale: ln(native / grid)
    scales = {"rubin": 0.2, "euclid_vis": 0.1, "euclid_nisp": 0.3}
    for band, g in zip(b["band_a"], b["geom_a"]):
        name = sb.bands[band]
        native = 0.1 if name == "euclid_vis" else 0.3 if name.startswith("euclid") else scales["rubin"]
        assert g[0] == pytest.approx(np.log(native / (6.0 / 16)), abs=1e-4)
    assert sb._in_flight == 1  # one chunk read ahead (8 tiles >= a batch): memory does not grow with the store


def test_train_and_embed_tiles_from_store(dask_client, store, tmp_path):
    from skybatch.models.tile_diagnostics import cross_band_retrieval

    cfg = TileTrainConfig(store=store, out=str(tmp_path / "enc"), image_size=16, patch=4, width=16, depth=1, heads=2,
                          steps=40, batch_size=8, checkpoint_every=20, progress=False, diagnostic_tiles=40)
    out = train_tile_encoder(cfg, dask_client)
    assert out["steps"] == 40 and 6.0 <= out["region_arcsec"] <= 6.4
    m = out["metrics"]
    assert m["retrieval_top1_mean"] > 3 * m["retrieval_chance"]  # same sky found across bands after 40 steps
    for png in out["png"].values():
        assert (tmp_path / "enc" / png.rsplit("/", 1)[-1]).exists()
    res = embed_tiles_store(store, str(tmp_path / "enc"), dask_client, progress=False)
    assert res["exit_code"] == 0 and res["chunks_written"] == 5 and res["region_arcsec"] == out["region_arcsec"]
    ds = xr.open_zarr(store, group="embeddings")
    assert ds.embedding.dims == ("tile", "band_key", "embedding_dim")
    emb, present = ds.embedding.values, ds.embedding_present.values
    assert np.isnan(emb[~present]).all() and np.isfinite(emb[present]).all()  # missing bands skipped, not errors
    acc, chance = cross_band_retrieval(emb, present)
    assert np.nanmean(acc) > 3 * np.nanmean(chance)
    again = embed_tiles_store(store, str(tmp_path / "enc"), dask_client, progress=False)
    assert again["chunks_written"] == 0  # resumable: nothing left to do
    more = train_tile_encoder(TileTrainConfig(**{**cfg.__dict__, "steps": 50}), dask_client)
    assert more["start_step"] == 40 and more["steps"] == 50  # resumes from the checkpoint


@pytest.mark.prefect
def test_cli_train_and_embed_tile_encoder(prefect_server, dask_client, store, tmp_path):
    from skybatch.cli import main

    address = dask_client.scheduler.address  # the session cluster: no cluster start per command
    assert main(["run", "train", "--model", "tile-encoder", "--store", store, "--out", str(tmp_path / "enc"),
                 "--image-size", "16", "--region-arcsec", "6", "--width", "16", "--depth", "1", "--heads", "2",
                 "--steps", "6", "--batch-size", "8", "--diagnostic-tiles", "16", "--cluster", address,
                 "--no-progress"]) == 0
    assert main(["run", "embed", "--store", store, "--model", str(tmp_path / "enc"), "--cluster", address,
                 "--no-progress"]) == 0
    assert xr.open_zarr(store, group="embeddings").embedding.shape[:2] == (40, 10)
