"""Model jobs over spectra stores: train, score (anomalies), classify, embed.

- :func:`train` streams shuffled, prefetched batches from a store
  (:class:`~skybatch.pipeline.batches.StoreBatches`, validation held out by
  HEALPix pixel) into the checkpointing trainer (:func:`skybatch.models.fit`),
  then finishes the model card: for a VAE the anomaly reference fitted on
  training spectra, for a classifier the temperature fitted on the validation
  split with the ECE before/after and a reliability diagram.
- :func:`score`, :func:`classify` and :func:`embed` map the saved model over a
  store with :func:`~skybatch.pipeline.map_model.map_model` and write
  ``anomaly_score``, ``class_prob``/``class_pred`` and ``embedding`` on the
  ``spectrum`` dimension, plus catalogues and PNGs beside the model outputs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from skybatch.checks import check_positive_ints
from skybatch.pipeline.batches import StoreBatches
from skybatch.pipeline.map_model import apply_batched, map_model
from skybatch.pipeline.run_settings import StoreRunSettings
from skybatch.pipeline.toprows import TopRows, take_rows
from skybatch.store.spectra_store import consolidate, open_group

__all__ = [
    "TrainJobConfig", "TrainJobReport", "train", "score", "classify", "embed",
    "CalibratedClassifier", "VAEEmbedding", "MODEL_CHOICES",
]

#: ``--model`` choices of ``skybatch run train`` (the tile encoder registers itself in the tile job).
MODEL_CHOICES = ("vae", "classifier")
#: Spectra scored per block (rounded to whole store chunks): the score job's driver memory is a block's.
SCORE_BLOCK_ROWS = 1 << 16


class CalibratedClassifier(eqx.Module):
    """A classifier with its fitted temperature: ``(flux, ivar) -> (class_prob, class_index)``."""

    classifier: eqx.Module
    temperature: jax.Array

    def __call__(self, flux, ivar):
        logits = self.classifier(flux, ivar)
        p = jax.nn.softmax(logits / self.temperature)
        return p, jnp.argmax(p).astype(jnp.int32)


class VAEEmbedding(eqx.Module):
    """The VAE's latent mean as an embedding: ``(flux, ivar) -> mu``."""

    vae: eqx.Module

    def __call__(self, flux, ivar):
        return self.vae.encode(flux, ivar)[0]


@dataclass
class TrainJobConfig(StoreRunSettings):
    """Settings of ``skybatch run train`` (one-to-one with CLI flags / YAML keys).

    store: the (preprocessed) spectra store to train on.
    model: ``vae`` (spectral InfoVAE-MMD) or ``classifier`` (1-D CNN on GALAXY/QSO/STAR).
    out: the model directory (checkpoints, loss curves, ``model/`` with weights + card).
    steps, batch_size, learning_rate, optimizer, weight_decay, checkpoint_every,
    validate_every, seed: trainer settings (see :class:`skybatch.models.TrainConfig`).
    val_fraction: fraction of HEALPix pixels held out for validation.
    split_nside: HEALPix nside of the train/validation split (64 = the stored pixel).
    latent_dim, width, depth: VAE architecture; label: the class column for the classifier.
    prefetch: chunks Dask reads ahead while training.
    cluster, progress, storage_options: see :class:`~skybatch.pipeline.run_settings.StoreRunSettings`.
    """

    store: str
    model: str
    out: str
    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    checkpoint_every: int = 200
    validate_every: int = 0
    seed: int = 0
    val_fraction: float = 0.2
    split_nside: int = 64
    latent_dim: int = 8
    width: int = 256
    depth: int = 2
    label: str = "spectype"
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.model not in MODEL_CHOICES:
            raise ValueError(f"model: {self.model!r} is not one of {MODEL_CHOICES} (--model)")
        check_positive_ints(self, ("steps", "batch_size", "checkpoint_every", "latent_dim", "width", "depth", "split_nside"))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in (0, 1), got {self.val_fraction}")


@dataclass
class TrainJobReport:
    """Outcome of :func:`train`: where the model is, steps, losses and the card's metrics."""

    model_dir: str
    out: str
    steps: int
    start_step: int
    final_train_loss: float
    final_val_loss: float | None
    metrics: dict[str, Any]
    loss_curve: str
    seconds: float
    n_train: int
    n_val: int

    exit_code: int = 0

    def summary(self) -> str:
        m = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return (f"model: {self.model_dir}\nsteps: {self.steps} (resumed from {self.start_step}); "
                f"train loss {self.final_train_loss:.4g}, val loss {self.final_val_loss}\n"
                f"spectra: {self.n_train} train, {self.n_val} validation (held out by HEALPix pixel)\n"
                f"metrics: {m}\nloss curve: {self.loss_curve}")


def _store_card(store: str, options: dict | None) -> dict[str, Any]:
    g = open_group(store, options, mode="r")
    prov = dict(g.attrs.get("provenance", {}))
    return {"store": store, "manifest": g.attrs.get("manifest"), "n_spectra": int(g["flux"].shape[0]),
            "n_wavelength": int(g["flux"].shape[1]), "grid": dict(g.attrs.get("grid", {})),
            "wavelength_frame": g.attrs.get("wavelength_frame"),
            "preprocessing": dict(g.attrs.get("preprocessing", {})).get("recipe"),
            "sources_sha256": prov.get("sources_sha256")}


def _predict_rows(model, method, batches: StoreBatches, rows: np.ndarray, batch_size: int, inputs=("flux", "ivar")):
    data = batches.read(rows)
    return apply_batched(model, method, [data[k] for k in inputs], batch_size), data


def train(config: TrainJobConfig, client=None) -> TrainJobReport:
    """Train a model on a store (see :class:`TrainJobConfig`); resumes from ``config.out`` if it holds checkpoints."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, config.cluster) as c:
            return train(config, c)
    from skybatch import models as M

    t0 = time.perf_counter()
    opts = config.storage_options or None
    g = open_group(config.store, opts, mode="r")
    nwave = int(g["flux"].shape[1])
    classes = list(M.CLASS_NAMES)
    label_map = {c: i for i, c in enumerate(classes)}
    batches = StoreBatches(
        config.store, inputs=("flux", "ivar"), batch_size=config.batch_size,
        label=config.label if config.model == "classifier" else None,
        label_map=label_map if config.model == "classifier" else None,
        val_fraction=config.val_fraction, split_nside=config.split_nside, seed=config.seed,
        prefetch=config.prefetch, client=client, storage_options=opts,
    )
    if config.model == "vae":
        objective: M.Objective[Any] = M.VAEObjective(nwave, latent_dim=config.latent_dim, width=config.width, depth=config.depth)
    else:
        objective = M.ClassifierObjective(nwave, class_names=tuple(classes))
    tcfg = M.TrainConfig(
        steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
        optimizer=config.optimizer, weight_decay=config.weight_decay, checkpoint_every=config.checkpoint_every,
        validate_every=config.validate_every, seed=config.seed, progress=config.progress,
    )
    val = batches.val_batches(max_rows=4096)
    card = {"data": {**_store_card(config.store, opts), "n_train": batches.n_train, "n_val": batches.n_val,
                     "split": {"by": "healpix", "nside": config.split_nside, "val_fraction": config.val_fraction,
                               "seed": config.seed}},
            "job": {k: v for k, v in asdict(config).items() if k != "storage_options"}}
    result = M.fit(objective, batches.make_batches, tcfg, config.out, val_batches=(lambda: val) if val else None,
                   card=card)
    model = result.model
    metrics: dict[str, Any] = {}
    model_dir = str(result.model_dir)
    if config.model == "vae":
        rows = batches.train_rows()
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(rows, size=min(len(rows), 20000), replace=False))
        (mu, chi2), _ = _predict_rows(model, "anomaly_terms", batches, rows, config.batch_size)
        # Latent density: a Gaussian mixture with K picked by BIC (a mixed survey's latents are
        # multi-modal); spectra without good pixels are left out of the fit.
        ref = M.fit_anomaly_reference(chi2, mu, n_components="bic", seed=config.seed)
        card["anomaly"] = ref.to_dict()
        metrics["train_median_chi2_per_pixel"] = float(np.nanmedian(chi2))
        metrics["latent_density_components"] = ref.density.n_components
    else:
        rows = batches.val_rows
        (logits,), data = _predict_rows(model, None, batches, rows, config.batch_size)
        labels = data["label"]
        ok = labels >= 0
        T = M.fit_temperature(logits[ok], labels[ok])
        p0 = M.softmax(logits[ok])
        p1 = M.softmax(logits[ok] / T)
        ece0 = M.expected_calibration_error(p0, labels[ok])
        ece1 = M.expected_calibration_error(p1, labels[ok])
        acc = float(np.mean(np.argmax(p1, axis=1) == labels[ok]))
        png = os.path.join(config.out, "reliability.png")
        M.plot_reliability_diagram({"before": M.reliability_diagram(p0, labels[ok]),
                                    "after temperature scaling": M.reliability_diagram(p1, labels[ok])}, png)
        card["calibration"] = {"temperature": float(T), "ece_before": float(ece0), "ece_after": float(ece1),
                               "n_val": int(ok.sum()), "val_accuracy": acc, "reliability_png": png,
                               "class_names": classes}
        metrics.update(temperature=float(T), ece_before=float(ece0), ece_after=float(ece1), val_accuracy=acc)
    full = {**M.read_card(model_dir), **card}
    full["metrics"] = {**dict(full.get("metrics") or {}), **metrics}
    for k in ("schema", "weights", "skybatch_version", "created"):
        full.pop(k, None)
    M.save(model_dir, model, full, overwrite=True)
    return TrainJobReport(
        model_dir=model_dir, out=config.out, steps=int(result.step), start_step=int(result.start_step),
        final_train_loss=float(result.final_train_loss), final_val_loss=result.final_val_loss, metrics=metrics,
        loss_curve=str(result.loss_curve), seconds=time.perf_counter() - t0, n_train=batches.n_train,
        n_val=batches.n_val,
    )


def _load(model_dir: str, kind: str):
    from skybatch import models as M

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    model, card = M.load(path)
    if card.get("kind") != kind:
        raise ValueError(f"{path} holds a {card.get('kind')!r} model; this job needs {kind!r}")
    return model, card, path


def _check_nwave(store: str, card: dict, opts) -> None:
    g = open_group(store, opts, mode="r")
    nw = int(g["flux"].shape[1])
    want = card.get("data", {}).get("n_wavelength")
    if want is not None and int(want) != nw:
        raise ValueError(
            f"{store} has {nw} wavelength pixels but the model was trained on {want}; preprocess the store with the "
            f"model's recipe first: {json.dumps(card.get('data', {}).get('preprocessing'))}"
        )


def score(store: str, model_dir: str, top: int = 100, client=None, *, batch_size: int = 1024,
          storage_options: dict | None = None, cluster: str = "auto", progress: bool = True,
          out_dir: str | None = None, select=None, method: str = "vae") -> dict[str, Any]:
    """Write ``anomaly_score`` (and its parts) for every spectrum; a Parquet + PNG of the top ``top``.

    ``method="vae"`` (default): the VAE's ivar-weighted reconstruction chi^2 per pixel and the latent
    density of the training spectra (:mod:`skybatch.models.anomaly`), as robust z-scores over the store.
    ``method="population"``: each spectrum judged within its population (SPECTYPE and redshift bin):
    per-class PCA misfit, strongest local residual and coefficient rarity plus the VAE's terms
    (:func:`skybatch.pipeline.anomaly_score.score_population`), with one PNG per top spectrum and the
    odd line regions named. ``select`` (e.g. ``["spectype=QSO"]``) ranks only the matching rows and
    implies ``method="population"``.
    """
    if method not in ("vae", "population"):
        raise ValueError(f"method: {method!r} is not one of ('vae', 'population')")
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return score(store, model_dir, top, c, batch_size=batch_size, storage_options=storage_options,
                         progress=progress, out_dir=out_dir, select=select, method=method)
    from skybatch.store.lock import StoreLock

    with StoreLock(store, storage_options, job="score"):  # one writer from map_model to the score variables
        if select or method == "population":
            return _score_population(store, model_dir, top, client, batch_size, storage_options, progress,
                                     out_dir, select)
        return _score(store, model_dir, top, client, batch_size, storage_options, progress, out_dir)


def _score_population(store, model_dir, top, client, batch_size, storage_options, progress, out_dir,
                      select) -> dict[str, Any]:
    from skybatch.pipeline.anomaly_score import score_population, select_rows

    model, card, path = _load(model_dir, "spectrum_vae")
    if "anomaly" not in card:
        raise ValueError(f"{path}: the card has no anomaly reference; train it with `skybatch run train --model vae`")
    _check_nwave(store, card, storage_options)
    select_rows(open_group(store, storage_options, mode="r"), select)  # bad --select fails before the VAE pass
    rep = map_model(store, model, method="anomaly_terms", inputs=("flux", "ivar"),
                    outputs=("latent", "recon_chi2_per_pixel"), batch_size=batch_size, client=client,
                    storage_options=storage_options, overwrite=True, progress=progress)
    out = score_population(store, storage_options, model=model, card=card, path=path, top=top, out_dir=out_dir,
                           select=select)
    n = int(open_group(store, storage_options, mode="r")["flux"].shape[0])
    return {"store": store, "model": path, "n_spectra": n, **out, "map_model": asdict(rep),
            "exit_code": rep.exit_code}


def _score(store, model_dir, top, client, batch_size, storage_options, progress, out_dir) -> dict[str, Any]:
    from skybatch import models as M

    model, card, path = _load(model_dir, "spectrum_vae")
    if "anomaly" not in card:
        raise ValueError(f"{path}: the card has no anomaly reference; train it with `skybatch run train --model vae`")
    _check_nwave(store, card, storage_options)
    rep = map_model(store, model, method="anomaly_terms", inputs=("flux", "ivar"),
                    outputs=("latent", "recon_chi2_per_pixel"), batch_size=batch_size, client=client,
                    storage_options=storage_options, overwrite=True, progress=progress)
    g = open_group(store, storage_options)
    ref = M.AnomalyReference.from_dict(card["anomaly"])
    n = int(g["recon_chi2_per_pixel"].shape[0])
    chunk = int(g.attrs["chunk_spectra"])
    parts = {"anomaly_score": "score", "anomaly_misfit_z": "z_misfit", "anomaly_rarity_z": "z_rarity"}
    arrays = {}
    for name in parts:
        if name in g:
            del g[name]
        arrays[name] = g.create_array(name, shape=(n,), chunks=(chunk,), dtype="float64", fill_value=np.nan,
                                      dimension_names=["spectrum"],
                                      attributes={"long_name": "anomaly score (sum of robust z of misfit and rarity)"
                                                  if name == "anomaly_score" else name.replace("_", " "),
                                                  "model": path, "model_sha256": card.get("weights", {}).get("sha256")})
    best = TopRows(top)
    block = chunk * max(1, SCORE_BLOCK_ROWS // chunk)  # whole chunks: each write fills its chunks
    for a in range(0, n, block):  # scores block by block: the driver holds a block and the top rows
        b = min(n, a + block)
        chi2 = np.asarray(g["recon_chi2_per_pixel"][a:b])
        s = {k: np.asarray(v) for k, v in M.anomaly_score(chi2, np.asarray(g["latent"][a:b]), ref).items()}
        for name, key in parts.items():
            arrays[name][a:b] = np.nan_to_num(s[key], nan=-np.inf) if name == "anomaly_score" else s[key]
        best.add(a, s["score"], misfit_z=s["z_misfit"], rarity_z=s["z_rarity"], chi2_per_pixel=chi2)
    consolidate(store, storage_options)
    order, top_score, terms = best.ranked()
    import pandas as pd

    cols = {k: take_rows(g[k], order) for k in ("targetid", "source", "source_row", "z", "spectype")}
    cat = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "spectrum": order, **cols,
                        "anomaly_score": top_score, "misfit_z": terms["misfit_z"],
                        "rarity_z": terms["rarity_z"], "chi2_per_pixel": terms["chi2_per_pixel"]})
    out_dir = out_dir or (store.rstrip("/") + ".outputs")
    os.makedirs(out_dir, exist_ok=True)
    parquet = os.path.join(out_dir, "anomalies_top.parquet")
    cat.to_parquet(parquet, index=False)
    png = os.path.join(out_dir, "anomalies_top.png")
    _plot_top(store, storage_options, model, order[: min(9, len(order))], cat, png)
    return {"store": store, "model": path, "n_spectra": n, "top_parquet": parquet, "top_png": png,
            "map_model": asdict(rep), "exit_code": rep.exit_code}


@eqx.filter_jit
def _reconstruct(model, flux, ivar):
    """The VAE's reconstruction (n, n_wavelength) of ``flux``/``ivar`` (n, n_wavelength), from the latent means."""
    return jax.vmap(lambda f, i: model.decode(model.encode(f, i)[0]))(flux, ivar)


def _plot_top(store, opts, model, rows, cat, png) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no global figure registry or backend switch

    g = open_group(store, opts, mode="r")
    wl = np.asarray(g["wavelength"][:])
    srt = np.sort(rows)
    flux = np.asarray(g["flux"].get_orthogonal_selection((srt, slice(None))))
    ivar = np.asarray(g["ivar"].get_orthogonal_selection((srt, slice(None))))
    # one compiled function, not op-by-op dispatch (each op its own XLA compile: ~4x the driver CPU per run)
    recon = np.asarray(_reconstruct(model, flux, ivar))
    pos = {r: i for i, r in enumerate(srt)}
    n = len(rows)
    h = 1.8 * max(1, n)  # inches; fixed margins, not tight_layout (a second full draw, ~40% of the plot's time)
    fig = Figure(figsize=(10, h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, n), 1, squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.5 / h, top=1 - 0.3 / h, hspace=0.45)
    for ax, r, (_, row) in zip(axes[:, 0], rows, cat.head(n).iterrows()):
        i = pos[r]
        good = ivar[i] > 0
        ax.plot(wl[good], flux[i][good], lw=0.5, color="k", label="flux")
        ax.plot(wl, recon[i], lw=0.8, color="C3", label="VAE reconstruction")
        ax.set_title(f"#{int(row['rank'])} targetid {int(row['targetid'])}  score {row['anomaly_score']:.1f}  "
                     f"z {row['z']:.3f} {row['spectype']}", fontsize=8,
                     y=1.0, pad=3)  # a fixed title position: no per-draw bounding-box search
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("wavelength [Å]")
    fig.savefig(png, dpi=90)


def classify(store: str, model_dir: str, client=None, *, batch_size: int = 1024, storage_options: dict | None = None,
             cluster: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Write calibrated ``class_prob`` (spectrum, class) and ``class_pred`` (index into ``class``)."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return classify(store, model_dir, c, batch_size=batch_size, storage_options=storage_options,
                            progress=progress)
    from skybatch.store.lock import StoreLock

    with StoreLock(store, storage_options, job="classify"):
        return _classify(store, model_dir, client, batch_size, storage_options, progress)


def _classify(store, model_dir, client, batch_size, storage_options, progress) -> dict[str, Any]:
    model, card, path = _load(model_dir, "spectrum_classifier")
    _check_nwave(store, card, storage_options)
    cal = card.get("calibration", {})
    T = float(cal.get("temperature", 1.0))
    names = list(cal.get("class_names") or card.get("arch", {}).get("class_names") or [])
    wrapped = CalibratedClassifier(model, jnp.asarray(T, jnp.float32))
    attrs = {"class_prob": {"long_name": "calibrated class probability", "temperature": T, "model": path},
             "class_pred": {"long_name": "most probable class (index into the class coordinate)",
                            "flag_values": list(range(len(names))), "flag_meanings": " ".join(names)}}
    rep = map_model(store, wrapped, inputs=("flux", "ivar"), outputs=("class_prob", "class_pred"),
                    output_dims={"class_prob": ("class",)}, output_attrs=attrs, batch_size=batch_size,
                    client=client, storage_options=storage_options, overwrite=True, progress=progress)
    g = open_group(store, storage_options)
    if names and "class" not in g:
        c = g.create_array("class", shape=(len(names),), dtype=str, dimension_names=["class"], fill_value="")
        c[:] = np.array(names, dtype=object)
        consolidate(store, storage_options)
    return {"store": store, "model": path, "temperature": T, "classes": names, "map_model": asdict(rep),
            "exit_code": rep.exit_code}


def embed(store: str, model_dir: str, client=None, *, batch_size: int = 1024, storage_options: dict | None = None,
          cluster: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Write ``embedding`` (spectrum, embedding_dim): the VAE's latent mean of every spectrum."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return embed(store, model_dir, c, batch_size=batch_size, storage_options=storage_options,
                         progress=progress)
    model, card, path = _load(model_dir, "spectrum_vae")
    _check_nwave(store, card, storage_options)
    rep = map_model(store, VAEEmbedding(model), inputs=("flux", "ivar"), outputs=("embedding",),
                    output_attrs={"embedding": {"long_name": "VAE latent mean", "model": path}},
                    batch_size=batch_size, client=client, storage_options=storage_options, overwrite=True,
                    progress=progress)
    return {"store": store, "model": path, "map_model": asdict(rep), "exit_code": rep.exit_code}
