"""Anomaly scores: the combination rule on known inputs, and injected outliers ranked first."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from skybatch.models import (
    AnomalyReference,
    TrainConfig,
    VAEObjective,
    anomaly_score,
    chi2_per_pixel,
    fit,
    fit_anomaly_reference,
    fit_latent_density,
    knn_distance,
    reconstruct_batch,
    latent_density_bic,
    select_latent_density,
)
from tests.models.models_synth import VAE_KW, VAE_TRAIN_KW, batch_stream, smooth_family


def _two_clusters(rng, n):
    centres = np.array([[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    return centres[rng.integers(0, 2, n)] + rng.normal(0, 0.5, (n, 3))


def test_score_combines_misfit_and_rarity():
    rng = np.random.default_rng(0)
    mu_train = _two_clusters(rng, 2000)
    chi2_train = rng.lognormal(0.0, 0.1, 2000)
    ref = fit_anomaly_reference(chi2_train, mu_train, n_components=2)
    assert ref.density.n_components == 2
    np.testing.assert_allclose(np.sort(ref.density.means[:, 0]), [-3, 3], atol=0.1)

    mu = _two_clusters(rng, 200)
    chi2 = rng.lognormal(0.0, 0.1, 200)
    chi2[:5] *= 20.0  # misfit outliers, with typical latents (cluster centres)
    mu[:5] = [[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    mu[5:10] = [0.0, 0.0, 3.0]  # rare latents, 6 sigma from both clusters, with typical chi2
    chi2[5:10] = 1.0
    out = anomaly_score(chi2, mu, ref)
    top = set(np.argsort(-out["score"])[:10])
    assert top == set(range(10))
    assert np.all(out["z_misfit"][:5] > 10) and np.all(out["z_rarity"][:5] < 1)
    assert np.all(out["z_rarity"][5:10] > 5) and np.all(out["z_misfit"][5:10] < 1)
    assert np.all(out["score"] >= 0) and np.all(out["z_misfit"] >= 0)
    # Normal spectra: the rarity z-scores behave like Gaussian sigmas (few beyond 3).
    assert np.mean(out["z_rarity"][10:] > 3) < 0.02

    # Between the clusters: rare for the 2-component mixture, the peak of a single Gaussian.
    between = np.zeros((3, 3))
    ones = np.ones(3)
    assert np.all(anomaly_score(ones, between, ref)["z_rarity"] > 4)
    ref1 = fit_anomaly_reference(chi2_train, mu_train, n_components=1)
    assert np.all(anomaly_score(ones, between, ref1)["z_rarity"] < 1)

    # The reference survives a JSON round trip (it is stored in the model card).
    ref2 = AnomalyReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    np.testing.assert_allclose(anomaly_score(chi2, mu, ref2)["score"], out["score"], rtol=1e-9)


def test_bic_picks_the_mixture_and_no_component_collapses_on_outliers():
    rng = np.random.default_rng(11)
    # Three well separated populations of latents (classes), plus two identical outlying latents
    # (e.g. spectra without good pixels, which all encode to one point).
    centres = np.array([[-4.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 5.0, 0, 0]])
    mu = centres[rng.integers(0, 3, 3000)] + rng.normal(0, 0.6, (3000, 4))
    spike = np.array([[0.0, -9.0, 3.0, 3.0]] * 2)
    g = select_latent_density(np.vstack([mu, spike]), max_components=6, seed=0)
    assert g.n_components >= 3
    # the spike is not turned into a component of its own: it stays the rarest thing there is
    nll_spike = g.neg_log_density(spike)[0]
    assert nll_spike > np.max(g.neg_log_density(mu))
    # one Gaussian would make points between the populations look typical; BIC's mixture does not
    between = np.array([[0.0, 0.0, 0.0, 0.0]])
    assert g.rarity(between)[0] > np.quantile(g.rarity(mu), 0.99)
    one = fit_latent_density(mu, 1)
    assert one.rarity(between)[0] < np.quantile(one.rarity(mu), 0.5)
    with pytest.raises(ValueError, match="n_components"):
        fit_anomaly_reference(np.ones(10), mu[:10], n_components="many")


def test_bic_counts_the_components_a_fit_kept():
    rng = np.random.default_rng(0)
    # two populations and a tight group of 3: of 6 starting components, EM drops those left with fewer
    # than d + 1 members; the dropped ones are no parameters of the fit and must not be penalised
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (60, 2)), rng.normal([0, 8], 0.05, (3, 2))])
    g = fit_latent_density(x, 6, seed=0)
    assert 1 < g.n_components < 6
    per_component = 2 + 3 + 1  # mean, covariance, weight in d = 2
    nll = float(np.sum(g.neg_log_density(x)))
    expected = 2 * nll + (g.n_components * per_component - 1) * np.log(len(x))
    assert latent_density_bic(g, x) == pytest.approx(expected, rel=1e-12)


def test_spectra_without_good_pixels_get_nan():
    rng = np.random.default_rng(1)
    ref = fit_anomaly_reference(rng.lognormal(0, 0.1, 100), rng.normal(size=(100, 2)))
    chi2pp = chi2_per_pixel(np.array([5.0, 0.0]), np.array([5, 0]))
    assert chi2pp[0] == 1.0 and np.isnan(chi2pp[1])
    score = anomaly_score(chi2pp, np.zeros((2, 2)), ref)["score"]
    assert np.isfinite(score[0]) and np.isnan(score[1])


def test_knn_distance_and_density_agree_with_brute_force():
    rng = np.random.default_rng(2)
    ref_pts = rng.normal(size=(300, 4))
    q = rng.normal(size=(7, 4))
    d = np.sqrt(((q[:, None] - ref_pts[None]) ** 2).sum(-1))
    np.testing.assert_allclose(knn_distance(q, ref_pts, k=5), np.sort(d, 1)[:, 4], rtol=1e-6)
    g = fit_latent_density(ref_pts)
    cov = np.cov(ref_pts, rowvar=False)
    diff = q - ref_pts.mean(0)
    nll = 0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) + np.linalg.slogdet(2 * np.pi * cov)[1])
    np.testing.assert_allclose(g.neg_log_density(q), nll, rtol=1e-5)


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    # Same objective and optimiser settings as the VAE training test: the step compiles once.
    cfg = TrainConfig(steps=200, checkpoint_every=200, log_every=50, **VAE_TRAIN_KW)
    return fit(VAEObjective(**VAE_KW), batch_stream("smooth", 32, VAE_KW["nwave"]), cfg,
               tmp_path_factory.mktemp("anomaly_vae")).model


def test_injected_outliers_rank_at_the_top(trained_vae):
    nwave = VAE_KW["nwave"]
    x = np.linspace(0, 1, nwave)
    train = smooth_family(np.random.default_rng(10), 1024, nwave)
    out = reconstruct_batch(trained_vae, train["flux"], train["ivar"])
    ref = fit_anomaly_reference(chi2_per_pixel(np.asarray(out["chi2"]), np.asarray(out["n_good"])),
                                np.asarray(out["mu"]), n_components=2)

    rng = np.random.default_rng(11)
    test = smooth_family(rng, 300, nwave)
    truth = test["truth"].astype(np.float64)
    outliers = np.arange(0, 300, 15)  # 20 injected outliers spread through the set
    for j, i in enumerate(outliers):
        if j % 2 == 0:  # an emission line where the family has none
            truth[i] += 2.0 * np.exp(-0.5 * ((x - rng.uniform(0.45, 0.55)) / 0.02) ** 2)
        else:  # a broad absorption trough (BAL-like)
            truth[i] *= 1.0 - 0.8 * np.exp(-0.5 * ((x - rng.uniform(0.1, 0.9)) / 0.05) ** 2)
    good = test["ivar"] > 0
    flux = np.where(good, truth + rng.normal(0, 0.05, truth.shape), np.nan).astype(np.float32)
    # The per-spectrum method a store mapper vmaps gives the same terms as the batch function.
    terms = eqx.filter_jit(lambda m, f, i: jax.vmap(m.anomaly_terms)(f, i))
    mu, chi2pp = terms(trained_vae, flux, test["ivar"])
    res = reconstruct_batch(trained_vae, flux, test["ivar"])
    np.testing.assert_allclose(np.asarray(chi2pp), chi2_per_pixel(np.asarray(res["chi2"]), np.asarray(res["n_good"])),
                               rtol=1e-5)
    score = anomaly_score(np.asarray(chi2pp), np.asarray(mu), ref)["score"]
    ranked = np.argsort(-np.asarray(score))
    assert len(set(ranked[:20]) & set(outliers)) >= 18
    assert set(outliers) <= set(ranked[:30])


def test_same_scores_through_the_array_api_namespace():
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    ref = fit_anomaly_reference(rng.lognormal(0, 0.1, 300), _two_clusters(rng, 300), n_components=2)
    chi2, mu = rng.lognormal(0, 0.3, 20), _two_clusters(rng, 20)
    want = anomaly_score(chi2, mu, ref)
    got = anomaly_score(xp.asarray(chi2), xp.asarray(mu), ref)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(knn_distance(xp.asarray(mu), xp.asarray(mu), k=2)), knn_distance(mu, mu, k=2))


# --------------------------------------------------------------------------- population-conditioned score
def test_weighted_pca_recovers_low_rank_spectra_with_coverage_holes():
    from skybatch.models.anomaly_pca import fit_weighted_pca, residual_statistics

    rng = np.random.default_rng(4)
    n, p, k = 400, 300, 3
    x = np.linspace(0, 1, p)
    basis = np.stack([np.exp(-0.5 * ((x - c) / 0.05) ** 2) for c in (0.2, 0.5, 0.8)])
    truth = 1.0 + rng.normal(0, 1, (n, k)) @ basis
    ivar = np.full((n, p), 1e4)
    start = rng.integers(0, p // 2, n)  # each spectrum covers a different window, like a rest frame
    ivar[np.arange(p)[None, :] < start[:, None]] = 0.0
    flux = truth + rng.normal(0, 0.01, (n, p))
    flux[:3] += 3.0 * np.exp(-0.5 * ((x - 0.65) / 0.01) ** 2)  # three outliers with an extra line
    pca = fit_weighted_pca(flux, ivar, k, model_error=0.0)
    assert pca.n_rejected >= 3  # the outliers were set aside before the final fit
    st = residual_statistics(pca, flux, ivar)
    good = ivar > 0
    resid = np.abs(st["model"] - truth)[3:][good[3:]]
    assert np.median(resid) < 0.01  # normal spectra reproduced to the noise, holes and all
    # the extra line is the strongest local residual (without winsorizing, a component models it)
    assert np.all(st["local"][:3] > 20 * np.median(st["local"][3:]))
    assert np.all(st["local"][:3] > 10 * np.max(st["local"][3:]))
    np.testing.assert_allclose(np.exp(np.median(st["log_chi2pp"][3:])), 1.0, atol=0.15)


def test_local_residual_leaves_out_masked_lines_and_coverage_ends():
    """A residual on a masked (known) line or at the first good pixels of a spectrum's coverage does
    not set the windowed local residual; the same residual elsewhere does."""
    from skybatch.models.anomaly_pca import fit_weighted_pca, residual_statistics

    rng = np.random.default_rng(7)
    n, p, k = 300, 400, 3
    x = np.linspace(0, 1, p)
    basis = np.stack([np.exp(-0.5 * ((x - c) / 0.08) ** 2) for c in (0.3, 0.5, 0.7)])
    truth = 1.0 + rng.normal(0, 1, (n, k)) @ basis
    ivar = np.full((n, p), 1e4)
    start = rng.integers(0, 40, n)
    ivar[np.arange(p)[None, :] < start[:, None]] = 0.0
    flux = truth + rng.normal(0, 0.01, (n, p))
    line = lambda c: 0.5 * np.exp(-0.5 * ((x - c) / 0.004) ** 2)  # noqa: E731
    flux[0] += line(0.6)  # a strong "known" line, to be masked
    flux[1] += line(0.85)  # an odd line elsewhere: stays the strongest residual
    edge = np.arange(p) < start[2] + 8
    flux[2] = np.where(edge, flux[2] + 0.5, flux[2])  # a jump over the first 8 good pixels
    pca = fit_weighted_pca(flux, ivar, k, model_error=0.0)
    mask = np.abs(x - 0.6) < 0.02
    plain = residual_statistics(pca, flux, ivar)
    cut = residual_statistics(pca, flux, ivar, local_mask=mask, local_edge=10)
    typical = np.median(cut["local"][3:])
    assert plain["local"][0] > 20 * typical and plain["local"][2] > 20 * typical  # without the cuts they stand out
    assert cut["local"][2] < 3 * typical  # the coverage end is left out
    assert cut["local"][0] < plain["local"][0] / 4  # the masked line too (what remains: its pull on the fit)
    assert cut["local"][1] > 20 * typical  # an unmasked odd line still counts
    np.testing.assert_allclose(cut["log_chi2pp"], plain["log_chi2pp"])  # the misfit still uses every pixel


def test_calibration_per_class_and_redshift_bin_gives_each_cell_the_same_tail():
    from skybatch.models.anomaly_population import calibrate_terms, combine

    rng = np.random.default_rng(5)
    n = 3000
    cls = rng.choice(np.array(["GALAXY", "QSO"]), n, p=[0.7, 0.3])
    z = np.where(cls == "QSO", rng.uniform(0.5, 3, n), rng.uniform(0, 1.5, n))
    # a term whose typical level and spread depend on class and redshift (QSOs at high z are noisier)
    t = np.where(cls == "QSO", 3.0 + z + rng.normal(0, 0.5 * (1 + z), n), rng.normal(0, 1, n))
    zt, cell, table = calibrate_terms({"t": t}, cls, z, min_bin=300)
    assert len({c["spectype"] for c in table["cells"]}) == 2 and len(table["cells"]) >= 5
    s = combine(zt, cell)
    for c in np.unique(cell):  # the same fraction beyond 3 in every cell, unlike the raw term
        assert np.mean(s[cell == c] > 3.0) < 0.03
    assert np.mean(t[cls == "QSO"] > np.quantile(t, 0.99)) > 0.03
    spike = np.array([t[cls == "GALAXY"].max() + 10])  # an odd galaxy ranks first
    zt2, cell2, _ = calibrate_terms({"t": np.concatenate([t, spike])}, np.append(cls, "GALAXY"), np.append(z, 0.5),
                                    min_bin=300)
    assert np.argmax(combine(zt2, cell2)) == n


def test_selection_parsing_and_errors():
    from skybatch.pipeline.anomaly_score import parse_select

    assert parse_select("spectype=QSO") == [("spectype", "=", "QSO")]
    assert parse_select(["spectype=QSO,GALAXY", "z>2"]) == [("spectype", "=", "QSO,GALAXY"), ("z", ">", "2")]
    with pytest.raises(ValueError, match="spectype=QSO"):
        parse_select("QSO")


def _generated_rest_frame_survey(n, seed):
    from skybatch.sample.render import render_spectra
    from skybatch.sample.sky_noise import add_noise, noise_sigma
    from skybatch.sample.spectra import draw_population
    from skybatch.spectra.recipe import PreprocessRecipe, preprocess_block

    kinds = ("qso_weak_lines", "qso_strong_lines", "bal", "seyfert2", "star_galaxy", "extreme_line_ratio",
             "background_oii", "narrow_line")
    rng = np.random.default_rng(seed)
    pop = draw_population(n, rng, class_fractions=(0.5, 0.35, 0.15), anomaly_fraction=16 / n, anomaly_kinds=kinds,
                          anomaly_strength=(0.8, 1.2), anomaly_mag_fraction=1.0)
    wave = np.arange(3600.0, 9824.0, 1.6)
    model = render_spectra(wave, pop, lsf_sigma=0.9)
    flux, ivar, mask = add_noise(model, noise_sigma(wave, rng.uniform(0.05, 0.2, n)), rng)
    recipe = PreprocessRecipe(grid="loglam:3.0:3.95:2e-4", rest_frame=True, normalize="median")
    out = preprocess_block(flux, ivar, mask, wave, pop["z"], pop["zwarn"], recipe)
    return pop, np.asarray(out.wavelength), np.asarray(out.flux, np.float64), np.asarray(out.ivar, np.float64)


def test_population_score_finds_the_new_anomaly_kinds_on_a_generated_survey():
    from skybatch.models.anomaly_pca import fit_weighted_pca, residual_statistics
    from skybatch.models.anomaly_population import (calibrate_terms, cell_coefficient_rarity, combine,
                                                    fit_population_model)

    pop, wl, flux, ivar = _generated_rest_frame_survey(1600, seed=21)
    st = pop["spectype"].astype(str)
    good = (ivar > 0).any(1)
    model = fit_population_model(wl, flux[good], ivar[good], st[good])
    assert set(model.classes) == {"GALAXY", "QSO", "STAR"}
    assert np.all(model.pixel_mask["QSO"] == (wl < 1216.0)) and not model.pixel_mask["GALAXY"].any()
    terms = model.terms(flux[good], ivar[good], st[good])
    _, cell, _ = calibrate_terms({"m": terms["pca_misfit"]}, st[good], pop["z"][good])
    terms["pca_coef"] = cell_coefficient_rarity(terms["coef"], cell)
    zt, cell, _ = calibrate_terms({k: terms[k] for k in ("pca_misfit", "pca_local", "pca_coef")}, st[good],
                                  pop["z"][good])
    score = np.full(len(st), -np.inf)
    score[good] = combine(zt, cell)
    # baseline measured on the same spectra: one weighted PCA of everything, ranked by chi^2 per pixel
    base = np.full(len(st), -np.inf)
    base[good] = residual_statistics(fit_weighted_pca(flux[good], ivar[good], 8, clip_sigma=0.0, clip_quantile=0.0),
                                     flux[good], ivar[good])["log_chi2pp"]
    anom, kind = pop["is_anomaly"], pop["anomaly_kind"]
    assert anom.sum() == 16

    def found(s, frac):
        return anom & np.isin(np.arange(len(s)), np.argsort(-s)[: int(np.ceil(frac * len(s)))])

    top1, top3 = found(score, 0.01), found(score, 0.03)
    assert top1.sum() >= 8 and top3.sum() >= 10, sorted(zip(kind[anom & ~top3], pop["mag_r"][anom & ~top3]))
    assert top3.sum() > found(base, 0.03).sum() and top1.sum() > found(base, 0.01).sum()
    # lines, troughs and line-ratio anomalies are found; QSOs with unusually strong lines too
    for k in ("bal", "narrow_line", "seyfert2", "background_oii", "qso_strong_lines"):
        assert (top3 & (kind == k)).sum() >= 0.5 * (kind == k).sum(), k
    # ordinary quasars do not crowd the top: judged within their class, they are as rare as galaxies there
    normal_top = ~anom & np.isin(np.arange(len(st)), np.argsort(-score)[:48])
    assert (normal_top & (st == "QSO")).sum() <= 0.5 * normal_top.sum() + 2


def test_generator_draws_every_new_anomaly_kind_with_its_class_and_strength():
    from skybatch.sample.render import render_spectra
    from skybatch.sample.spectra import ALL_ANOMALY_KINDS, draw_population

    rng = np.random.default_rng(8)
    p = draw_population(440, rng, anomaly_fraction=0.1, anomaly_kinds=ALL_ANOMALY_KINDS, anomaly_strength=(0.5, 1.5),
                        anomaly_mag_fraction=1.0)
    kind, cls, s = p["anomaly_kind"], p["spectype"], p["anomaly_strength"]
    assert {k for k in kind if k} == set(ALL_ANOMALY_KINDS)
    assert np.all(cls[np.isin(kind, ("bal", "qso_weak_lines", "qso_strong_lines"))] == "QSO")
    assert np.all(cls[np.isin(kind, ("seyfert2", "star_galaxy", "extreme_line_ratio", "background_oii"))] == "GALAXY")
    assert np.all((s[kind != ""] >= 0.5) & (s[kind != ""] <= 1.5)) and np.all(s[kind == ""] == 0)
    normal_qso = (cls == "QSO") & (kind == "")
    assert p["q_ew_scale"][kind == "qso_weak_lines"].max() < np.quantile(p["q_ew_scale"][normal_qso], 0.05)
    assert p["q_ew_scale"][kind == "qso_strong_lines"].min() > np.quantile(p["q_ew_scale"][normal_qso], 0.95)
    with pytest.raises(ValueError, match="anomaly_kinds"):
        draw_population(10, rng, anomaly_kinds=("nonsense",))
    # the composite is rendered with the star added (the anomaly is applied after the normal model)
    wave = np.arange(3600.0, 9800.0, 2.0)
    i = np.flatnonzero(kind == "star_galaxy")[:1]
    sub = {k: v[i] for k, v in p.items()}
    plain = {**sub, "anomaly_kind": np.array([""], dtype=object)}
    both, alone = render_spectra(wave, sub)[0], render_spectra(wave, plain)[0]
    assert not np.allclose(both, alone)


def test_tail_score_puts_injected_anomalies_and_odd_quasars_at_the_top_of_an_unseen_survey():
    """The score as ``skybatch run score --method population`` builds it (PCA terms, line features, S/N
    trend removed, tail probabilities per class x z-bin cell), on a survey seed never used in tuning."""
    from skybatch.models.anomaly_lines import TWO_SIDED, line_features, qso_ew_reference
    from skybatch.models.anomaly_pca import fit_weighted_pca, residual_statistics
    from skybatch.models.anomaly_population import calibrate_terms, cell_coefficient_rarity, fit_population_model
    from skybatch.models.anomaly_tails import log_snr, tail_score

    pop, wl, flux, ivar = _generated_rest_frame_survey(1600, seed=37)
    st = pop["spectype"].astype(str)
    good = (ivar > 0).any(1)
    f, iv, s, zz = flux[good], ivar[good], st[good], pop["z"][good]
    model = fit_population_model(wl, f, iv, s)
    t = model.terms(f, iv, s)
    _, cell, _ = calibrate_terms({"m": t["pca_misfit"]}, s, zz)
    feats = {"pca_misfit": t["pca_misfit"], "pca_local": t["pca_local"],
             "pca_coef": cell_coefficient_rarity(t["coef"], cell)}
    feats.update(line_features(wl, f, iv, s, qso_ew_reference(wl, f[s == "QSO"], iv[s == "QSO"])))
    lsnr = log_snr(f, iv)
    z, sc = tail_score(feats, lsnr, cell, two_sided=TWO_SIDED, calibrated=("pca_coef",))
    assert {"qso_line_scale", "qso_trough", "gal_[OIII]/Hbeta"} <= set(z)
    # the detrended misfit no longer measures the S/N
    assert abs(np.corrcoef(np.nan_to_num(z["pca_misfit"]), lsnr)[0, 1]) < 0.2
    score = np.full(len(st), -np.inf)
    score[good] = sc
    base = np.full(len(st), -np.inf)  # baseline on the same spectra: robust PCA per SPECTYPE, chi^2 per pixel
    for c in np.unique(s):
        rows = np.flatnonzero(good)[s == c]
        base[rows] = residual_statistics(fit_weighted_pca(flux[rows], ivar[rows], 8), flux[rows],
                                         ivar[rows])["log_chi2pp"]
    anom, kind = pop["is_anomaly"], pop["anomaly_kind"]

    def found(x, frac):
        return anom & np.isin(np.arange(len(x)), np.argsort(-x)[: int(np.ceil(frac * len(x)))])

    top1, top3 = found(score, 0.01), found(score, 0.03)
    assert top1.sum() >= 10 and top3.sum() >= 12, sorted(kind[anom & ~top1])
    assert top1.sum() > found(base, 0.01).sum()
    qso = np.isin(kind, ("qso_weak_lines", "qso_strong_lines", "bal"))
    assert top3[qso].sum() >= 0.75 * qso.sum(), sorted(kind[qso & ~top3])
