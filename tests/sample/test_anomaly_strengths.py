"""The generator's anomalies are fair targets: outside what the normal population's scatter produces.

Criterion (see :mod:`skybatch.sample.anomalies`): at the weakest strength any benchmark draws
(s = 0.5) every anomaly's defining parameter lies beyond 3 sigma of the normal population's
distribution of that parameter (4 sigma for the quasar line strengths), and the lines that carry a
line-ratio anomaly fall inside the spectrum's coverage.
"""

from __future__ import annotations

import numpy as np

from skybatch.sample.anomalies import (
    DESI_RANGE,
    ELR_LINES,
    MIN_STAR_FRACTION,
    QSO_EW_SIGMA,
)
from skybatch.sample.spectra import EXTRA_ANOMALY_KINDS, draw_population


def _population(strength=(0.5, 1.5), seed=3):
    return draw_population(4000, np.random.default_rng(seed), anomaly_fraction=0.2, anomaly_kinds=EXTRA_ANOMALY_KINDS,
                           anomaly_strength=strength, anomaly_mag_fraction=1.0)


def test_quasar_line_strength_anomalies_lie_beyond_four_population_sigmas():
    p = _population()
    kinds, log_ew = p["anomaly_kind"], np.log(p["q_ew_scale"])
    normal_qso = (kinds == "") & (p["spectype"] == "QSO")
    # the normal quasars' scale is log-normal with the documented sigma
    assert abs(np.std(log_ew[normal_qso]) - QSO_EW_SIGMA) < 0.03
    assert (kinds == "qso_weak_lines").sum() > 20 and (kinds == "qso_strong_lines").sum() > 20
    assert np.all(log_ew[kinds == "qso_weak_lines"] < -4 * QSO_EW_SIGMA)
    assert np.all(log_ew[kinds == "qso_strong_lines"] > 4 * QSO_EW_SIGMA)
    # a normal quasar almost never gets there
    assert np.mean(np.abs(log_ew[normal_qso]) > 4 * QSO_EW_SIGMA) < 1e-3


def test_line_ratio_anomalies_are_out_of_range_and_covered():
    p = _population()
    kinds, z = p["anomaly_kind"], p["z_true"]
    ex = np.flatnonzero(kinds == "extreme_line_ratio")
    assert ex.size > 20
    normal = (kinds == "") & (p["spectype"] == "GALAXY")
    ratio = {0: p["g_oiii_hb"], 1: p["g_ha_hb"], 2: p["g_nii_ha"], 3: p["g_oii_hb"]}
    for v, (lo_line, hi_line) in enumerate(ELR_LINES):
        rows = ex[p["elr_variant"][ex] == v]
        assert rows.size > 0
        # the lines are inside the observed coverage
        assert np.all(lo_line * (1 + z[rows]) > DESI_RANGE[0]) and np.all(hi_line * (1 + z[rows]) < DESI_RANGE[1])
        # the ratio is outside the normal galaxies' 3-sigma (0.13 %-99.87 %) range
        q_lo, q_hi = np.quantile(ratio[v][normal], [0.00135, 0.99865])
        odd = ratio[v][rows]
        assert np.all(odd > q_hi) if v in (0, 2) else np.all(odd < q_lo), (v, odd, q_lo, q_hi)
    sy = kinds == "seyfert2"
    assert np.all(5008.24 * (1 + z[sy]) < DESI_RANGE[1])
    assert np.all(p["g_oiii_hb"][sy] > np.quantile(p["g_oiii_hb"][normal], 0.99865))
    # catalogue redshifts follow the moved objects
    assert np.all(np.abs(p["z"][ex] - z[ex]) < 0.01)


def test_composites_and_added_lines_have_a_floor():
    p = _population()
    kinds = p["anomaly_kind"]
    assert np.all(p["sg_frac"][kinds == "star_galaxy"] >= MIN_STAR_FRACTION)
    assert np.all(p["bg_amp"][kinds == "background_oii"] >= 1.0)
    assert np.all(p["nl_amp"][kinds == "narrow_line"] >= 1.5)
