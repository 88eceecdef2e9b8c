"""map_model over a store on the session cluster equals jax.vmap in memory; resumes; guards outputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import xarray as xr

from benchmarks._sky_encoder import SkyEncoder as _BenchmarkEncoder
from skybatch.pipeline.map_model import map_model, model_fingerprint
from skybatch.store.manifest import Manifest

from ..helpers import make_random_store


class SkyEncoder(_BenchmarkEncoder):
    """A user's own model: benchmarks/map_model.py's desisky sky-VAE encoder, scaled down (nwave -> ... -> 8)."""

    def __init__(self, nwave: int, *, key):
        super().__init__(nwave, widths=(100, 80, 60, 50, 30), latent=8, key=key)

    def both(self, flux, ivar):
        z = self(flux * (ivar > 0))
        return z, jax.nn.softmax(z[:3])


def test_map_model_equals_vmap_in_memory(dask_client, tmp_path):
    store = str(tmp_path / "s.zarr")
    data = make_random_store(store, n=300, nwave=64, chunk=64)
    model = SkyEncoder(64, key=jax.random.PRNGKey(0))
    rep = map_model(store, model, outputs=("latent",), batch_size=50, client=dask_client, progress=False)
    assert rep.exit_code == 0 and rep.chunks_written == 5
    ds = xr.open_zarr(store)
    assert ds.latent.dims == ("spectrum", "latent_dim") and ds.latent.shape == (300, 8)
    expected = np.asarray(jax.vmap(model)(data["flux"]))
    np.testing.assert_allclose(ds.latent.values, expected, rtol=1e-5, atol=1e-5)
    assert ds.latent.attrs["skybatch_map_model"]["model_sha"] == model_fingerprint(model)

    # resume: nothing left to do
    again = map_model(store, model, outputs=("latent",), batch_size=50, client=dask_client, progress=False)
    assert again.chunks_written == 0 and again.chunks_skipped == 5

    # a different model may not silently overwrite
    other = SkyEncoder(64, key=jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="overwrite"):
        map_model(store, other, outputs=("latent",), client=dask_client, progress=False)
    map_model(store, other, outputs=("latent",), client=dask_client, progress=False, overwrite=True)
    np.testing.assert_allclose(xr.open_zarr(store).latent.values, np.asarray(jax.vmap(other)(data["flux"])),
                               rtol=1e-5, atol=1e-5)


def test_map_model_method_two_inputs_two_outputs(dask_client, tmp_path):
    store = str(tmp_path / "s.zarr")
    data = make_random_store(store, n=130, nwave=32, chunk=64)
    model = SkyEncoder(32, key=jax.random.PRNGKey(2))
    rep = map_model(store, model, method="both", inputs=("flux", "ivar"), outputs=("z_latent", "p"),
                    output_dims={"p": ("class",)}, batch_size=64, client=dask_client, progress=False)
    assert rep.chunks_total == 3
    ds = xr.open_zarr(store)
    z, p = jax.vmap(model.both)(data["flux"], data["ivar"])
    np.testing.assert_allclose(ds.z_latent.values, np.asarray(z), rtol=1e-5, atol=1e-5)
    assert ds.p.dims == ("spectrum", "class")
    np.testing.assert_allclose(ds.p.values.sum(axis=1), 1.0, rtol=1e-5)
    assert len(Manifest(store, stage="map-z_latent-p").done_chunks()) == 3


def test_map_model_names_bad_input(dask_client, tmp_path):
    store = str(tmp_path / "s.zarr")
    make_random_store(store, n=10, nwave=16, chunk=8)
    with pytest.raises(KeyError, match="fluxx"):
        map_model(store, SkyEncoder(16, key=jax.random.PRNGKey(0)), inputs=("fluxx",), client=dask_client)
    with pytest.raises(ValueError, match="one name per returned array"):
        map_model(store, SkyEncoder(16, key=jax.random.PRNGKey(0)), method="both", inputs=("flux", "ivar"),
                  outputs=("only_one",), client=dask_client)
