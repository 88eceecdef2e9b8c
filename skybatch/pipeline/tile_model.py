"""Tile-encoder jobs over a tile store: train (cross-band JEPA + VICReg) and embed every tile in every band.

The tile store keeps one Zarr group per view (instrument + pixel grid) on one shared tile axis
(:mod:`skybatch.store.tile_store`). These jobs put every view's bands into the survey band order of
:data:`skybatch.models.band_sampling.SURVEY_BANDS` (``rubin_u`` ... ``euclid_h``), centre-cropped to
the encoder's ``image_size``; a band a tile lacks is marked absent and skipped, never an error.

- :func:`train_tile_encoder` reads the cropped planes chunk by chunk (Dask tasks), trains with the
  generic checkpointing trainer (resume after a kill), and writes the diagnostics (band x band
  similarity, information map, per-band collapse checks, token similarity) as PNGs and into the card.
- :func:`embed_tiles_store` maps the trained encoder over tile chunks (one Dask task per chunk,
  resumable through the manifest stage ``embed-tiles``) and writes ``embedding`` (tile, band_key,
  embedding_dim) into the store's ``embeddings`` group (``xr.open_zarr(store, group="embeddings")``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skybatch.pipeline.chunkrun import chunk_ranges, run_chunk_tasks
from skybatch.store.manifest import Manifest, chunk_fingerprint

__all__ = ["TileTrainConfig", "train_tile_encoder", "embed_tiles_store", "read_tile_cube"]


def _band_order() -> list[str]:
    from skybatch.models.band_sampling import SURVEY_BANDS

    return [b.name if hasattr(b, "name") else str(b) for b in SURVEY_BANDS]


def _crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"tiles of {h}x{w} px are smaller than the encoder's image_size {size}; lower --image-size")
    y0, x0 = (h - size) // 2, (w - size) // 2
    return a[..., y0 : y0 + size, x0 : x0 + size]


def _read_cube_chunk(store: str, options: dict | None, start: int, stop: int, size: int,
                     bands: list[str]) -> dict[str, np.ndarray]:
    """Planes of tiles [start, stop) as (n, B, size, size) in ``bands`` order; runs on a worker."""
    from skybatch.store.tile_store import open_tile_store

    n = stop - start
    image = np.full((n, len(bands), size, size), np.nan, np.float32)
    noise = np.full((n, len(bands), size, size), np.inf, np.float32)
    present = np.zeros((n, len(bands)), bool)
    for _, ds in open_tile_store(store, options, check=False).items():
        keys = [str(k) for k in ds["band_key"].values]
        for j, key in enumerate(keys):
            if key not in bands:
                continue
            b = bands.index(key)
            pres = np.asarray(ds["present"][start:stop, j].values, bool)
            if not pres.any():
                continue
            img = _crop(np.asarray(ds["image"][start:stop, j].values, np.float32), size)
            rms = _crop(np.asarray(ds["noise"][start:stop, j].values, np.float32), size)
            ok = pres & np.isfinite(img).all(axis=(1, 2))
            image[ok, b], noise[ok, b], present[ok, b] = img[ok], rms[ok], True
    image = np.where(np.isfinite(image), image, 0.0).astype(np.float32)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, 1e30).astype(np.float32)
    return {"image": image, "noise": noise, "present": present}


def read_tile_cube(store: str, size: int, client=None, storage_options: dict | None = None):
    """All tiles' planes as (n, 10, size, size) image / noise and (n, 10) present, read chunk-wise on Dask."""
    from skybatch.store.tile_store import open_tile_store

    views = open_tile_store(store, storage_options)
    any_view = next(iter(views.values()))
    n = any_view.sizes["tile"]
    chunk = int(any_view["image"].encoding.get("chunks", (n,))[0]) or n
    bands = _band_order()
    ranges = chunk_ranges(n, chunk)
    if client is not None:
        futs = [client.submit(_read_cube_chunk, store, storage_options, a, b, size, bands, pure=False)
                for _, a, b in ranges]
        parts = client.gather(futs)
    else:
        parts = [_read_cube_chunk(store, storage_options, a, b, size, bands) for _, a, b in ranges]
    cube = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tile_id = [str(t) for t in any_view["tile_id"].values]
    return cube["image"], cube["noise"], cube["present"], bands, tile_id


@dataclass
class TileTrainConfig:
    """Settings of ``skybatch run train --model tile-encoder`` (CLI flags / YAML keys).

    store: a tile store (``skybatch run ingest-tiles``); out: the model directory.
    image_size: encoder input size in px (tiles are centre-cropped to it).
    patch, width, depth, heads: encoder architecture (see skybatch.models.TileEncoder).
    steps, batch_size, learning_rate, checkpoint_every, seed: trainer settings.
    cluster / progress: where the chunk reads run; a progress bar.
    """

    store: str
    out: str
    image_size: int = 32
    patch: int = 4
    width: int = 32
    depth: int = 2
    heads: int = 2
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    checkpoint_every: int = 100
    seed: int = 0
    cluster: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "patch", "width", "depth", "heads", "steps", "batch_size", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")


def train_tile_encoder(config: TileTrainConfig, client=None) -> dict[str, Any]:
    """Train the band-agnostic tile encoder on a tile store; returns paths and the card's metrics."""
    if client is None:
        from skybatch.cluster import cluster_client

        with cluster_client(config.cluster) as c:
            return train_tile_encoder(config, c)
    from skybatch.models import read_card, save
    from skybatch.models import tile_diagnostics as D
    from skybatch.models.band_sampling import make_pair_batches
    from skybatch.models.tile_objective import TileJEPAObjective
    from skybatch.models.train import TrainConfig, fit

    t0 = time.perf_counter()
    image, noise, present, bands, tile_ids = read_tile_cube(config.store, config.image_size, client)
    usable = present.sum(axis=1) >= 2
    if usable.sum() < config.batch_size:
        raise ValueError(f"{config.store}: only {int(usable.sum())} tiles have two or more bands; need at least "
                         f"batch_size={config.batch_size}")
    objective = TileJEPAObjective(
        tuple(bands), image_size=config.image_size, patch=config.patch, width=config.width, depth=config.depth,
        heads=config.heads, stem_hidden=config.width, readout_reduce=4, predictor_width=config.width,
    )
    make = make_pair_batches(image[usable], noise[usable], present[usable], bands, batch_size=config.batch_size,
                             seed=config.seed)
    tcfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       checkpoint_every=config.checkpoint_every, seed=config.seed, progress=config.progress)
    card = {"data": {"store": config.store, "n_tiles": int(len(tile_ids)), "n_tiles_trained": int(usable.sum()),
                     "bands": bands, "image_size": config.image_size},
            "job": asdict(config)}
    result = fit(objective, make, tcfg, config.out, card=card)
    encoder = result.model.encoder
    glob, tokens = D.embed_tiles(encoder, image, noise, present, batch_size=32, return_tokens=True)
    metrics = D.model_card_metrics(glob, present, bands, tokens=tokens)
    out = config.out
    pngs = {
        "band_similarity": str(D.write_band_similarity_png(D.band_similarity_matrix(glob, present), bands,
                                                           os.path.join(out, "band_similarity.png"))),
        "collapse": str(D.write_collapse_png(D.per_band_collapse(glob, present, bands),
                                             os.path.join(out, "collapse.png"))),
        "token_similarity": str(D.write_token_similarity_png(
            {"token_cosine": list(result.history["train"].get("token_cosine", []))},
            os.path.join(out, "token_similarity.png"))),
    }
    t, b = np.argwhere(present)[0]
    pngs["information_map"] = str(D.write_information_map_png(image[t, b], noise[t, b],
                                                              os.path.join(out, "information_map.png"),
                                                              patch=config.patch))
    full = {**read_card(result.model_dir), **card, "diagnostics": {"metrics": metrics, "png": pngs}}
    full["metrics"] = {**dict(full.get("metrics") or {}), **{k: v for k, v in metrics.items()
                                                            if isinstance(v, (int, float))}}
    for k in ("schema", "weights", "skybatch_version", "created"):
        full.pop(k, None)
    save(result.model_dir, result.model, full, overwrite=True)
    return {"model_dir": str(result.model_dir), "steps": int(result.step), "start_step": int(result.start_step),
            "metrics": metrics, "png": pngs, "seconds": time.perf_counter() - t0, "exit_code": 0}


def _embed_chunk(task, store, options, encoder, size, bands, batch, run_id):
    import zarr

    from skybatch.models import tile_diagnostics as D
    from skybatch.store.tile_store import open_tile_group

    k, a, b, fp = task
    cube = _read_cube_chunk(store, options, a, b, size, bands)
    glob, _ = D.embed_tiles(encoder, cube["image"], cube["noise"], cube["present"], batch_size=batch)
    g = open_tile_group(store, options, mode="r+")
    emb = g["embeddings"]
    assert isinstance(emb, zarr.Group)
    emb["embedding"][a:b] = np.asarray(glob, np.float32)
    emb["embedding_present"][a:b] = cube["present"]
    rec = {"chunk": k, "start": a, "stop": b, "fingerprint": fp, "run_id": run_id}
    Manifest(store, options, stage="embed-tiles").mark_chunk_done(rec)
    return rec


def embed_tiles_store(store: str, model_dir: str, client=None, *, batch_size: int = 32,
                      storage_options: dict | None = None, cluster: str = "auto", progress: bool = True) -> dict:
    """Write per-tile, per-band global embeddings into the tile store's ``embeddings`` group."""
    if client is None:
        from skybatch.cluster import cluster_client

        with cluster_client(cluster) as c:
            return embed_tiles_store(store, model_dir, c, batch_size=batch_size, storage_options=storage_options,
                                     progress=progress)
    from skybatch.models import load
    from skybatch.pipeline.map_model import model_fingerprint
    from skybatch.store.tile_store import consolidate, open_tile_group, open_tile_store

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    model, card = load(path)
    encoder = getattr(model, "encoder", model)
    if card.get("kind") not in ("tile_jepa", "tile_encoder"):
        raise ValueError(f"{path} holds a {card.get('kind')!r} model; embedding tiles needs a tile encoder")
    size = int(card.get("data", {}).get("image_size", getattr(encoder, "image_size", 32)))
    bands = list(getattr(encoder, "bands", _band_order()))
    views = open_tile_store(store, storage_options)
    any_view = next(iter(views.values()))
    n = any_view.sizes["tile"]
    chunk = int(any_view["image"].encoding.get("chunks", (n,))[0]) or n
    mfp = model_fingerprint(encoder)
    g = open_tile_group(store, storage_options, mode="r+")
    emb = g.require_group("embeddings")
    dim = int(np.asarray(encoder.embed(np.zeros((size, size), np.float32), np.ones((size, size), np.float32),
                                       bands[0])[1]).shape[-1])
    if "embedding" in emb and dict(emb["embedding"].attrs).get("model_sha") != mfp:
        del emb["embedding"], emb["embedding_present"], emb["band_key"]
        Manifest(store, storage_options, stage="embed-tiles").fs.rm(
            Manifest(store, storage_options, stage="embed-tiles").chunk_dir, recursive=True)
    if "embedding" not in emb:
        emb.create_array("embedding", shape=(n, len(bands), dim), chunks=(chunk, len(bands), dim), dtype="float32",
                         fill_value=np.nan, dimension_names=["tile", "band_key", "embedding_dim"],
                         attributes={"long_name": "band-agnostic global tile embedding", "model": path,
                                     "model_sha": mfp})
        emb.create_array("embedding_present", shape=(n, len(bands)), chunks=(chunk, len(bands)), dtype="bool",
                         fill_value=False, dimension_names=["tile", "band_key"])
        bk = emb.create_array("band_key", shape=(len(bands),), dtype=str, fill_value="", dimension_names=["band_key"])
        bk[:] = np.array(bands, dtype=object)
        tid = emb.create_array("tile_id", shape=(n,), dtype=str, fill_value="", dimension_names=["tile"])
        tid[:] = np.array([str(t) for t in any_view["tile_id"].values], dtype=object)
        emb["embedding"].attrs["coordinates"] = "tile_id"
    consolidate(store, storage_options)
    done = Manifest(store, storage_options, stage="embed-tiles").done_chunks()
    tasks = []
    for k, a, b in chunk_ranges(n, chunk):
        fp = chunk_fingerprint([(mfp, 0, 0)], a, b)
        if fp not in done.get(k, set()):
            tasks.append((k, a, b, fp))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    enc_f = client.scatter(encoder, broadcast=True, hash=False) if tasks else None
    out = run_chunk_tasks(client, tasks, _embed_chunk, store, storage_options, enc_f, size, bands, batch_size, run_id,
                          key_prefix=f"embed-tiles-{run_id}", rows=lambda t: (t[1], t[2]), index=lambda t: t[0],
                          progress=progress, total_rows=n, desc="embed-tiles", unit="tiles")
    consolidate(store, storage_options)
    return {"store": store, "model": path, "n_tiles": n, "chunks_written": len(tasks) - len(out.failed),
            "failed_chunks": out.failed, "exit_code": 1 if out.failed else 0}
