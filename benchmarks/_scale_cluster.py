"""The processes of the scale benchmark: a ``dask scheduler`` + ``dask worker`` cluster on 127.0.0.1, and
the peak memory, CPU time and task count of each of its processes (Linux /proc)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

_TICK = os.sysconf("SC_CLK_TCK")

try:  # the scheduler cannot import this module: its plugin and functions travel by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
except ImportError:  # pragma: no cover
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_mb(pid: int) -> float:
    """VmHWM (peak resident set since the last reset) of a process, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak(pid: int | str = "self") -> None:
    """Reset VmHWM of a process to its current RSS (``/proc/PID/clear_refs``)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # pragma: no cover
    SchedulerPlugin = object


class TaskCounter(SchedulerPlugin):
    """Counts tasks that finished on a worker (processing -> memory/erred): the executed graph size."""

    name = "skybatch-bench-count"

    def __init__(self):
        self.count = 0

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "processing" and finish in ("memory", "erred"):
            self.count += 1


def _reset_count(dask_scheduler=None):
    dask_scheduler.plugins[TaskCounter.name].count = 0


def _read_count(dask_scheduler=None):
    return dask_scheduler.plugins[TaskCounter.name].count


class Cluster:
    """``dask scheduler`` + ``dask worker`` (n processes x 1 thread) as separate processes on 127.0.0.1.

    The drivers are other processes (each stage its own): this process only starts the cluster and
    reads its processes' peaks, CPU time and task count between stages."""

    def __init__(self, n_workers: int, memory_limit: str):
        from distributed import Client

        exe = os.path.join(os.path.dirname(sys.executable), "dask")
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs = [subprocess.Popen([exe, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                        "--dashboard-address", "127.0.0.1:0"], **quiet)]
        self.procs.append(subprocess.Popen([exe, "worker", self.address, "--host", "127.0.0.1", "--nworkers",
                                            str(n_workers), "--nthreads", "1", "--memory-limit", memory_limit,
                                            "--dashboard-address", "127.0.0.1:0"], **quiet))
        deadline = time.time() + 120
        while True:
            try:
                self.client = Client(self.address, timeout="5s")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        self.client.wait_for_workers(n_workers, timeout=120)
        self.scheduler_pid = self.client.run_on_scheduler(os.getpid)
        self.worker_pids = dict(sorted(self.client.run(os.getpid).items()))
        self.client.register_plugin(TaskCounter(), name=TaskCounter.name)

    def pids(self) -> dict[str, int]:
        out = {"scheduler": self.scheduler_pid}
        out.update({f"worker {i}": pid for i, pid in enumerate(self.worker_pids.values())})
        return out

    def reset(self) -> None:
        for pid in self.pids().values():
            reset_peak(pid)
        self.client.run_on_scheduler(_reset_count)

    def peaks(self) -> dict[str, float]:
        return {k: peak_mb(p) for k, p in self.pids().items()}

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids().values())

    def tasks(self) -> int:
        return int(self.client.run_on_scheduler(_read_count))

    def close(self) -> None:
        self.client.close()
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
