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


#: Modules the fork server imports once; each driver process forked from it starts without importing them.
_PRELOAD = ["distributed", "skybatch.pipeline.ingest", "skybatch.pipeline.preprocess", "tests.faults.driver"]
_CTX: list = []


def _context():
    """A multiprocessing 'forkserver' context whose server has imported :data:`_PRELOAD` (no threads yet, so
    forking it is safe; JAX is not imported there)."""
    if not _CTX:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _CTX.append(ctx)
    return _CTX[0]


class Driver:
    """A driver process (``driver.py``) forked from the fork server; its stdout / stderr go to files."""

    def __init__(self, args: list[str], env: dict | None = None):
        import tempfile

        from tests.faults.driver import forked_main

        d = tempfile.mkdtemp(prefix="driver-")
        self.out, self.err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        self.args = [PY, DRIVER, *args]
        self.proc = _context().Process(target=forked_main, args=(list(args), dict(env or {}), self.out, self.err))
        self.proc.start()

    def stdout(self) -> str:
        try:
            with open(self.out) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        try:
            with open(self.err) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for_line(self, prefix: str, timeout: float = 300) -> bool:
        """Wait until a stdout line starts with ``prefix`` (True) or the process ended / timed out (False)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(line.startswith(prefix) for line in self.stdout().splitlines()):
                return True
            if self.proc.exitcode is not None:
                return any(line.startswith(prefix) for line in self.stdout().splitlines())
            time.sleep(0.01)
        return False

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(30)
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return subprocess.CompletedProcess(self.args, self.proc.exitcode, self.stdout(), self.stderr())


def run_driver(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the driver to the end; returns the finished process (stdout/stderr captured)."""
    return Driver(list(args), env).wait(timeout)


def kill_driver_at(args: list[str], delay: float, env: dict | None = None) -> str:
    """Start the driver, wait for START, SIGKILL it ``delay`` s later; returns what it printed."""
    p = Driver(args, env)
    p.wait_for_line("START", timeout=300)
    time.sleep(delay)
    finished = p.proc.exitcode is not None
    try:
        os.kill(p.proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended (and the fork server, its parent, reaped it) just before the kill
        finished = True
    p.proc.join(30)
    rest = p.stdout()
    return "finished before the kill" if finished or "END" in rest else f"killed {delay:.2f} s after START"


def timed_run(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run the driver to the end and measure START -> END (wall seconds)."""
    p = Driver(args, env)
    p.wait_for_line("START", timeout=300)
    t_start = time.time()
    p.wait_for_line("END", timeout=600)
    dur = time.time() - t_start
    return p.wait(60), dur


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
