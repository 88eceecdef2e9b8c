"""CLI start-up benchmark: the fixed overhead of `skybatch run classify` beside the work it does.

Builds (or reuses, with ``--dir``) a quick-start sample store, preprocessed as the quick start does, and a
small classifier; then, all in this run:

- work: ``skybatch.pipeline.modeling.classify`` in-process on an already running cluster (no Prefect, no
  cluster start): what the command has to do;
- ``skybatch run classify`` in a fresh process with Prefect's temporary server per run (the old default,
  ``SKYBATCH_PREFECT_SERVER=temporary``);
- the same with the shared local server skybatch starts once and leaves running (the default now; its
  one-time start is printed separately);
- ``skybatch --version`` (interpreter + CLI import).

Fixed overhead = command wall time - work. Wall-clock seconds depend on the machine's load; the
ratios in one run are what to compare.

    python benchmarks/cli_overhead.py [--quick] [--dir QUICKSTART_DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

SKYBATCH = [sys.executable, "-m", "skybatch.cli"]


def prepare(d: str, quick: bool) -> tuple[str, str]:
    """A preprocessed quick-start store and a classifier trained on it, under ``d`` (reused if there)."""
    from distributed import Client, LocalCluster

    from skybatch.orchestrate.quickstart import QUICKSTART_RECIPE
    from skybatch.pipeline.ingest import ingest
    from skybatch.pipeline.modeling import TrainJobConfig, train
    from skybatch.pipeline.preprocess import preprocess
    from skybatch.sample.survey import generate_sample_survey

    rest = os.path.join(d, "desi-rest.zarr")
    clf = os.path.join(d, "models", "clf")
    if os.path.exists(os.path.join(clf, "model", "card.json")) and os.path.exists(rest):
        return rest, clf
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as lc, \
            Client(lc) as client:
        if not os.path.exists(rest):
            data = os.path.join(d, "data")
            raw = os.path.join(d, "spectra-desi.zarr")
            if not os.path.exists(os.path.join(data, "truth.parquet")):
                generate_sample_survey(data, n_healpix=1 if quick else 4, spectra_per_file=100 if quick else 200,
                                       n_sdss=0, seed=5)
            ingest([os.path.join(data, "desi", "**", "coadd-*.fits")], raw, chunk_spectra=256, client=client,
                   progress=False)
            preprocess(raw, rest, client=client, progress=False, **QUICKSTART_RECIPE)
        train(TrainJobConfig(store=rest, model="classifier", out=clf, steps=30 if quick else 100, batch_size=64,
                             split_nside=256, progress=False), client)
    return rest, clf


def time_cli(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(SKYBATCH + args, env=env, capture_output=True, text=True, timeout=900)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"skybatch {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 spectra, 1 repeat")
    ap.add_argument("--dir", default=None, help="a quick-start directory to reuse (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per variant (median; default 3, quick 1)")
    a = ap.parse_args()
    repeat = a.repeat or (1 if a.quick else 3)
    tmp = tempfile.mkdtemp(prefix="skybatch-cli-bench-")
    d = a.dir or os.path.join(tmp, "qs")
    try:
        t0 = time.perf_counter()
        store, clf = prepare(d, a.quick)
        print(f"prepared {store} and {clf} in {time.perf_counter() - t0:.1f} s")

        from distributed import Client, LocalCluster

        from skybatch.pipeline.modeling import classify

        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as lc, \
                Client(lc) as client:
            classify(store, clf, client=client, progress=False)  # warm-up (imports, JIT on the workers)
            work = []
            for _ in range(repeat):
                t = time.perf_counter()
                classify(store, clf, client=client, progress=False)
                work.append(time.perf_counter() - t)
        w = statistics.median(work)

        home = os.path.join(tmp, "prefect-home")
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        args = ["run", "classify", "--store", store, "--model", clf, "--cluster", "local", "--no-progress"]
        version = statistics.median(time_cli(["--version"], env) for _ in range(repeat))
        temp_env = {**env, "SKYBATCH_PREFECT_SERVER": "temporary"}
        temporary = statistics.median(time_cli(args, temp_env) for _ in range(repeat))
        shared_env = {**env, "SKYBATCH_PREFECT_SERVER": "shared"}
        t = time.perf_counter()
        time_cli(["server", "start"], shared_env)
        server_start = time.perf_counter() - t
        try:
            shared = statistics.median(time_cli(args, shared_env) for _ in range(repeat))
        finally:
            time_cli(["server", "stop"], shared_env)

        load = os.getloadavg()[0]
        print(f"\nskybatch run classify on {store} ({repeat} run(s) each, median; load average {load:.1f})")
        print(f"  work (classify in-process, cluster already up)      {w:7.2f} s")
        print(f"  skybatch --version (interpreter + CLI import)       {version:7.2f} s")
        print(f"  CLI, temporary Prefect server per run (old default) {temporary:7.2f} s   "
              f"fixed overhead {temporary - w:6.2f} s = {(temporary - w) / w:5.1f} x work")
        print(f"  CLI, shared local server (default)                  {shared:7.2f} s   "
              f"fixed overhead {shared - w:6.2f} s = {(shared - w) / w:5.1f} x work")
        print(f"  shared server's one-time start (skybatch server start) {server_start:5.2f} s")
        print(f"  overhead ratio shared / temporary: {(shared - w) / (temporary - w):.2f}")
    finally:
        if a.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
