"""Sky generation benchmark: generated vs real sky spectra under the same conditions, against two baselines.

On the held-out exposures of each selection (HEALPix pixels never seen in training), every method
produces one spectrum per exposure from that exposure's conditions:

  ldm w=2     the sky-ldm model, classifier-free guidance 2 (Heun, 32 steps)
  ldm w=0     the same model unconditioned (guidance 0): what conditioning adds
  NN real     baseline: the real spectrum of the nearest training exposure in standardised condition space
  VAE(ridge)  baseline: the VAE decoding of a latent regressed from the conditions (ridge, quadratic terms)

Printed per method: for [O I] 5577, [O I] 6300, Na D, the OH bands and the g/r/z continua, the median
relative error |x/x_real - 1| over exposures and its scatter (1.4826 MAD); the response to conditions
(slope of log10 brightness vs a condition: moon -> g continuum vs MOONFRAC and MOONSEP; dark ->
[O I] 5577 vs SOLFLUX; twilight -> g continuum vs SUNALT) next to the real spectra's slope; and a
two-sample classifier AUC (logistic regression on line and continuum features, 5-fold; 0.5 = cannot
tell generated from real). The numbers go into each model's card under ``evaluation``.

    python benchmarks/sky_generation.py --quick            (600 generated-VAC exposures, short training)
    python benchmarks/sky_generation.py                    (2500 exposures)
    python benchmarks/sky_generation.py --vac sky_spectra_vac_v1.fits --selections dark,moon,twilight
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def ridge_quadratic(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    """Ridge regression of y on [1, x, x_i x_j] (standardised x)."""
    def feats(x):
        i, j = np.triu_indices(x.shape[1])
        return np.concatenate([np.ones((len(x), 1)), x, x[:, i] * x[:, j]], 1)

    f = feats(x_tr)
    w = np.linalg.solve(f.T @ f + lam * len(f) * np.eye(f.shape[1]), f.T @ y_tr)
    return feats(x_te) @ w


TRENDS = {"moon": [("MOONFRAC", "g"), ("MOONSEP", "g")], "dark": [("SOLFLUX", "OI5577")],
          "twilight": [("SUNALT", "g")]}


def evaluate(store: str, model_dir: str, steps: int = 32, seed: int = 0) -> dict:
    """Metrics of one sky-ldm model on its held-out exposures (see the module docstring)."""
    import jax

    from skybatch.models import sky_metrics as SM
    from skybatch.models.sky_broadband import Standardiser
    from skybatch.pipeline.sky_data import condition_table, read_rows, selection_rows
    from skybatch.pipeline.sky_generate import generate_spectra
    from skybatch.pipeline.sky_ldm import LATENT_VAR, load_sky_ldm
    from skybatch.store.spectra_store import open_group

    model, card, path = load_sky_ldm(model_dir)
    cols = card["conditioning"]["columns"]
    xs = Standardiser.from_dict(card["conditioning"])
    held = np.asarray(card["data"]["heldout_rows"], np.int64)
    sel = selection_rows(store, card["selection"])
    train = np.setdiff1d(sel, held)
    x_tr, x_te = condition_table(store, cols, rows=train), condition_table(store, cols, rows=held)
    ok_tr = np.all(np.isfinite(x_tr), 1)
    train, x_tr = train[ok_tr], x_tr[ok_tr]
    wave = np.asarray(open_group(store, mode="r")["wavelength"][:])
    real = read_rows(store, ["flux"], held)["flux"]
    methods, seconds = {}, {}
    for w in (2.0, 0.0):
        t0 = time.perf_counter()
        methods[f"ldm w={w:g}"] = generate_spectra(model, x_te, held, np.zeros(len(held), int), seed=seed, guidance=w,
                                                   steps=steps)
        seconds[f"ldm w={w:g}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_tr, s_te = xs.apply(x_tr), xs.apply(x_te)
    nn = np.argmin(((s_te[:, None, :] - s_tr[None, :, :]) ** 2).sum(-1), axis=1)
    methods["NN real"] = read_rows(store, ["flux"], train[nn])["flux"]
    seconds["NN real"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    z_tr = read_rows(store, [LATENT_VAR], train)[LATENT_VAR]
    z_hat = ridge_quadratic(s_tr, z_tr, s_te)
    methods["VAE(ridge)"] = np.asarray(jax.vmap(model.vae.decode)(z_hat.astype(np.float32)))
    seconds["VAE(ridge)"] = time.perf_counter() - t0

    def measures(f):
        return {**SM.airglow_lines(wave, f), **SM.continua(wave, f)}

    m_real = measures(real)
    f_real = SM.sky_features(wave, real)
    out = {"selection": card["selection"], "n_heldout": int(len(held)), "n_train": int(len(train)),
           "steps": steps, "methods": {}}
    x_named = dict(zip(cols, x_te.T))
    for name, f in methods.items():
        m = measures(f)
        entry = {"per_feature": {k: SM.ratio_stats(m[k], m_real[k]) for k in m_real},
                 "c2st_auc": SM.c2st_auc(f_real, SM.sky_features(wave, f), seed=seed),
                 "seconds": seconds[name]}
        entry["trends"] = {f"{feat} vs {c}": SM.trend_slope(x_named[c], m[feat])
                           for c, feat in TRENDS.get(card["selection"], []) if c in x_named}
        out["methods"][name] = entry
    out["real_trends"] = {f"{feat} vs {c}": SM.trend_slope(x_named[c], m_real[feat])
                          for c, feat in TRENDS.get(card["selection"], []) if c in x_named}
    return out


def print_report(ev: dict) -> None:
    names = list(ev["methods"])
    feats = list(next(iter(ev["methods"].values()))["per_feature"])
    print(f"\n== {ev['selection']}: {ev['n_heldout']} held-out exposures ({ev['n_train']} train) ==")
    print("median |x/x_real - 1| (scatter)".ljust(26) + "".join(n.rjust(18) for n in names))
    for k in feats:
        row = "".join(f"{ev['methods'][n]['per_feature'][k]['median_rel_err']:8.3f} ({ev['methods'][n]['per_feature'][k]['scatter']:.3f})".rjust(18)
                      for n in names)
        print(f"  {k:<24}{row}")
    ref = ev["methods"]["NN real"]["per_feature"]
    for n in names:
        r = np.nanmedian([ev["methods"][n]["per_feature"][k]["median_rel_err"] / ref[k]["median_rel_err"]
                          for k in feats])
        print(f"  {n:<14} error ratio vs NN-real baseline (median over features): {r:.2f}   "
              f"two-sample AUC {ev['methods'][n]['c2st_auc']:.3f}   {ev['methods'][n]['seconds']:.2f} s")
    for t, v in ev["real_trends"].items():
        print(f"  slope d log10({t.split(' vs ')[0]}) / d {t.split(' vs ')[1]}: real {v:+.4f}   " + "   ".join(
            f"{n} {ev['methods'][n]['trends'][t]:+.4f}" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--vac", default=None, help="a sky VAC FITS file (default: generate one)")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--selections", default="dark,moon")
    ap.add_argument("--n", type=int, default=None, help="exposures in the generated VAC")
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--ldm-steps", type=int, default=None)
    args = ap.parse_args()
    import tempfile

    from distributed import Client, LocalCluster

    import skybatch
    from skybatch.models import load, save
    from skybatch.pipeline.modeling import TrainJobConfig, train
    from skybatch.pipeline.sky_ldm import SkyLDMConfig, train_sky_ldm
    from skybatch.sample.skyvac_file import write_skyvac

    work = args.work or tempfile.mkdtemp(prefix="sky-bench-")
    n = args.n or (600 if args.quick else 2500)
    vae_steps = args.vae_steps or (400 if args.quick else 2000)
    ldm_steps = args.ldm_steps or (600 if args.quick else 3000)
    vac = args.vac or os.path.join(work, "sky_spectra_vac_v1.fits")
    if not args.vac and not os.path.exists(vac):
        write_skyvac(vac, n, np.random.default_rng(1))
    store = os.path.join(work, "sky.zarr")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        skybatch.ingest([vac], store, chunk_spectra=512, client=client, progress=False)
        train(TrainJobConfig(store=store, model="vae", out=os.path.join(work, "vae"), steps=vae_steps, batch_size=64,
                             width=128, progress=False), client)
        print(f"ingest + VAE: {time.perf_counter() - t0:.0f} s ({work})")
        for sel in args.selections.split(","):
            t0 = time.perf_counter()
            rep = train_sky_ldm(SkyLDMConfig(store=store, vae=os.path.join(work, "vae"), selection=sel,
                                             out=os.path.join(work, f"ldm-{sel}"), steps=ldm_steps, batch_size=64,
                                             progress=False), client)
            print(f"sky-ldm {sel}: {rep['steps']} steps in {time.perf_counter() - t0:.0f} s, val loss "
                  f"{rep['final_val_loss']}")
            ev = evaluate(store, rep["model_dir"], steps=16 if args.quick else 32)
            print_report(ev)
            model, card = load(rep["model_dir"])
            card["evaluation"] = json.loads(json.dumps(ev, default=float))
            for k in ("schema", "weights", "skybatch_version", "created"):
                card.pop(k, None)
            save(rep["model_dir"], model, card, overwrite=True)


if __name__ == "__main__":
    main()
