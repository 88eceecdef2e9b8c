"""Check, before any work starts, that a cluster's workers can run skybatch jobs.

A scheduler someone else started (``--cluster tcp://host:port``) or worker jobs
on a batch system may run another Python environment. A worker without
skybatch, or with another version of it or of the libraries that move data
between driver and workers, fails late and obscurely (a ``ModuleNotFoundError``
while unpickling a task, or silently different results). :func:`check_workers`
asks every worker for its versions and raises :class:`WorkerEnvironmentError`
naming each worker and what differs.

Only standard-library functions are sent to the workers, so the check itself
works on a worker that cannot import skybatch.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from typing import Any

__all__ = ["WorkerEnvironmentError", "CHECKED_PACKAGES", "local_versions", "worker_mismatches",
           "check_workers", "wait_for_workers"]

#: Distributions compared between the driver and every worker (exact version).
CHECKED_PACKAGES = ("skybatch", "dask", "distributed", "cloudpickle", "numpy", "zarr", "jax", "equinox")


class WorkerEnvironmentError(ValueError):
    """Workers that cannot run skybatch jobs; the message names each worker and what differs."""


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def local_versions() -> dict[str, str | None]:
    """``{package: version}`` of this process, plus ``python`` (major.minor)."""
    out: dict[str, str | None] = {p: _version(p) for p in CHECKED_PACKAGES}
    out["python"] = ".".join(platform.python_version_tuple()[:2])
    return out


def worker_mismatches(client) -> dict[str, list[str]]:
    """``{worker address (name): [what differs, ...]}`` for every worker that differs from this process."""
    here = local_versions()
    problems: dict[str, list[str]] = {}
    names = {a: w.get("name", a) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}

    def label(addr: str) -> str:
        n = names.get(addr)
        return f"{addr} ({n})" if n is not None and str(n) != addr else addr

    pys = client.run(platform.python_version_tuple, on_error="return")
    for addr, v in pys.items():
        got = ".".join(v[:2]) if isinstance(v, tuple | list) else None
        if got != here["python"]:
            problems.setdefault(label(addr), []).append(f"Python {got} (driver: {here['python']})")
    for pkg in CHECKED_PACKAGES:
        want = here[pkg]
        if want is None:
            continue
        for addr, v in client.run(importlib.metadata.version, pkg, on_error="return").items():
            if isinstance(v, BaseException):
                problems.setdefault(label(addr), []).append(f"{pkg} is not installed (driver has {want})")
            elif v != want:
                problems.setdefault(label(addr), []).append(f"{pkg} {v} (driver has {want})")
    return problems


def check_workers(client, where: str) -> None:
    """Raise :class:`WorkerEnvironmentError` if any worker of ``client`` differs from this process.

    where: how to name the cluster in the message (e.g. the scheduler address).
    """
    problems = worker_mismatches(client)
    if problems:
        here = local_versions()
        lines = [f"  {w}: " + "; ".join(p) for w, p in sorted(problems.items())]
        raise WorkerEnvironmentError(
            f"{len(problems)} worker(s) of {where} cannot run skybatch jobs (checked before any work started):\n"
            + "\n".join(lines)
            + f"\nStart the workers from the driver's environment (skybatch {here['skybatch']}, Python {here['python']}), "
            "e.g. `pip install skybatch==" + str(here["skybatch"]) + "` there, or the same venv on a shared filesystem; "
            "a container image: see the Dockerfile."
        )


def _squeue(job_ids: list[str]) -> str:
    if not job_ids:
        return "no job submitted"
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T %r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or f"jobs {', '.join(job_ids)} are no longer queued (see their .out/.err logs)"
    except (OSError, subprocess.SubprocessError) as e:
        return f"squeue failed: {e}"


def wait_for_workers(client, n: int, timeout: float, where: str, cluster: Any = None) -> None:
    """Wait until ``n`` workers joined, else raise :class:`WorkerEnvironmentError` saying what is pending.

    For a SLURM cluster the message carries ``squeue``'s state and reason for its jobs.
    """
    deadline = time.monotonic() + timeout
    while True:
        have = len(client.scheduler_info(n_workers=-1)["workers"])
        if have >= n:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    msg = f"{where}: {have} of {n} worker(s) joined within {timeout:.0f} s"
    jobs = getattr(cluster, "workers", None)
    if jobs is not None and hasattr(cluster, "job_script"):
        ids = [str(getattr(j, "job_id", "")) for j in jobs.values() if getattr(j, "job_id", None)]
        msg += f"; SLURM jobs (id state reason): {_squeue(ids)}. Raise start_timeout (--cluster-opt start_timeout=SECONDS) " \
               "if the queue is long, or pick a faster QOS (--cluster-opt qos=debug)"
    else:
        msg += "; start workers with `dask worker ADDRESS`, or raise start_timeout (--cluster-opt start_timeout=SECONDS)"
    raise WorkerEnvironmentError(msg)
