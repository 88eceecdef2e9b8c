"""Feeding the models: map_model and streaming fit() against the same work on data already in memory.

Prints, all measured in this run (issue 17 item 4; goals >= 0.8):
- spectra/s of ``skybatch.map_model`` over a store (reading flux from Zarr on a Dask worker, writing the
  latent back) and of the same jitted ``vmap`` on in-memory batches of the same size, with the ratio;
- training steps/s of ``skybatch.models.fit`` fed by ``StoreBatches`` (whole chunks read ahead in
  threads, a gather thread forming the shuffled batches, the device copy one step ahead) and of a bare
  in-memory Equinox/optax loop on the same model, optimiser and batch size, with the ratio.

The encoder has the desisky sky-VAE encoder widths: 7781 -> 1000 -> 800 -> 600 -> 500 -> 300 -> 8. The
in-memory side cycles over the store's first ``--mem-rows`` spectra (so the run does not hold the whole
store in memory); the model does the same arithmetic for every spectrum. Both sides hand JAX 64-byte
aligned host arrays (``skybatch.pipeline.hostbuf``), which the CPU runtime uses in place instead of
copying, so the in-memory side is the best loop, not one that pays a copy per batch. ``--rounds N`` repeats both
measurements N times (interleaved) and reports the best of each, to fight the noise of a shared machine,
and the median of the per-round ratios (each round's two sides ran back to back, under the same load).

    python benchmarks/map_model.py                      (10^5 spectra mapped, 200 training steps)
    python benchmarks/map_model.py --quick              (CI size: 8192 spectra, 40 steps)
    python benchmarks/map_model.py --rounds 2 --profile (best of 2; where the time goes)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sky_encoder import NWAVE, SkyEncoder

CHUNK = 2048


def make_store(path: str, n: int, chunk: int, keep: int, seed: int = 0) -> np.ndarray:
    """Write a spectra store of ``n`` noisy spectra; return its first ``keep`` rows of flux (in memory)."""
    from skybatch.pipeline.hostbuf import aligned_empty
    from skybatch.sources.base import Grid
    from skybatch.store.spectra_store import (
        consolidate,
        create_spectra_store,
        resize_spectra_store,
        write_rows,
    )

    rng = np.random.default_rng(seed)
    g = create_spectra_store(path, Grid("linear", 3600.0, 0.8, NWAVE, "desi-brz"), chunk,
                             {"skybatch_version": "bench", "formats": ["bench"], "manifest": "", "provenance": {}})
    resize_spectra_store(g, n)
    kept = aligned_empty((min(keep, n), NWAVE), np.float32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        block = rng.standard_normal((b - a, NWAVE), np.float32)
        block *= 0.1
        block += 1.0
        if a < len(kept):
            kept[a : min(b, len(kept))] = block[: min(b, len(kept)) - a]
        write_rows(g, a, {"flux": block, "ivar": np.ones_like(block),
                          "healpix": rng.integers(0, 64, b - a).astype(np.int64),
                          "targetid": np.arange(a, b, dtype=np.int64)})
    consolidate(path)
    return kept


def map_in_memory(model, mem: np.ndarray, n: int, batch: int) -> float:
    """Seconds for the jitted vmap over ``n`` spectra in batches of ``batch``, cycling over ``mem``."""
    from skybatch.pipeline.map_model import _jitted

    fn = _jitted()
    t0 = time.perf_counter()
    per = len(mem) // batch
    prev = None
    for a in range(0, n, batch):
        at = (a // batch % per) * batch  # whole batches of mem: every slice stays aligned
        out = fn(model, None, mem[at : at + batch])
        if prev is not None:  # one batch in flight while the next is dispatched, as apply_batched does
            np.asarray(prev)
        prev = out
    np.asarray(prev)
    return time.perf_counter() - t0


def map_store(store: str, model, batch: int, client, name: str):
    from skybatch.pipeline.map_model import map_model

    t0 = time.perf_counter()
    rep = map_model(store, model, outputs=(name,), batch_size=batch, client=client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    return time.perf_counter() - t0, rep


def train_bare(obj, mem: np.ndarray, batch: int, steps: int) -> float:
    """Seconds for ``steps`` steps of a bare jitted Equinox/optax loop on in-memory batches (compiled before)."""
    import optax

    model = obj.init_model(jax.random.PRNGKey(0))
    opt = optax.adamw(1e-3)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, f, i, key):
        def loss(m):
            return obj.loss(m, None, {"flux": f, "ivar": i}, key)[0]

        val, grads = eqx.filter_value_and_grad(loss)(model)
        upd, state = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, upd), state, val

    from skybatch.pipeline.hostbuf import aligned_empty

    ones = aligned_empty((batch, NWAVE), np.float32)
    ones[...] = 1.0
    key = jax.random.PRNGKey(1)
    model, state, v = step(model, state, mem[:batch], ones, key)  # compile
    jax.block_until_ready(v)
    t0 = time.perf_counter()
    per = len(mem) // batch
    for s in range(steps):
        a = (s % per) * batch
        model, state, v = step(model, state, mem[a : a + batch], ones, jax.random.fold_in(key, s))
    jax.block_until_ready(v)
    return time.perf_counter() - t0


def train_store(obj, store: str, batch: int, steps: int, out: str) -> tuple[float, float, float]:
    """``fit()`` streaming ``steps`` steps from the store (compiled by an earlier call).

    Returns (seconds of the whole call, steps/s between the first and the last logged step, seconds
    after the last step). The whole call also holds what the bare loop does not do: opening the
    store, the first reads, and at the end one validation pass over the 10 % validation split, the
    final checkpoint and the loss-curve plot; the middle figure is the rate of the steps alone
    (the metrics are fetched from the device at each logged step, so those times are synchronised).
    """
    from skybatch import models as M
    from skybatch.pipeline.batches import StoreBatches

    batches = StoreBatches(store, batch_size=batch, val_fraction=0.1, prefetch=2)
    cfg = M.TrainConfig(steps=steps, batch_size=batch, checkpoint_every=10**6)
    marks: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    M.fit(obj, batches.make_batches, cfg, out, on_step=lambda step, _m: marks.append((step, time.perf_counter())))
    t1 = time.perf_counter()
    if len(marks) >= 2:
        (s0, a), (s1, b) = marks[0], marks[-1]
        steady = (s1 - s0) / max(b - a, 1e-9)
    else:
        steady = steps / (t1 - t0)
    return t1 - t0, steady, t1 - (marks[-1][1] if marks else t1)


def _top(prof: cProfile.Profile, n: int = 14) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).strip_dirs().sort_stats("cumulative").print_stats(n)
    lines = s.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join("    " + line for line in lines[start:] if line.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size: 8192 spectra, 40 training steps")
    p.add_argument("--n", type=int, default=None, help="spectra in the store and mapped (default 100352)")
    p.add_argument("--mem-rows", type=int, default=16384, help="spectra held in memory for the in-memory side")
    p.add_argument("--batch-size", type=int, default=1024, help="map_model batch size")
    p.add_argument("--train-batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="training steps (default 200)")
    p.add_argument("--rounds", type=int, default=1, help="repeat each measurement N times; report the best")
    p.add_argument("--only", choices=("map", "fit"), default=None, help="run one of the two comparisons")
    p.add_argument("--profile", action="store_true", help="print where the time goes (map_model per-chunk "
                   "timings, a cProfile of one streaming fit)")
    a = p.parse_args(argv)
    n = a.n or (8192 if a.quick else 49 * CHUNK)
    steps = a.steps or (40 if a.quick else 200)
    B, tb = a.batch_size, a.train_batch_size
    n = max(B, n // B * B)
    from distributed import Client, LocalCluster

    from skybatch import models as M

    # the model's module must be importable on the workers (as an installed package would be); note that
    # client.upload_file re-imports it there, which breaks equinox's pytree registration of the class
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="skybatch-bench-map-")
    try:
        store = os.path.join(tmp, "s.zarr")
        t = time.perf_counter()
        mem = make_store(store, n, CHUNK, max(a.mem_rows, 2 * B, 2 * tb))
        t_make = time.perf_counter() - t
        model = SkyEncoder(key=jax.random.PRNGKey(0))
        obj = M.VAEObjective(NWAVE, latent_dim=8, width=256, depth=2)
        mem_map, store_map, mem_fit, store_fit, reports = [], [], [], [], []
        # one worker process with 2 threads: the best JAX layout on 2 cores (stack-notes 2e)
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cl, Client(cl) as client:
            # warm-up: compile in this process and on the worker, for both jobs
            map_in_memory(model, mem, B, B)
            warm = store + "-warm"
            make_store(warm, B, B, 0)
            map_store(warm, model, B, client, "latent")
            train_bare(obj, mem, tb, 2)
            train_store(obj, store, tb, 2, os.path.join(tmp, "train-warm"))
            steady_fit: list[float] = []
            tail_fit: list[float] = []
            for r in range(a.rounds):  # interleaved, so that load changes hit both sides alike
                if a.only != "fit":
                    mem_map.append(n / map_in_memory(model, mem, n, B))
                    sec, rep = map_store(store, model, B, client, f"latent{r}")
                    store_map.append(n / sec)
                    reports.append(rep)
                if a.only != "map":
                    mem_fit.append(steps / train_bare(obj, mem, tb, steps))
                    sec, steady, tail = train_store(obj, store, tb, steps, os.path.join(tmp, f"train{r}"))
                    store_fit.append(steps / sec)
                    steady_fit.append(steady)
                    tail_fit.append(tail)
            prof = None
            if a.profile and a.only != "map":
                prof = cProfile.Profile()
                prof.enable()
                train_store(obj, store, tb, min(steps, 100), os.path.join(tmp, "train-profile"))
                prof.disable()
        load1 = os.getloadavg()
        print(f"map_model benchmark: {n} spectra x {NWAVE} px in chunks of {CHUNK} (store written in "
              f"{t_make:.0f} s), MLP {NWAVE}-1000-800-600-500-300-8, batch {B}; best of {a.rounds} round(s); "
              f"load {load0[0]:.1f} -> {load1[0]:.1f}")
        for r in range(a.rounds):
            parts = []
            if store_map:
                parts.append(f"map {store_map[r]:.0f} / {mem_map[r]:.0f} = {store_map[r] / mem_map[r]:.2f}")
            if store_fit:
                parts.append(f"fit {store_fit[r]:.2f} / {mem_fit[r]:.2f} = {store_fit[r] / mem_fit[r]:.2f} "
                             f"(steps alone {steady_fit[r] / mem_fit[r]:.2f}; {tail_fit[r]:.1f} s after the last step)")
            print(f"  round {r + 1}: " + "; ".join(parts))
        if store_map:
            bm, bs = max(mem_map), max(store_map)
            print(f"  in memory (jit vmap):       {bm:10.0f} spectra/s")
            print(f"  map_model over Zarr store:  {bs:10.0f} spectra/s   ratio {bs / bm:.2f} (goal >= 0.8)")
            med = float(np.median([s / m for s, m in zip(store_map, mem_map)]))
            print(f"  median of the per-round ratios: {med:.2f}")
        if store_fit:
            print(f"training, VAE {NWAVE}-256-256-8, batch {tb}, {steps} steps:")
            fm, fs = max(mem_fit), max(store_fit)
            print(f"  bare in-memory loop:        {fm:10.2f} steps/s")
            print(f"  fit() streaming from store: {fs:10.2f} steps/s   ratio {fs / fm:.2f} (goal >= 0.8)")
            med = float(np.median([s / m for s, m in zip(store_fit, mem_fit)]))
            print(f"  median of the per-round ratios: {med:.2f}")
            ss = max(steady_fit)
            print(f"  fit() steps alone:          {ss:10.2f} steps/s   ratio {ss / fm:.2f} (first to last logged step; "
                  f"the whole call also holds start-up and {min(tail_fit):.1f} s of end validation + checkpoint + plot)")
        if a.profile and store_map:
            best = reports[int(np.argmax(store_map))]
            tt = best.timings
            total = sum(tt.values()) or 1.0
            print(f"map_model, chunk tasks summed over {best.chunks_written} chunks (2 worker threads; wall "
                  f"{best.seconds:.1f} s):")
            for k in ("read", "wait", "compute", "write"):
                print(f"    {k:8s} {tt.get(k, 0.0):8.1f} s  {100 * tt.get(k, 0.0) / total:5.1f} %")
        if prof is not None:
            print("fit() streaming, cProfile of the main thread (cumulative):")
            print(_top(prof))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
