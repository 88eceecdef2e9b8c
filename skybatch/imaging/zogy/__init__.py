"""ZOGY image differencing (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) as pure array code.

Notation (paper's equation numbers in brackets). ``N``, ``R``: background-subtracted
new (science) and reference images on the same pixel grid; ``P_n``, ``P_r``: their
unit-sum PSFs; ``sigma_n``, ``sigma_r``: background noise; ``F_n``, ``F_r``: flux
zero points. Only the ratio matters, so ``F_r = 1`` and ``F_n = beta = flux_ratio``.
Hats are 2-D DFTs (unnormalised forward transform, as in ``numpy.fft``)::

    den     = sigma_n^2 |P_r^|^2 + beta^2 sigma_r^2 |P_n^|^2
    D^      = (P_r^ N^ - beta P_n^ R^) / sqrt(den)                      [13]
    F_D     = beta / sqrt(sigma_n^2 + beta^2 sigma_r^2)                 [15]
    P_D^    = beta P_r^ P_n^ / (F_D sqrt(den))                          [14]
    S^      = F_D D^ conj(P_D^) = k_n^ N^ - k_r^ R^                     [17]
    k_n^    = beta conj(P_n^) |P_r^|^2 / den                            [29]
    k_r^    = beta^2 conj(P_r^) |P_n^|^2 / den                          [28]
    V(S_N)  = V_N (x) k_n^2,  V(S_R) = V_R (x) k_r^2                    [26, 27]
    V_ast   = sum_{I=N,R} sigma_x^2 (dS_I/dx)^2 + sigma_y^2 (dS_I/dy)^2 [30, 31]
    V_psf   = eps^2 (S_N^2 + S_R^2)   (PSFs accurate to a fraction eps)
    S_corr  = S / sqrt(V(S_N) + V(S_R) + V_ast + V_psf)                 [25]
    F_S     = sum_k beta^2 |P_n^|^2 |P_r^|^2 / den / (ny nx)            [41]
    alpha   = S / F_S,  its error sqrt(V(S_N) + V(S_R)) / F_S           [42, 43]

``x`` is the column axis (last), ``y`` the row axis. With background-only noise,
``V(S_N) + V(S_R) = F_S`` exactly, so S_corr has unit variance on empty sky with no
rescaling. ``alpha`` is a point-source flux in reference units (F_r = 1); the
result's ``F_psf`` is ``beta * alpha``: **flux in new-image counts** (the units a
source injected into the science image has). Divide by ``flux_ratio`` for
reference units.

Cost per call: 2 forward + 2 inverse full-size real FFTs (D, S); one more inverse
when the variance is not constant (a gain or a map), one more forward per variance
*map*, one more inverse with astrometric noise or PSF errors. The elementwise work is done in one
cache-blocked pass over the spectra and one over the real maps. The PSF-dependent
filters are computed by a :class:`ZogyPlan` once per (image shape, PSF pair) and
cached per (sigma_n, sigma_r, beta). ``P_n^``/``P_r^`` and the source-noise kernels
``FFT(k^2)`` come from small stamps through half-cost pruned transforms; the
kernels ``k`` themselves are built on a small grid (4x the stamp size) because they
are compact, and ``FFT(k^2)`` is renormalised to the exact full-grid sum of k^2.

Edges: the transforms are circular, so pixels within a kernel width of the image
border mix with the opposite border; exclude them (detection does) or use
overlapping sub-tiles (:mod:`skybatch.imaging.subtiles`).
"""

from __future__ import annotations

from skybatch.imaging.zogy.core import ZogyMaps, ZogyResult, zogy
from skybatch.imaging.zogy.plan import ZogyPlan

__all__ = ["ZogyMaps", "ZogyPlan", "ZogyResult", "zogy"]
