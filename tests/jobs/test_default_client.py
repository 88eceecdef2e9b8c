"""Dask's convention, in this process: with a current client (``with Client(LocalCluster(...))``) every Python
entry point runs its tasks on that client's scheduler and starts no cluster of its own; ``client=`` wins.

Covers the top-level functions (``skybatch.map_model``), the pipeline functions they wrap
(``skybatch.pipeline.map_model.map_model``) and the jobs' ``run(config)`` at both levels."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest
import xarray as xr

from ..helpers import make_random_store


class Scale(eqx.Module):
    """y = w * flux, one weight per pixel."""

    w: jax.Array

    def __call__(self, flux):
        return self.w * flux


@pytest.fixture()
def own_client():
    """A real in-process cluster (1 worker, threads) whose client is the current one while the test runs."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as lc:
        with Client(lc) as client:
            yield lc, client


def _prefixes(lc) -> set[str]:
    """Task-key prefixes the cluster's scheduler has seen (it keeps one entry per prefix ever submitted)."""
    return set(lc.scheduler.task_prefixes)


def _clusters_alive() -> set[int]:
    from distributed.deploy.spec import SpecCluster

    return {id(c) for c in SpecCluster._instances if c.status.name not in ("closed", "closing")}


def test_entry_points_use_the_current_client(own_client, tmp_path, capfd):
    import skybatch
    from skybatch.cluster import current_client
    from skybatch.pipeline.ingest import IngestConfig
    from skybatch.pipeline.ingest import run as pipeline_ingest_run
    from skybatch.pipeline.map_model import map_model as pipeline_map_model
    from skybatch.sample.survey import generate_sample_survey

    lc, client = own_client
    assert current_client() is client
    clusters = _clusters_alive()
    capfd.readouterr()

    store = str(tmp_path / "s.zarr")
    data = make_random_store(store, n=128, nwave=16, chunk=64)
    model = Scale(jax.numpy.linspace(0.5, 2.0, 16))
    # cluster="local" would start a LocalCluster if the current client were ignored
    rep = skybatch.map_model(store, model, outputs=("scaled",), batch_size=32, cluster="local", progress=False)
    assert rep.exit_code == 0 and rep.chunks_written == 2
    assert any(p.startswith("map-scaled") for p in _prefixes(lc)), _prefixes(lc)
    np.testing.assert_allclose(xr.open_zarr(store).scaled.values, np.asarray(jax.vmap(model)(data["flux"])), rtol=1e-6)

    rep = pipeline_map_model(store, model, outputs=("again",), batch_size=32, cluster="local", progress=False,
                             executor="dask")
    assert rep.exit_code == 0 and rep.chunks_written == 2
    assert any(p.startswith("map-again") for p in _prefixes(lc)), _prefixes(lc)

    survey = tmp_path / "survey"
    generate_sample_survey(str(survey), n_healpix=1, spectra_per_file=20, n_sdss=0, seed=1)
    sources = [str(survey / "desi" / "**" / "coadd-*.fits")]
    before = _prefixes(lc)
    r1 = pipeline_ingest_run(IngestConfig(sources=sources, store=str(tmp_path / "a.zarr"), cluster="local",
                                          progress=False))
    assert r1.exit_code == 0 and r1.spectra_written == 20
    assert {p for p in _prefixes(lc) - before if p.startswith("ingest")}, _prefixes(lc) - before
    r2 = skybatch.run_ingest(skybatch.IngestConfig(sources=sources, store=str(tmp_path / "b.zarr"), cluster="local",
                                                   progress=False))
    assert r2.exit_code == 0 and r2.spectra_written == 20

    # no cluster was started: none is alive besides the ones before, and none announced its dashboard
    assert _clusters_alive() == clusters
    out = capfd.readouterr()
    assert "Dask dashboard" not in out.out + out.err
    assert client.status == "running"


def test_client_argument_wins_over_the_current_client(own_client, tmp_path):
    from distributed import Client, LocalCluster

    from skybatch.pipeline.map_model import map_model

    lc, _current = own_client
    store = str(tmp_path / "s.zarr")
    make_random_store(store, n=64, nwave=16, chunk=64)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as other_lc:
        with Client(other_lc, set_as_default=False) as other:
            rep = map_model(store, Scale(jax.numpy.ones(16)), outputs=("mine",), batch_size=32, client=other,
                            progress=False, executor="dask")
            assert rep.chunks_written == 1
            assert any(p.startswith("map-mine") for p in _prefixes(other_lc))
    assert not any(p.startswith("map-mine") for p in _prefixes(lc))
