"""SpectrumVAE: shapes, masking, the InfoVAE-MMD loss terms, and that training fits the data."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skybatch.models import (
    SpectrumVAE,
    TrainConfig,
    VAEObjective,
    apply_in_batches,
    encode_batch,
    fit,
    gaussian_kl,
    infovae_loss,
    mmd_to_standard_normal,
    reconstruct_batch,
    reconstruction_chi2,
)
from tests.models.models_synth import VAE_KW, VAE_TRAIN_KW, batch_stream, smooth_family

NWAVE = 256


@pytest.fixture(scope="module")
def vae():
    return SpectrumVAE(NWAVE, latent_dim=8, width=64, depth=2, key=jax.random.PRNGKey(0))


def test_shapes_single_and_batched(vae):
    rng = np.random.default_rng(0)
    b = smooth_family(rng, 5, NWAVE)
    one = eqx.filter_jit(lambda m, f, i: (m.encode(f, i), m(f, i)))
    (mu, logvar), recon = one(vae, b["flux"][0], b["ivar"][0])
    assert mu.shape == (8,) and logvar.shape == (8,) and recon.shape == (NWAVE,)
    mus, logvars = encode_batch(vae, b["flux"], b["ivar"])
    assert mus.shape == (5, 8) and logvars.shape == (5, 8)
    np.testing.assert_allclose(np.asarray(mus[0]), np.asarray(mu), rtol=1e-5, atol=1e-6)
    out = reconstruct_batch(vae, b["flux"], b["ivar"])
    assert out["recon"].shape == (5, NWAVE) and out["chi2"].shape == (5,)
    np.testing.assert_allclose(np.asarray(out["recon"][0]), np.asarray(recon), rtol=1e-5, atol=1e-6)
    # NaN flux at masked pixels must not leak into latents or chi2.
    assert np.isnan(b["flux"]).any()
    assert np.all(np.isfinite(np.asarray(mus))) and np.all(np.isfinite(np.asarray(out["chi2"])))
    np.testing.assert_array_equal(np.asarray(out["n_good"]), (b["ivar"] > 0).sum(1))
    with pytest.raises(ValueError, match="vmap"):
        vae.encode(jnp.asarray(b["flux"]))  # a batch without vmap


def test_masked_pixels_do_not_change_the_encoding(vae):
    rng = np.random.default_rng(1)
    b = smooth_family(rng, 2, NWAVE)
    flux, ivar = b["flux"].copy(), b["ivar"].copy()
    ivar[:, 10:20] = 0.0
    flux[1] = flux[0]
    flux[1, 10:20] = 1e6  # garbage under the mask
    ivar[1] = ivar[0]
    mus, _ = encode_batch(vae, flux, ivar)
    np.testing.assert_array_equal(np.asarray(mus[0]), np.asarray(mus[1]))


def test_chi2_matches_definition():
    rng = np.random.default_rng(2)
    flux = rng.normal(size=(3, 50)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (3, 50)).astype(np.float32)
    ivar[0, :5] = 0
    recon = rng.normal(size=(3, 50)).astype(np.float32)
    chi2, n = jax.jit(reconstruction_chi2)(flux, ivar, recon)
    expected = (ivar * (flux - recon) ** 2).sum(1)
    np.testing.assert_allclose(np.asarray(chi2), expected, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n), [45, 50, 50])


def test_mmd_separates_prior_from_shifted_samples():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    same = np.asarray(jax.random.normal(k1, (256 * 8,))).reshape(256, 8)
    shifted = np.asarray(jax.random.normal(k2, (256 * 8,))).reshape(256, 8) + 1.5
    prior = np.asarray(jax.random.normal(k3, (256 * 8,))).reshape(256, 8)
    mmd = jax.jit(mmd_to_standard_normal)
    m_same, m_shift = float(mmd(same, prior)), float(mmd(shifted, prior))
    assert abs(m_same) < 0.02
    assert m_shift > 20 * max(abs(m_same), 1e-3)
    # KL of the prior against itself is zero, and grows as |mu|^2 / 2.
    np.testing.assert_allclose(np.asarray(gaussian_kl(np.zeros((2, 8)), np.zeros((2, 8)))), 0.0, atol=1e-7)
    assert float(gaussian_kl(np.ones((1, 8)), np.zeros((1, 8)))[0]) == pytest.approx(4.0)


def test_loss_terms_and_weights(vae):
    b = smooth_family(np.random.default_rng(4), 16, NWAVE)
    key = jax.random.PRNGKey(5)
    loss_fn = eqx.filter_jit(lambda m, f, i, k, lam, beta: infovae_loss(m, f, i, k, lam=lam, beta=beta))
    w = lambda x: jnp.float32(x)  # noqa: E731  (traced weights: one compilation for both calls)
    loss0, m0 = loss_fn(vae, b["flux"], b["ivar"], key, w(0.0), w(0.0))
    loss1, m1 = loss_fn(vae, b["flux"], b["ivar"], key, w(2.0), w(0.5))
    assert float(loss0) == pytest.approx(float(m0["chi2"]), rel=1e-6)
    assert float(loss1) == pytest.approx(float(m1["chi2"] + 2.0 * m1["mmd"] + 0.5 * m1["kl"]), rel=1e-5)


def test_robust_loss_downweights_a_misfit_spectrum_and_ignores_empty_ones(vae):
    b = smooth_family(np.random.default_rng(7), 16, NWAVE)
    flux, ivar = np.array(b["flux"]), np.array(b["ivar"])
    key = jax.random.PRNGKey(8)
    fn = eqx.filter_jit(lambda m, f, i, c: infovae_loss(m, f, i, key, lam=0.0, beta=0.0, robust_scale=c))
    plain, m_plain = fn(vae, flux, ivar, 0.0)
    # One wildly discrepant spectrum: the plain chi^2 mean follows it, the robust term barely moves.
    bad = flux.copy()
    bad[0] += 50.0
    plain_bad, _ = fn(vae, bad, ivar, 0.0)
    robust, _ = fn(vae, flux, ivar, 5.0)
    robust_bad, _ = fn(vae, bad, ivar, 5.0)
    assert float(plain_bad) > 3 * float(plain)
    assert float(robust_bad) < 1.5 * float(robust)
    # A spectrum without good pixels takes no part in any term (its latent is the same for every
    # such spectrum): the loss equals that of the batch without it.
    empty = ivar.copy()
    empty[0] = 0.0
    fn2 = eqx.filter_jit(lambda m, f, i, k: infovae_loss(m, f, i, k, lam=1.0, beta=1e-3))
    with_empty, _ = fn2(vae, flux, empty, key)
    assert np.isfinite(float(with_empty))
    z = np.asarray(jax.random.normal(key, (16, 8)))
    prior = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (16, 8)))
    w = np.ones(16, np.float32)
    w[0] = 0.0
    z_far = z.copy()
    z_far[0] = 100.0  # a left-out sample can be anywhere
    np.testing.assert_allclose(float(mmd_to_standard_normal(z_far, prior, weights=w)),
                               float(mmd_to_standard_normal(z, prior, weights=w)), rtol=1e-6)
    assert float(mmd_to_standard_normal(z_far, prior)) > float(mmd_to_standard_normal(z, prior))
    del m_plain


def test_training_fits_smooth_spectra(tmp_path):
    """200 steps on a 3-parameter family bring chi2/pixel from hundreds to a few."""
    cfg = TrainConfig(steps=200, checkpoint_every=200, log_every=50, **VAE_TRAIN_KW)
    # The plain photon-noise likelihood: this family is exactly representable, so no model-error
    # floor (the 5 % default would stop the fit at the 5 % level, about this family's own scatter).
    objective = VAEObjective(**VAE_KW, model_error=0.0, robust_scale=0.0)
    res = fit(objective, batch_stream("smooth", 32, NWAVE), cfg, tmp_path)
    chi2 = np.asarray(res.history["train"]["chi2"])
    assert chi2[:5].mean() > 100
    assert chi2[-10:].mean() < min(10.0, 0.03 * chi2[:5].mean())
    # On fresh spectra the reconstruction follows the noiseless truth: its error is well below
    # the spectrum-to-spectrum variance (what a featureless mean spectrum would leave).
    b = smooth_family(np.random.default_rng(123), 64, NWAVE)
    out = reconstruct_batch(res.model, b["flux"], b["ivar"])
    err_model = np.mean((np.asarray(out["recon"]) - b["truth"]) ** 2)
    err_mean = np.mean((b["truth"] - b["truth"].mean(0, keepdims=True)) ** 2)
    assert err_model < 0.5 * err_mean
    assert res.loss_curve.exists() and res.model_dir is not None


def test_apply_in_batches_pads_the_tail_and_matches_one_call(vae):
    b = smooth_family(np.random.default_rng(6), 10, NWAVE)
    whole = reconstruct_batch(vae, b["flux"], b["ivar"])
    parts = apply_in_batches(reconstruct_batch, vae, {"flux": b["flux"], "ivar": b["ivar"]}, batch_size=4)
    assert set(parts) == set(whole) and parts["recon"].shape == (10, NWAVE)
    for k in whole:
        np.testing.assert_allclose(parts[k], np.asarray(whole[k]), rtol=1e-5, atol=1e-5)
