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


def _vmstat(names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k in names:
                    out[k] = int(v)
    except OSError:
        pass
    return out


class DirtyPages:
    """The machine's dirty page cache during a stage: its peak (MB) against the kernel's throttling threshold.

    A stage that writes more than the dirty threshold (vm.dirty_ratio of the available memory) is held
    to the disk's write speed (``balance_dirty_pages``): the large set's stores can cross it where the
    small set's never do, so a stage's time per spectrum then grows with the data for the disk's sake.
    Sampled every 0.2 s in a thread (Linux /proc/vmstat; zeros elsewhere).
    """

    _KEYS = ("nr_dirty", "nr_writeback", "nr_dirty_threshold", "nr_dirtied")

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self.threshold_mb = 0.0
        self.dirtied_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _mb(self, pages: int) -> float:
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            v = _vmstat(self._KEYS)
            self.peak_mb = max(self.peak_mb, self._mb(v.get("nr_dirty", 0) + v.get("nr_writeback", 0)))
            self.threshold_mb = self._mb(v.get("nr_dirty_threshold", 0))
            self._stop.wait(0.2)

    def __enter__(self) -> DirtyPages:
        self._dirtied0 = _vmstat(self._KEYS).get("nr_dirtied", 0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.dirtied_mb = self._mb(_vmstat(self._KEYS).get("nr_dirtied", 0) - self._dirtied0)


def flush_page_cache_writes() -> float:
    """Write every dirty page to disk (``sync``) so that the next stage starts with none; seconds taken."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def resident_fraction(roots: list[str]) -> float:
    """Share of the bytes of ``roots`` (files, and every file under a folder) in the page cache (``fincore``; NaN
    without it).

    A store read right after it was written (preprocess reads the ingest's store) comes from memory only
    while the machine has room for it; what was evicted is read from disk again.
    """
    import shutil as _shutil

    exe = _shutil.which("fincore")
    paths = sorted({os.path.realpath(p) for r in roots
                    for p in ([os.path.join(d, f) for d, _, fs in os.walk(r) for f in fs] if os.path.isdir(r) else [r])})
    if exe is None or not paths:
        return float("nan")
    res = size = 0
    for i in range(0, len(paths), 500):
        out = subprocess.run([exe, "--bytes", "--noheadings", "--output", "RES,SIZE", *paths[i:i + 500]],
                             capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                res, size = res + min(int(parts[0]), int(parts[1])), size + int(parts[1])  # RES: whole pages
    return res / size if size else float("nan")
