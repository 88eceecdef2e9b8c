"""The README's anomaly path end to end through the CLI: ingest -> preprocess --rest-frame -> train -> score.

`skybatch run score` ranks with ``--method population`` by default; on a small generated DESI-layout
survey (real FITS files, real Zarr stores, a real Dask cluster) its injected anomalies must be at the
top of the ranking.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from skybatch.cli import main


@pytest.mark.slow
@pytest.mark.prefect
def test_cli_path_ranks_injected_anomalies_at_the_top(prefect_server, tmp_path, dask_client, capsys):
    from skybatch.sample.survey import generate_sample_survey

    kinds = ("bal", "seyfert2", "narrow_line", "qso_strong_lines")
    generate_sample_survey(str(tmp_path / "data"), n_healpix=2, spectra_per_file=100, n_sdss=0, seed=7,
                           class_fractions=(0.5, 0.35, 0.15), anomaly_kinds=kinds, anomaly_fraction=6 / 200,
                           anomaly_strength=(1.0, 1.4), anomaly_mag_fraction=1.0, sigma0_range=(0.1, 0.3))
    raw, rest, vae = str(tmp_path / "raw.zarr"), str(tmp_path / "rest.zarr"), str(tmp_path / "vae")
    common = ["--cluster", dask_client.scheduler.address, "--no-progress"]
    assert main(["run", "ingest", "--source", str(tmp_path / "data" / "desi"), "--store", raw, *common]) == 0
    assert main(["run", "preprocess", "--store", raw, "--out", rest, "--grid", "loglam:3.0:3.95:1e-4", "--rest-frame",
                 "--normalize", "median", *common]) == 0
    assert main(["run", "train", "--store", rest, "--model", "vae", "--out", vae, "--steps", "20", "--batch-size", "64",
                 *common]) == 0
    capsys.readouterr()
    assert main(["run", "score", "--store", rest, "--model", vae, "--top", "10", *common]) == 0  # no --method

    ds = xr.open_zarr(rest)
    assert "anomaly_local_z" in ds.data_vars  # the population method's terms: it is the default
    truth = pd.read_parquet(tmp_path / "data" / "truth.parquet").set_index("targetid")
    tid = ds["targetid"].values
    is_anom = truth.loc[tid, "is_anomaly"].to_numpy(bool)
    assert 4 <= is_anom.sum() <= 10
    score = np.nan_to_num(ds["anomaly_score"].values, nan=-np.inf)
    rank = np.empty(score.size, np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(score.size)
    top = rank < max(int(round(0.05 * score.size)), int(is_anom.sum()))  # the top 5 %
    # nearly every injected anomaly in the top 5 %, and the top 5 % mostly anomalies
    assert (top & is_anom).sum() >= 0.75 * is_anom.sum(), sorted(rank[is_anom])
    assert np.median(rank[is_anom]) < 0.03 * score.size, sorted(rank[is_anom])
    cat = pd.read_parquet(os.path.join(rest + ".outputs", "anomalies_top.parquet"))
    assert len(cat) == 10 and cat["targetid"].isin(truth.index[truth["is_anomaly"]]).sum() >= 4
