"""Scale benchmark: ingest -> preprocess -> score at two sizes 10x apart, and planning at DR1-like file counts.

Prints, side by side for the small and the large set (all measured in this run):
- spectra/s of each stage, and the large/small ratio of seconds per spectrum (1.0 = constant);
- peak RSS of the scheduler, of each worker and of the driver in each stage (reset before each
  stage through /proc/PID/clear_refs), and the large/small ratio (1.0 = flat);
- tasks the scheduler ran per stage (the task-graph size), the ingest plan time, and the number of
  files in each store;
then the plan time of 10^6 spectra in 5,000 files: the driver-side planning measured on 5,000
synthetic header records, plus the per-file header inspection (the I/O part of planning) measured
in the large run's ingest plan and extrapolated to 5,000 files over the same workers.

Scheduler and workers are separate processes (``dask scheduler`` / ``dask worker``, 127.0.0.1), one
cluster for both sizes; every process's peak is reset before each stage, so a peak belongs to one
stage of one size. The larger sets are symlinks to the
generated files under new names: the disk cost stays small, and reads come from the page cache
(this measures skybatch, not the disk). Score uses a tiny VAE trained once, untimed, on the small set.

    python benchmarks/scale.py --quick                     # CI: ~1 min (sizes too small for the ratios)
    python benchmarks/scale.py                             # 10^4 and 10^5 spectra
    python benchmarks/scale.py --files 20 --spectra-per-file 500 --workers 2
    python benchmarks/scale.py --plan-files 5000           # plan 10^6 spectra in 5,000 files, headers only
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("MPLBACKEND", "Agg")

GRID = "loglam:3.55:3.99:2e-4"


# -- processes and their peak memory ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class Cluster:
    """``dask scheduler`` + ``dask worker`` (n processes x 1 thread) as separate processes on 127.0.0.1."""

    def __init__(self, n_workers: int, memory_limit: str):
        from distributed import Client

        exe = os.path.join(os.path.dirname(sys.executable), "dask")
        port = _free_port()
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
        self.client.register_plugin(TaskCounter(), name="skybatch-bench-count")

    def pids(self) -> dict[str, int]:
        out = {"scheduler": self.scheduler_pid, "driver": os.getpid()}
        out.update({f"worker {i}": pid for i, pid in enumerate(self.worker_pids.values())})
        return out

    def reset(self) -> None:
        for pid in self.pids().values():
            _reset_peak(pid)
        self.client.run_on_scheduler(_reset_count)

    def peaks(self) -> dict[str, float]:
        return {k: _peak_mb(p) for k, p in self.pids().items()}

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


try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # pragma: no cover
    SchedulerPlugin = object


class TaskCounter(SchedulerPlugin):
    """Counts tasks that finished on a worker (processing -> memory/erred): the executed graph size."""

    def __init__(self):
        self.count = 0

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "processing" and finish in ("memory", "erred"):
            self.count += 1


def _reset_count(dask_scheduler=None):
    dask_scheduler.plugins["skybatch-bench-count"].count = 0


def _read_count(dask_scheduler=None):
    return dask_scheduler.plugins["skybatch-bench-count"].count


# -- data -----------------------------------------------------------------------------------


def make_set(base_coadds: list[str], out: str, n: int) -> list[str]:
    """``n`` coadd files (and their redrock files) as symlinks, under new names, to the generated ones."""
    os.makedirs(out, exist_ok=True)
    files = []
    for i in range(n):
        src = base_coadds[i % len(base_coadds)]
        dst = os.path.join(out, f"coadd-main-dark-{100000 + i}.fits")
        if not os.path.lexists(dst):
            os.symlink(src, dst)
            os.symlink(src.replace("coadd-", "redrock-"), dst.replace("coadd-", "redrock-"))
        files.append(dst)
    return files


def count_files(path: str) -> int:
    return sum(len(f) for _, _, f in os.walk(path))


# -- one size ---------------------------------------------------------------------------------


class Stages:
    """Ingest, preprocess, score of one file set in ``work``; records seconds, peaks and tasks per stage."""

    def __init__(self, cl: Cluster, files: list[str], work: str, args, record: bool = True):
        self.cl, self.files, self.args, self.record = cl, files, args, record
        self.raw, self.pre = os.path.join(work, "raw.zarr"), os.path.join(work, "pre.zarr")
        self.work = work
        self.res: dict = {"stages": {}}

    def _stage(self, name, fn):
        self.cl.reset()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if self.record:
            self.res["stages"][name] = {"seconds": dt, "peaks": self.cl.peaks(), "tasks": self.cl.tasks()}
        return out

    def ingest(self) -> None:
        from skybatch.pipeline.ingest import IngestConfig, execute_plan, plan_ingest

        def run():
            t0 = time.perf_counter()
            plan = plan_ingest(IngestConfig(sources=self.files, store=self.raw, format="desi",
                                            chunk_spectra=self.args.chunk_spectra, progress=False,
                                            dedupe_files=False),  # the sets reuse generated files under new names
                               self.cl.client)
            self.res["plan_seconds"] = time.perf_counter() - t0
            rep = execute_plan(plan, self.cl.client)
            assert rep.exit_code == 0, rep.summary()
            self.res["n"] = rep.n_spectra

        self._stage("ingest", run)

    def preprocess(self) -> None:
        from skybatch.pipeline.preprocess import preprocess

        self._stage("preprocess", lambda: preprocess(self.raw, self.pre, client=self.cl.client, progress=False, grid=GRID,
                                                     rest_frame=True, bad_redshift="observed", normalize="median"))

    def score(self, model: str) -> None:
        from skybatch.pipeline.modeling import score

        self._stage("score", lambda: score(self.pre, model, top=10, client=self.cl.client, batch_size=256,
                                           progress=False, out_dir=os.path.join(self.work, "score")))

    def store_files(self) -> None:
        self.res["files"] = {"raw store": count_files(self.raw), "preprocessed store": count_files(self.pre)}


def train_model(client, store: str, out: str, steps: int) -> str:
    """A tiny VAE on the small set's preprocessed store (untimed; score needs a model)."""
    from skybatch.pipeline.modeling import TrainJobConfig, train

    rep = train(TrainJobConfig(store=store, model="vae", out=out, steps=steps, batch_size=64, checkpoint_every=steps,
                               width=32, latent_dim=4, val_fraction=0.3, split_nside=256, progress=False), client=client)
    assert rep.exit_code == 0, rep.summary()
    return out


def run_all(small_files: list[str], large_files: list[str], tmp: str, args) -> tuple[dict, dict]:
    """Both sizes on one cluster (peaks are reset before every stage). Untimed: the model's training and,
    outside --quick, a warm-up of every stage on one file (imports, JIT compilation on each worker)."""
    cl = Cluster(args.workers, args.memory_limit)
    try:
        warm = Stages(cl, small_files[:1], os.path.join(tmp, "warm"), args, record=False) if args.warm_up else None
        if warm:
            warm.ingest()
            warm.preprocess()
        small = Stages(cl, small_files, os.path.join(tmp, "small-run"), args)
        small.ingest()
        small.preprocess()
        t0 = time.perf_counter()
        model = train_model(cl.client, small.pre, os.path.join(tmp, "vae"), 5 if args.quick else 50)
        print(f"trained the score model in {time.perf_counter() - t0:.0f} s (untimed; on the small set)")
        if warm:
            warm.score(model)
        small.score(model)
        small.store_files()
        shutil.rmtree(small.work, ignore_errors=True)
        large = Stages(cl, large_files, os.path.join(tmp, "large-run"), args)
        large.ingest()
        large.preprocess()
        large.score(model)
        large.store_files()
        shutil.rmtree(large.work, ignore_errors=True)
    finally:
        cl.close()
    return small.res, large.res


# -- planning at DR1-like file counts ------------------------------------------------------------


def plan_synthetic(n_files: int, per_file: int, chunk: int, work: str) -> dict:
    """Driver-side planning of ``n_files`` x ``per_file`` spectra from synthetic header records."""
    import numpy as np
    import pandas as pd

    from skybatch.pipeline.ingest import chunk_tasks
    from skybatch.store.manifest import Manifest

    t0 = time.perf_counter()
    starts = np.arange(n_files, dtype=np.int64) * per_file
    sources = pd.DataFrame({
        "url": [f"/dr1/healpix/main/dark/{i // 100}/{i}/coadd-main-dark-{i}.fits" for i in range(n_files)],
        "format": "desi", "n_rows": per_file, "spectrum_start": starts, "size": 225_000_000,
        "checksum": [f"fits:{i:020x}/225000000" for i in range(n_files)],
        "rows": [list(range(per_file))] * n_files, "run_id": "synthetic", "planned_at": "2026-12-04T00:00:00Z",
    })
    manifest = Manifest(os.path.join(work, "plan.zarr"))
    manifest.write_sources(sources)
    tasks = chunk_tasks(sources, n_files * per_file, chunk)
    return {"seconds": time.perf_counter() - t0, "tasks": len(tasks)}


def plan_real(n_files: int, per_file: int, tmp: str, args) -> None:
    """``--plan-files N``: plan (headers only) N real coadds of ``per_file`` spectra on a fresh cluster."""
    from skybatch.pipeline.ingest import IngestConfig, plan_ingest
    from skybatch.sample.survey import generate_sample_survey

    base = os.path.join(tmp, "plan-base")
    generate_sample_survey(base, n_healpix=1, spectra_per_file=per_file, n_sdss=1, seed=0)
    coadds = sorted(glob.glob(os.path.join(base, "desi", "**", "coadd-*.fits"), recursive=True))
    files = make_set(coadds, os.path.join(tmp, "plan-set"), n_files)
    cl = Cluster(args.workers, args.memory_limit)
    try:
        cl.reset()
        t0 = time.perf_counter()
        plan = plan_ingest(IngestConfig(sources=files, store=os.path.join(tmp, "plan.zarr"), format="desi",
                                        progress=False, dedupe_files=False), cl.client)  # the set reuses files
        dt = time.perf_counter() - t0
        peaks, tasks = cl.peaks(), cl.tasks()
    finally:
        cl.close()
    print(f"plan of {n_files} real DESI coadds x {per_file} spectra = {plan.n_spectra} spectra "
          f"({len(plan.todo)} chunk tasks of 2048): {dt:.1f} s on {args.workers} worker(s) "
          f"({n_files / dt:.0f} files/s; {tasks} inspection tasks); peak RSS MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


# -- report ------------------------------------------------------------------------------------


def _verdict(ratio: float, tol: float = 0.2) -> str:
    return "ok" if abs(ratio - 1.0) <= tol else "OFF"


def report(small: dict, large: dict, args) -> None:
    ns, nl = small["n"], large["n"]
    print(f"\nscale benchmark: {ns} and {nl} spectra ({nl / ns:.0f}x), {args.workers} worker process(es) x 1 thread, "
          f"chunk {args.chunk_spectra}, preprocess grid {GRID}")
    print(f"{'stage':12s}{'spectra/s':>12s}{'spectra/s':>12s}{'s/spec L/S':>12s}{'':>5s}{'tasks':>8s}{'tasks':>8s}")
    print(f"{'':12s}{'small':>12s}{'large':>12s}{'(1.0=const)':>12s}{'':>5s}{'small':>8s}{'large':>8s}")
    const = mem_flat = 0
    for name in small["stages"]:
        a, b = small["stages"][name], large["stages"][name]
        r = (b["seconds"] / nl) / (a["seconds"] / ns)
        const += _verdict(r) == "ok"
        print(f"{name:12s}{ns / a['seconds']:12.0f}{nl / b['seconds']:12.0f}{r:12.2f}{_verdict(r):>5s}"
              f"{a['tasks']:8d}{b['tasks']:8d}")
    if args.quick:
        print("(--quick: sizes too small for the time ratios; fixed per-stage costs and JIT compilation dominate)")
    print("\npeak RSS, MB (per stage; L/S ratio of the largest peak across stages: 1.0 = flat)")
    procs = list(small["stages"]["ingest"]["peaks"])
    head = "".join(f"{s[:5] + ' S':>9s}{s[:5] + ' L':>9s}" for s in small["stages"])
    print(f"{'process':12s}{head}{'L/S max':>9s}")
    for p in procs:
        row = "".join(f"{small['stages'][s]['peaks'][p]:9.0f}{large['stages'][s]['peaks'][p]:9.0f}" for s in small["stages"])
        ms = max(small["stages"][s]["peaks"][p] for s in small["stages"])
        ml = max(large["stages"][s]["peaks"][p] for s in large["stages"])
        mem_flat += _verdict(ml / ms) == "ok"
        print(f"{p:12s}{row}{ml / ms:9.2f} {_verdict(ml / ms)}")
    print(f"\ningest plan time: small {small['plan_seconds']:.2f} s, large {large['plan_seconds']:.2f} s")
    print("files in each store: " + ", ".join(
        f"{k} {small['files'][k]} (small) / {large['files'][k]} (large)" for k in small["files"]))
    print(f"verdict: time per spectrum constant (+-20%) in {const}/{len(small['stages'])} stages; "
          f"peak memory flat (+-20%) in {mem_flat}/{len(procs)} processes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run, ~1 min)")
    p.add_argument("--files", type=int, default=None, help="files in the small set (the large set has 10x)")
    p.add_argument("--spectra-per-file", type=int, default=None)
    p.add_argument("--base-files", type=int, default=None, help="distinct generated files the sets link to")
    p.add_argument("--chunk-spectra", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB", help="per worker")
    p.add_argument("--plan-files", type=int, default=None,
                   help="only plan N real files of 200 spectra (e.g. 5000: 10^6 spectra) and print time and memory")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed at the end)")
    a = p.parse_args(argv)
    n_files = a.files or (4 if a.quick else 20)
    per_file = a.spectra_per_file or (40 if a.quick else 500)
    n_base = a.base_files or (2 if a.quick else 4)
    a.chunk_spectra = a.chunk_spectra or (32 if a.quick else 512)
    a.warm_up = not a.quick

    from skybatch.sample.survey import generate_sample_survey

    tmp = a.dir or tempfile.mkdtemp(prefix="skybatch-bench-scale-")
    try:
        if a.plan_files:
            plan_real(a.plan_files, a.spectra_per_file or 200, tmp, a)
            return 0
        t0 = time.perf_counter()
        base = os.path.join(tmp, "base")
        generate_sample_survey(base, n_healpix=n_base, spectra_per_file=per_file, n_sdss=1, seed=0)
        coadds = sorted(glob.glob(os.path.join(base, "desi", "**", "coadd-*.fits"), recursive=True))
        small_files = make_set(coadds, os.path.join(tmp, "small"), n_files)
        large_files = make_set(coadds, os.path.join(tmp, "large"), 10 * n_files)
        print(f"generated {len(coadds)} DESI coadd files x {per_file} spectra in {time.perf_counter() - t0:.0f} s")

        small, large = run_all(small_files, large_files, tmp, a)
        report(small, large, a)

        syn = plan_synthetic(5000, 200, 2048, tmp)
        per_s = len(large_files) / large["plan_seconds"]
        print(f"\nplanning 10^6 spectra in 5000 files: driver-side plan from 5000 synthetic header records "
              f"{syn['seconds']:.2f} s ({syn['tasks']} chunk tasks of 2048); header inspection in the large "
              f"ingest plan {per_s:.0f} files/s on {a.workers} worker(s) -> 5000 files in {5000 / per_s:.0f} s "
              f"({5000 / per_s * a.workers / 128:.1f} s on 128 workers); scheduler peak RSS in the large ingest "
              f"{large['stages']['ingest']['peaks']['scheduler']:.0f} MB")
    finally:
        if a.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
