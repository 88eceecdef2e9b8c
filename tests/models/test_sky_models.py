"""Sky models, pure parts: synthetic photometry against speclite, the denoiser, the sampler, the registry."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skybatch.models import load, save
from skybatch.models.sky_broadband import BroadbandPredictor, SkyBroadbandMLP, Standardiser
from skybatch.models.sky_diffusion import LatentDiffusionObjective, LatentUNet1D, SkyLDM, karras_sigmas, sample_latent
from skybatch.models.sky_photometry import SKY_BANDS, band_coverage, sky_magnitudes
from skybatch.sample.desi_files import brz_wavelength
from skybatch.sample.skyvac_file import draw_sky_conditions, sky_components


def test_photometry_matches_speclite_and_orders_the_sky():
    from speclite.filters import load_filters

    wave = brz_wavelength()
    rng = np.random.default_rng(3)
    meta = draw_sky_conditions(40, rng)
    flux = sum(sky_components(wave, meta, rng).values())
    mags = sky_magnitudes(flux, wave)
    v = load_filters("bessell-V").get_ab_magnitudes(flux[:3] * 1e-17, wave)["bessell-V"]
    np.testing.assert_allclose(mags[:3, 0], np.asarray(v), atol=2e-3)
    cov = band_coverage(wave)
    assert cov["V"] > 0.99 and 0.8 < cov["z"] < 0.95  # the DESI grid stops at 9824 Å
    cond = meta["CONDITION"]
    # moonlit and twilight skies are brighter (smaller magnitudes) than dark skies in every band
    for other in ("moon", "twilight"):
        assert np.all(np.median(mags[cond == other], 0) < np.median(mags[cond == "dark"], 0) - 0.3)
    ivar = np.ones_like(flux)
    ivar[:, 100:120] = 0
    flux2 = flux.copy()
    flux2[:, 100:120] = 1e6  # bad pixels are bridged, not integrated
    np.testing.assert_allclose(sky_magnitudes(flux2, wave, ivar), mags, atol=0.01)


def test_broadband_predictor_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)) * [10, 1, 100] + [40, 0.8, -30]
    xs = Standardiser.fit(x, ["OBSALT", "TRANSPARENCY_GFA", "SUNALT"])
    np.testing.assert_allclose(xs.apply(x).mean(0), 0, atol=1e-5)
    mlp = SkyBroadbandMLP(3, len(SKY_BANDS), 16, 2, key=jax.random.PRNGKey(0))
    save(tmp_path / "m", mlp, {"conditioning": xs.to_dict(), "magnitudes": Standardiser.fit(x[:, :1].repeat(4, 1), list(SKY_BANDS)).to_dict()})
    m2, card = load(tmp_path / "m")
    p = BroadbandPredictor.from_card(m2, card)
    out = jax.vmap(p)(*x.T.astype(np.float32))
    assert out.shape == (50, 4) and np.all(np.isfinite(out))
    assert np.all(np.isnan(p(jnp.nan, 1.0, 2.0)))


def test_diffusion_objective_guidance_and_sampler_determinism():
    """The loss trains (finite, non-zero gradient); the EMA moves towards the model; guidance 0 ignores
    the conditions while guidance 1 uses them; the same key gives the same latent."""
    obj = LatentDiffusionObjective(4, 2, (8, 8), 8, cond_dropout=0.5, ema_decay=0.9)
    model = obj.init_model(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    batch = {"latent": jnp.asarray(rng.standard_normal((16, 4)), jnp.float32),
             "cond": jnp.asarray(rng.standard_normal((16, 2)), jnp.float32)}
    (loss, metrics), grads = eqx.filter_value_and_grad(obj.loss, has_aux=True)(model, None, batch, jax.random.PRNGKey(0))
    gnorm = sum(float(jnp.sum(g**2)) for g in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array)))
    assert np.isfinite(float(loss)) and gnorm > 0 and 0.0 < float(metrics["cond_kept"]) < 1.0
    ema = obj.init_state(model)
    moved = jax.tree_util.tree_map(lambda x: x + 1.0, eqx.filter(model, eqx.is_inexact_array))
    new = obj.update_state(eqx.combine(moved, eqx.partition(model, eqx.is_inexact_array)[1]), ema, jnp.int32(1000))
    leaf0, leaf1 = jax.tree_util.tree_leaves(ema)[0], jax.tree_util.tree_leaves(new)[0]
    np.testing.assert_allclose(np.asarray(leaf1 - leaf0), 0.1, rtol=1e-4)  # decay 0.9: a tenth of the way
    key = jax.random.PRNGKey(5)
    draw = eqx.filter_jit(lambda m, c, w: sample_latent(m, c, key, w, 6, True))  # one compilation: w is traced
    c1, c2 = jnp.array([1.0, -1.0]), jnp.array([-2.0, 3.0])
    w0, w1, w2 = (jnp.float32(w) for w in (0.0, 1.0, 2.0))
    np.testing.assert_allclose(np.asarray(draw(model, c1, w0)), np.asarray(draw(model, c2, w0)), atol=1e-5)
    assert not np.allclose(np.asarray(draw(model, c1, w1)), np.asarray(draw(model, c2, w1)))
    np.testing.assert_array_equal(np.asarray(draw(model, c1, w2)), np.asarray(draw(model, c1, w2)))
    sig = np.asarray(karras_sigmas(10))
    assert sig[0] == pytest.approx(80.0, rel=1e-5) and sig[-1] == 0 and np.all(np.diff(sig) < 0)


def test_sky_ldm_bundle_saves_and_loads(tmp_path):
    from skybatch.models.vae import SpectrumVAE

    vae = SpectrumVAE(64, 4, 16, 1, key=jax.random.PRNGKey(0))
    unet = LatentUNet1D(4, 2, (8, 8), 8, key=jax.random.PRNGKey(1))
    stats = {"cond_mean": [1.0, 2.0], "cond_scale": [3.0, 4.0], "latent_mean": [0.0] * 4, "latent_scale": [2.0] * 4}
    ldm = SkyLDM(unet, vae, key=jax.random.PRNGKey(2), stats=stats)
    save(tmp_path / "ldm", ldm)
    back, card = load(tmp_path / "ldm")
    assert card["kind"] == "sky_ldm" and isinstance(back, SkyLDM)
    k = jax.random.PRNGKey(9)
    np.testing.assert_array_equal(np.asarray(back.generate(jnp.array([1.0, 2.0]), k, 2.0, 4)),
                                  np.asarray(ldm.generate(jnp.array([1.0, 2.0]), k, 2.0, 4)))
    assert np.all(np.isnan(np.asarray(back.sample(jnp.array([np.nan, 2.0]), k, 1.0, 4))))
