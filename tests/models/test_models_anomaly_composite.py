"""Star + galaxy composites (skybatch.models.anomaly_composite) and class-wide tails (anomaly_tails groups=)."""

from __future__ import annotations

import numpy as np

from skybatch.models.anomaly_composite import composite_gain, star_templates
from skybatch.models.anomaly_pca import fit_weighted_pca
from skybatch.models.anomaly_tails import tail_log_p, tail_score

WL = 10 ** np.arange(3.3, 3.95, 2e-4)  # rest A


def _gauss(c, s, a):
    return a * np.exp(-0.5 * ((WL - c) / s) ** 2)


def _galaxies(n, rng):
    """Red continua of varied slope with a 4000 A break, Ca H & K, and emission lines of varied strength (rest)."""
    slope = rng.uniform(0.5, 2.0, n)[:, None]
    brk = rng.uniform(0.2, 0.5, n)[:, None]
    f = (WL / 5000.0) ** slope * np.where(WL < 4000, 1 - brk, 1.0)
    f = f * (1 - _gauss(3934.0, 4.0, 0.3) - _gauss(3969.0, 4.0, 0.3))
    for c in (3727.0, 4862.0, 5008.0, 6564.0):
        f = f + rng.uniform(0.0, 1.5, n)[:, None] * _gauss(c, 3.0, 1.0)
    return f


def _stars(n, rng):
    """Star spectra (observed = rest): black-body-like continua with deep narrow metal lines."""
    t = rng.uniform(0.6, 2.5, n)[:, None]
    f = (WL / 5000.0) ** t
    for c in (4227.0, 5175.0, 5270.0, 5893.0, 6563.0, 8542.0, 8662.0):
        f = f * (1 - _gauss(c, 3.0, 0.4))
    return f


def _to_rest(obs, z):
    """Observed-frame spectra (on WL as observed wavelengths) seen in the rest frame at ``z`` (N,)."""
    return np.array([np.interp(WL * (1 + zi), WL, o, left=0.0, right=0.0) for o, zi in zip(obs, z)])


def test_composite_gain_ranks_galaxies_with_a_foreground_star_above_plain_ones():
    rng = np.random.default_rng(3)
    n, sig = 500, 0.01
    gal = _galaxies(n, rng)
    z = rng.uniform(0.1, 0.6, n)
    is_comp = np.zeros(n, bool)
    is_comp[:25] = True
    star_obs = _stars(n, rng)
    frac = 0.3
    flux = np.where(is_comp[:, None], (1 - frac) * gal + frac * _to_rest(star_obs, z), gal)
    cover = (WL * (1 + z[:, None]) >= 3600) & (WL * (1 + z[:, None]) <= 8900)
    ivar = np.where(cover, 1 / sig**2, 0.0)
    flux = np.where(cover, flux + sig * rng.standard_normal(flux.shape), 0.0)
    pca = fit_weighted_pca(flux[~is_comp], ivar[~is_comp], 6)
    stars = _stars(60, rng)
    t = star_templates(WL, stars + sig * rng.standard_normal(stars.shape), np.full(stars.shape, 1 / sig**2))
    assert t.shape == (6, WL.size) and np.all(np.isfinite(t))
    gain = composite_gain(WL, flux, ivar, z, pca, t)
    assert np.all(np.isfinite(gain)) and np.all(gain >= 0)
    # every composite above 95 % of the plain galaxies; the median composite far above all of them
    assert np.quantile(gain[is_comp], 0.1) > np.quantile(gain[~is_comp], 0.95), (gain[is_comp], gain[~is_comp].max())
    assert np.median(gain[is_comp]) > gain[~is_comp].max()
    # a galaxy at z ~ 0 (star and galaxy lines coincide) is not judged
    assert np.isnan(composite_gain(WL, flux[:2], ivar[:2], np.array([0.0, 0.01]), pca, t)).all()


def test_star_line_gain_ranks_composites_above_plain_galaxies_of_varied_continua():
    from skybatch.models.anomaly_composite import StarLineReference, star_line_gain

    rng = np.random.default_rng(5)
    n, sig = 400, 0.02
    gal = _galaxies(n, rng)
    z = rng.uniform(0.1, 0.6, n)
    is_comp = np.zeros(n, bool)
    is_comp[:20] = True
    frac = 0.3
    flux = np.where(is_comp[:, None], (1 - frac) * gal + frac * _to_rest(_stars(n, rng), z), gal)
    cover = (WL * (1 + z[:, None]) >= 3600) & (WL * (1 + z[:, None]) <= 8900)
    ivar = np.where(cover, 1 / sig**2, 0.0)
    flux = np.where(cover, flux + sig * rng.standard_normal(flux.shape), 0.0)
    stars = _stars(60, rng)
    ref = StarLineReference.fit(WL, flux[~is_comp], ivar[~is_comp], stars + sig * rng.standard_normal(stars.shape),
                                np.full(stars.shape, 1 / sig**2))
    assert ref is not None
    gain = star_line_gain(ref, flux, ivar, z)
    assert np.all(np.isfinite(gain)) and np.all(gain >= 0)
    assert np.quantile(gain[is_comp], 0.1) > np.quantile(gain[~is_comp], 0.99), (gain[is_comp], gain[~is_comp].max())
    assert np.isnan(star_line_gain(ref, flux[:2], ivar[:2], np.array([0.0, 0.01]))).all()


def test_tails_of_a_class_are_calibrated_over_all_its_cells():
    rng = np.random.default_rng(1)
    # two redshift cells of one class (25 members each: 2-3 beyond the 90 % quantile) and a big other class
    x = np.concatenate([rng.standard_normal(25), rng.standard_normal(25), rng.standard_normal(400)])
    cell = np.repeat([0, 1, 2], [25, 25, 400])
    cls = np.repeat([0, 0, 1], [25, 25, 400])
    x[3] = x[30] = 4.0  # one equally odd member in each cell
    per_cell = tail_log_p(x, cell, min_members=20)
    per_class = tail_log_p(x, cls, min_members=20)
    # per cell the same value gets two different tails (each estimated from 2-3 members); per class one
    assert not np.isclose(per_cell[3], per_cell[30])
    assert np.isclose(per_class[3], per_class[30])
    # the class's tail is its own: the other class does not enter
    assert np.allclose(per_class[:50], tail_log_p(x[:50], np.zeros(50, int), min_members=20))
    z, s = tail_score({"f": x}, np.zeros(x.size), cell, groups=cls)
    assert np.allclose(s, tail_log_p(z["f"], cls)) and s[3] > np.quantile(s, 0.95)
