"""Conditional latent diffusion for sky spectra: a 1-D U-Net denoiser over a VAE's latent space.

Parameterisation (EDM, Karras et al. 2022). A latent ``z`` (VAE latent mean, standardised per
dimension with the training latents' mean and scale, so ``sigma_data = 1``) is noised as
``x = z + sigma * n``. The denoiser is

    D(x; sigma, c) = c_skip x + c_out F(c_in x; c_noise, c)
    c_skip = 1 / (sigma² + 1),  c_out = sigma / sqrt(sigma² + 1),  c_in = 1 / sqrt(sigma² + 1),
    c_noise = ln(sigma) / 4

and the network ``F`` is trained to predict ``(z - c_skip x) / c_out = (z - sigma n) / sqrt(1 + sigma²)``
with unit loss weight, ``ln sigma ~ N(-1.2, 1.2²)``. That target is the **v-prediction** target
(Salimans & Ho 2022) written for EDM's noise scale: at small sigma F predicts the clean latent's
correction, at large sigma the (negated) noise; the trainer never predicts ``n`` alone.

Conditioning: the conditions (standardised with statistics stored in the card and in the model)
and a "conditioned" flag enter an embedding MLP together with Fourier features of ``c_noise``;
every residual block gets a FiLM scale and shift from it. In training the conditions are dropped
(zeros, flag 0) with probability ``cond_dropout``, so the same network is also the unconditional
model and sampling can use classifier-free guidance (Ho & Salimans 2022):

    D_w = D_uncond + w (D_cond - D_uncond)       w = 0: unconditional, 1: conditional, > 1: guided.

Sampling: Karras' deterministic schedule (sigma_max 80, sigma_min 0.002, rho 7) with the Heun
(2nd order) or Euler step; the initial noise is the only randomness, so a given key always gives the
same latent. :class:`SkyLDM` bundles the denoiser, the VAE (decoder) and the standardisation, so a
saved model generates spectra on its own. Registered kinds: ``sky_latent_unet`` (the bare denoiser)
and ``sky_ldm`` (the bundle); importing this module registers both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.stats  # noqa: F401
from jaxtyping import Array, Float, PRNGKeyArray

from skybatch.models.initializers import fan_in_uniform
from skybatch.models.registry import register_model_kind
from skybatch.models.vae import SpectrumVAE

__all__ = ["LatentUNet1D", "SkyLDM", "LatentDiffusionObjective", "karras_sigmas", "sample_latent",
           "P_MEAN", "P_STD", "SIGMA_MIN", "SIGMA_MAX", "RHO"]

P_MEAN, P_STD = -1.2, 1.2
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
_N_FOURIER = 16


class _ResBlock(eqx.Module):
    conv1: eqx.nn.Conv1d
    conv2: eqx.nn.Conv1d
    film: eqx.nn.Linear
    skip: eqx.nn.Conv1d | None

    def __init__(self, c_in: int, c_out: int, emb: int, key: PRNGKeyArray):
        k = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv1d(c_in, c_out, 3, padding=1, key=k[0])
        self.conv2 = eqx.nn.Conv1d(c_out, c_out, 3, padding=1, key=k[1])
        self.film = eqx.nn.Linear(emb, 2 * c_out, key=k[2])
        self.skip = eqx.nn.Conv1d(c_in, c_out, 1, key=k[3]) if c_in != c_out else None

    def __call__(self, x: Array, e: Array) -> Array:
        h = self.conv1(jax.nn.gelu(x))
        scale, shift = jnp.split(self.film(e), 2)
        h = h * (1.0 + scale[:, None]) + shift[:, None]
        h = self.conv2(jax.nn.gelu(h))
        return h + (x if self.skip is None else self.skip(x))


class LatentUNet1D(eqx.Module):
    """1-D U-Net ``F(x, c_noise, cond, flag) -> (latent_dim,)`` over the latent as a 1-channel sequence.

    Levels: ``channels[0]`` at full length, ``channels[1]`` at half length (average pooling),
    a middle block, then nearest upsampling with a skip connection back to full length.
    ``latent_dim`` must be even.
    """

    lift: eqx.nn.Conv1d
    emb: eqx.nn.MLP
    down1: _ResBlock
    down2: _ResBlock
    mid: _ResBlock
    up1: _ResBlock
    out: eqx.nn.Conv1d
    latent_dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    channels: tuple[int, int] = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)

    registry_kind: ClassVar[str] = "sky_latent_unet"

    def __init__(self, latent_dim: int = 8, cond_dim: int = 4, channels: tuple[int, int] | list[int] = (32, 64),
                 emb_dim: int = 64, *, key: PRNGKeyArray):
        latent_dim, cond_dim, emb_dim = int(latent_dim), int(cond_dim), int(emb_dim)
        c1, c2 = (int(c) for c in channels)
        if latent_dim < 2 or latent_dim % 2 or cond_dim < 0 or min(c1, c2, emb_dim) < 1:
            raise ValueError(f"LatentUNet1D needs an even latent_dim >= 2, cond_dim >= 0, channels and emb_dim >= 1; "
                             f"got latent_dim={latent_dim}, cond_dim={cond_dim}, channels={channels}, emb_dim={emb_dim}")

        def build(k):
            ks = jax.random.split(k, 7)
            return dict(
                lift=eqx.nn.Conv1d(1, c1, 3, padding=1, key=ks[0]),
                emb=eqx.nn.MLP(2 * _N_FOURIER + cond_dim + 1, emb_dim, emb_dim, 2, activation=jax.nn.gelu, key=ks[1]),
                down1=_ResBlock(c1, c1, emb_dim, ks[2]), down2=_ResBlock(c1, c2, emb_dim, ks[3]),
                mid=_ResBlock(c2, c2, emb_dim, ks[4]), up1=_ResBlock(c1 + c2, c1, emb_dim, ks[5]),
                out=eqx.nn.Conv1d(c1, 1, 3, padding=1, key=ks[6]),
            )

        parts = fan_in_uniform(eqx.filter_eval_shape(build, key), key)
        for name, v in parts.items():
            setattr(self, name, v)
        self.latent_dim, self.cond_dim, self.channels, self.emb_dim = latent_dim, cond_dim, (c1, c2), emb_dim

    def architecture(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "cond_dim": self.cond_dim, "channels": list(self.channels),
                "emb_dim": self.emb_dim}

    def __call__(self, x: Float[Array, " latent"], c_noise: Float[Array, ""], cond: Float[Array, " cond"],
                 flag: Float[Array, ""]) -> Float[Array, " latent"]:
        freqs = jnp.exp(jnp.linspace(0.0, math.log(100.0), _N_FOURIER))
        four = jnp.concatenate([jnp.sin(c_noise * freqs), jnp.cos(c_noise * freqs)])
        e = self.emb(jnp.concatenate([four, cond * flag, flag[None]]))
        h0 = self.lift(x[None, :])
        h1 = self.down1(h0, e)
        h = h1.reshape(h1.shape[0], -1, 2).mean(-1)
        h = self.down2(h, e)
        h = self.mid(h, e)
        h = jnp.repeat(h, 2, axis=1)
        h = self.up1(jnp.concatenate([h, h1], axis=0), e)
        return self.out(jax.nn.gelu(h))[0]


register_model_kind(LatentUNet1D.registry_kind, LatentUNet1D)


def denoise(unet: LatentUNet1D, x: Array, sigma: Array, cond: Array, flag: Array) -> Array:
    """EDM-preconditioned denoiser D(x; sigma, cond) for one latent (sigma_data = 1)."""
    s2 = sigma**2 + 1.0
    f = unet(x / jnp.sqrt(s2), jnp.log(sigma) / 4.0, cond, flag)
    return x / s2 + sigma / jnp.sqrt(s2) * f


def karras_sigmas(steps: int) -> Array:
    """Noise levels (steps + 1,): Karras' rho-schedule from SIGMA_MAX to SIGMA_MIN, then 0."""
    i = jnp.arange(steps, dtype=jnp.float32)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    s = (hi + i / max(steps - 1, 1) * (lo - hi)) ** RHO
    return jnp.concatenate([s, jnp.zeros(1, s.dtype)])


def sample_latent(unet: LatentUNet1D, cond: Float[Array, " cond"], key: PRNGKeyArray, guidance: float | Array = 1.0,
                  steps: int = 32, heun: bool = True) -> Float[Array, " latent"]:
    """One standardised latent drawn for standardised conditions ``cond`` (deterministic given ``key``).

    ``guidance`` w: D = D_uncond + w (D_cond - D_uncond). ``heun`` False = Euler steps.
    """
    sig = karras_sigmas(int(steps))
    x = jax.random.normal(key, (unet.latent_dim,)) * sig[0]
    zero = jnp.zeros_like(cond)

    def d_guided(x, s):
        dc = denoise(unet, x, s, cond, jnp.float32(1.0))
        du = denoise(unet, x, s, zero, jnp.float32(0.0))
        return du + guidance * (dc - du)

    def step(i, x):
        s, s_next = sig[i], sig[i + 1]
        d = (x - d_guided(x, s)) / s
        x_e = x + (s_next - s) * d
        if not heun:
            return x_e
        d2 = (x_e - d_guided(x_e, jnp.maximum(s_next, SIGMA_MIN))) / jnp.maximum(s_next, SIGMA_MIN)
        return jnp.where(s_next > 0, x + (s_next - s) * 0.5 * (d + d2), x_e)

    return jax.lax.fori_loop(0, int(steps), step, x)


class SkyLDM(eqx.Module):
    """A trained sky latent-diffusion model: denoiser + VAE + the standardisation of conditions and latents.

    ``generate(cond, key)`` maps raw conditions (cond_dim,) to a sky spectrum (nwave,) on the VAE's
    grid; ``sample(cond, key)`` stops at the latent (VAE units).
    """

    unet: LatentUNet1D
    vae: SpectrumVAE
    cond_mean: jax.Array
    cond_scale: jax.Array
    latent_mean: jax.Array
    latent_scale: jax.Array

    registry_kind: ClassVar[str] = "sky_ldm"

    def __init__(self, unet: dict[str, Any] | LatentUNet1D, vae: dict[str, Any] | SpectrumVAE, *,
                 key: PRNGKeyArray, stats: dict[str, Any] | None = None):
        """`unet`, `vae`: modules, or their ``architecture()`` dicts (to rebuild a skeleton from a card).
        `stats`: ``cond_mean``, ``cond_scale``, ``latent_mean``, ``latent_scale`` arrays (default 0 / 1)."""
        k1, k2 = jax.random.split(key)
        self.unet = unet if isinstance(unet, LatentUNet1D) else LatentUNet1D(**unet, key=k1)
        self.vae = vae if isinstance(vae, SpectrumVAE) else SpectrumVAE(**vae, key=k2)
        stats = stats or {}
        c, d = self.unet.cond_dim, self.unet.latent_dim
        f = lambda name, n, v: jnp.asarray(stats.get(name, jnp.full(n, v)), jnp.float32).reshape(n)  # noqa: E731
        self.cond_mean, self.cond_scale = f("cond_mean", c, 0.0), f("cond_scale", c, 1.0)
        self.latent_mean, self.latent_scale = f("latent_mean", d, 0.0), f("latent_scale", d, 1.0)

    def architecture(self) -> dict[str, Any]:
        return {"unet": self.unet.architecture(), "vae": self.vae.architecture()}

    def sample(self, cond: Float[Array, " cond"], key: PRNGKeyArray, guidance: float | Array = 1.0,
               steps: int = 32, heun: bool = True) -> Float[Array, " latent"]:
        """A latent (VAE units) for raw conditions ``cond``; NaN conditions give NaN."""
        c = (jnp.asarray(cond, jnp.float32) - self.cond_mean) / self.cond_scale
        z = sample_latent(self.unet, jnp.nan_to_num(c), key, guidance, steps, heun)
        z = z * self.latent_scale + self.latent_mean
        return jnp.where(jnp.all(jnp.isfinite(c)), z, jnp.nan)

    def generate(self, cond: Float[Array, " cond"], key: PRNGKeyArray, guidance: float | Array = 1.0,
                 steps: int = 32, heun: bool = True) -> Float[Array, " nwave"]:
        """A sky spectrum (nwave,) decoded from :meth:`sample`."""
        return self.vae.decode(self.sample(cond, key, guidance, steps, heun))


def _build_sky_ldm(unet: dict[str, Any], vae: dict[str, Any], *, key: PRNGKeyArray) -> SkyLDM:
    return SkyLDM(unet, vae, key=key)


register_model_kind(SkyLDM.registry_kind, _build_sky_ldm)


@dataclass(frozen=True)
class LatentDiffusionObjective:
    """EDM training of :class:`LatentUNet1D` with conditioning dropout and an EMA of the weights.

    Batches: ``latent`` (B, latent_dim) standardised latents, ``cond`` (B, cond_dim) standardised
    conditions, optional ``weight`` (B,). The state is the EMA model (decay ``ema_decay``, warmed up
    as ``min(ema_decay, (1 + step) / (10 + step))``); sample from it.
    """

    latent_dim: int = 8
    cond_dim: int = 4
    channels: tuple[int, int] = (32, 64)
    emb_dim: int = 64
    cond_dropout: float = 0.1
    ema_decay: float = 0.999

    name = "sky_latent_diffusion"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not 0.0 <= self.cond_dropout < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"LatentDiffusionObjective: cond_dropout and ema_decay must lie in [0, 1), got "
                             f"{self.cond_dropout}, {self.ema_decay}")

    def init_model(self, key: PRNGKeyArray) -> LatentUNet1D:
        return LatentUNet1D(self.latent_dim, self.cond_dim, self.channels, self.emb_dim, key=key)

    def init_state(self, model: LatentUNet1D) -> Any:
        return eqx.filter(model, eqx.is_inexact_array)

    def loss(self, model, state, batch, key):
        z, c = batch["latent"], batch["cond"]
        B = z.shape[0]
        r = jax.random.normal(key, (B * (z.shape[1] + 2),))
        n = r[: B * z.shape[1]].reshape(z.shape)
        sigma = jnp.exp(P_MEAN + P_STD * r[B * z.shape[1]: B * z.shape[1] + B])
        keep = (jax.scipy.stats.norm.cdf(r[-B:]) >= self.cond_dropout).astype(z.dtype)  # Bernoulli(1 - p)
        x = z + sigma[:, None] * n
        s2 = sigma**2 + 1.0
        target = (z - sigma[:, None] * n) / jnp.sqrt(s2)[:, None]
        f = jax.vmap(model)(x / jnp.sqrt(s2)[:, None], jnp.log(sigma) / 4.0, c, keep)
        w = batch.get("weight", jnp.ones(B, z.dtype))
        per = jnp.mean((f - target) ** 2, axis=1)
        loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1.0)
        return loss, {"cond_kept": jnp.mean(keep)}

    def update_state(self, model, state, step):
        d = jnp.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        new = eqx.filter(model, eqx.is_inexact_array)
        return jax.tree_util.tree_map(lambda e, m: d * e + (1.0 - d) * m, state, new)

    def ema_model(self, model: LatentUNet1D, state: Any) -> LatentUNet1D:
        """The model with its EMA weights."""
        _, static = eqx.partition(model, eqx.is_inexact_array)
        return eqx.combine(state, static)
