"""A variational autoencoder for 1-D spectra and its InfoVAE-MMD objective.

The model works on one spectrum at a time (``flux``, ``ivar`` of shape ``(nwave,)``); callers
``jax.vmap`` it over a batch (:func:`encode_batch`, :func:`reconstruct_batch` do it for you).
Pixels with ``ivar <= 0`` are masked: their flux is replaced by 0 before encoding and they carry
no weight in the loss. Normalisation (e.g. to unit median continuum) is done beforehand by the
preprocessing step, so the model never sees raw flux units.

Likelihood. A pixel's residual ``flux - recon`` has variance ``1/ivar + (model_error * recon)^2``:
the photon noise plus a fractional model error ``eps = model_error`` of the decoder (a few per
cent). Without it, bright spectra (S/N 100-700 per pixel for 16th-magnitude stars) dominate both
the training loss and the misfit score with residuals of a per cent, which no compact decoder
reproduces, while a BAL trough or a wrong redshift in a fainter spectrum is drowned out. With it,
``chi2 / n_good ~ 1`` means "fitted to the noise or to eps, whichever is larger", at every S/N.

Loss (per batch, :func:`infovae_loss`), following the InfoVAE-MMD recipe used by desisky::

    loss = sum_b[ w_b x_b ] / sum_b[ w_b ]              x_b = chi2_b / n_good_b, chi^2 per good pixel
         + lam  * MMD^2( z ~ q(z|x), N(0, I) )          match the aggregate posterior to the prior
         + beta * mean_b[ KL( q(z|x_b) || N(0, I) ) ]   optional small per-spectrum KL

with ``w_b = 1``, or, with ``c = robust_scale > 0``, ``w_b = 1 / (1 + x_b / (c * median_b x_b))``
held fixed in the gradient (a per-spectrum robust loss, iteratively reweighted, that keeps the rare
anomalies of the training set from being memorised). The chi^2 is
taken per good pixel so that ``lam`` and ``beta`` keep their meaning whatever the number of
wavelength pixels or the fraction masked: a model that fits to the noise gives ~1. Spectra
without any good pixel take no part in the loss.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from skybatch.models.initializers import fan_in_uniform
from skybatch.models.registry import register_model_kind

__all__ = [
    "SpectrumVAE",
    "encode_batch",
    "gaussian_kl",
    "infovae_loss",
    "mmd_to_standard_normal",
    "reconstruct_batch",
    "reconstruction_chi2",
]

_LOGVAR_MIN, _LOGVAR_MAX = -12.0, 8.0


class SpectrumVAE(eqx.Module):
    """Variational autoencoder: spectrum ``(nwave,)`` -> latent ``(latent_dim,)`` -> spectrum.

    Encoder: an MLP ``nwave -> width (x depth) -> 2 * latent_dim`` giving the latent mean ``mu``
    and log-variance ``logvar`` (clipped to [-12, 8]). Decoder: an MLP
    ``latent_dim -> width (x depth) -> nwave`` giving the reconstructed (normalised) flux.
    Activations are GELU.

    !!! example

        ```python
        vae = SpectrumVAE(nwave=4000, latent_dim=8, key=jax.random.PRNGKey(0))
        mu, logvar = vae.encode(flux, ivar)          # (8,), (8,)
        recon = vae(flux, ivar)                      # (4000,), decoded from mu
        mus, _ = jax.vmap(vae.encode)(fluxes, ivars)  # a batch: (B, 8)
        ```
    """

    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP
    nwave: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    model_error: float = eqx.field(static=True)

    registry_kind: ClassVar[str] = "spectrum_vae"

    def __init__(
        self,
        nwave: int,
        latent_dim: int = 8,
        width: int = 256,
        depth: int = 2,
        model_error: float = 0.0,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `nwave`: number of wavelength pixels of the input spectra.
        - `latent_dim`: size of the latent space (default 8).
        - `width`: size of each hidden layer of the encoder and decoder MLPs.
        - `depth`: number of hidden layers of each MLP (>= 1).
        - `model_error`: fractional model error ``eps`` of the decoder (>= 0): the likelihood of a
          pixel has variance ``1/ivar + (eps * recon)^2`` (see :func:`reconstruction_chi2`).
        - `key`: PRNG key for the weight initialisation (keyword only).
        """
        nwave, latent_dim, width, depth = int(nwave), int(latent_dim), int(width), int(depth)
        if nwave < 1 or latent_dim < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"SpectrumVAE needs nwave, latent_dim, width, depth >= 1; got "
                f"nwave={nwave}, latent_dim={latent_dim}, width={width}, depth={depth}"
            )
        model_error = float(model_error)
        if not model_error >= 0.0:
            raise ValueError(f"SpectrumVAE: model_error must be a fraction >= 0, got {model_error}")
        # Shape-only skeletons, then one fast draw for all weights (see initializers.py).
        encoder = eqx.filter_eval_shape(
            eqx.nn.MLP, nwave, 2 * latent_dim, width, depth, activation=jax.nn.gelu, key=key
        )
        decoder = eqx.filter_eval_shape(
            eqx.nn.MLP, latent_dim, nwave, width, depth, activation=jax.nn.gelu, key=key
        )
        self.encoder, self.decoder = fan_in_uniform((encoder, decoder), key)
        self.nwave = nwave
        self.latent_dim = latent_dim
        self.width = width
        self.depth = depth
        self.model_error = model_error

    def architecture(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model's skeleton (stored in the model card)."""
        return {"nwave": self.nwave, "latent_dim": self.latent_dim, "width": self.width, "depth": self.depth,
                "model_error": self.model_error}

    def _check(self, flux: Array) -> None:
        if flux.shape != (self.nwave,):
            raise ValueError(
                f"SpectrumVAE expects one spectrum of shape ({self.nwave},), got flux of shape "
                f"{flux.shape}; vmap the model over a batch (e.g. encode_batch)"
            )

    def encode(
        self, flux: Float[Array, " nwave"], ivar: Float[Array, " nwave"] | None = None
    ) -> tuple[Float[Array, " latent"], Float[Array, " latent"]]:
        """Latent mean and log-variance of one spectrum.

        **Arguments:** `flux` (nwave,) normalised flux; `ivar` (nwave,) its inverse variance, or
        None when every pixel is good. Pixels with ``ivar <= 0`` (or non-finite flux) are zeroed.

        **Returns:** `(mu, logvar)`, each of shape (latent_dim,).
        """
        self._check(flux)
        good = jnp.isfinite(flux) if ivar is None else (ivar > 0) & jnp.isfinite(flux)
        x = jnp.where(good, flux, 0.0)
        h = self.encoder(x)
        mu, logvar = h[: self.latent_dim], h[self.latent_dim :]
        return mu, jnp.clip(logvar, _LOGVAR_MIN, _LOGVAR_MAX)

    def decode(self, z: Float[Array, " latent"]) -> Float[Array, " nwave"]:
        """Reconstructed flux ``(nwave,)`` from a latent vector ``z`` of shape (latent_dim,)."""
        return self.decoder(z)

    @staticmethod
    def sample(
        mu: Float[Array, " latent"], logvar: Float[Array, " latent"], key: PRNGKeyArray
    ) -> Float[Array, " latent"]:
        """Draw ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (reparameterisation)."""
        return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)

    def __call__(
        self,
        flux: Float[Array, " nwave"],
        ivar: Float[Array, " nwave"] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " nwave"]:
        """Reconstruct one spectrum.

        With ``key=None`` the latent mean is decoded (deterministic, for scoring); with a key a
        latent sample is decoded. **Returns** the reconstructed flux, shape (nwave,).
        """
        mu, logvar = self.encode(flux, ivar)
        z = mu if key is None else self.sample(mu, logvar, key)
        return self.decode(z)

    def anomaly_terms(
        self, flux: Float[Array, " nwave"], ivar: Float[Array, " nwave"]
    ) -> tuple[Float[Array, " latent"], Float[Array, ""]]:
        """What anomaly scoring needs from one spectrum (vmap it, e.g. in ``map_model``).

        **Returns:** ``(mu, chi2_per_pixel)``: the latent mean (latent_dim,) and the
        reconstruction chi^2 per good pixel of the decoded mean (NaN without good pixels). Feed
        both to :func:`skybatch.models.anomaly.anomaly_score`.
        """
        mu, _ = self.encode(flux, ivar)
        chi2, n_good = reconstruction_chi2(flux, ivar, self.decode(mu), self.model_error)
        return mu, jnp.where(n_good > 0, chi2 / jnp.maximum(n_good, 1.0), jnp.nan)


register_model_kind(SpectrumVAE.registry_kind, SpectrumVAE)


def reconstruction_chi2(
    flux: Float[Array, "*batch nwave"],
    ivar: Float[Array, "*batch nwave"],
    recon: Float[Array, "*batch nwave"],
    model_error: float = 0.0,
    *,
    error_model: Float[Array, "*batch nwave"] | None = None,
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """ivar-weighted reconstruction chi^2 per spectrum, and its number of good pixels.

    ``chi2 = sum_{ivar>0} (flux - recon)^2 / (1/ivar + (model_error * m)^2)`` over the last axis
    (dimensionless), with ``m = |error_model|`` (default: ``recon``). With ``model_error = 0`` this
    is the plain ``sum ivar * (flux - recon)^2``. The model-error term caps the weight of a pixel
    at ``1 / (model_error * m)^2``: a decoder that reproduces a spectrum to a few per cent is then
    not penalised for the last per cent of a S/N-200 star, while a misfit of tens of per cent (a
    trough, a line where none is expected) still counts in full. Returns ``(chi2, n_good)``;
    divide to get chi^2 per good pixel.
    """
    good = (ivar > 0) & jnp.isfinite(flux)
    resid = jnp.where(good, flux - recon, 0.0)
    w = jnp.where(good, ivar, 0.0)
    if model_error:
        m = recon if error_model is None else error_model
        w = w / (1.0 + w * (model_error * m) ** 2)
    return jnp.sum(w * resid**2, axis=-1), jnp.sum(good, axis=-1).astype(resid.dtype)


def gaussian_kl(
    mu: Float[Array, "*batch latent"], logvar: Float[Array, "*batch latent"]
) -> Float[Array, "*batch"]:
    """KL( N(mu, exp(logvar)) || N(0, I) ) per spectrum, in nats."""
    return 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def mmd_to_standard_normal(
    z: Float[Array, "batch latent"],
    prior: Float[Array, "batch latent"] | PRNGKeyArray,
    *,
    scales: tuple[float, ...] = (0.2, 1.0, 5.0),
    weights: Float[Array, " batch"] | None = None,
) -> Float[Array, ""]:
    """Unbiased MMD^2 between latent samples ``z`` and samples of the prior N(0, I).

    **Arguments:** `z` (batch, latent); `prior` either N(0, I) draws of the same shape, or a PRNG
    key to draw them; `scales` kernel widths; `weights` (batch,) optional non-negative weights of
    the ``z`` samples (0 leaves a sample out, e.g. a spectrum without good pixels, which every
    encoder maps to the same point).

    Kernel: a sum of inverse multiquadrics ``C / (C + |x - y|^2)`` with ``C = s * 2 * latent``
    for each ``s`` in ``scales`` (``2 * latent`` is the mean squared distance between two
    N(0, I) draws). The U-statistic excludes the diagonal, so its expectation is 0 when ``z`` is
    distributed as N(0, I); it can be slightly negative for small batches. Needs batch >= 2.
    """
    n, d = z.shape
    if n < 2:
        raise ValueError(f"MMD needs at least 2 latent samples, got a batch of {n}")
    if prior.shape != z.shape:  # a key: draw the prior samples (flat draws compile faster)
        prior = jax.random.normal(prior, (n * d,), z.dtype).reshape(n, d)

    def kernel(a: Array, b: Array) -> Array:
        sq = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        total = jnp.zeros_like(sq)
        for s in scales:
            total = total + s * 2.0 * d / (s * 2.0 * d + sq)
        return total

    off = 1.0 - jnp.eye(n, dtype=z.dtype)
    kpp = jnp.sum(kernel(prior, prior) * off) / (n * (n - 1))
    if weights is None:
        kzz = jnp.sum(kernel(z, z) * off) / (n * (n - 1))
        kzp = jnp.mean(kernel(z, prior))
    else:
        w = weights.astype(z.dtype)
        ww = w[:, None] * w[None, :] * off
        kzz = jnp.sum(kernel(z, z) * ww) / jnp.maximum(jnp.sum(ww), 1e-12)
        kzp = jnp.sum(kernel(z, prior) * w[:, None]) / jnp.maximum(n * jnp.sum(w), 1e-12)
    return kzz + kpp - 2.0 * kzp


def infovae_loss(
    model: SpectrumVAE,
    flux: Float[Array, "batch nwave"],
    ivar: Float[Array, "batch nwave"],
    key: PRNGKeyArray,
    *,
    lam: float = 1.0,
    beta: float = 1e-3,
    robust_scale: float = 0.0,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """InfoVAE-MMD loss of a batch, averaged over spectra (see the module docstring).

    **Arguments:** `model`; `flux`, `ivar` of shape (batch, nwave); `key` for the latent samples
    and the prior draws (one flat normal draw); `lam` the MMD weight; `beta` the KL weight (0
    disables it); `robust_scale` ``c`` (0 disables it): the fit term becomes the weighted mean
    of the spectra's chi^2 per good pixel ``x_b`` with weights ``1 / (1 + x_b / (c * median(x)))``
    over the batch, held fixed in the gradient (iteratively reweighted least squares of a
    Cauchy-like per-spectrum likelihood). Spectra fitted about as well as the batch's median
    count almost fully; one the decoder cannot reproduce (``x_b`` tens of times the median) pulls
    on the weights several times less, so a rare anomaly in the training set is not memorised
    (which would hide it from the anomaly score). The weights are normalised, so the term keeps
    the scale of a chi^2 per pixel and its balance with the MMD.

    Spectra without any good pixel (e.g. dropped for a bad redshift) are left out of every term.

    **Returns:** ``(loss, metrics)`` with metrics ``chi2`` (mean chi^2 per good pixel, including
    the model-error term), ``mmd`` and ``kl`` (mean KL per spectrum, nats), all scalars.
    """
    mu, logvar = jax.vmap(model.encode)(flux, ivar)
    # One flat draw for both the reparameterisation noise and the prior samples: each random
    # call costs ~0.4 s of XLA compilation on CPU, and flat shapes compile fastest.
    noise = jax.random.normal(key, (2 * mu.size,), mu.dtype)
    eps, prior = noise[: mu.size].reshape(mu.shape), noise[mu.size :].reshape(mu.shape)
    z = mu + jnp.exp(0.5 * logvar) * eps
    recon = jax.vmap(model.decode)(z)
    # The model-error term is weighted by the reconstruction without its gradient (a reweighted
    # least-squares step): the decoder must not lower the chi^2 by inflating its own flux.
    chi2, n_good = reconstruction_chi2(flux, ivar, recon, model.model_error,
                                       error_model=jax.lax.stop_gradient(recon))
    has_data = (n_good > 0).astype(mu.dtype)
    n_data = jnp.maximum(jnp.sum(has_data), 1.0)

    def mean(x: Array) -> Array:
        return jnp.sum(has_data * x) / n_data

    per_pixel = chi2 / jnp.maximum(n_good, 1.0)
    chi2_pp = mean(per_pixel)
    if robust_scale:
        # Iteratively reweighted (see the docstring): relative to the batch median, so the
        # down-weighting means the same at every stage of training.
        med = jnp.nanmedian(jnp.where(has_data > 0, per_pixel, jnp.nan))
        w = has_data / (1.0 + per_pixel / (robust_scale * jnp.maximum(med, 1e-12)))
        w = jax.lax.stop_gradient(w)
        fit_term = jnp.sum(w * per_pixel) / jnp.maximum(jnp.sum(w), 1e-12)
    else:
        fit_term = chi2_pp
    mmd = mmd_to_standard_normal(z, prior, weights=has_data)
    kl = mean(gaussian_kl(mu, logvar))
    loss = fit_term + lam * mmd + beta * kl
    return loss, {"chi2": chi2_pp, "mmd": mmd, "kl": kl}


@eqx.filter_jit
def encode_batch(
    model: SpectrumVAE, flux: Float[Array, "batch nwave"], ivar: Float[Array, "batch nwave"]
) -> tuple[Float[Array, "batch latent"], Float[Array, "batch latent"]]:
    """Latent ``(mu, logvar)`` of a batch, each (batch, latent_dim). Jitted once per shape."""
    return jax.vmap(model.encode)(flux, ivar)


@eqx.filter_jit
def reconstruct_batch(
    model: SpectrumVAE, flux: Float[Array, "batch nwave"], ivar: Float[Array, "batch nwave"]
) -> dict[str, Array]:
    """Deterministic reconstruction of a batch and what anomaly scoring needs.

    **Returns** a dict: ``mu`` (batch, latent), ``logvar`` (batch, latent), ``recon``
    (batch, nwave) decoded from ``mu``, ``chi2`` (batch,) reconstruction chi^2 and ``n_good``
    (batch,) its number of good pixels. Jitted once per input shape: pad the last batch.
    """
    mu, logvar = jax.vmap(model.encode)(flux, ivar)
    recon = jax.vmap(model.decode)(mu)
    chi2, n_good = reconstruction_chi2(flux, ivar, recon, model.model_error)
    return {"mu": mu, "logvar": logvar, "recon": recon, "chi2": chi2, "n_good": n_good}
