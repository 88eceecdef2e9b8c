"""Measured properties of difference-image candidates: shapes, dipoles, masks, reference neighbours."""

from __future__ import annotations

import math

import numpy as np

from skybatch.imaging.properties import candidate_properties

F = 3.0  # FWHM of D's PSF (px)
S = F / (2 * math.sqrt(2 * math.log(2)))


def _gauss(shape, x, y, sx, sy=None, amp=100.0):
    sy = sx if sy is None else sy
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return amp * np.exp(-0.5 * (((xx - x) / sx) ** 2 + ((yy - y) / sy) ** 2))


def test_shapes_dipoles_masks_and_reference_neighbours():
    rng = np.random.default_rng(2)
    shape = (200, 200)
    D = rng.standard_normal(shape) * 0.5
    D += _gauss(shape, 40.3, 40.6, S)  # a point source
    D -= _gauss(shape, 100.0, 40.0, S)  # a fading point source
    D += _gauss(shape, 160.2, 40.0, 2.5 * S, S)  # elongated along x
    D[100, 40] += 100.0  # a cosmic ray: one pixel
    D += _gauss(shape, 160.0, 100.0, S) - _gauss(shape, 161.5, 100.0, S)  # a misregistration dipole
    D += _gauss(shape, 40.0, 160.0, S)  # a point source beside a masked column
    Sc = D / 0.5 / 3.0
    masked = np.zeros(shape, bool)
    masked[150:170, 30:50] = True
    ref = rng.standard_normal(shape)
    ref += _gauss(shape, 103.0, 40.0, S, amp=200)  # a reference star 3 px from the fading source
    x = np.array([40.3, 100.0, 160.2, 40.0, 160.0, 40.0])
    y = np.array([40.6, 40.0, 40.0, 100.0, 100.0, 160.0])
    sign = np.array([1, -1, 1, 1, 1, 1])
    p = candidate_properties(D, Sc, x, y, sign, psf_fwhm=F, masked=masked, ref=ref, stamp=21)
    assert abs(p["fwhm"][0] / F - 1) < 0.1 and p["elongation"][0] < 1.15 and p["dipole"][0] == 0
    assert abs(p["fwhm"][1] / F - 1) < 0.1 and p["elongation"][1] < 1.15  # sign-corrected
    assert 2.0 < p["elongation"][2] < 3.0 and abs(p["theta"][2]) < 10
    assert p["fwhm"][3] < 0.6 * F  # narrower than any PSF: a cosmic ray or hot pixel
    assert p["dipole"][4] > 0.5 and p["dipole"][0] < 0.05
    assert abs(p["masked_fraction"][5] - (20 * 20) / 21**2) < 0.01 and p["masked_fraction"][0] == 0
    assert abs(p["ref_distance"][1] - 3.0) < 0.5 and p["ref_flux"][1] > 1000
    assert p["ref_distance"][0] > 20
    # no candidates: empty columns
    assert all(len(v) == 0 for v in candidate_properties(D, Sc, [], [], [], psf_fwhm=F).values())
