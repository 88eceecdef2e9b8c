"""The ``sky-ldm`` training job: a conditional latent diffusion model for one sky selection.

1. The VAE (``--vae``, a ``spectrum_vae`` trained on the same kind of store) encodes every spectrum:
   :func:`~skybatch.pipeline.map_model.map_model` writes its latent mean as ``sky_vae_latent``
   (spectrum, latent) into the store, one Dask task per chunk, resumable; a store already encoded
   by the same VAE is not encoded again.
2. The selection's rows (desisky's dark / moon / twilight cuts) are split into training and
   held-out exposures by HEALPix pixel; conditions and latents are standardised with the training
   rows' statistics (stored in the card and in the model).
3. :class:`~skybatch.models.sky_diffusion.LatentDiffusionObjective` trains the 1-D U-Net with the
   checkpointing trainer (:func:`skybatch.models.fit`: checkpoints, resume after a kill, loss
   curves); batches of (latent, conditions) rows are drawn from the selection's table (8 + d floats
   per exposure, read from the store once) in a stream fixed by the seed and the step.
4. The EMA denoiser, the VAE and the statistics are saved together as a ``sky_ldm`` model in
   ``OUT/model`` (see :class:`~skybatch.models.sky_diffusion.SkyLDM`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skybatch.checks import check_positive_ints
from skybatch.pipeline.run_settings import StoreRunSettings
from skybatch.pipeline.sky_data import TableBatches, condition_table, heldout_mask, read_rows, selection_rows
from skybatch.store.spectra_store import open_group

__all__ = ["SkyLDMConfig", "train_sky_ldm", "LDM_CONDITIONS", "encode_latents", "load_vae", "load_sky_ldm"]

#: desisky's conditioning columns per selection (METADATA names).
LDM_CONDITIONS: dict[str, tuple[str, ...]] = {
    "dark": ("OBSALT", "TRANSPARENCY_GFA", "SUNALT", "SOLFLUX", "ECLLON", "ECLLAT", "GALLON", "GALLAT"),
    "moon": ("OBSALT", "TRANSPARENCY_GFA", "SUNALT", "MOONALT", "MOONSEP", "MOONFRAC"),
    "twilight": ("OBSALT", "TRANSPARENCY_GFA", "SUNALT", "SUNSEP"),
}
LATENT_VAR = "sky_vae_latent"


@dataclass
class SkyLDMConfig(StoreRunSettings):
    """Settings of ``skybatch run train --model sky-ldm``.

    store: the sky spectra store; vae: the VAE model directory; selection: dark | moon | twilight;
    out: model directory. conditions: condition columns (default :data:`LDM_CONDITIONS`).
    steps, batch_size, learning_rate, checkpoint_every, seed: trainer; channels, emb_dim: U-Net;
    cond_dropout: classifier-free-guidance dropout; ema_decay; val_fraction: HEALPix pixels held out.
    """

    store: str = ""
    vae: str = ""
    selection: str = ""
    out: str = ""
    conditions: tuple[str, ...] | None = None
    steps: int = 4000
    batch_size: int = 128
    learning_rate: float = 1e-3
    checkpoint_every: int = 500
    seed: int = 0
    channels: tuple[int, int] = (32, 64)
    emb_dim: int = 64
    cond_dropout: float = 0.1
    ema_decay: float = 0.999
    val_fraction: float = 0.2
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("store", "out"):
            if not getattr(self, name):
                raise ValueError(f"{name}: required (--{name})")
        if self.selection not in LDM_CONDITIONS:
            raise ValueError(f"selection: {self.selection!r} is not one of {sorted(LDM_CONDITIONS)} (--selection)")
        if not self.vae:
            raise ValueError("vae: the sky-ldm model needs --vae MODEL_DIR (train one with --model vae on the store)")
        check_positive_ints(self, ("steps", "batch_size", "checkpoint_every", "emb_dim"))
        ch = tuple(int(c) for c in self.channels)
        if len(ch) != 2 or min(ch) < 1:
            raise ValueError(f"channels: the U-Net takes two positive widths (e.g. 32,64), got {self.channels!r}")
        self.channels = (ch[0], ch[1])


def _model_path(model_dir: str) -> str:
    return model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")


def load_vae(model_dir: str):
    """(SpectrumVAE, card, path) of a saved VAE."""
    from skybatch import models as M

    path = _model_path(model_dir)
    vae, card = M.load(path)
    if card.get("kind") != "spectrum_vae":
        raise ValueError(f"--vae {model_dir}: {path} holds a {card.get('kind')!r} model, not a spectrum_vae")
    return vae, card, path


def load_sky_ldm(model_dir: str):
    """(SkyLDM, card, path) of a saved ``sky_ldm`` model."""
    import skybatch.models.sky_diffusion  # noqa: F401  (registers the kinds)
    from skybatch import models as M

    path = _model_path(model_dir)
    model, card = M.load(path)
    if card.get("kind") != "sky_ldm":
        raise ValueError(f"{path} holds a {card.get('kind')!r} model, not a sky-ldm model (train one with "
                         "`skybatch run train --model sky-ldm`)")
    return model, card, path


def encode_latents(store: str, vae, client, *, batch_size: int = 256, storage_options: dict | None = None,
                   progress: bool = True, vae_path: str = ""):
    """Write the VAE latent mean of every spectrum as ``sky_vae_latent`` (spectrum, latent) via map_model."""
    from skybatch.pipeline.map_model import map_model
    from skybatch.pipeline.modeling import VAEEmbedding

    return map_model(store, VAEEmbedding(vae), inputs=("flux", "ivar"), outputs=(LATENT_VAR,),
                     output_dims={LATENT_VAR: ("latent",)},
                     output_attrs={LATENT_VAR: {"long_name": "VAE latent mean (sky-ldm training input)",
                                                "model": vae_path}},
                     batch_size=batch_size, client=client, storage_options=storage_options, overwrite=True,
                     progress=progress)


def train_sky_ldm(config: SkyLDMConfig, client=None) -> dict[str, Any]:
    """Train a sky latent diffusion model (see the module docstring); resumes from ``config.out``."""
    if client is None:
        from skybatch.cluster import client_for

        with client_for(None, config.cluster) as c:
            return train_sky_ldm(config, c)
    from skybatch import models as M
    from skybatch.models.sky_broadband import Standardiser
    from skybatch.models.sky_diffusion import LatentDiffusionObjective, SkyLDM

    t0 = time.perf_counter()
    opts = config.storage_options or None
    vae, vcard, vpath = load_vae(config.vae)
    g = open_group(config.store, opts, mode="r")
    if int(g["flux"].shape[1]) != vae.nwave:
        raise ValueError(f"{config.store} has {g['flux'].shape[1]} wavelength pixels but the VAE {vpath} was "
                         f"trained on {vae.nwave}; train the VAE on this store's grid")
    cols = tuple(config.conditions or LDM_CONDITIONS[config.selection])
    rows = selection_rows(config.store, config.selection, opts)
    x_all = condition_table(config.store, cols, opts, rows=rows)
    rep = encode_latents(config.store, vae, client, batch_size=config.encode_batch_size, storage_options=opts,
                         progress=config.progress, vae_path=vpath)
    if rep.exit_code:
        raise RuntimeError(f"encoding {config.store} with the VAE failed for chunks {rep.failed_chunks}; re-run")
    z_all = read_rows(config.store, [LATENT_VAR], rows, opts)[LATENT_VAR].astype(np.float64)
    held = heldout_mask(config.store, config.val_fraction, config.seed, opts)[rows]
    ok = np.all(np.isfinite(x_all), axis=1) & np.all(np.isfinite(z_all), axis=1)
    tr, va = ok & ~held, ok & held
    if tr.sum() < config.batch_size:
        raise ValueError(f"{config.store}: selection {config.selection!r} has {int(tr.sum())} training exposures "
                         f"(of {len(rows)} selected); need >= batch_size {config.batch_size} (lower --batch-size)")
    xs = Standardiser.fit(x_all[tr], cols)
    zs = Standardiser.fit(z_all[tr], [f"z{i}" for i in range(z_all.shape[1])])
    table = TableBatches({"latent": zs.apply(z_all[tr]), "cond": xs.apply(x_all[tr])}, config.batch_size, config.seed)
    val_b = table.fixed_batches({"latent": zs.apply(z_all[va]), "cond": xs.apply(x_all[va])}) if va.any() else None
    objective = LatentDiffusionObjective(vae.latent_dim, len(cols), config.channels, config.emb_dim,
                                         config.cond_dropout, config.ema_decay)
    tcfg = M.TrainConfig(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                         optimizer="adam", lr_schedule="cosine", warmup_steps=min(100, config.steps // 10),
                         checkpoint_every=config.checkpoint_every, seed=config.seed, progress=config.progress)
    card = {
        "selection": config.selection,
        "conditioning": xs.to_dict(),
        "latent_standardisation": zs.to_dict(),
        "diffusion": {"framework": "EDM (Karras et al. 2022), sigma_data = 1 on standardised latents",
                      "prediction": "v-prediction: F predicts (z - sigma n) / sqrt(1 + sigma^2)",
                      "cond_dropout": config.cond_dropout, "ema_decay": config.ema_decay,
                      "guidance": "D = D_uncond + w (D_cond - D_uncond); w=0 unconditional, 1 conditional",
                      "sampler": {"default": "heun", "steps": 32, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}},
        "vae": {"path": vpath, "sha256": vcard.get("weights", {}).get("sha256"), "data": vcard.get("data", {})},
        "data": {"store": config.store, "n_selected": int(len(rows)), "n_train": int(tr.sum()),
                 "n_heldout": int(va.sum()), "heldout_rows": rows[va].tolist(),
                 "split": {"by": "healpix", "nside": 64, "val_fraction": config.val_fraction, "seed": config.seed},
                 "grid": dict(g.attrs.get("grid", {})), "n_wavelength": int(g["flux"].shape[1])},
        "job": {k: v for k, v in asdict(config).items() if k != "storage_options"},
    }
    result = M.fit(objective, table.make_batches, tcfg, config.out,
                   val_batches=(lambda: val_b) if val_b else None, card=card)
    unet = objective.ema_model(result.model, result.state)
    stats = {"cond_mean": xs.mean, "cond_scale": xs.scale, "latent_mean": zs.mean, "latent_scale": zs.scale}
    import jax

    ldm = SkyLDM(unet, vae, key=jax.random.PRNGKey(0), stats=stats)
    full = dict(result.card)
    full.update(card)
    full["kind"], full["arch"] = "sky_ldm", ldm.architecture()
    model_dir = os.path.join(config.out, "model")
    M.save(model_dir, ldm, full, overwrite=True)
    return {"model_dir": model_dir, "out": config.out, "selection": config.selection, "steps": int(result.step),
            "start_step": int(result.start_step), "final_train_loss": float(result.final_train_loss),
            "final_val_loss": result.final_val_loss, "n_train": int(tr.sum()), "n_heldout": int(va.sum()),
            "conditions": list(cols), "loss_curve": str(result.loss_curve), "seconds": time.perf_counter() - t0,
            "exit_code": 0}
