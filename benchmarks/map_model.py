"""map_model benchmark: a desisky-sky-VAE-sized MLP encoder mapped over a Zarr store vs in memory.

Prints, all measured in this run:
- spectra/s of ``skybatch.map_model`` over a store (reading flux from Zarr, writing the latent back)
  and of the same jitted ``vmap`` on the same data already in memory, with the ratio (goal >= 0.8);
- training steps/s of ``skybatch.models.fit`` fed by ``StoreBatches`` (shuffled chunks prefetched by
  Dask) and of a bare in-memory Equinox/optax loop on the same model and batch size, with the ratio.

The encoder has the desisky sky-VAE encoder widths: 7781 -> 1000 -> 800 -> 600 -> 500 -> 300 -> 8.

    python benchmarks/map_model.py [--quick] [--n N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sky_encoder import NWAVE, SkyEncoder  # noqa: E402  (a user's own model module, shipped to workers)


def make_store(path: str, n: int, chunk: int, seed: int = 0) -> np.ndarray:
    from skybatch.sources.base import Grid
    from skybatch.store.spectra_store import consolidate, create_spectra_store, resize_spectra_store, write_rows

    rng = np.random.default_rng(seed)
    g = create_spectra_store(path, Grid("linear", 3600.0, 0.8, NWAVE, "desi-brz"), chunk,
                             {"skybatch_version": "bench", "formats": ["bench"], "manifest": "", "provenance": {}})
    resize_spectra_store(g, n)
    flux = np.empty((n, NWAVE), np.float32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        block = (1.0 + 0.1 * rng.standard_normal((b - a, NWAVE))).astype(np.float32)
        flux[a:b] = block
        write_rows(g, a, {"flux": block, "ivar": np.ones_like(block),
                          "healpix": rng.integers(0, 64, b - a).astype(np.int64),
                          "targetid": np.arange(a, b, dtype=np.int64)})
    consolidate(path)
    return flux


def bench_map(store: str, flux: np.ndarray, model, batch: int, client) -> tuple[float, float]:
    from skybatch.pipeline.map_model import _jitted, map_model

    fn = _jitted()
    n = len(flux)
    pad = (-n) % batch
    x = np.concatenate([flux, np.zeros((pad, NWAVE), np.float32)]) if pad else flux
    jax.block_until_ready(fn(model, None, x[:batch]))  # compile
    t0 = time.perf_counter()
    for a in range(0, len(x), batch):
        np.asarray(fn(model, None, x[a : a + batch]))
    t_mem = time.perf_counter() - t0

    small = store + "-warm"
    make_store(small, batch, batch)
    map_model(small, model, outputs=("latent",), batch_size=batch, client=client, progress=False)  # worker compile
    t0 = time.perf_counter()
    rep = map_model(store, model, outputs=("latent",), batch_size=batch, client=client, progress=False)
    t_store = time.perf_counter() - t0
    assert rep.exit_code == 0, rep.summary()
    return n / t_mem, n / t_store


def bench_train(store: str, flux: np.ndarray, batch: int, steps: int, client, out: str) -> tuple[float, float]:
    import optax

    from skybatch import models as M
    from skybatch.pipeline.batches import StoreBatches

    obj = M.VAEObjective(NWAVE, latent_dim=8, width=256, depth=2)
    # bare loop: same objective, model, optimiser and batch size, data in memory
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

    ones = np.ones((batch, NWAVE), np.float32)
    key = jax.random.PRNGKey(1)
    model, state, _ = step(model, state, flux[:batch], ones, key)  # compile
    t0 = time.perf_counter()
    for s in range(steps):
        a = (s * batch) % (len(flux) - batch)
        model, state, v = step(model, state, flux[a : a + batch], ones, jax.random.fold_in(key, s))
    jax.block_until_ready(v)
    t_mem = time.perf_counter() - t0

    batches = StoreBatches(store, batch_size=batch, val_fraction=0.1, client=client, prefetch=2)
    warm = M.TrainConfig(steps=2, batch_size=batch, checkpoint_every=1000)
    M.fit(obj, batches.make_batches, warm, out + "-warm")  # compile
    cfg = M.TrainConfig(steps=steps, batch_size=batch, checkpoint_every=10**6)
    t0 = time.perf_counter()
    M.fit(obj, batches.make_batches, cfg, out)
    t_store = time.perf_counter() - t0
    return steps / t_mem, steps / t_store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None, help="spectra in the store")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=None)
    a = p.parse_args(argv)
    n = a.n or (4096 if a.quick else 16384)
    steps = a.steps or (20 if a.quick else 100)
    from distributed import Client, LocalCluster

    # the model's module must be importable on the workers (as an installed package would be); note that
    # client.upload_file re-imports it there, which breaks equinox's pytree registration of the class
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-map-")
    try:
        store = os.path.join(tmp, "s.zarr")
        flux = make_store(store, n, 2048)
        model = SkyEncoder(key=jax.random.PRNGKey(0))
        # one worker process with 2 threads: the best JAX layout on 2 cores (stack-notes 2e)
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cl, Client(cl) as client:
            mem_rate, store_rate = bench_map(store, flux, model, a.batch_size, client)
            tb = 128
            mem_steps, store_steps = bench_train(store, flux, tb, steps, client, os.path.join(tmp, "train"))
        print(f"map_model benchmark: {n} spectra x {NWAVE} px, MLP {NWAVE}-1000-800-600-500-300-8, "
              f"batch {a.batch_size}")
        print(f"  in memory (jit vmap):       {mem_rate:10.0f} spectra/s")
        print(f"  map_model over Zarr store:  {store_rate:10.0f} spectra/s   ratio {store_rate / mem_rate:.2f} "
              "(goal >= 0.8)")
        print(f"training, VAE 7781-256-256-8, batch {tb}, {steps} steps:")
        print(f"  bare in-memory loop:        {mem_steps:10.1f} steps/s")
        print(f"  fit() streaming from store: {store_steps:10.1f} steps/s   ratio {store_steps / mem_steps:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
