"""Cross-band JEPA objective for the band-agnostic tile encoder.

Two bands of the same tile are two views of the same sky (view A and view B, drawn by
:class:`skybatch.models.band_sampling.BandPairSampler`). The objective has three parts:

1. **Token-wise JEPA loss.** The online encoder encodes view A; a small predictor (which
   sees a random ``1 − context_mask_ratio`` of A's tokens, the rest replaced by a learned mask
   token) predicts the *target* tokens of view B, and symmetrically B → A. The target encoder
   is an exponential moving average (EMA) of the online encoder; it lives in the objective
   state and is updated in :meth:`TileJEPAObjective.update_state`. Targets are layer-normalised
   per token and never receive gradients. The predictor gets no band information, so the
   cheapest way to predict one band's tokens from another's is a band-invariant representation.
2. **Information weighting.** The squared error of each token is weighted by the information
   map (:func:`skybatch.models.info_map.token_weights`, mean of the two views' maps), so the
   loss is dominated by sources, not by empty sky.
3. **VICReg on the global embeddings** (the encoder's read-out of the online token grid): an
   invariance term (mean squared difference of view A's and view B's global embedding, which
   is what makes the global embedding itself band-invariant), a variance term (hinge on the
   per-dimension standard deviation across the batch, against collapse) and a covariance
   term (squared off-diagonal covariance / D, against dimensional collapse).

Batches (dict of arrays): ``image_a``, ``noise_a``, ``image_b``, ``noise_b`` (n, H, W) float32
and ``band_a``, ``band_b`` (n,) int32 indices into ``objective.bands`` (extra keys such as
``tile`` are ignored). :func:`skybatch.models.band_sampling.make_pair_batches` makes them.

The objective follows the trainer protocol of :mod:`skybatch.models.train`: ``name``,
``init_model(key)``, ``init_state(model)``, ``loss(model, state, batch, key)``,
``update_state(model, state, step)``; plus ``trainable_filter(model)`` (the arrays to train,
all of them unless ``train_only_band`` is set) for trainers that partition the model. With
``train_only_band`` the loss also stops the gradient of every other array, so a trainer that
optimises the whole model leaves them bit-identical as long as it applies no weight decay
(Adam's update of a zero gradient is exactly zero).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from skybatch.models.info_map import token_weights
from skybatch.models.registry import register_model_kind
from skybatch.models.tile_encoder import TileEncoder, TransformerBlock, stem_only_filter
from skybatch.models.tile_geometry import GEOMETRY_FEATURES

__all__ = [
    "TokenPredictor",
    "TileJEPAModel",
    "TileJEPAObjective",
    "vicreg_variance",
    "vicreg_covariance",
    "info_nce",
]


class TokenPredictor(eqx.Module):
    """JEPA predictor: context tokens (some masked) → predicted target tokens at every position.

    ``__call__(tokens (N, D), keep (N,) bool) -> (N, D)``; tokens with ``keep`` False are
    replaced by a learned mask token before the blocks. No band input (band-agnostic).
    """

    proj_in: eqx.nn.Linear
    mask_token: Float[Array, " P"]
    pos: Float[Array, "N P"]
    blocks: tuple[TransformerBlock, ...]
    norm: eqx.nn.LayerNorm
    proj_out: eqx.nn.Linear

    def __init__(self, n_tokens: int, width: int, pred_width: int, depth: int, heads: int, *, key: PRNGKeyArray):
        k_in, k_m, k_p, k_out, *kb = jax.random.split(key, 4 + depth)
        self.proj_in = eqx.nn.Linear(width, pred_width, key=k_in)
        self.mask_token = 0.02 * jax.random.normal(k_m, (pred_width,))
        self.pos = 0.02 * jax.random.normal(k_p, (n_tokens, pred_width))
        self.blocks = tuple(TransformerBlock(pred_width, heads, 2, key=k) for k in kb)
        self.norm = eqx.nn.LayerNorm(pred_width)
        self.proj_out = eqx.nn.Linear(pred_width, width, key=k_out)

    def __call__(self, tokens: Float[Array, "N D"], keep: Bool[Array, " N"]) -> Float[Array, "N D"]:
        x = jax.vmap(self.proj_in)(tokens)
        x = jnp.where(keep[:, None], x, self.mask_token[None, :]) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return jax.vmap(self.proj_out)(jax.vmap(self.norm)(x))


class TileJEPAModel(eqx.Module):
    """The trainable model of :class:`TileJEPAObjective`: a :class:`TileEncoder` and a predictor.

    After training, ``model.encoder`` is the embedding model (save it on its own as kind
    ``"tile_encoder"``). Registered as kind ``"tile_jepa"``.
    """

    encoder: TileEncoder
    predictor: TokenPredictor
    predictor_width: int = eqx.field(static=True)
    predictor_depth: int = eqx.field(static=True)

    registry_kind: ClassVar[str] = "tile_jepa"

    def __init__(
        self,
        bands: Sequence[str],
        *,
        predictor_width: int = 32,
        predictor_depth: int = 1,
        key: PRNGKeyArray,
        **encoder_arch: Any,
    ):
        """bands, encoder_arch: the encoder's settings (:class:`TileEncoder`: ``image_size``,
        ``patch``, ``width``, ``depth``, ``heads``, ``mlp_ratio``, ``stem_hidden``,
        ``readout_reduce``; its defaults). predictor_width, predictor_depth: the predictor's
        token width and transformer blocks."""
        ke, kp = jax.random.split(key)
        self.encoder = TileEncoder(bands, key=ke, **encoder_arch)
        enc = self.encoder
        n_tokens = (enc.image_size // enc.patch) ** 2
        pred_heads = enc.heads if predictor_width % enc.heads == 0 else 1
        self.predictor = TokenPredictor(n_tokens, enc.width, predictor_width, predictor_depth, pred_heads, key=kp)
        self.predictor_width = predictor_width
        self.predictor_depth = predictor_depth

    def architecture(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model's skeleton (for the model registry)."""
        return {
            **self.encoder.architecture(),
            "predictor_width": self.predictor_width,
            "predictor_depth": self.predictor_depth,
        }


register_model_kind(TileJEPAModel.registry_kind, TileJEPAModel)


_BATCH_KEYS = ("image_a", "noise_a", "band_a", "image_b", "noise_b", "band_b")


def vicreg_variance(z: Float[Array, "n D"], target_std: float = 1.0, eps: float = 1e-4) -> Float[Array, ""]:
    """VICReg variance term: mean over dimensions of ``relu(target_std − sqrt(var + eps))``."""
    std = jnp.sqrt(jnp.var(z, axis=0) + eps)
    return jnp.mean(jax.nn.relu(target_std - std))


def vicreg_covariance(z: Float[Array, "n D"]) -> Float[Array, ""]:
    """VICReg covariance term: sum of squared off-diagonal covariances divided by D."""
    n, d = z.shape
    zc = z - jnp.mean(z, axis=0)
    cov = (zc.T @ zc) / max(n - 1, 1)
    off = cov - jnp.diag(jnp.diag(cov))
    return jnp.sum(off * off) / d


def info_nce(z_a: Float[Array, "n D"], z_b: Float[Array, "n D"], temperature: float = 0.1) -> Float[Array, ""]:
    """Symmetric InfoNCE: row k of ``z_a`` must find row k of ``z_b`` (cosine / temperature), and back."""
    a = z_a / (jnp.linalg.norm(z_a, axis=-1, keepdims=True) + 1e-8)
    b = z_b / (jnp.linalg.norm(z_b, axis=-1, keepdims=True) + 1e-8)
    logits = a @ b.T / temperature
    idx = jnp.arange(a.shape[0])
    la = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[idx, idx])
    lb = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[idx, idx])
    return 0.5 * (la + lb)


def _token_norm(x: Float[Array, "... D"]) -> Float[Array, "... D"]:
    """Layer norm without affine parameters over the last axis (JEPA target normalisation)."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-6)


@dataclass(frozen=True)
class TileJEPAObjective:
    """Cross-band JEPA + information weighting + VICReg for :class:`TileEncoder` (see module doc).

    Attributes
    ----------
    bands:
        Band keys; batch band indices refer to this order (use the tile arrays' band order).
    image_size, patch, width, depth, heads, mlp_ratio, stem_hidden, readout_reduce:
        Encoder architecture (see :class:`TileEncoder`).
    predictor_width, predictor_depth:
        Predictor token width and number of blocks.
    context_mask_ratio:
        Fraction of context tokens the predictor sees masked (in [0, 1)).
    ema_start, ema_end, ema_anneal_steps:
        EMA decay of the target encoder, cosine-annealed from ``ema_start`` to ``ema_end`` over
        ``ema_anneal_steps`` optimiser steps, then held.
    jepa_weight, invariance_weight, variance_weight, covariance_weight:
        Weights of the token JEPA loss and the VICReg terms on the global embeddings.
    variance_target:
        Target standard deviation per global-embedding dimension (VICReg γ).
    contrastive_weight, contrastive_temperature:
        Weight and temperature of a symmetric InfoNCE term on the global embeddings (view A of
        tile k must pick view B of tile k among the batch, and back); 0 switches it off.
    info_floor, info_threshold, info_gradient_weight:
        Information-map settings (see :func:`skybatch.models.info_map.token_weights`).
    train_only_band:
        If set, only that band's stem is trained (everything else gets no gradient and the EMA
        target only follows that stem): the recipe for adding a band to a trained encoder.
    name:
        Objective name (for the trainer's logs and checkpoints).
    """

    bands: tuple[str, ...]
    image_size: int = 32
    patch: int = 4
    width: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: int = 2
    stem_hidden: int = 64
    readout_reduce: int = 8
    predictor_width: int = 32
    predictor_depth: int = 1
    context_mask_ratio: float = 0.25
    ema_start: float = 0.99
    ema_end: float = 0.999
    ema_anneal_steps: int = 1000
    jepa_weight: float = 1.0
    invariance_weight: float = 1.0
    variance_weight: float = 1.0
    covariance_weight: float = 0.04
    variance_target: float = 1.0
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    info_floor: float = 0.1
    info_threshold: float = 2.0
    info_gradient_weight: float = 1.0
    train_only_band: str | None = None
    name: str = "tile_jepa"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        if len(self.bands) < 2:
            raise ValueError("TileJEPAObjective needs at least two bands (pairs of views)")
        if not 0.0 <= self.context_mask_ratio < 1.0:
            raise ValueError(f"context_mask_ratio must be in [0, 1), got {self.context_mask_ratio}")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ValueError(
                f"need 0 <= ema_start <= ema_end <= 1 (got {self.ema_start}, {self.ema_end})"
            )
        if self.ema_anneal_steps < 1:
            raise ValueError("ema_anneal_steps must be >= 1")
        if self.train_only_band is not None and self.train_only_band not in self.bands:
            raise ValueError(
                f"train_only_band={self.train_only_band!r} is not one of the bands {list(self.bands)}"
            )

    # protocol ------------------------------------------------------------------------------
    def init_model(self, key: PRNGKeyArray) -> TileJEPAModel:
        """A fresh :class:`TileJEPAModel` for these bands and this architecture."""
        return TileJEPAModel(
            self.bands,
            image_size=self.image_size,
            patch=self.patch,
            width=self.width,
            depth=self.depth,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            stem_hidden=self.stem_hidden,
            readout_reduce=self.readout_reduce,
            predictor_width=self.predictor_width,
            predictor_depth=self.predictor_depth,
            key=key,
        )

    def init_state(self, model: TileJEPAModel) -> TileEncoder:
        """The EMA target encoder: a copy (own buffers) of ``model.encoder``."""
        return jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, model.encoder)

    def ema_decay(self, step: Any) -> Array:
        """EMA decay at optimiser step ``step`` (cosine from ``ema_start`` to ``ema_end``)."""
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / self.ema_anneal_steps, 0.0, 1.0)
        return self.ema_end - (self.ema_end - self.ema_start) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    def update_state(self, model: TileJEPAModel, state: TileEncoder, step: Any) -> TileEncoder:
        """EMA update of the target encoder towards the online encoder (trainable arrays only)."""
        d = self.ema_decay(step)
        spec = self.trainable_filter(model).encoder
        online = eqx.filter(model.encoder, eqx.is_array)
        target, static = eqx.partition(state, eqx.is_array)

        def ema(t: Any, o: Any, train: bool) -> Any:
            if t is None or not train:
                return t
            return (d * t + (1.0 - d) * o).astype(t.dtype)

        new = jax.tree.map(ema, target, online, spec, is_leaf=lambda x: x is None)
        return eqx.combine(new, static)

    def trainable_filter(self, model: TileJEPAModel) -> Any:
        """Filter spec of the arrays to train: all, or one band's stem if ``train_only_band``."""
        if self.train_only_band is None:
            return jax.tree.map(eqx.is_array, model)
        return stem_only_filter(model, self.train_only_band)

    def loss(
        self,
        model: TileJEPAModel,
        state: TileEncoder,
        batch: dict[str, Array],
        key: PRNGKeyArray,
    ) -> tuple[Array, dict[str, Array]]:
        """Total loss and metrics for one batch of two-band pairs (see module doc)."""
        missing = [k for k in _BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(
                f"TileJEPAObjective needs batch arrays {list(_BATCH_KEYS)}; missing {missing} (got "
                f"{sorted(batch)}). Build batches with skybatch.models.band_sampling.make_pair_batches"
            )
        if self.train_only_band is not None:
            trainable, frozen = eqx.partition(model, self.trainable_filter(model))
            model = eqx.combine(trainable, jax.lax.stop_gradient(frozen))
        ia, na, ba = batch["image_a"], batch["noise_a"], batch["band_a"]
        ib, nb, bb = batch["image_b"], batch["noise_b"], batch["band_b"]
        n = ia.shape[0]
        # both views in one pass (rows 0..n-1 = A, n..2n-1 = B): half the graph, one compile
        image = jnp.concatenate([ia, ib])
        noise = jnp.concatenate([na, nb])
        band = jnp.concatenate([ba, bb])
        zeros = jnp.zeros((n, GEOMETRY_FEATURES), jnp.float32)
        geo = jnp.concatenate([batch.get("geom_a", zeros), batch.get("geom_b", zeros)]).astype(jnp.float32)
        tok, glob = jax.vmap(model.encoder.embed)(image, noise, band, geo)
        tgt = jax.lax.stop_gradient(jax.vmap(state.embed)(image, noise, band, geo)[0])
        tok = tok.reshape(2 * n, -1, tok.shape[-1])
        tgt = _token_norm(tgt.reshape(2 * n, -1, tgt.shape[-1]))
        n_tok = tok.shape[1]
        swap = lambda x: jnp.concatenate([x[n:], x[:n]])  # noqa: E731  (A ↔ B)

        keep = jax.random.bernoulli(key, 1.0 - self.context_mask_ratio, (2 * n, n_tok))
        pred = jax.vmap(model.predictor)(tok, keep)  # row i predicts the other view of row i
        err = jnp.mean((pred - swap(tgt)) ** 2, axis=-1)  # (2n, N)

        info_kw = dict(floor=self.info_floor, threshold=self.info_threshold, gradient_weight=self.info_gradient_weight)
        w = token_weights(image, noise, self.patch, **info_kw).reshape(2 * n, n_tok)
        w = jax.lax.stop_gradient(0.5 * (w + swap(w)))  # both views' information
        jepa = jnp.sum(w * err) / jnp.sum(w)

        g_a, g_b = glob[:n], glob[n:]
        inv = jnp.mean((g_a - g_b) ** 2)
        var = 0.5 * (vicreg_variance(g_a, self.variance_target) + vicreg_variance(g_b, self.variance_target))
        cov = 0.5 * (vicreg_covariance(g_a) + vicreg_covariance(g_b))
        nce = info_nce(g_a, g_b, self.contrastive_temperature)
        total = (
            self.contrastive_weight * nce
            + self.jepa_weight * jepa
            + self.invariance_weight * inv
            + self.variance_weight * var
            + self.covariance_weight * cov
        )

        def cos(p: Array, t: Array) -> Array:
            return jnp.sum(p * t, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(t, axis=-1) + 1e-8)

        metrics = {
            "loss_jepa": jepa,
            "loss_invariance": inv,
            "loss_variance": var,
            "loss_covariance": cov,
            "loss_contrastive": nce,
            "global_std": jnp.mean(jnp.std(glob, axis=0)),
            "token_cosine": jnp.sum(w * cos(pred, swap(tgt))) / jnp.sum(w),
            "global_cosine": jnp.mean(cos(g_a, g_b)),
        }
        return total, metrics

    # new bands -----------------------------------------------------------------------------
    def with_new_band(
        self,
        model: TileJEPAModel,
        state: TileEncoder,
        band: str,
        *,
        key: PRNGKeyArray | None = None,
        init_from: str | None = None,
    ) -> tuple[TileJEPAObjective, TileJEPAModel, TileEncoder]:
        """Add ``band`` to a trained model and return ``(objective, model, state)`` that train only its stem.

        The new stem is copied from ``init_from`` (e.g. the nearest band in wavelength) or
        freshly initialised from ``key``; the target encoder gets the same initial stem. The new
        objective has ``train_only_band=band``; batch band indices keep their meaning and the new
        band gets index ``len(self.bands)``.
        """
        enc = model.encoder.add_band(band, key=key, init_from=init_from)
        new_model = eqx.tree_at(lambda m: m.encoder, model, enc)
        new_stem = jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, enc.stems[band])
        arch = state.architecture()
        arch["bands"] = list(state.bands) + [band]
        skeleton = TileEncoder(**arch, key=jax.random.PRNGKey(0))
        new_state = eqx.tree_at(
            lambda m: (m.stems, m.trunk, m.pool), skeleton, ({**state.stems, band: new_stem}, state.trunk, state.pool)
        )
        objective = dataclasses.replace(self, bands=self.bands + (band,), train_only_band=band)
        return objective, new_model, new_state
