"""The command line as a user meets it: real subprocesses, Prefect's local server, kill -9 and resume."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import xarray as xr

from skybatch.cli import main

from .pipeline.test_ingest import assert_stores_equal, coadds


def test_cluster_show_slurm(capsys):
    assert main(["cluster", "show", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "#!/usr/bin/env bash" in out and "#SBATCH" in out


def test_cluster_show_unknown(capsys):
    assert main(["cluster", "show", "moon"]) == 2
    assert "moon" in capsys.readouterr().err


def test_config_typo_is_named(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("sources: [a.fits]\nstore: s.zarr\nchunk_spectrum: 10\n")
    assert main(["run", "ingest", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "chunk_spectrum" in err and "chunk_spectra" in err
    assert main(["run", "ingest", "--source", "a.fits", "--store", "s.zarr", "--chunk-spectra", "-4"]) == 2
    assert "chunk_spectra" in capsys.readouterr().err


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "skybatch.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
@pytest.mark.prefect
def test_cli_ingest_kill9_and_resume(prefect_server, survey, tmp_path, dask_client):
    from skybatch.pipeline.ingest import ingest

    files = coadds(survey)
    ref = str(tmp_path / "ref.zarr")
    ingest(files, ref, chunk_spectra=10, client=dask_client, progress=False)

    store = str(tmp_path / "cli.zarr")
    args = ["run", "ingest", "--store", store, "--chunk-spectra", "10", "--cluster", "local", "--no-progress"]
    for f in files:
        args += ["--source", f]
    proc = _cli(*args)
    chunks = store + ".manifest/chunks"
    deadline = time.time() + 240
    while time.time() < deadline and len(glob.glob(chunks + "/*.parquet")) < 3:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    n_done = len(glob.glob(chunks + "/*.parquet"))
    total = -(-xr.open_zarr(ref).sizes["spectrum"] // 10)
    assert 3 <= n_done < total

    proc = _cli(*args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Dask dashboard: http://127.0.0.1:" in out
    assert_stores_equal(ref, store)
    assert len(glob.glob(chunks + "/*.parquet")) == total  # each chunk recorded once: nothing written twice


@pytest.mark.slow
@pytest.mark.prefect
def test_quickstart_as_a_new_user_runs_it(prefect_server, tmp_path):
    proc = _cli("run", "quickstart", "--dir", str(tmp_path / "qs"), "--n-healpix", "2", "--spectra-per-file", "40",
                "--n-sdss", "6", "--cluster", "local", "--only-ingest")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "Dask dashboard: http://127.0.0.1:" in out
    assert "skybatch.open_store(" in out
    assert out.count("spectra in store:") == 2  # each report printed once (DESI, SDSS)
    assert "Traceback" not in out and "| INFO" not in out  # Prefect's run log stays off the terminal
    ds = xr.open_zarr(tmp_path / "qs" / "spectra-desi.zarr")
    assert ds.sizes["wavelength"] == 7781 and ds.sizes["spectrum"] > 0
    assert xr.open_zarr(tmp_path / "qs" / "spectra-sdss.zarr").sizes["spectrum"] == 6
    assert (tmp_path / "qs" / "data" / "truth.parquet").exists()


def test_prefect_yaml_declares_loadable_deployments():
    import inspect
    from pathlib import Path

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((Path(__file__).parents[1] / "flows" / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"ingest", "quickstart", "difference", "score"} <= names
    for d in spec["deployments"]:
        assert d["entrypoint"].startswith("skybatch.orchestrate."), d["entrypoint"]
        flow = load_flow_from_entrypoint(d["entrypoint"])
        params = inspect.signature(flow.fn).parameters
        assert set(d.get("parameters", {})) <= set(params), d["name"]
        if d["name"] != "quickstart":  # every job flow takes its job's config as its one parameter
            assert list(params) == ["config"], d["name"]


@pytest.mark.prefect
def test_cli_preprocess_in_process(prefect_server, survey, tmp_path, dask_client, capsys):
    from skybatch.pipeline.ingest import ingest

    store = str(tmp_path / "in.zarr")
    ingest(coadds(survey)[:1], store, chunk_spectra=32, client=dask_client, progress=False)
    out = str(tmp_path / "out.zarr")
    code = main(["run", "preprocess", "--store", store, "--out", out, "--grid", "loglam:3.56:3.99:1e-4",
                 "--normalize", "median", "--cluster", dask_client.scheduler.address, "--no-progress"])
    assert code == 0, capsys.readouterr()
    ds = xr.open_zarr(out)
    assert ds.attrs["preprocessing"]["recipe"]["grid"].startswith("loglam")
    assert ds.sizes["spectrum"] == xr.open_zarr(store).sizes["spectrum"]
    # a typo in a recipe value is named, exit code 2
    assert main(["run", "preprocess", "--store", store, "--out", out + "2", "--grid", "loglam:3.5:x:1e-4"]) == 2
    assert "grid" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.prefect
def test_cli_train_then_score_classify_embed(prefect_server, survey, tmp_path, dask_client, capsys):
    from skybatch.pipeline.ingest import ingest
    from skybatch.pipeline.preprocess import preprocess

    raw, store = str(tmp_path / "raw.zarr"), str(tmp_path / "p.zarr")
    ingest(coadds(survey), raw, chunk_spectra=64, client=dask_client, progress=False)
    preprocess(raw, store, client=dask_client, progress=False, grid="loglam:3.45:3.90:1e-3", rest_frame=True,
               bad_redshift="observed")
    address = dask_client.scheduler.address  # the session cluster: no cluster start per command
    common = ["--store", store, "--steps", "30", "--batch-size", "32", "--checkpoint-every", "10",
              "--cluster", address, "--no-progress", "--val-fraction", "0.3", "--split-nside", "256"]
    assert main(["run", "train", "--model", "vae", "--out", str(tmp_path / "vae"), "--width", "32", *common]) == 0
    assert main(["run", "train", "--model", "classifier", "--out", str(tmp_path / "clf"), *common]) == 0
    out = capsys.readouterr().out
    assert "ece_after" in out
    for kind, model in (("score", "vae"), ("classify", "clf"), ("embed", "vae")):
        code = main(["run", kind, "--store", store, "--model", str(tmp_path / model), "--cluster", address,
                     "--no-progress", "--batch-size", "64"])
        assert code == 0, capsys.readouterr()
    ds = xr.open_zarr(store)
    assert {"anomaly_score", "class_prob", "class_pred", "embedding"} <= set(ds.data_vars)
    assert ds.embedding.dims == ("spectrum", "embedding_dim")
    # a wrong model kind is a clear error, not a crash deep inside JAX
    capsys.readouterr()
    assert main(["run", "classify", "--store", store, "--model", str(tmp_path / "vae"), "--cluster", address]) == 2
    assert "spectrum_classifier" in capsys.readouterr().err
    # the registry refuses a tampered checkpoint
    w = tmp_path / "vae" / "model" / "weights.eqx"
    w.write_bytes(w.read_bytes()[:-8] + b"tampered")
    from skybatch.models import WeightsChecksumError, load

    with pytest.raises(WeightsChecksumError, match="weights.eqx"):
        load(str(tmp_path / "vae" / "model"))


@pytest.mark.slow
def test_shared_server_and_sigterm_leave_no_process(survey, tmp_path):
    """`skybatch server start` once; a run reuses it; SIGTERM mid-run closes the cluster (exit 130, no
    process left); `skybatch server stop` stops the server."""
    import json

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), SKYBATCH_PREFECT_SERVER="shared", PYTHONUNBUFFERED="1")

    def sky(*args, timeout=300):
        return subprocess.run([sys.executable, "-m", "skybatch.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    r = sky("server", "start")
    assert r.returncode == 0 and "started" in r.stdout, r.stdout + r.stderr
    state = json.loads((tmp_path / "prefect-home" / "skybatch-server.json").read_text())
    try:
        assert sky("server", "status").returncode == 0
        args = [sys.executable, "-m", "skybatch.cli", "run", "ingest", "--store", str(tmp_path / "s.zarr"),
                "--chunk-spectra", "10", "--cluster", "local", "--no-progress"]
        for f in coadds(survey):
            args += ["--source", f]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Dask dashboard:" in line:
                break
        assert proc.poll() is None, "".join(seen)
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert kids, "the local cluster's worker processes"
        assert state["pid"] not in {k.pid for k in kids}  # the server is not a child of the run
        proc.send_signal(signal.SIGTERM)
        out = "".join(seen) + proc.stdout.read()
        assert proc.wait(120) == 130, out
        assert "terminated" in out and "Traceback" not in out
        _, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert psutil.pid_exists(state["pid"])  # the shared server stays for the next run
    finally:
        r = sky("server", "stop")
    assert "stopped" in r.stdout
    assert not psutil.pid_exists(state["pid"]) or psutil.Process(state["pid"]).status() == psutil.STATUS_ZOMBIE
    assert sky("server", "status").returncode == 1


@pytest.mark.prefect
def test_cli_rest_frame_chooses_a_grid_and_counts_flags_right(prefect_server, survey, tmp_path, dask_client, capsys):
    """`--rest-frame` without `--grid` picks a grid covering the store; the summary's flag counts are the
    counts of the bits stored in `preprocess_flags`; text coordinates come back as `str`."""
    import numpy as np

    import skybatch
    from skybatch.pipeline.ingest import ingest
    from skybatch.spectra.flags import SPECTRUM_FLAGS

    store = str(tmp_path / "in.zarr")
    ingest(coadds(survey)[:1], store, chunk_spectra=32, client=dask_client, progress=False)
    out = str(tmp_path / "rest.zarr")
    code = main(["run", "preprocess", "--store", store, "--out", out, "--rest-frame", "--bad-redshift", "observed",
                 "--cluster", dask_client.scheduler.address, "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed
    assert "rest-frame grid chosen from the store: loglam:" in printed.out
    ds = skybatch.open_store(out)
    flags = ds.preprocess_flags.values
    expected = {name: int(np.count_nonzero(flags & (1 << bit))) for name, bit in SPECTRUM_FLAGS.items()}
    line = next(ln for ln in printed.out.splitlines() if ln.startswith("spectrum flags this run:"))
    shown = dict(kv.split("=") for kv in line.split(":", 1)[1].strip().split(", "))
    assert {k: int(v) for k, v in shown.items()} == {k: v for k, v in expected.items() if v}
    assert (flags & (1 << SPECTRUM_FLAGS["NORM_FAILED"]) == 0)[ds.ivar.values.max(axis=1) > 0].all()
    assert ds.spectype.values.dtype.kind == "U" and ds.spectype.values.astype(str)[0] in {"GALAXY", "QSO", "STAR"}
    assert printed.out.count("out: ") == 1 and "open it:" in printed.out
