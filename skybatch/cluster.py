"""A Dask client from a cluster profile.

Profiles are small YAML files (``cluster/*.yaml`` in the repository, shipped
as ``skybatch.profiles``): ``local`` (a ``distributed.LocalCluster`` bound to
127.0.0.1 with process workers), ``local-cuda`` (dask-cuda), ``slurm``
(dask-jobqueue), ``kubernetes`` (dask-kubernetes operator) and ``address``
(an existing scheduler). ``auto`` picks ``local-cuda`` when a GPU is visible,
``local`` otherwise. A profile argument may also be a path to a YAML file, or a
``tcp://`` / ``tls://`` scheduler address.

Nothing in :mod:`skybatch.pipeline` knows which profile is in use: jobs take a
``distributed.Client`` and the profile only decides how it is made.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skybatch.cluster_kube import kubernetes_spec
from skybatch.xp import gpu_available

__all__ = [
    "ClusterProfile",
    "ProfileError",
    "load_profile",
    "list_profiles",
    "describe",
    "start_cluster",
    "cluster_client",
    "current_client",
    "client_for",
    "parse_options",
    "cli_overrides",
    "slurm_options",
    "kubernetes_spec",
]

#: Keys each profile kind accepts (anything else is a typo and an error).
_ALLOWED: dict[str, set[str]] = {
    "local": {"n_workers", "threads_per_worker", "memory_limit", "dashboard_address", "processes", "local_directory"},
    "local-cuda": {"CUDA_VISIBLE_DEVICES", "rmm_pool_size", "threads_per_worker", "dashboard_address", "local_directory"},
    "slurm": {
        "account", "qos", "constraint", "queue", "walltime", "cores", "memory", "processes", "jobs",
        "job_extra_directives", "job_script_prologue", "local_directory", "python", "interface",
        "job_name", "log_directory", "dashboard_address", "worker_dashboard_address", "start_timeout",
    },
    "kubernetes": {
        "name", "namespace", "image", "n_workers", "resources", "env", "worker_threads", "tls",
        "service_type", "image_pull_policy",
    },
    "address": {"address", "start_timeout"},
}

#: Settings given on the command line (``--cluster-opt KEY=VALUE``) while a job runs; see
#: :func:`cli_overrides`. They apply to whichever profile the job loads.
_CLI_OVERRIDES: dict[str, Any] = {}


class ProfileError(ValueError):
    """A cluster profile that cannot be used; the message names the profile and setting."""


@dataclass
class ClusterProfile:
    """A parsed cluster profile.

    name: the profile's name (file stem) or the address given.
    kind: one of ``local``, ``local-cuda``, ``slurm``, ``kubernetes``, ``address``.
    options: the remaining settings of the profile, checked against the kind.
    source: where the profile was read from (a path, or ``"builtin"``).
    """

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "builtin"

    def __post_init__(self) -> None:
        if self.kind not in _ALLOWED:
            raise ProfileError(
                f"cluster profile {self.name!r} ({self.source}): kind {self.kind!r} is not one of "
                f"{sorted(_ALLOWED)}"
            )
        unknown = set(self.options) - _ALLOWED[self.kind]
        if unknown:
            raise ProfileError(
                f"cluster profile {self.name!r} ({self.source}): unknown setting(s) {sorted(unknown)} for kind "
                f"{self.kind!r}; allowed: {sorted(_ALLOWED[self.kind])}"
            )
        if self.kind == "address":
            addr = self.options.get("address") or os.environ.get("SKYBATCH_SCHEDULER_ADDRESS")
            self.options["address"] = addr
        n = self.options.get("n_workers")
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ProfileError(f"cluster profile {self.name!r}: n_workers must be a positive integer, got {n!r}")


def _builtin_dir() -> Path:
    return Path(str(importlib.resources.files("skybatch.profiles")))


def list_profiles() -> list[str]:
    """Names of the profiles shipped with skybatch (plus ``auto``)."""
    return ["auto"] + sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def load_profile(profile: str | os.PathLike | None = None, **overrides: Any) -> ClusterProfile:
    """Resolve a profile name, YAML path or scheduler address to a :class:`ClusterProfile`.

    ``None`` and ``"auto"`` give ``local-cuda`` when a GPU is visible, else
    ``local``. A name is looked up first in ``./cluster/NAME.yaml`` (a project's
    own profiles) and then among the shipped ones. ``overrides`` replace
    settings (e.g. ``n_workers=4``).
    """
    overrides = {**_CLI_OVERRIDES, **overrides}
    text = "auto" if profile is None else str(profile)
    if text == "auto":
        text = "local-cuda" if gpu_available() else "local"
    if re.match(r"^(tcp|tls|ucx|inproc)://", text):
        return ClusterProfile(name=text, kind="address", options={"address": text, **overrides}, source="argument")
    candidates = []
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        candidates.append(path)
    else:
        candidates += [Path.cwd() / "cluster" / f"{text}.yaml", _builtin_dir() / f"{text}.yaml"]
    for c in candidates:
        if c.is_file():
            try:
                data = yaml.safe_load(c.read_text()) or {}
            except yaml.YAMLError as e:
                raise ProfileError(f"cluster profile {c}: not valid YAML ({e})") from None
            if not isinstance(data, dict) or "kind" not in data:
                raise ProfileError(f"cluster profile {c}: expected a mapping with a 'kind' key")
            kind = data.pop("kind")
            data.update(overrides)
            return ClusterProfile(name=c.stem, kind=kind, options=data, source=str(c))
    raise ProfileError(
        f"unknown cluster profile {text!r}: give one of {list_profiles()}, a path to a YAML profile, "
        "or a scheduler address like tcp://host:8786"
    )


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["account=m1234", "cores=1", "job_extra_directives=[--exclusive]"]`` -> a settings dict.

    Values are read as YAML scalars or lists (``1`` is an int, ``null`` is None,
    ``[a, b]`` a list); keys are checked later, against the profile's kind.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ProfileError(f"--cluster-opt {pair!r}: expected KEY=VALUE, e.g. --cluster-opt account=m1234")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


@contextlib.contextmanager
def cli_overrides(options: dict[str, Any]) -> Iterator[None]:
    """Apply ``options`` to every profile loaded inside the ``with`` block (the CLI's ``--cluster-opt``)."""
    old = dict(_CLI_OVERRIDES)
    _CLI_OVERRIDES.update(options)
    try:
        yield
    finally:
        _CLI_OVERRIDES.clear()
        _CLI_OVERRIDES.update(old)


def slurm_options(profile: ClusterProfile) -> dict[str, Any]:
    """The dask-jobqueue ``SLURMCluster`` keyword arguments of a ``slurm`` profile.

    ``qos`` and ``constraint`` become ``#SBATCH -q`` / ``-C`` lines (how NERSC
    selects a queue and a node type); ``python`` defaults to this process's
    interpreter (the venv the driver runs in, on a shared filesystem); the
    dashboards bind 127.0.0.1 (reach them through an SSH tunnel).
    """
    o = profile.options
    directives = []
    if o.get("qos"):
        directives.append(f"-q {o['qos']}")
    if o.get("constraint"):
        directives.append(f"-C {o['constraint']}")
    directives += [str(d) for d in (o.get("job_extra_directives") or [])]
    kw: dict[str, Any] = {
        "queue": o.get("queue"),
        "account": o.get("account"),
        "walltime": o.get("walltime") or "01:00:00",
        "cores": int(o.get("cores") or 1),
        "memory": str(o.get("memory") or "4GB"),
        "processes": int(o.get("processes") or 1),
        "job_extra_directives": directives,
        "job_script_prologue": [str(line) for line in (o.get("job_script_prologue") or [])],
        "local_directory": o.get("local_directory"),
        "python": o.get("python") or sys.executable,
        "interface": o.get("interface"),
        "job_name": o.get("job_name") or "skybatch-worker",
        "log_directory": o.get("log_directory"),
        "worker_extra_args": ["--dashboard-address", str(o.get("worker_dashboard_address") or "127.0.0.1:0")],
    }
    return kw


def _slurm_job(profile: ClusterProfile, scheduler: str = "tcp://SCHEDULER_ADDRESS:8786"):
    try:
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:  # pragma: no cover - depends on the extra
        raise ProfileError(
            "the slurm profile needs dask-jobqueue: pip install 'skybatch[slurm]'"
        ) from None
    return SLURMJob(scheduler=scheduler, name=profile.options.get("job_name") or "skybatch-worker",
                    **slurm_options(profile))


def describe(profile: ClusterProfile) -> str:
    """Human-readable account of what :func:`start_cluster` would start, without starting it.

    For ``slurm`` this includes the worker job script; for ``kubernetes`` the
    DaskCluster resource as YAML.
    """
    o = profile.options
    head = f"profile: {profile.name} (kind {profile.kind}, from {profile.source})\n"
    if profile.kind == "local":
        n = o.get("n_workers") or 2
        return head + (
            f"would start: distributed.LocalCluster on 127.0.0.1 with {n} worker "
            f"{'processes' if o.get('processes', True) else 'threads'} x {o.get('threads_per_worker', 1)} thread(s), "
            f"memory_limit={o.get('memory_limit', 'auto')}, dashboard at {o.get('dashboard_address', '127.0.0.1:0')}\n"
        )
    if profile.kind == "local-cuda":
        return head + (
            "would start: dask_cuda.LocalCUDACluster, one worker per GPU "
            f"(CUDA_VISIBLE_DEVICES={o.get('CUDA_VISIBLE_DEVICES') or 'all'}, rmm_pool_size={o.get('rmm_pool_size')}); "
            f"GPU visible here: {gpu_available()}\n"
        )
    if profile.kind == "slurm":
        job = _slurm_job(profile)
        return head + (
            f"would start: a dask scheduler here and {o.get('jobs', 1)} SLURM job(s) of "
            f"{o.get('processes', 1)} worker process(es) each; job script:\n\n" + job.job_script()
        )
    if profile.kind == "kubernetes":
        return head + "would apply this DaskCluster resource (dask-kubernetes operator):\n\n" + yaml.safe_dump(
            kubernetes_spec(profile), sort_keys=False
        )
    addr = o.get("address")
    return head + (
        f"would connect to the existing scheduler at {addr}\n"
        if addr
        else "no address set: give one in the profile, as tcp://host:port, or in SKYBATCH_SCHEDULER_ADDRESS\n"
    )


def start_cluster(profile: ClusterProfile):
    """Start the cluster a profile describes and return it (``None`` for ``address``)."""
    o = dict(profile.options)
    if profile.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=o.get("n_workers") or 2,
            threads_per_worker=o.get("threads_per_worker", 1),
            processes=o.get("processes", True),
            memory_limit=o.get("memory_limit", "auto"),
            host="127.0.0.1" if o.get("processes", True) else None,
            dashboard_address=o.get("dashboard_address", "127.0.0.1:0"),
            worker_dashboard_address="127.0.0.1:0",
            local_directory=o.get("local_directory"),
        )
    if profile.kind == "local-cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ProfileError("the local-cuda profile needs the gpu extra: pip install 'skybatch[gpu]'") from None
        if not gpu_available():
            raise ProfileError("the local-cuda profile needs a CUDA GPU and driver; none is visible (use --cluster local)")
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=o.get("CUDA_VISIBLE_DEVICES"),
            rmm_pool_size=o.get("rmm_pool_size"),
            threads_per_worker=o.get("threads_per_worker", 1),
            dashboard_address=o.get("dashboard_address", "127.0.0.1:0"),
        )
    if profile.kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ProfileError("the slurm profile needs dask-jobqueue: pip install 'skybatch[slurm]'") from None
        kw = slurm_options(profile)
        cluster = SLURMCluster(
            **kw,
            scheduler_options={"dashboard_address": str(o.get("dashboard_address") or "127.0.0.1:0")},
        )
        cluster.scale(jobs=int(o.get("jobs") or 1))
        return cluster
    if profile.kind == "kubernetes":
        try:
            from dask_kubernetes.operator import KubeCluster
        except ImportError:
            raise ProfileError("the kubernetes profile needs dask-kubernetes: pip install 'skybatch[kubernetes]'") from None
        spec = kubernetes_spec(profile)
        return KubeCluster(custom_cluster_spec=spec, namespace=spec["metadata"]["namespace"])
    return None


def current_client() -> Any | None:
    """The Dask client this code is running under, or ``None``.

    Dask's convention: inside ``with Client(...):`` (or after ``Client(...)`` made itself the default),
    ``distributed.Client.current()`` is that client. Closed clients do not count. Importing
    ``distributed`` is skipped when it was never imported (then there can be no client).
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import Client

    try:
        client = Client.current(allow_global=True)
    except ValueError:  # no client
        return None
    return None if getattr(client, "status", "closed") in ("closed", "closing") else client


@contextlib.contextmanager
def client_for(client: Any | None = None, cluster: str | ClusterProfile | None = "auto", *,
               quiet: bool = False) -> Iterator[Any]:
    """The client a Python entry point works on: ``client`` if given, else :func:`current_client`, else a
    cluster started from the profile ``cluster`` (closed on exit). Only a cluster started here is closed."""
    if client is None:
        client = current_client()
    if client is not None:
        yield client
        return
    with cluster_client(cluster, quiet=quiet) as c:
        yield c


def _close_cluster_workers(cluster: Any) -> None:
    """Retire and close the workers of a cluster we started, before its scheduler is closed.

    Closing the scheduler first leaves the workers heartbeating into a closed port; on a loaded machine a
    worker then logs "Failed to communicate with scheduler during heartbeat" with a traceback to stderr
    before its nanny stops it. Retiring the workers first (``scale(0)``, waited for) ends them cleanly.
    """
    try:
        from distributed.deploy.spec import SpecCluster

        if isinstance(cluster, SpecCluster) and not cluster.asynchronous and cluster.workers:
            cluster.scale(0)
            cluster.sync(cluster._correct_state)  # waits for the workers to be retired and closed
    except Exception:  # noqa: BLE001 - a failed graceful step still ends in cluster.close()
        pass


def _quiet_worker_shutdown(client: Any) -> None:
    """Keep a closed scheduler's last heartbeat failure out of the user's terminal (see
    :mod:`skybatch.worker_logging`); a cluster that refuses the plugin still runs."""
    try:
        from skybatch.worker_logging import QuietHeartbeatPlugin

        client.register_plugin(QuietHeartbeatPlugin(), name=QuietHeartbeatPlugin.name)
    except Exception:  # noqa: BLE001 - logging comfort only, never a reason to fail a job
        pass


@contextlib.contextmanager
def cluster_client(profile: str | ClusterProfile | None = None, *, quiet: bool = False, **overrides: Any) -> Iterator[Any]:
    """Context manager yielding a ``distributed.Client`` for a profile; closes what it started
    (workers first, then the scheduler).

    Prints the Dask dashboard link at start unless ``quiet``. To reuse a client the caller already has,
    see :func:`client_for`.
    """
    from distributed import Client

    prof = profile if isinstance(profile, ClusterProfile) else load_profile(profile, **overrides)
    cluster = start_cluster(prof)
    try:
        if cluster is None:
            addr = prof.options.get("address")
            if not addr:
                raise ProfileError(
                    f"cluster profile {prof.name!r}: no scheduler address; set 'address' or SKYBATCH_SCHEDULER_ADDRESS"
                )
            client = Client(addr, timeout="30s")
        else:
            client = Client(cluster)
            _quiet_worker_shutdown(client)
        try:
            if prof.kind in ("address", "slurm", "kubernetes"):  # workers in an environment we did not make
                from skybatch.cluster_check import check_workers, wait_for_workers

                where = prof.options.get("address") or f"the {prof.kind} cluster ({client.scheduler.address})"
                default_timeout = 60 if prof.kind == "address" else 600
                wait_for_workers(client, 1, float(prof.options.get("start_timeout") or default_timeout), where, cluster)
                check_workers(client, where)
            if not quiet:  # straight to the terminal: inside a flow, print() would become a log record
                sys.stdout.write(f"Dask dashboard: {client.dashboard_link}\n")
                sys.stdout.flush()
            yield client
        finally:
            if cluster is not None:
                _close_cluster_workers(cluster)
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
