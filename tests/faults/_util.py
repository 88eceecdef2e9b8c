"""Shared helpers of the fault tests: real processes, real stores, what each step did printed."""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

HERE = Path(__file__).parent
DRIVER = str(HERE / "driver.py")
PY = sys.executable


def make_survey(out: Path, n_healpix: int = 2, per_file: int = 30, seed: int = 5) -> list[str]:
    """A tiny DESI survey on disk; returns its coadd files."""
    from skybatch.sample.survey import generate_sample_survey

    generate_sample_survey(str(out), n_healpix=n_healpix, spectra_per_file=per_file, n_sdss=0, seed=seed)
    return sorted(glob.glob(str(out / "desi" / "**" / "coadd-*.fits"), recursive=True))


def run_driver(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the driver to the end; returns the finished process (stdout/stderr captured)."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([PY, DRIVER, *args], capture_output=True, text=True, env=e, timeout=timeout)


def kill_driver_at(args: list[str], delay: float, env: dict | None = None) -> str:
    """Start the driver, wait for START, SIGKILL it ``delay`` s later; returns what it printed."""
    e = {**os.environ, **(env or {})}
    p = subprocess.Popen([PY, DRIVER, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=e)
    line = ""
    deadline = time.time() + 300
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line or line.startswith("START"):
            break
    time.sleep(delay)
    finished = p.poll() is not None
    p.send_signal(signal.SIGKILL)
    rest = p.stdout.read()
    p.wait(30)
    return "finished before the kill" if finished or "END" in rest else f"killed {delay:.2f} s after START"


def timed_run(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run the driver to the end and measure START -> END (wall seconds)."""
    e = {**os.environ, **(env or {})}
    p = subprocess.Popen([PY, DRIVER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    t_start = None
    out = []
    for line in p.stdout:
        out.append(line)
        if line.startswith("START"):
            t_start = time.time()
    err = p.stderr.read()
    p.wait()
    dur = time.time() - (t_start or time.time())
    return subprocess.CompletedProcess(p.args, p.returncode, "".join(out), err), dur


def assert_same_store(a: str, b: str, skip: tuple[str, ...] = ()) -> None:
    """Every variable and coordinate of two stores is equal (NaN == NaN)."""
    da, db = xr.open_zarr(a), xr.open_zarr(b)
    assert dict(da.sizes) == dict(db.sizes), (a, b)
    names = [n for n in list(da.data_vars) + list(da.coords) if n not in skip]
    assert sorted(names) == sorted(n for n in list(db.data_vars) + list(db.coords) if n not in skip)
    for name in names:
        va, vb = da[name].values, db[name].values
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert va.tolist() == vb.tolist(), name


def rng(seed: int) -> random.Random:
    return random.Random(seed)
