"""ingest -> preprocess -> score on a real one-node SLURM cluster (workers are SLURM jobs).

`.ci/run` starts the cluster with scripts/slurm-local.sh (as root, bound to 127.0.0.1). Where
`sbatch` is absent the test skips; where the script started the cluster (SKYBATCH_SLURM=required)
a node that is not ready is a failure, not a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from skybatch.cli import main

from .pipeline.test_ingest import assert_stores_equal

pytestmark = [pytest.mark.slurm, pytest.mark.prefect]

GRID = "loglam:3.45:3.90:1e-3"


def _node_state() -> str:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed: {e}"
    return (out.stdout.strip().splitlines() or [out.stderr.strip() or "no node"])[0]


@pytest.fixture(scope="module")
def slurm_node():
    required = os.environ.get("SKYBATCH_SLURM") == "required"
    if shutil.which("sbatch") is None:
        if required:
            pytest.fail("SKYBATCH_SLURM=required but sbatch is not on PATH")
        pytest.skip("no SLURM here (sbatch not found): start a one-node cluster with `sudo scripts/slurm-local.sh start`")
    state = _node_state()
    if state not in ("idle", "mix", "alloc", "comp"):
        msg = f"the SLURM node is not ready (state {state!r}); see `scripts/slurm-local.sh status`"
        if required:
            pytest.fail(msg)
        pytest.skip(msg)
    return state


def _slurm_opts(logs) -> list[str]:
    """What a NERSC user would pass, sized for one 2-core node: one job of one worker process."""
    opts = {"interface": "lo", "account": "m1234", "qos": "normal", "constraint": "cpu", "walltime": "00:10:00",
            "cores": 2, "memory": "3GB", "processes": 1, "jobs": 1, "log_directory": str(logs), "start_timeout": 120}
    out = ["--cluster", "slurm"]
    for k, v in opts.items():
        out += ["--cluster-opt", f"{k}={v}"]
    return out


def test_ingest_preprocess_score_on_slurm_equals_local(slurm_node, prefect_server, dask_client, tmp_path, capsys):
    from skybatch.pipeline.ingest import ingest
    from skybatch.pipeline.modeling import TrainJobConfig, score, train
    from skybatch.pipeline.preprocess import preprocess
    from skybatch.sample.survey import generate_sample_survey

    generate_sample_survey(str(tmp_path / "data"), n_healpix=2, spectra_per_file=24, n_sdss=1, seed=5)
    source = str(tmp_path / "data" / "desi" / "**" / "coadd-*.fits")

    # the reference: the same three stages on the suite's local cluster
    raw_l, pre_l = str(tmp_path / "raw-local.zarr"), str(tmp_path / "pre-local.zarr")
    assert ingest([source], raw_l, chunk_spectra=16, client=dask_client, progress=False).exit_code == 0
    assert preprocess(raw_l, pre_l, client=dask_client, progress=False, grid=GRID, rest_frame=True,
                      bad_redshift="observed").exit_code == 0
    model = str(tmp_path / "vae")
    rep = train(TrainJobConfig(store=pre_l, model="vae", out=model, steps=10, batch_size=16, checkpoint_every=10,
                               width=16, latent_dim=4, val_fraction=0.3, split_nside=256, progress=False),
                client=dask_client)
    assert rep.exit_code == 0, rep.summary()
    score(pre_l, model, top=5, client=dask_client, batch_size=32, progress=False)

    # the same on SLURM, through the command line a user types
    logs = tmp_path / "slurm-logs"
    slurm = _slurm_opts(logs)
    raw_s, pre_s = str(tmp_path / "raw-slurm.zarr"), str(tmp_path / "pre-slurm.zarr")
    assert main(["run", "ingest", "--source", source, "--store", raw_s, "--chunk-spectra", "16", "--no-progress",
                 *slurm]) == 0, capsys.readouterr()
    assert main(["run", "preprocess", "--store", raw_s, "--out", pre_s, "--grid", GRID, "--rest-frame",
                 "--bad-redshift", "observed", "--no-progress", *slurm]) == 0, capsys.readouterr()
    # --method vae: the reference's method (score()'s default; the CLI's default is population)
    assert main(["run", "score", "--store", pre_s, "--model", model, "--method", "vae", "--top", "5",
                 "--batch-size", "32", "--no-progress", *slurm]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert out.count("Dask dashboard: http://127.0.0.1:") == 3

    # three worker jobs ran under SLURM (one per stage), with the job script's directives
    assert len(glob.glob(str(logs / "skybatch-worker-*.out"))) == 3
    assert_stores_equal(raw_l, raw_s)
    assert_stores_equal(pre_l, pre_s)
    a, b = xr.open_zarr(pre_l).anomaly_score.values, xr.open_zarr(pre_s).anomaly_score.values
    assert np.isfinite(a).any()
    np.testing.assert_allclose(a, b, rtol=1e-5, equal_nan=True)
