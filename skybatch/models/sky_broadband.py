"""Broadband sky brightness from observing conditions: an Equinox MLP to V, g, r, z mag/arcsec².

The model maps standardised conditions (e.g. OBSALT, TRANSPARENCY_GFA, SUNALT, SUNSEP, MOONALT,
MOONSEP, MOONFRAC, SOLFLUX, ECLLAT, GALLAT) to standardised magnitudes; the standardisation
statistics live in the model card (``conditioning`` and ``magnitudes``), and
:class:`BroadbandPredictor` wraps the MLP with them for inference on raw columns (one scalar per
condition, as :func:`skybatch.pipeline.map_model.map_model` passes store columns). Targets are
magnitudes measured from the spectra themselves by synthetic photometry
(:mod:`skybatch.models.sky_photometry`).

Registered model kind: ``sky_broadband`` (registered when this module is imported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from skybatch.models.initializers import fan_in_uniform
from skybatch.models.registry import register_model_kind

__all__ = ["SkyBroadbandMLP", "SkyBroadbandObjective", "BroadbandPredictor", "Standardiser", "BROADBAND_CONDITIONS"]

#: Default condition columns of the broadband model (METADATA names; the store holds them lower-case).
BROADBAND_CONDITIONS: tuple[str, ...] = (
    "OBSALT", "TRANSPARENCY_GFA", "SUNALT", "SUNSEP", "MOONALT", "MOONSEP", "MOONFRAC", "SOLFLUX", "ECLLAT",
    "GALLAT",
)


@dataclass(frozen=True)
class Standardiser:
    """Per-column ``(x - mean) / scale``; ``columns`` names them. JSON round trip: to_dict / from_dict."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, x: np.ndarray, columns: tuple[str, ...] | list[str]) -> Standardiser:
        """Mean and standard deviation of each column of ``x`` (n, d), NaN-ignoring; scale >= 1e-6."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(columns):
            raise ValueError(f"Standardiser.fit: x has shape {x.shape}, expected (n, {len(columns)}) for {list(columns)}")
        mean = np.nanmean(x, axis=0)
        scale = np.maximum(np.nanstd(x, axis=0), 1e-6)
        return cls(tuple(str(c) for c in columns), tuple(float(v) for v in mean), tuple(float(v) for v in scale))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / scale, float32; x (n, d)."""
        return ((np.asarray(x, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        """z * scale + mean (float64)."""
        return np.asarray(z, np.float64) * np.asarray(self.scale) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardiser:
        return cls(tuple(d["columns"]), tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["scale"]))


class SkyBroadbandMLP(eqx.Module):
    """MLP ``(n_cond,) -> (n_band,)`` on standardised conditions and magnitudes (GELU, ``depth`` hidden layers)."""

    mlp: eqx.nn.MLP
    n_cond: int = eqx.field(static=True)
    n_band: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    registry_kind: ClassVar[str] = "sky_broadband"

    def __init__(self, n_cond: int, n_band: int = 4, width: int = 64, depth: int = 3, *, key: PRNGKeyArray):
        """`n_cond` condition columns, `n_band` output bands, hidden `width` x `depth`; `key` initialises."""
        n_cond, n_band, width, depth = int(n_cond), int(n_band), int(width), int(depth)
        if min(n_cond, n_band, width, depth) < 1:
            raise ValueError(f"SkyBroadbandMLP needs n_cond, n_band, width, depth >= 1; got {n_cond}, {n_band}, "
                             f"{width}, {depth}")
        sk = eqx.filter_eval_shape(eqx.nn.MLP, n_cond, n_band, width, depth, activation=jax.nn.gelu, key=key)
        self.mlp = fan_in_uniform(sk, key)
        self.n_cond, self.n_band, self.width, self.depth = n_cond, n_band, width, depth

    def architecture(self) -> dict[str, Any]:
        return {"n_cond": self.n_cond, "n_band": self.n_band, "width": self.width, "depth": self.depth}

    def __call__(self, cond: Float[Array, " n_cond"]) -> Float[Array, " n_band"]:
        """Standardised magnitudes (n_band,) of one standardised condition vector (n_cond,)."""
        return self.mlp(cond)


register_model_kind(SkyBroadbandMLP.registry_kind, SkyBroadbandMLP)


@dataclass(frozen=True)
class SkyBroadbandObjective:
    """Mean squared error on standardised magnitudes; batches hold ``cond`` (B, n_cond), ``mag`` (B, n_band).

    Rows whose magnitude is NaN (no flux in a band) carry no weight. Metric ``rms`` is the
    root-mean-square residual in standardised units.
    """

    n_cond: int
    n_band: int = 4
    width: int = 64
    depth: int = 3

    name = "sky_broadband"

    def init_model(self, key: PRNGKeyArray) -> SkyBroadbandMLP:
        return SkyBroadbandMLP(self.n_cond, self.n_band, self.width, self.depth, key=key)

    def init_state(self, model: SkyBroadbandMLP) -> None:
        return None

    def loss(self, model, state, batch, key):
        pred = jax.vmap(model)(batch["cond"])
        y = batch["mag"]
        ok = jnp.isfinite(y)
        w = ok.astype(pred.dtype) * batch.get("weight", jnp.ones(y.shape[0], pred.dtype))[:, None]
        r2 = jnp.where(ok, pred - jnp.where(ok, y, 0.0), 0.0) ** 2
        mse = jnp.sum(w * r2) / jnp.maximum(jnp.sum(w), 1.0)
        return mse, {"rms": jnp.sqrt(mse)}

    def update_state(self, model, state, step):
        return state


class BroadbandPredictor(eqx.Module):
    """Raw conditions -> magnitudes: ``predictor(c_1, ..., c_d)`` with one scalar per condition column.

    Wraps a trained :class:`SkyBroadbandMLP` with its conditioning and magnitude standardisation
    (from the card); NaN conditions give NaN magnitudes. Call ``jax.vmap(predictor)(*columns)`` or
    map it over a store with ``map_model(store, predictor, inputs=columns, outputs=("sky_mag_pred",))``.
    """

    mlp: SkyBroadbandMLP
    x_mean: jax.Array
    x_scale: jax.Array
    y_mean: jax.Array
    y_scale: jax.Array

    @classmethod
    def from_card(cls, mlp: SkyBroadbandMLP, card: dict[str, Any]) -> BroadbandPredictor:
        """Build from a loaded model and its card (``conditioning`` and ``magnitudes`` standardisers)."""
        xs = Standardiser.from_dict(card["conditioning"])
        ys = Standardiser.from_dict(card["magnitudes"])
        f = lambda v: jnp.asarray(np.asarray(v, np.float32))  # noqa: E731
        return cls(mlp, f(xs.mean), f(xs.scale), f(ys.mean), f(ys.scale))

    def __call__(self, *conds: Float[Array, ""]) -> Float[Array, " n_band"]:
        c = jnp.stack([jnp.asarray(v, jnp.float32) for v in conds])
        z = self.mlp((c - self.x_mean) / self.x_scale)
        out = z * self.y_scale + self.y_mean
        return jnp.where(jnp.all(jnp.isfinite(c)), out, jnp.nan)
