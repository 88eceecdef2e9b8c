"""`--cluster tcp://HOST:PORT`: a scheduler and workers a user started by hand with `dask scheduler` /
`dask worker`, as separate processes; a worker from another environment is named before any work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from skybatch.cli import main

from .pipeline.test_ingest import assert_stores_equal

pytestmark = [pytest.mark.slow, pytest.mark.prefect]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args, env=None, cwd=None) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return subprocess.Popen([exe, *args], env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _workers(address: str) -> dict:
    from distributed import Client

    with Client(address, timeout="20s") as c:
        return c.scheduler_info(n_workers=-1)["workers"]


def _wait_workers(address: str, n: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(_workers(address)) >= n:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{n} worker(s) did not join {address}")


@pytest.fixture()
def scheduler(tmp_path):
    port = _free_port()
    elsewhere = tmp_path / "worker-cwd"  # the worker is started in another terminal, in another directory
    elsewhere.mkdir()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0")]
    procs.append(_dask("worker", address, "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                       "--nthreads", "1", "--memory-limit", "2GiB", "--name", "good-worker", cwd=elsewhere))
    try:
        _wait_workers(address, 1)
        yield address, procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_user_started_scheduler_then_a_foreign_worker(scheduler, prefect_server, dask_client, tmp_path, capsys,
                                                      monkeypatch):
    from skybatch.pipeline.ingest import ingest
    from skybatch.sample.survey import generate_sample_survey

    address, procs = scheduler
    generate_sample_survey(str(tmp_path / "data"), n_healpix=1, spectra_per_file=30, n_sdss=1, seed=2)
    source = str(tmp_path / "data" / "desi" / "**" / "coadd-*.fits")
    ref = str(tmp_path / "ref.zarr")
    assert ingest([source], ref, chunk_spectra=8, client=dask_client, progress=False).exit_code == 0

    monkeypatch.chdir(tmp_path)  # a relative --store means the caller's directory, not the worker's
    code = main(["run", "ingest", "--source", source, "--store", "byo.zarr", "--chunk-spectra", "8", "--no-progress",
                 "--cluster", address])
    assert code == 0, capsys.readouterr()
    assert_stores_equal(ref, str(tmp_path / "byo.zarr"))
    assert not os.listdir(tmp_path / "worker-cwd")

    # a worker whose environment reports another skybatch version (its own site dir first on sys.path)
    fake = tmp_path / "other-env"
    (fake / "skybatch-9.9.9.dist-info").mkdir(parents=True)
    (fake / "skybatch-9.9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: skybatch\nVersion: 9.9.9\n")
    procs.append(_dask("worker", address, "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                       "--nthreads", "1", "--memory-limit", "2GiB", "--name", "stale-worker",
                       env={"PYTHONPATH": str(fake)}))
    _wait_workers(address, 2)
    capsys.readouterr()
    store2 = str(tmp_path / "refused.zarr")
    code = main(["run", "ingest", "--source", source, "--store", store2, "--no-progress", "--cluster", address])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "stale-worker" in err and "skybatch 9.9.9 (driver has" in err and "good-worker" not in err
    assert not os.path.exists(store2), "work started before the workers were checked"
