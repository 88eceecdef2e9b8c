"""Scale benchmark: ingest -> preprocess -> score at two sizes 10x apart, and planning at DR1-like file counts.

Each size runs on a fresh cluster (``dask scheduler`` + ``dask worker`` processes, 127.0.0.1), and each
stage in its own driver process, so every peak belongs to one stage of one size: the scheduler's and
the workers' peaks are reset before each stage (/proc/PID/clear_refs), the driver's after its imports.
Printed side by side for the small and the large set (all measured in this run):
- spectra/s of each stage and the large/small ratio of wall seconds per spectrum (1.0 = constant);
- CPU ms per spectrum (scheduler + workers + driver) and its large/small ratio: less noisy than wall
  time on a loaded machine;
- peak RSS of the scheduler, each worker and the driver in each stage, and the large/small ratio
  (1.0 = flat);
- each stage's fixed cost (the stage on a one-file set on the same cluster, median of ``--fixed-repeats``)
  and its marginal wall and CPU time per spectrum, (T - T_fixed) / (n - n_fixed), at both sizes with
  their large/small ratio beside the raw one: per-run start-up (plan, graph, model load, the PNG) is
  not a cost per spectrum;
- the task-graph size (tasks the scheduler ran) per stage, the ingest plan time, the objects (files)
  per store variable, and the 1-minute load average during each stage;
then the plan time of 10^6 spectra in 5,000 files: the driver-side planning measured on 5,000 synthetic
header records, plus the per-file header inspection (the I/O part of planning) measured in the large
run's ingest plan and extrapolated to 5,000 files over the same workers.

The sets are symlinks to a few generated files under new names: the disk cost stays small and reads
come from the page cache (this measures skybatch, not the disk). Untimed, on each cluster: a warm-up
of every stage on two files (imports and JIT compilation on the workers), and once a tiny VAE for score.

    python benchmarks/scale.py --quick                     # CI: < 3 min (sizes too small for the ratios)
    nice python benchmarks/scale.py --dir /tmp/scale-big   # 10^4 and 10^5 spectra
    python benchmarks/scale.py --files 20 --spectra-per-file 500 --workers 2
    python benchmarks/scale.py --plan-files 5000           # plan 10^6 spectra in 5,000 real files, headers only
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _scale_cluster import (  # noqa: E402
    Cluster, DirtyPages, flush_page_cache_writes, peak_mb, reset_peak, resident_fraction)

GRID = "loglam:3.55:3.99:2e-4"
STAGES = ("ingest", "preprocess", "score")
STAGE_MODULES = {"ingest": ["skybatch.pipeline.ingest"], "preprocess": ["skybatch.pipeline.preprocess"],
                 "score": ["skybatch.pipeline.modeling"]}


# -- one stage in its own driver process -----------------------------------------------------------


def _ingest(job: dict, client) -> dict:
    from skybatch.pipeline.ingest import IngestConfig, execute_plan, plan_ingest

    t0 = time.perf_counter()
    plan = plan_ingest(IngestConfig(sources=job["files"], store=job["raw"], format="desi",
                                    chunk_spectra=job["chunk"], progress=False,
                                    dedupe_files=False),  # the sets reuse generated files under new names
                       client)
    plan_s = time.perf_counter() - t0
    rep = execute_plan(plan, client)
    assert rep.exit_code == 0, rep.summary()
    return {"n": rep.n_spectra, "plan_seconds": plan_s}


def _preprocess(job: dict, client) -> dict:
    from skybatch.pipeline.preprocess import preprocess

    preprocess(job["raw"], job["pre"], client=client, progress=False, grid=GRID, rest_frame=True,
               bad_redshift="observed", normalize="median")
    return {}


def _score(job: dict, client) -> dict:
    from skybatch.pipeline.modeling import score

    score(job["pre"], job["model"], top=10, client=client, batch_size=256, progress=False,
          out_dir=job["pre"] + ".score")
    return {}


def _warm(job: dict, client) -> dict:
    """Every stage on a couple of files, and the score model (a tiny VAE) when there is none yet."""
    from skybatch.pipeline.modeling import TrainJobConfig, train

    _ingest(job, client)
    _preprocess(job, client)
    if not os.path.exists(os.path.join(job["model"], "model")):
        rep = train(TrainJobConfig(store=job["pre"], model="vae", out=job["model"], steps=job["steps"], batch_size=32,
                                   checkpoint_every=job["steps"], width=32, latent_dim=4, val_fraction=0.3,
                                   split_nside=256, progress=False), client=client)
        assert rep.exit_code == 0, rep.summary()
    _score(job, client)
    return {}


def stage_main(job_path: str) -> int:
    """``--stage-job FILE``: run one stage as the driver; write its seconds, CPU and peak RSS beside FILE."""
    import resource

    import importlib

    from distributed import Client

    with open(job_path) as f:
        job = json.load(f)
    mods = STAGE_MODULES.get(job["stage"]) or [m for ms in STAGE_MODULES.values() for m in ms]
    for mod in mods:  # before the clock and the peak reset; only the stage's own (ingest imports no JAX)
        importlib.import_module(mod)
    fn = {"ingest": _ingest, "preprocess": _preprocess, "score": _score, "warm": _warm}[job["stage"]]
    with Client(job["address"], timeout="30s") as client:
        reset_peak("self")
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = fn(job, client)
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.update(seconds=seconds, driver_peak=peak_mb(os.getpid()),
               driver_cpu=(r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime))
    with open(job_path + ".out", "w") as f:
        json.dump(out, f)
    return 0


def run_stage(stage: str, cl: Cluster, job: dict, work: str) -> dict:
    """Run ``stage`` in a new driver process on ``cl``; its figures and those of the cluster's processes."""
    path = os.path.join(work, f"job-{stage}.json")
    with open(path, "w") as f:
        json.dump({**job, "stage": stage, "address": cl.address}, f)
    sync_s = flush_page_cache_writes()  # untimed: no stage inherits the previous one's unwritten pages
    inputs = {"ingest": [f for c in job.get("files", []) for f in (c, c.replace("coadd-", "redrock-"))],
              "preprocess": [job.get("raw", "")], "score": [job.get("pre", "")]}.get(stage, [])
    resident = resident_fraction(inputs) if inputs else float("nan")  # what the stage reads, in memory now
    cl.reset()
    cpu0, load0 = cl.cpu(), os.getloadavg()[0]
    with DirtyPages() as dirty:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--stage-job", path], capture_output=True,
                              text=True)
    if proc.returncode:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    with open(path + ".out") as f:
        out = json.load(f)
    out["peaks"] = {**cl.peaks(), "driver": out.pop("driver_peak")}
    out["cluster_cpu"] = cl.cpu() - cpu0
    out["cpu"] = out["cluster_cpu"] + out["driver_cpu"]
    out["tasks"] = cl.tasks()
    out["load"] = (load0 + os.getloadavg()[0]) / 2
    out["dirty"] = {"written_mb": dirty.dirtied_mb, "peak_mb": dirty.peak_mb, "threshold_mb": dirty.threshold_mb,
                    "sync_before_s": sync_s, "input_resident": resident}
    return out


# -- data and stores -------------------------------------------------------------------------------


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


def objects_per_variable(store: str) -> dict[str, int]:
    """Stored objects (chunk or shard files) of each array of a Zarr v3 store."""
    out = {}
    for name in sorted(os.listdir(store)):
        c = os.path.join(store, name, "c")
        if os.path.isdir(c):
            out[name] = sum(len(f) for _, _, f in os.walk(c))
    return out


def run_size(label: str, files: list[str], tmp: str, args) -> dict:
    """Warm-up, then ingest, preprocess, score of ``files``, each in its own driver, on a fresh cluster."""
    work = os.path.join(args.store_dir or tmp, f"{label}-run")  # the stores, and each stage's job file
    shutil.rmtree(work, ignore_errors=True)  # an interrupted run's stores would be resumed, not written
    os.makedirs(work, exist_ok=True)
    model = os.path.join(tmp, "vae")
    cl = Cluster(args.workers, args.memory_limit)
    try:
        warm = os.path.join(work, "warm")
        os.makedirs(warm, exist_ok=True)
        run_stage("warm", cl, {"files": files[:2], "raw": os.path.join(warm, "raw.zarr"),
                               "pre": os.path.join(warm, "pre.zarr"), "chunk": args.chunk_spectra, "model": model,
                               "steps": 5 if args.quick else 50}, warm)
        tiny = []
        for r in range(args.fixed_repeats):  # the fixed cost: every stage on one file, fresh stores each time
            d = os.path.join(work, f"tiny{r}")
            os.makedirs(d, exist_ok=True)
            tj = {"files": files[:1], "raw": os.path.join(d, "raw.zarr"), "pre": os.path.join(d, "pre.zarr"),
                  "chunk": args.chunk_spectra, "model": model}
            tiny.append({s: run_stage(s, cl, tj, d) for s in STAGES})
        job = {"files": files, "raw": os.path.join(work, "raw.zarr"), "pre": os.path.join(work, "pre.zarr"),
               "chunk": args.chunk_spectra, "model": model}
        res: dict = {"stages": {s: run_stage(s, cl, job, work) for s in STAGES}}
    finally:
        cl.close()
    res["fixed"] = {s: {k: float(np.median([t[s][k] for t in tiny])) for k in ("seconds", "cpu")} for s in STAGES}
    res["n_tiny"] = tiny[0]["ingest"]["n"]
    res["n"] = res["stages"]["ingest"]["n"]
    res["plan_seconds"] = res["stages"]["ingest"]["plan_seconds"]
    res["objects"] = {"raw store": objects_per_variable(job["raw"]), "preprocessed store": objects_per_variable(job["pre"])}
    shutil.rmtree(work, ignore_errors=True)
    return res


# -- planning at DR1-like file counts ----------------------------------------------------------------


def plan_synthetic(n_files: int, per_file: int, chunk: int, work: str) -> dict:
    """Driver-side planning of ``n_files`` x ``per_file`` spectra from synthetic header records."""
    import pandas as pd

    from skybatch.pipeline.ingest import chunk_tasks
    from skybatch.store.manifest import Manifest

    reset_peak("self")
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
    return {"seconds": time.perf_counter() - t0, "tasks": len(tasks), "peak": peak_mb(os.getpid())}


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
        reset_peak("self")
        t0 = time.perf_counter()
        plan = plan_ingest(IngestConfig(sources=files, store=os.path.join(tmp, "plan.zarr"), format="desi",
                                        progress=False, dedupe_files=False), cl.client)  # the set reuses files
        dt = time.perf_counter() - t0
        peaks, tasks = {**cl.peaks(), "driver": peak_mb(os.getpid())}, cl.tasks()
    finally:
        cl.close()
    print(f"plan of {n_files} real DESI coadds x {per_file} spectra = {plan.n_spectra} spectra "
          f"({len(plan.todo)} chunk tasks of 2048): {dt:.1f} s on {args.workers} worker(s) "
          f"({n_files / dt:.0f} files/s; {tasks} inspection tasks); peak RSS MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


# -- report ----------------------------------------------------------------------------------------


def _fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (Linux /proc/mounts; "?" elsewhere)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if os.path.abspath(path).startswith(mnt.rstrip("/") + "/") or os.path.abspath(path) == mnt:
                    if len(mnt) > len(best):
                        best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def _verdict(ratio: float, tol: float = 0.2) -> str:
    return "ok" if abs(ratio - 1.0) <= tol else "OFF"


def report(small: dict, large: dict, args) -> None:
    ns, nl = small["n"], large["n"]
    S, L = small["stages"], large["stages"]
    print(f"\nscale benchmark: {ns} and {nl} spectra ({nl / ns:.0f}x), {args.workers} worker process(es) x 1 thread, "
          f"chunk {args.chunk_spectra}, preprocess grid {GRID}; a fresh cluster per size, a driver process per stage; "
          f"stores in {args.store_dir or 'the work directory'} ({_fs_type(args.store_dir or args.work)})")
    print(f"{'stage':12s}{'spectra/s':>11s}{'spectra/s':>11s}{'wall s/spec':>12s}{'':>4s}{'CPU ms/spec':>12s}"
          f"{'CPU ms/spec':>12s}{'CPU':>7s}{'':>4s}{'tasks':>7s}{'tasks':>7s}{'load':>6s}{'load':>6s}")
    print(f"{'':12s}{'small':>11s}{'large':>11s}{'L/S':>12s}{'':>4s}{'small':>12s}{'large':>12s}{'L/S':>7s}{'':>4s}"
          f"{'small':>7s}{'large':>7s}{'small':>6s}{'large':>6s}")
    wall_ok = cpu_ok = 0
    for name in STAGES:
        a, b = S[name], L[name]
        r = (b["seconds"] / nl) / (a["seconds"] / ns)
        ca, cb = 1e3 * a["cpu"] / ns, 1e3 * b["cpu"] / nl
        wall_ok += _verdict(r) == "ok"
        cpu_ok += _verdict(cb / ca) == "ok"
        print(f"{name:12s}{ns / a['seconds']:11.0f}{nl / b['seconds']:11.0f}{r:12.2f}{_verdict(r):>4s}{ca:12.2f}"
              f"{cb:12.2f}{cb / ca:7.2f}{_verdict(cb / ca):>4s}{a['tasks']:7d}{b['tasks']:7d}"
              f"{a['load']:6.1f}{b['load']:6.1f}")
    if args.quick:
        print("(--quick: sizes too small for the ratios; fixed per-stage costs dominate)")
    print("CPU seconds, small / large (x = large/small; 10 = proportional to the spectra): " + "; ".join(
        f"{s} driver {S[s]['driver_cpu']:.1f} / {L[s]['driver_cpu']:.1f} "
        f"(x{L[s]['driver_cpu'] / max(S[s]['driver_cpu'], 1e-9):.1f}), scheduler + workers "
        f"{S[s]['cluster_cpu']:.1f} / {L[s]['cluster_cpu']:.1f} (x{L[s]['cluster_cpu'] / max(S[s]['cluster_cpu'], 1e-9):.1f})"
        for s in STAGES))
    print("page cache writes, MB dirtied small / large (the machine's peak dirty + writeback MB, small / large, "
          "against the kernel's throttling threshold): " + "; ".join(
              f"{s} {S[s]['dirty']['written_mb']:.0f} / {L[s]['dirty']['written_mb']:.0f} (peak "
              f"{S[s]['dirty']['peak_mb']:.0f} / {L[s]['dirty']['peak_mb']:.0f} of {L[s]['dirty']['threshold_mb']:.0f})"
              for s in STAGES))
    print("input in the page cache at the stage's start, % of its bytes, small / large (the rest is read from disk): "
          + "; ".join(f"{s} {100 * S[s]['dirty']['input_resident']:.0f} / {100 * L[s]['dirty']['input_resident']:.0f}"
                      for s in STAGES))
    marg_ok = marginal(small, large, args)
    print("\npeak RSS, MB, per stage (small, large, L/S: 1.0 = flat)")
    print(f"{'process':12s}" + "".join(f"{s + ' S':>13s}{'L':>7s}{'L/S':>6s}{'':>4s}" for s in STAGES))
    flat = total = 0
    for p in S["ingest"]["peaks"]:
        row = ""
        for s in STAGES:
            a, b = S[s]["peaks"][p], L[s]["peaks"][p]
            flat += _verdict(b / a) == "ok"
            total += 1
            row += f"{a:13.0f}{b:7.0f}{b / a:6.2f}{_verdict(b / a):>4s}"
        print(f"{p:12s}{row}")
    print(f"\ningest plan time: small {small['plan_seconds']:.2f} s, large {large['plan_seconds']:.2f} s")
    for store in small["objects"]:
        os_, ol = small["objects"][store], large["objects"][store]
        print(f"objects per variable, {store}: max {max(os_.values())} (small) / {max(ol.values())} (large); "
              f"flux {os_.get('flux', 0)} / {ol.get('flux', 0)}; {len(os_)} variables, "
              f"{sum(os_.values())} / {sum(ol.values())} objects in all")
    print(f"verdict: wall time per spectrum constant (+-20%) in {wall_ok}/{len(STAGES)} stages, CPU time per "
          f"spectrum in {cpu_ok}/{len(STAGES)}; marginal wall time per spectrum in {marg_ok}/{len(STAGES)}; "
          f"peak memory flat (+-20%) in {flat}/{total} process-stages")


def marginal(small: dict, large: dict, args) -> int:
    """Print each stage's fixed cost and its marginal time per spectrum at both sizes; stages whose marginal
    wall time per spectrum is constant (+-20 %).

    The fixed cost is the stage run on the tiny set (one file) on the same cluster, median of
    ``--fixed-repeats`` runs; the marginal cost per spectrum is ``(T - T_tiny) / (n - n_tiny)``: the slope
    between the tiny set and the measured size, so the tiny set's own spectra are not counted twice.
    """
    print(f"\nfixed cost and marginal cost per spectrum: fixed = the stage on {small['n_tiny']} spectra (1 file) on "
          f"the same cluster, median of {args.fixed_repeats}; marginal = (T - T_fixed) / (n - {small['n_tiny']})")
    print(f"{'stage':12s}{'fixed s':>9s}{'fixed s':>9s}{'marg wall':>11s}{'marg wall':>11s}{'marg':>6s}{'':>4s}"
          f"{'raw':>6s}{'fixed CPU s':>13s}{'marg CPU':>10s}{'marg CPU':>10s}{'marg':>6s}{'':>4s}")
    print(f"{'':12s}{'small':>9s}{'large':>9s}{'ms/spec S':>11s}{'ms/spec L':>11s}{'L/S':>6s}{'':>4s}{'L/S':>6s}"
          f"{'small':>13s}{'ms/spec S':>10s}{'ms/spec L':>10s}{'L/S':>6s}{'':>4s}")
    ok = 0
    for name in STAGES:
        row = f"{name:12s}"
        fs, fl = small["fixed"][name], large["fixed"][name]
        ws = 1e3 * (small["stages"][name]["seconds"] - fs["seconds"]) / (small["n"] - small["n_tiny"])
        wl = 1e3 * (large["stages"][name]["seconds"] - fl["seconds"]) / (large["n"] - large["n_tiny"])
        cs = 1e3 * (small["stages"][name]["cpu"] - fs["cpu"]) / (small["n"] - small["n_tiny"])
        cl = 1e3 * (large["stages"][name]["cpu"] - fl["cpu"]) / (large["n"] - large["n_tiny"])
        raw = (large["stages"][name]["seconds"] / large["n"]) / (small["stages"][name]["seconds"] / small["n"])
        rw, rc = wl / ws if ws > 0 else float("nan"), cl / cs if cs > 0 else float("nan")  # nan: lost in the noise
        ok += _verdict(rw) == "ok"
        row += (f"{fs['seconds']:9.2f}{fl['seconds']:9.2f}{ws:11.3f}{wl:11.3f}{rw:6.2f}{_verdict(rw):>4s}{raw:6.2f}"
                f"{fs['cpu']:13.2f}{cs:10.3f}{cl:10.3f}{rc:6.2f}{_verdict(rc):>4s}")
        print(row)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run, < 3 min)")
    p.add_argument("--files", type=int, default=None, help="files in the small set (the large set has 10x)")
    p.add_argument("--spectra-per-file", type=int, default=None)
    p.add_argument("--base-files", type=int, default=None, help="distinct generated files the sets link to")
    p.add_argument("--chunk-spectra", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB", help="per worker")
    p.add_argument("--fixed-repeats", type=int, default=None,
                   help="runs of each stage on one file per cluster for its fixed cost, median (default 3; --quick 1)")
    p.add_argument("--plan-files", type=int, default=None,
                   help="only plan N real files of 200 spectra (e.g. 5000: 10^6 spectra) and print time and memory")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed at the end)")
    p.add_argument("--store-dir", default=None,
                   help="where each size's stores are written (default: the work directory); e.g. a tmpfs such as "
                        "/dev/shm, so that the kernel's write-back of a disk does not set the large set's time")
    p.add_argument("--stage-job", default=None, help=argparse.SUPPRESS)  # a stage's driver process
    a = p.parse_args(argv)
    if a.stage_job:
        return stage_main(a.stage_job)
    n_files = a.files or (4 if a.quick else 20)
    per_file = a.spectra_per_file or (40 if a.quick else 500)
    n_base = a.base_files or (2 if a.quick else 4)
    a.chunk_spectra = a.chunk_spectra or (32 if a.quick else 512)
    a.fixed_repeats = a.fixed_repeats or (1 if a.quick else 3)

    from skybatch.sample.survey import generate_sample_survey

    tmp = a.dir or tempfile.mkdtemp(prefix="skybatch-bench-scale-")
    a.work = tmp
    try:
        if a.plan_files:
            plan_real(a.plan_files, a.spectra_per_file or 200, tmp, a)
            return 0
        t0 = time.perf_counter()
        base = os.path.join(tmp, "base")
        if not glob.glob(os.path.join(base, "desi", "**", "coadd-*.fits"), recursive=True):
            generate_sample_survey(base, n_healpix=n_base, spectra_per_file=per_file, n_sdss=1, seed=0)
        coadds = sorted(glob.glob(os.path.join(base, "desi", "**", "coadd-*.fits"), recursive=True))
        small_files = make_set(coadds, os.path.join(tmp, "small"), n_files)
        large_files = make_set(coadds, os.path.join(tmp, "large"), 10 * n_files)
        print(f"generated {len(coadds)} DESI coadd files x {per_file} spectra in {time.perf_counter() - t0:.0f} s",
              flush=True)
        small = run_size("small", small_files, tmp, a)
        print(f"small set done ({small['n']} spectra)", flush=True)
        large = run_size("large", large_files, tmp, a)
        report(small, large, a)

        syn = plan_synthetic(5000, 200, 2048, tmp)
        per_s = len(large_files) / large["plan_seconds"]
        print(f"\nplanning 10^6 spectra in 5000 files: driver-side plan from 5000 synthetic header records "
              f"{syn['seconds']:.2f} s ({syn['tasks']} chunk tasks of 2048, driver peak {syn['peak']:.0f} MB); "
              f"header inspection in the large ingest plan {per_s:.0f} files/s on {a.workers} worker(s) -> 5000 "
              f"files in {5000 / per_s:.0f} s ({5000 / per_s * a.workers / 128:.1f} s on 128 workers); scheduler "
              f"peak RSS in the large ingest {large['stages']['ingest']['peaks']['scheduler']:.0f} MB")
    finally:
        if a.store_dir:  # only the folders this run made there
            for label in ("small", "large"):
                shutil.rmtree(os.path.join(a.store_dir, f"{label}-run"), ignore_errors=True)
        if a.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
