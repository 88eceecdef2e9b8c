"""Benchmark: cross-band retrieval of held-out sky patches in the surveys' real pixel grids.

Generated tiles (:func:`skybatch.sample.tiles.make_survey_views`): Rubin u g r i z y at 0.2″/px,
Euclid VIS at 0.1″/px and NISP Y J H at 0.3″/px, with per-band PSFs, depths and noise, sub-pixel
astrometric offsets, Lyman-break drop-outs, single-instrument sources and missing bands. They go
the way a user's tiles go: ``.npz`` files -> ``ingest-tiles`` (a training store and a held-out
store) -> the tile encoder trained on the training store (streamed) -> ``embed`` of the held-out
store with the trained model.

Printed, all from this run:

- for hard band pairs (u→H, r→VIS, VIS→H, g→J and more): top-1 and top-5 retrieval of a held-out
  patch's query-band embedding among all held-out patches' key-band embeddings, for the encoder
  and for a **pixel-correlation baseline** on the same common sky grid (both bands resampled from
  their WCS onto the grid, S/N images smoothed with a 1-px Gaussian, cosine of the mean-subtracted
  pixels), and the ratio;
- the mean cosine distance between the embeddings of one patch in two bands, against that between
  two neighbouring patches (adjacent on the sky) in one band;
- the information map and band-similarity PNGs of the trained model, and the held-out band x band
  similarity and retrieval matrices as PNGs.

Run: ``python benchmarks/tile_retrieval.py`` (384 train / 96 held-out, 600 steps; ``--quick`` for a
small run). ``--out DIR`` keeps the stores, model and PNGs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

PAIRS = [("rubin_u", "euclid_h"), ("rubin_r", "euclid_vis"), ("euclid_vis", "euclid_h"), ("rubin_g", "euclid_j"),
         ("rubin_u", "euclid_vis"), ("rubin_z", "euclid_y"), ("rubin_y", "euclid_h"), ("rubin_g", "euclid_h"),
         ("euclid_h", "rubin_u"), ("rubin_i", "rubin_u")]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def topk_retrieval(query: np.ndarray, keys: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose own key is among the ``k`` most cosine-similar keys, for each k."""
    sim = _unit(query.reshape(len(query), -1)) @ _unit(keys.reshape(len(keys), -1)).T
    rank = (sim > np.diag(sim)[:, None]).sum(axis=1)  # keys strictly better than the true one
    return {k: float(np.mean(rank < k)) for k in ks}


def pixel_features(image: np.ndarray, noise: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Baseline features: S/N images (n, S, S) on the sky grid, Gaussian-smoothed, mean-subtracted."""
    from scipy.ndimage import gaussian_filter

    snr = np.where(np.isfinite(noise) & (noise > 0), image / np.where(np.isfinite(noise), noise, 1.0), 0.0)
    sm = np.stack([gaussian_filter(np.arcsinh(s), sigma_px) for s in snr])
    return sm.reshape(len(sm), -1) - sm.reshape(len(sm), -1).mean(axis=1, keepdims=True)


def neighbour_distances(emb: np.ndarray, present: np.ndarray, centre: np.ndarray, step_arcsec: float) -> tuple[float, float]:
    """(mean cosine distance one patch / two bands, mean cosine distance two neighbouring patches / one band).

    Neighbours: patch pairs whose centres are one tile step apart on the sky (±10 %).
    """
    u = _unit(np.nan_to_num(emb))
    n, nb = present.shape
    cross = [1 - float(u[t, i] @ u[t, j]) for t in range(n) for i in range(nb) for j in range(i + 1, nb)
             if present[t, i] and present[t, j]]
    dra = (centre[:, None, 0] - centre[None, :, 0]) * np.cos(np.radians(centre[:, None, 1]))
    sep = 3600 * np.hypot(dra, centre[:, None, 1] - centre[None, :, 1])
    ti, tj = np.nonzero(np.abs(sep - step_arcsec) < 0.1 * step_arcsec)
    neigh = [1 - float(u[a, b] @ u[c, b]) for a, c in zip(ti, tj) if a < c for b in range(nb)
             if present[a, b] and present[c, b]]
    return float(np.mean(cross)), float(np.mean(neigh)) if neigh else float("nan")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (128 train / 48 held-out, 150 steps)")
    p.add_argument("--train", type=int, default=None)
    p.add_argument("--test", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--field-arcsec", type=float, default=9.6, help="tile side on the sky")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep stores, model and PNGs here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra TileTrainConfig setting, e.g. --set contrastive_weight=0")
    args = p.parse_args(argv)
    n_train = args.train or (128 if args.quick else 384)
    n_test = args.test or (48 if args.quick else 96)
    steps = args.steps or (150 if args.quick else 600)

    from distributed import Client

    from skybatch.models import read_card
    from skybatch.models import tile_diagnostics as D
    from skybatch.pipeline.tile_ingest import ingest_tiles
    from skybatch.pipeline.tile_model import TileTrainConfig, embed_tiles_store, read_sky_sample, train_tile_encoder
    from skybatch.sample.tiles import make_survey_views, write_npz_tiles

    out = args.out or tempfile.mkdtemp(prefix="tile_retrieval_")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    sv = make_survey_views(n_train + n_test, args.field_arcsec, seed=args.seed)
    rows = np.random.default_rng(args.seed).permutation(n_train + n_test)
    write_npz_tiles(sv.subset(np.sort(rows[:n_train])), os.path.join(out, "npz_train"))
    write_npz_tiles(sv.subset(np.sort(rows[n_train:])), os.path.join(out, "npz_test"))
    grids = ", ".join(f"{k} {v.image.shape[-1]} px at {v.pixel_scale_arcsec}\"/px" for k, v in sv.views.items())
    print(f"tiles: {n_train} train + {n_test} held-out, {args.field_arcsec}\" on a side: {grids} "
          f"(generated in {time.perf_counter() - t0:.1f} s)")
    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        extra[k] = type(getattr(TileTrainConfig, k, 0.0) or 0.0)(v) if k != "region_arcsec" else float(v)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        stores = {}
        for split in ("train", "test"):
            stores[split] = os.path.join(out, f"{split}.zarr")
            rep = ingest_tiles([os.path.join(out, f"npz_{split}")], stores[split], chunk_tiles=16, client=client,
                               progress=False)
            assert rep.exit_code == 0, rep.summary()
        cfg = TileTrainConfig(store=stores["train"], out=os.path.join(out, "model"), steps=steps, progress=False,
                              **extra)
        t = time.perf_counter()
        res = train_tile_encoder(cfg, client)
        train_s = time.perf_counter() - t
        emb_res = embed_tiles_store(stores["test"], res["model_dir"], client, progress=False)
        assert emb_res["exit_code"] == 0
    import xarray as xr

    ds = xr.open_zarr(stores["test"], group="embeddings")
    emb, present = ds.embedding.values, ds.embedding_present.values
    bands = [str(b) for b in ds.band_key.values]
    card = read_card(res["model_dir"])
    sky = read_sky_sample(stores["test"], bands, card["data"]["region_arcsec"], card["data"]["image_size"],
                          max_tiles=n_test)
    assert [str(t) for t in sky["tile_id"]] == [str(t) for t in ds.tile_id.values]
    print(f"trained {res['steps']} steps in {train_s:.0f} s; sky region {res['region_arcsec']:.2f}\" on a "
          f"{res['grid_scale_arcsec']:.3f}\"/px grid; planes set aside: {res['set_aside'] or 'none'}")

    print(f"\n{'pair':<24}{'n':>4}{'enc top1':>10}{'enc top5':>10}{'pix top1':>10}{'pix top5':>10}{'enc/pix':>9}")
    rows_out = []
    for qa, kb in PAIRS:
        i, j = bands.index(qa), bands.index(kb)
        ok = present[:, i] & present[:, j] & sky["present"][:, i] & sky["present"][:, j]
        e = topk_retrieval(emb[ok, i], emb[ok, j])
        px = topk_retrieval(pixel_features(sky["image"][ok, i], sky["noise"][ok, i]),
                            pixel_features(sky["image"][ok, j], sky["noise"][ok, j]))
        rows_out.append((qa, kb, int(ok.sum()), e, px))
        ratio = e[1] / px[1] if px[1] > 0 else float("inf")
        print(f"{qa + '→' + kb:<24}{ok.sum():>4}{e[1]:>10.3f}{e[5]:>10.3f}{px[1]:>10.3f}{px[5]:>10.3f}{ratio:>9.2f}")
    mean_e = float(np.mean([r[3][1] for r in rows_out]))
    mean_p = float(np.mean([r[4][1] for r in rows_out]))
    worst = min(r[3][1] - r[4][1] for r in rows_out)
    print(f"{'mean':<28}{mean_e:>10.3f}{'':>10}{mean_p:>10.3f}{'':>10}{mean_e / max(mean_p, 1e-9):>9.2f}")
    print(f"encoder >= pixel baseline on every pair: {worst >= 0} (worst margin {worst:+.3f}); "
          f"mean top-1 >= 0.9: {mean_e >= 0.9}")
    step = args.field_arcsec
    d_cross, d_neigh = neighbour_distances(emb, present, sky_centres(stores["test"]), step)
    print(f"cosine distance: one patch in two bands {d_cross:.3f}; two neighbouring patches in one band "
          f"{d_neigh:.3f} (ratio {d_cross / d_neigh:.2f}; < 1 means the same sky wins)")
    acc, _ = D.cross_band_retrieval(emb, present)
    png = [D.write_band_similarity_png(D.band_similarity_matrix(emb, present), bands,
                                       os.path.join(out, "heldout_band_similarity.png")),
           D.write_band_similarity_png(acc, bands, os.path.join(out, "heldout_retrieval_top1.png"),
                                       title="held-out cross-band top-1")]
    print("diagnostics:", ", ".join([str(x) for x in png] + list(res["png"].values())))
    print(f"total {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return {"mean_top1": mean_e, "mean_pixel_top1": mean_p, "worst_margin": worst, "d_cross": d_cross,
            "d_neigh": d_neigh, "pairs": rows_out}


def sky_centres(store: str) -> np.ndarray:
    """(n, 2) tile centres (ra, dec) from the WCS of each tile's first present plane."""
    from skybatch.models.tile_sky import tile_centres
    from skybatch.pipeline.tile_batches import read_tile_views

    from skybatch.pipeline.tile_model import _n_tiles_and_chunk

    n, _ = _n_tiles_and_chunk(store, None)
    views = read_tile_views(store, None, 0, n)
    ids = [str(t) for t in next(iter(views.values())).tile_id]
    found = tile_centres(views, ids)
    return np.array([np.median([p[3] for p in found[t]], axis=0) if found[t] else (np.nan, np.nan) for t in ids])


if __name__ == "__main__":
    main()
