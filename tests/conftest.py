"""Shared, real test infrastructure: one Dask cluster, one moto S3 server, one Prefect server per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

# Quiet, patient defaults (stack-notes 2a); set before prefect or distributed are imported.
_HOME = tempfile.mkdtemp(prefix="skybatch-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", os.path.join(_HOME, "dask"))
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "True")
# CLI runs in tests use the session server (prefect_server) or a temporary one, never a shared one left running
os.environ.setdefault("SKYBATCH_PREFECT_SERVER", "temporary")
os.environ.setdefault("MPLBACKEND", "Agg")
# One JAX persistent compilation cache for the session (this process, the Dask workers, CLI subprocesses and
# notebook kernels inherit it): a step or sampler traced again (a new fit, a fresh process) loads its XLA
# executable instead of compiling it again. Empty at the start of each session; the executables are those XLA
# would build, so no result changes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_HOME, "jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Fake credentials for the local S3 server; never a real account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def survey(tmp_path_factory):
    """A small synthetic DESI + SDSS survey on disk (3 HEALPix coadds of 60 spectra, 12 SDSS files), one for the
    session: tests read it and write their stores and altered copies elsewhere (under their own tmp_path)."""
    from skybatch.sample.survey import generate_sample_survey

    out = tmp_path_factory.mktemp("survey")
    generate_sample_survey(str(out), n_healpix=3, spectra_per_file=60, n_sdss=12, seed=3)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dask_client():
    """One LocalCluster (2 worker processes x 1 thread, 127.0.0.1) for the whole suite."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", memory_limit="4GiB",
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server as a separate process on 127.0.0.1; yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def s3_options(s3_endpoint):
    """fsspec storage options for the moto server (fake credentials)."""
    return {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing", "anon": False}


@pytest.fixture()
def s3_bucket(s3_options, request):
    """A fresh bucket on the moto server; yields its name."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    name = f"t{abs(hash(request.node.nodeid)) % 10**10}-{int(time.time() * 1000) % 10**6}"
    fs.mkdir(name)
    yield name


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's own test server (SQLite in a temp dir) for the session; yields its API URL.

    The URL is exported as PREFECT_API_URL so flows in this process and CLI
    subprocesses use it instead of each starting a temporary server.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
