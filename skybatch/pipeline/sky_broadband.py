"""The ``sky-broadband`` jobs: train the conditions -> V, g, r, z model, and write its predictions.

:func:`train_broadband` measures every spectrum's V, g, r, z AB mag/arcsec² by synthetic
photometry (one Dask task per chunk), holds exposures out by HEALPix pixel, trains
:class:`~skybatch.models.sky_broadband.SkyBroadbandMLP` with the checkpointing trainer
(:func:`skybatch.models.fit`: checkpoints, resume), and writes into the model card the
standardisation statistics, the RMS per band on the held-out exposures next to the RMS of
predicting the training mean, and a residual plot (``residuals.png``).

:func:`predict_broadband` maps the model over a store (``map_model``: one task per chunk, resumable)
and writes ``sky_mag_pred`` (spectrum, band) plus ``sky_mag_bands``; a Parquet of predicted vs
measured magnitudes and the residual plot go beside the store outputs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skybatch.checks import check_positive_ints
from skybatch.pipeline.run_settings import StoreRunSettings
from skybatch.pipeline.sky_data import TableBatches, condition_table, heldout_mask, measure_magnitudes
from skybatch.store.spectra_store import consolidate, open_group

__all__ = ["SkyBroadbandConfig", "train_broadband", "predict_broadband", "load_broadband"]


@dataclass
class SkyBroadbandConfig(StoreRunSettings):
    """Settings of ``skybatch run train --model sky-broadband``.

    store: the sky spectra store (an ingested sky VAC); out: model directory.
    conditions: condition columns (METADATA names); default
        :data:`skybatch.models.sky_broadband.BROADBAND_CONDITIONS`.
    steps, batch_size, learning_rate, checkpoint_every, seed: trainer settings.
    width, depth: the MLP; val_fraction: share of HEALPix pixels held out.
    """

    store: str
    out: str
    conditions: tuple[str, ...] | None = None
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 3e-3
    checkpoint_every: int = 500
    seed: int = 0
    width: int = 64
    depth: int = 3
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_positive_ints(self, ("steps", "batch_size", "checkpoint_every", "width", "depth"))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in (0, 1), got {self.val_fraction}")


def _rms(resid: np.ndarray) -> list[float]:
    return [float(np.sqrt(np.nanmean(r**2))) for r in np.asarray(resid).T]


def plot_residuals(measured: np.ndarray, predicted: np.ndarray, bands, png: str, title: str = "") -> str:
    """Predicted - measured vs measured, one panel per band (held-out exposures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bands), figsize=(3.2 * len(bands), 3), squeeze=False)
    for i, (ax, b) in enumerate(zip(axes[0], bands)):
        r = predicted[:, i] - measured[:, i]
        ax.scatter(measured[:, i], r, s=4, alpha=0.6)
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xlabel(f"measured {b} [AB mag/arcsec²]")
        ax.set_title(f"{b}: RMS {np.sqrt(np.nanmean(r**2)):.3f} mag", fontsize=9)
    axes[0, 0].set_ylabel("predicted − measured [mag]")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def train_broadband(config: SkyBroadbandConfig, client=None) -> dict[str, Any]:
    """Train the broadband model (see the module docstring); resumes from ``config.out``."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, config.cluster) as c:
            return train_broadband(config, c)
    import jax

    from skybatch import models as M
    from skybatch.models.sky_broadband import BROADBAND_CONDITIONS, BroadbandPredictor, SkyBroadbandObjective, Standardiser
    from skybatch.models.sky_photometry import BAND_FILTERS, SKY_BANDS, band_coverage

    t0 = time.perf_counter()
    opts = config.storage_options or None
    cols = tuple(config.conditions or BROADBAND_CONDITIONS)
    x = condition_table(config.store, cols, opts)
    mags = measure_magnitudes(config.store, client, SKY_BANDS, opts)
    val = heldout_mask(config.store, config.val_fraction, config.seed, opts)
    usable = np.all(np.isfinite(x), axis=1) & np.all(np.isfinite(mags), axis=1)
    tr, va = np.flatnonzero(usable & ~val), np.flatnonzero(usable & val)
    if len(tr) < config.batch_size or len(va) == 0:
        raise ValueError(f"{config.store}: {len(tr)} training and {len(va)} held-out exposures with finite "
                         f"conditions and magnitudes; need >= batch_size ({config.batch_size}) and >= 1 "
                         "(lower --batch-size or ingest more spectra)")
    xs, ys = Standardiser.fit(x[tr], cols), Standardiser.fit(mags[tr], SKY_BANDS)
    table = TableBatches({"cond": xs.apply(x[tr]), "mag": ys.apply(mags[tr])}, config.batch_size, config.seed)
    val_b = table.fixed_batches({"cond": xs.apply(x[va]), "mag": ys.apply(mags[va])})
    objective = SkyBroadbandObjective(len(cols), len(SKY_BANDS), config.width, config.depth)
    tcfg = M.TrainConfig(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                         optimizer="adam", lr_schedule="cosine", checkpoint_every=config.checkpoint_every,
                         seed=config.seed, progress=config.progress)
    card = {"conditioning": xs.to_dict(), "magnitudes": ys.to_dict(),
            "photometry": {"bands": list(SKY_BANDS), "filters": {b: BAND_FILTERS[b] for b in SKY_BANDS},
                           "source": "speclite.filters", "units": "AB mag/arcsec^2",
                           "band_coverage": band_coverage(np.asarray(open_group(config.store, opts, mode='r')['wavelength'][:]))},
            "data": {"store": config.store, "n_train": int(len(tr)), "n_heldout": int(len(va)),
                     "split": {"by": "healpix", "nside": 64, "val_fraction": config.val_fraction, "seed": config.seed}},
            "job": {k: v for k, v in asdict(config).items() if k != "storage_options"}}
    result = M.fit(objective, table.make_batches, tcfg, config.out, val_batches=lambda: val_b, card=card)
    model_dir = str(result.model_dir)
    pred = np.asarray(jax.vmap(BroadbandPredictor.from_card(result.model, card))(*x[va].T.astype(np.float32)))
    rms = _rms(pred - mags[va])
    base = _rms(np.nanmean(mags[tr], axis=0)[None, :] - mags[va])
    png = plot_residuals(mags[va], pred, SKY_BANDS, os.path.join(config.out, "residuals.png"),
                         title=f"sky-broadband, {len(va)} held-out exposures")
    metrics = {f"heldout_rms_{b}": r for b, r in zip(SKY_BANDS, rms)}
    metrics.update({f"baseline_mean_rms_{b}": r for b, r in zip(SKY_BANDS, base)})
    full = {**M.read_card(model_dir), **card}
    full["metrics"] = {**dict(full.get("metrics") or {}), **metrics}
    full["residuals_png"] = png
    for k in ("schema", "weights", "skybatch_version", "created"):
        full.pop(k, None)
    M.save(model_dir, result.model, full, overwrite=True)
    return {"model_dir": model_dir, "out": config.out, "steps": int(result.step), "start_step": int(result.start_step),
            "heldout_rms": dict(zip(SKY_BANDS, rms)), "baseline_rms": dict(zip(SKY_BANDS, base)),
            "residuals_png": png, "loss_curve": str(result.loss_curve), "n_train": int(len(tr)),
            "n_heldout": int(len(va)), "seconds": time.perf_counter() - t0, "exit_code": 0}


def load_broadband(model_dir: str):
    """(BroadbandPredictor, card, path) of a saved ``sky_broadband`` model (dir or its ``model/``)."""
    from skybatch import models as M
    from skybatch.models.sky_broadband import BroadbandPredictor, SkyBroadbandMLP

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    mlp, card = M.load(path)
    if card.get("kind") != "sky_broadband" or not isinstance(mlp, SkyBroadbandMLP):
        raise ValueError(f"{path} holds a {card.get('kind')!r} model, not a sky-broadband model")
    return BroadbandPredictor.from_card(mlp, card), card, path


def predict_broadband(store: str, model_dir: str, client=None, *, batch_size: int = 1024,
                      storage_options: dict | None = None, cluster: str = "auto", progress: bool = True,
                      out_dir: str | None = None) -> dict[str, Any]:
    """Write ``sky_mag_pred`` (spectrum, band) predicted from the store's condition columns."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return predict_broadband(store, model_dir, c, batch_size=batch_size, storage_options=storage_options,
                                     progress=progress, out_dir=out_dir)
    from skybatch.pipeline.map_model import map_model

    predictor, card, path = load_broadband(model_dir)
    cols = [c.lower() for c in card["conditioning"]["columns"]]
    bands = list(card["photometry"]["bands"])
    condition_table(store, cols, storage_options, rows=np.zeros(0, np.int64))  # names missing columns
    rep = map_model(store, predictor, inputs=tuple(cols), outputs=("sky_mag_pred",),
                    output_dims={"sky_mag_pred": ("band",)},
                    output_attrs={"sky_mag_pred": {"long_name": "predicted sky surface brightness",
                                                   "units": "AB mag/arcsec^2", "bands": bands, "model": path}},
                    batch_size=batch_size, client=client, storage_options=storage_options, overwrite=True,
                    progress=progress)
    g = open_group(store, storage_options)
    if "band" not in g:
        b = g.create_array("band", shape=(len(bands),), dtype=str, dimension_names=["band"], fill_value="")
        b[:] = np.array(bands, dtype=object)
        consolidate(store, storage_options)
    pred = np.asarray(g["sky_mag_pred"][:])
    measured = measure_magnitudes(store, client, tuple(bands), storage_options)
    import pandas as pd

    out_dir = out_dir or (store.rstrip("/") + ".outputs")
    os.makedirs(out_dir, exist_ok=True)
    cat = pd.DataFrame({"spectrum": np.arange(len(pred)), "targetid": np.asarray(g["targetid"][:]),
                        **{f"pred_{b}": pred[:, i] for i, b in enumerate(bands)},
                        **{f"measured_{b}": measured[:, i] for i, b in enumerate(bands)}})
    parquet = os.path.join(out_dir, "sky_broadband.parquet")
    cat.to_parquet(parquet, index=False)
    png = plot_residuals(measured, pred, bands, os.path.join(out_dir, "sky_broadband_residuals.png"),
                         title=f"sky-broadband on {store}")
    return {"store": store, "model": path, "n_spectra": len(pred), "rms": dict(zip(bands, _rms(pred - measured))),
            "top_parquet": parquet, "top_png": png, "map_model": asdict(rep), "exit_code": rep.exit_code}
