"""Tile-encoder jobs over a tile store: train (cross-band JEPA + VICReg + InfoNCE) and embed every tile.

The tile store keeps one Zarr group per view (instrument + pixel grid) on one shared tile axis
(:mod:`skybatch.store.tile_store`). A training or embedding sample is a **sky region** of
``region_arcsec`` on a side around the tile's WCS centre, seen in every band: each view's planes
are joined on tile id, checked against their WCS, and resampled from their own pixel grid onto
one ``image_size`` px grid (:mod:`skybatch.models.tile_sky`); the encoder is also told each band
image's geometry (native / grid pixel-scale ratio and sub-pixel phase). A band a tile lacks, or
whose plane fails the WCS checks, is absent for that tile and skipped, never an error.

- :func:`train_tile_encoder` streams shuffled chunks from the store through Dask with prefetch
  (:class:`skybatch.pipeline.tile_batches.TileSkyBatches`; memory flat in the number of tiles),
  trains with the generic checkpointing trainer (resume after a kill), and writes the diagnostics
  (band x band similarity, information map, per-band collapse checks, token similarity) on a
  bounded sample of tiles as PNGs and into the card. The card records the sky region and grid, so
  embedding uses the same ones.
- :func:`embed_tiles_store` maps the trained encoder over tile chunks (one Dask task per chunk,
  resumable through the manifest stage ``embed-tiles``) and writes ``embedding`` (tile, band_key,
  embedding_dim) into the store's ``embeddings`` group (``xr.open_zarr(store, group="embeddings")``).
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skybatch.checks import check_positive_ints
from skybatch.pipeline.chunkrun import chunk_ranges, run_chunk_tasks
from skybatch.store.manifest import Manifest, chunk_fingerprint

__all__ = ["TileTrainConfig", "train_tile_encoder", "embed_tiles_store", "store_bands", "store_region_arcsec",
           "read_sky_sample"]


def store_bands(store: str, storage_options: dict | None = None) -> list[str]:
    """The encoder's band order: the survey bands (Rubin u..y, Euclid VIS Y J H), then any other
    band key the store holds, sorted."""
    from skybatch.models.band_sampling import SURVEY_BANDS
    from skybatch.store.tile_store import open_tile_group

    bands = [b.name for b in SURVEY_BANDS]
    g = open_tile_group(store, storage_options, mode="r", consolidated=True)
    extra = set()
    for name in dict(g.attrs).get("views", {}):
        extra |= {str(k) for k in np.asarray(g[name]["band_key"][:])}
    return bands + sorted(extra - set(bands))


def _n_tiles_and_chunk(store: str, storage_options: dict | None) -> tuple[int, int]:
    from skybatch.store.tile_store import open_tile_group

    g = open_tile_group(store, storage_options, mode="r", consolidated=True)
    attrs = dict(g.attrs)
    views = list(attrs.get("views", {}))
    if not views:
        raise ValueError(f"{store}: the tile store has no views; ingest tiles first (skybatch run ingest-tiles)")
    n = int(g[views[0]]["tile_id"].shape[0])
    return n, max(1, int(attrs.get("chunk_tiles", n) or n))


def store_region_arcsec(store: str, storage_options: dict | None = None, max_tiles: int = 256) -> float:
    """The largest sky region (arcsec) inside every view's footprint, from the first ``max_tiles`` tiles."""
    from skybatch.models.tile_sky import auto_region_arcsec
    from skybatch.pipeline.tile_batches import read_tile_views

    n, _ = _n_tiles_and_chunk(store, storage_options)
    return auto_region_arcsec(read_tile_views(store, storage_options, 0, min(n, max_tiles)))


def read_sky_sample(store: str, bands: list[str], region_arcsec: float, size: int, max_tiles: int = 256,
                    storage_options: dict | None = None, max_centre_offset_arcsec: float = 1.0) -> dict[str, Any]:
    """The sky cube of an evenly spaced sample of at most ``max_tiles`` tiles (diagnostics; bounded memory)."""
    from skybatch.pipeline.tile_batches import read_sky_rows

    n, chunk = _n_tiles_and_chunk(store, storage_options)
    rows = np.unique(np.linspace(0, n - 1, min(n, max_tiles)).astype(np.int64))
    parts = []
    for c in np.unique(rows // chunk):
        sel = rows[(rows // chunk) == c]
        a, b = int(c * chunk), int(min(n, (c + 1) * chunk))
        parts.append(read_sky_rows(store, storage_options, a, b, sel, bands, region_arcsec, size,
                                   max_centre_offset_arcsec))
    out: dict[str, Any] = {k: np.concatenate([p[k] for p in parts]) for k in ("image", "noise", "present",
                                                                               "geometry", "tile_id")}
    out["set_aside"] = [s for p in parts for s in p["set_aside"]]
    return out


@dataclass
class TileTrainConfig:
    """Settings of ``skybatch run train --model tile-encoder`` (CLI flags / YAML keys).

    store: a tile store (``skybatch run ingest-tiles``); out: the model directory.
    region_arcsec: side of the sky region every sample covers in every band (arcsec); ``None`` =
        the largest square inside every view's footprint (from the first 256 tiles).
    image_size: the sky grid in px (grid scale = region_arcsec / image_size).
    max_centre_offset_arcsec: a plane whose WCS centre is farther than this from the tile's is set aside.
    patch, width, depth, heads: encoder architecture (see skybatch.models.TileEncoder).
    contrastive_weight, jepa_weight: weights of the InfoNCE and token-JEPA terms of the objective.
    steps, batch_size, learning_rate, checkpoint_every, seed: trainer settings.
    prefetch: chunk reads in flight ahead of training; diagnostic_tiles: tiles embedded for the card.
    cluster / progress: where the chunk reads run; a progress bar.
    """

    store: str
    out: str
    region_arcsec: float | None = None
    image_size: int = 32
    max_centre_offset_arcsec: float = 1.0
    patch: int = 4
    width: int = 64
    depth: int = 2
    heads: int = 4
    contrastive_weight: float = 1.0
    jepa_weight: float = 1.0
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3
    checkpoint_every: int = 100
    prefetch: int = 2
    diagnostic_tiles: int = 256
    seed: int = 0
    cluster: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(self, ("image_size", "patch", "width", "depth", "heads", "steps", "batch_size",
                                   "checkpoint_every", "prefetch", "diagnostic_tiles"))
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if self.region_arcsec is not None and not float(self.region_arcsec) > 0:
            raise ValueError(f"region_arcsec: must be a positive size in arcsec, got {self.region_arcsec!r}")
        if not self.max_centre_offset_arcsec > 0:
            raise ValueError(f"max_centre_offset_arcsec: must be > 0, got {self.max_centre_offset_arcsec!r}")


def train_tile_encoder(config: TileTrainConfig, client=None) -> dict[str, Any]:
    """Train the band-agnostic tile encoder on a tile store, streaming; returns paths and the card's metrics."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, config.cluster) as c:
            return train_tile_encoder(config, c)
    from skybatch.models import read_card, save
    from skybatch.models import tile_diagnostics as D
    from skybatch.models.tile_objective import TileJEPAObjective
    from skybatch.models.train import TrainConfig, fit
    from skybatch.pipeline.tile_batches import TileSkyBatches

    t0 = time.perf_counter()
    bands = store_bands(config.store)
    region = float(config.region_arcsec) if config.region_arcsec else store_region_arcsec(config.store)
    size = config.image_size
    batches = TileSkyBatches(config.store, bands, region, size, batch_size=config.batch_size, seed=config.seed,
                             prefetch=config.prefetch, client=client,
                             max_centre_offset_arcsec=config.max_centre_offset_arcsec)
    objective = TileJEPAObjective(
        tuple(bands), image_size=size, patch=config.patch, width=config.width, depth=config.depth,
        heads=config.heads, stem_hidden=config.width, readout_reduce=4, predictor_width=config.width,
        contrastive_weight=config.contrastive_weight, jepa_weight=config.jepa_weight,
    )
    tcfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       checkpoint_every=config.checkpoint_every, seed=config.seed, progress=config.progress)
    sky = {"region_arcsec": region, "image_size": size, "grid_scale_arcsec": region / size,
           "max_centre_offset_arcsec": config.max_centre_offset_arcsec}
    card = {"data": {"store": config.store, "n_tiles": batches.n_tiles, "n_tiles_trainable": batches.n_train,
                     "bands": bands, **sky},
            "job": asdict(config)}
    result = fit(objective, batches.make_batches, tcfg, config.out, card=card)
    if result.model_dir is None:
        raise RuntimeError(f"{config.out}: the trained encoder could not be saved as a model (see the log); its "
                           f"checkpoint is {result.checkpoint}; fix the cause and re-run to resume from it")
    encoder = result.model.encoder
    sample = read_sky_sample(config.store, bands, region, size, config.diagnostic_tiles,
                             max_centre_offset_arcsec=config.max_centre_offset_arcsec)
    image, noise, present, geometry = sample["image"], sample["noise"], sample["present"], sample["geometry"]
    glob, tokens = D.embed_tiles(encoder, image, noise, present, batch_size=32, return_tokens=True,
                                 geometry=geometry)
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
    set_aside = dict(collections.Counter(r for _, _, r in sample["set_aside"]))
    full = {**read_card(result.model_dir), **card,
            "diagnostics": {"metrics": metrics, "png": pngs, "n_tiles": int(len(present)),
                            "set_aside_planes": set_aside, "set_aside_during_training": dict(batches.set_aside)}}
    full["metrics"] = {**dict(full.get("metrics") or {}), **{k: v for k, v in metrics.items()
                                                            if isinstance(v, (int, float))}}
    for k in ("schema", "weights", "skybatch_version", "created"):
        full.pop(k, None)
    save(result.model_dir, result.model, full, overwrite=True)
    return {"model_dir": str(result.model_dir), "steps": int(result.step), "start_step": int(result.start_step),
            "metrics": metrics, "png": pngs, "region_arcsec": region, "grid_scale_arcsec": region / size,
            "set_aside": set_aside, "seconds": time.perf_counter() - t0, "exit_code": 0}


def _embed_chunk(task, store, options, encoder, sky, bands, batch, run_id):
    import zarr

    from skybatch.models import tile_diagnostics as D
    from skybatch.pipeline.tile_batches import read_sky_rows
    from skybatch.store.tile_store import open_tile_group

    k, a, b, fp = task
    cube = read_sky_rows(store, options, a, b, None, bands, sky["region_arcsec"], sky["image_size"],
                         sky.get("max_centre_offset_arcsec", 1.0))
    glob, _ = D.embed_tiles(encoder, cube["image"], cube["noise"], cube["present"], batch_size=batch,
                            geometry=cube["geometry"])
    g = open_tile_group(store, options, mode="r+")
    emb = g["embeddings"]
    assert isinstance(emb, zarr.Group)
    emb["embedding"][a:b] = np.asarray(glob, np.float32)
    emb["embedding_present"][a:b] = cube["present"]
    rec = {"chunk": k, "start": a, "stop": b, "fingerprint": fp, "run_id": run_id,
           "set_aside": [list(s) for s in cube["set_aside"]]}
    Manifest(store, options, stage="embed-tiles").mark_chunk_done(rec)
    return rec


def embed_tiles_store(store: str, model_dir: str, client=None, *, batch_size: int = 32,
                      storage_options: dict | None = None, cluster: str = "auto", progress: bool = True) -> dict:
    """Write per-tile, per-band global embeddings into the tile store's ``embeddings`` group.

    Every tile is embedded on the sky region and grid recorded in the model's card (the ones it
    was trained on). Planes set aside by the WCS checks are listed in the result (``set_aside``).
    """
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return embed_tiles_store(store, model_dir, c, batch_size=batch_size, storage_options=storage_options,
                                     progress=progress)
    from skybatch.models import load
    from skybatch.models.tile_encoder import TileEncoder
    from skybatch.pipeline.map_model import model_fingerprint
    from skybatch.store.tile_store import consolidate, open_tile_group, open_tile_store

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    model, card = load(path)
    encoder = getattr(model, "encoder", model)
    if card.get("kind") not in ("tile_jepa", "tile_encoder") or not isinstance(encoder, TileEncoder):
        raise ValueError(f"{path} holds a {card.get('kind')!r} model; embedding tiles needs a tile encoder")
    data = card.get("data", {})
    size = int(data.get("image_size", getattr(encoder, "image_size", 32)))
    region = data.get("region_arcsec") or store_region_arcsec(store, storage_options)
    sky = {"region_arcsec": float(region), "image_size": size,
           "max_centre_offset_arcsec": float(data.get("max_centre_offset_arcsec", 1.0))}
    bands = list(getattr(encoder, "bands", store_bands(store, storage_options)))
    views = open_tile_store(store, storage_options)
    any_view = next(iter(views.values()))
    n, chunk = _n_tiles_and_chunk(store, storage_options)
    mfp = model_fingerprint(encoder)
    sky_fp = f"{mfp}:{sky['region_arcsec']:.4f}:{size}"
    g = open_tile_group(store, storage_options, mode="r+")
    emb = g.require_group("embeddings")
    dim = int(encoder.width)
    if "embedding" in emb and dict(emb["embedding"].attrs).get("model_sha") != sky_fp:
        del emb["embedding"], emb["embedding_present"], emb["band_key"]
        m = Manifest(store, storage_options, stage="embed-tiles")
        if m.fs.exists(m.chunk_dir):
            m.fs.rm(m.chunk_dir, recursive=True)
    if "embedding" not in emb:
        emb.create_array("embedding", shape=(n, len(bands), dim), chunks=(chunk, len(bands), dim), dtype="float32",
                         fill_value=np.nan, dimension_names=["tile", "band_key", "embedding_dim"],
                         attributes={"long_name": "band-agnostic global tile embedding", "model": path,
                                     "model_sha": sky_fp, **sky})
        emb.create_array("embedding_present", shape=(n, len(bands)), chunks=(chunk, len(bands)), dtype="bool",
                         fill_value=False, dimension_names=["tile", "band_key"])
        bk = emb.create_array("band_key", shape=(len(bands),), dtype=str, fill_value="", dimension_names=["band_key"])
        bk[:] = np.array(bands, dtype=object)
        if "tile_id" in emb:
            del emb["tile_id"]
        tid = emb.create_array("tile_id", shape=(n,), dtype=str, fill_value="", dimension_names=["tile"])
        tid[:] = np.array([str(t) for t in any_view["tile_id"].values], dtype=object)
        emb["embedding"].attrs["coordinates"] = "tile_id"
    consolidate(store, storage_options)
    done = Manifest(store, storage_options, stage="embed-tiles").done_chunks()
    tasks = []
    for k, a, b in chunk_ranges(n, chunk):
        fp = chunk_fingerprint([(sky_fp, 0, 0)], a, b)
        if fp not in done.get(k, set()):
            tasks.append((k, a, b, fp))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    enc_f = client.scatter(encoder, broadcast=True, hash=False) if tasks else None
    out = run_chunk_tasks(client, tasks, _embed_chunk, store, storage_options, enc_f, sky, bands, batch_size, run_id,
                          key_prefix=f"embed-tiles-{run_id}", rows=lambda t: (t[1], t[2]), index=lambda t: t[0],
                          progress=progress, total_rows=n, desc="embed-tiles", unit="tiles")
    consolidate(store, storage_options)
    set_aside = [s for r in out.records for s in (r or {}).get("set_aside", [])]
    return {"store": store, "model": path, "n_tiles": n, "chunks_written": len(tasks) - len(out.failed),
            "failed_chunks": out.failed, "region_arcsec": sky["region_arcsec"], "set_aside": set_aside,
            "exit_code": 1 if out.failed else 0}
