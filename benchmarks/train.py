"""Trainer benchmark: ``skybatch.models.fit`` against a bare jitted training loop on the same data.

Both train the same :class:`~skybatch.models.VAEObjective` with the same optimiser on the same
in-memory batches (generated before timing). The bare loop is the least one can write: an
``eqx.filter_jit`` step in a Python ``for`` loop, no logging, no checkpoints. ``fit`` adds batch
checks, per-step metrics pulled every ``log_every`` steps, atomic checkpoints every
``checkpoint_every`` steps, and at the end the loss-curve PNG and the saved model. Both are timed
after a warm-up run, so compilation is excluded (it is printed separately).

Prints steps/s and spectra/s of each and their ratio (fit / bare; 1.0 = no overhead).

    python benchmarks/train.py            (300 steps, batch 128, 2000 pixels)
    python benchmarks/train.py --quick    (60 steps, batch 32, 256 pixels)
"""

from __future__ import annotations

import argparse
import tempfile
import time


def make_batches(n_distinct: int, batch_size: int, nwave: int, seed: int = 0) -> list[dict]:
    """``n_distinct`` batches of smooth synthetic spectra (continuum + 2 lines + noise + masks)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, nwave)
    out = []
    for _ in range(n_distinct):
        slope = rng.normal(0, 0.3, (batch_size, 1))
        a = rng.uniform(0, 1, (batch_size, 2))
        truth = 1 + slope * (x - 0.5) + a[:, :1] * np.exp(-0.5 * ((x - 0.3) / 0.03) ** 2)
        truth += a[:, 1:] * np.exp(-0.5 * ((x - 0.7) / 0.04) ** 2)
        ivar = np.full(truth.shape, 400.0, np.float32)
        ivar[rng.random(truth.shape) < 0.02] = 0.0
        flux = (truth + rng.normal(0, 0.05, truth.shape)).astype(np.float32)
        out.append({"flux": flux, "ivar": ivar})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--nwave", type=int, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    args = ap.parse_args()
    steps = args.steps or (60 if args.quick else 300)
    batch_size = args.batch_size or (32 if args.quick else 128)
    nwave = args.nwave or (256 if args.quick else 2000)
    ckpt_every = args.checkpoint_every or max(1, steps // 4)

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from skybatch.models import TrainConfig, VAEObjective, build_optimizer, fit

    objective = VAEObjective(nwave=nwave, latent_dim=8, width=256, depth=2)
    config = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=1e-3,
                         checkpoint_every=ckpt_every, log_every=10)
    batches = make_batches(8, batch_size, nwave)

    def stream(start: int):
        s = start
        while True:
            yield batches[s % len(batches)]
            s += 1

    # ---- bare loop
    optimizer = build_optimizer(config)

    @eqx.filter_jit
    def step_fn(model, opt_state, batch, key):
        (loss, _), grads = eqx.filter_value_and_grad(
            lambda m: objective.loss(m, None, batch, key), has_aux=True
        )(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    def bare(n: int) -> float:
        model = objective.init_model(jax.random.PRNGKey(0))
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        key = jax.random.PRNGKey(1)
        t0 = time.perf_counter()
        loss = None
        for s in range(n):
            b = {k: jnp.asarray(v) for k, v in batches[s % len(batches)].items()}
            model, opt_state, loss = step_fn(model, opt_state, b, jax.random.fold_in(key, s))
        float(loss)
        return time.perf_counter() - t0

    t = time.perf_counter()
    bare(2)
    compile_bare = time.perf_counter() - t
    t_bare = bare(steps)

    # ---- fit
    def run_fit(n: int) -> float:
        with tempfile.TemporaryDirectory() as d:
            cfg = TrainConfig(**{**config.to_dict(), "steps": n})
            t0 = time.perf_counter()
            fit(objective, stream, cfg, d)
            return time.perf_counter() - t0

    t = time.perf_counter()
    run_fit(2)
    compile_fit = time.perf_counter() - t
    t_fit = run_fit(steps)

    n_dev = len(jax.local_devices())
    print(f"VAE nwave={nwave} batch={batch_size} steps={steps} devices={n_dev} "
          f"checkpoint_every={ckpt_every}")
    print(f"  warm-up incl. compilation: bare {compile_bare:.2f} s, fit {compile_fit:.2f} s")
    for name, t_ in (("bare jitted loop", t_bare), ("skybatch fit", t_fit)):
        print(f"  {name:18s} {steps / t_:8.1f} steps/s  {steps * batch_size / t_:10.0f} spectra/s  ({t_:.2f} s)")
    print(f"  ratio fit / bare (throughput): {t_bare / t_fit:.2f}")


if __name__ == "__main__":
    main()
