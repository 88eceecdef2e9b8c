"""Tile encoder over a tile store: train (short), embed every tile in every band, cross-band retrieval."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from skybatch.pipeline.tile_ingest import ingest_tiles
from skybatch.pipeline.tile_model import TileTrainConfig, embed_tiles_store, train_tile_encoder

pytestmark = pytest.mark.slow


def test_train_and_embed_tiles_from_store(dask_client, tmp_path):
    from skybatch.models.tile_diagnostics import cross_band_retrieval
    from skybatch.sample.tiles import make_multiband_tiles, write_npz_tiles

    tiles = make_multiband_tiles(48, 16, seed=7)
    write_npz_tiles(tiles, tmp_path / "npz")
    store = str(tmp_path / "tiles.zarr")
    rep = ingest_tiles([str(tmp_path / "npz")], store, chunk_tiles=16, client=dask_client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    cfg = TileTrainConfig(store=store, out=str(tmp_path / "enc"), image_size=16, patch=4, width=16, depth=1, heads=2,
                          steps=80, batch_size=12, checkpoint_every=40, progress=False)
    out = train_tile_encoder(cfg, dask_client)
    assert out["steps"] == 80
    m = out["metrics"]
    assert m["retrieval_top1_mean"] > 10 * m["retrieval_chance"]  # same tile found across bands
    assert m["effective_dim_min"] > 2.0  # no collapse
    for png in out["png"].values():
        assert (tmp_path / "enc" / png.rsplit("/", 1)[-1]).exists()
    res = embed_tiles_store(store, str(tmp_path / "enc"), dask_client, progress=False)
    assert res["exit_code"] == 0 and res["chunks_written"] == 3
    ds = xr.open_zarr(store, group="embeddings")
    assert ds.embedding.dims == ("tile", "band_key", "embedding_dim")
    emb, present = ds.embedding.values, ds.embedding_present.values
    assert np.isnan(emb[~present]).all() and np.isfinite(emb[present]).all()  # missing bands skipped, not errors
    acc, chance = cross_band_retrieval(emb, present)
    assert np.nanmean(acc) > 10 * np.nanmean(chance)
    again = embed_tiles_store(store, str(tmp_path / "enc"), dask_client, progress=False)
    assert again["chunks_written"] == 0  # resumable: nothing left to do


@pytest.mark.prefect
def test_cli_train_and_embed_tile_encoder(prefect_server, dask_client, tmp_path):
    from skybatch.cli import main
    from skybatch.sample.tiles import make_multiband_tiles, write_npz_tiles

    write_npz_tiles(make_multiband_tiles(24, 16, seed=3), tmp_path / "npz")
    store = str(tmp_path / "t.zarr")
    ingest_tiles([str(tmp_path / "npz")], store, chunk_tiles=12, client=dask_client, progress=False)
    assert main(["run", "train", "--model", "tile-encoder", "--store", store, "--out", str(tmp_path / "enc"),
                 "--image-size", "16", "--width", "16", "--depth", "1", "--heads", "2", "--steps", "10",
                 "--batch-size", "8", "--cluster", "local", "--no-progress"]) == 0
    assert main(["run", "embed", "--store", store, "--model", str(tmp_path / "enc"), "--cluster", "local",
                 "--no-progress"]) == 0
    assert xr.open_zarr(store, group="embeddings").embedding.shape[:2] == (24, 10)
