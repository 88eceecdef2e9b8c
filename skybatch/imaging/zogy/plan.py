"""The PSF-dependent part of ZOGY: PSF spectra, filters and source-noise kernels per (shape, PSF pair).

See :mod:`skybatch.imaging.zogy` for the notation and equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from skybatch.imaging import _fft
from skybatch.imaging._util import float_dtype, normalise_psf
from skybatch.imaging.zogy._blocks import _row_blocks
from skybatch.xp import get_namespace

Array = Any

__all__ = ["ZogyPlan"]


@dataclass
class _Filters:
    key: tuple[float, float, float]
    a_n: Array  # P_r^ / sqrt(den)            (applied to N^)
    a_r: Array  # beta P_n^ / sqrt(den)       (applied to R^)
    c_s: Array  # beta conj(P_r^ P_n^)/sqrt(den) = F_D conj(P_D^)
    F_S: float
    F_D: float
    sum_kn2: float  # sum_x k_n(x)^2
    sum_kr2: float
    kn2_hat: Array | None = None  # rfft2(k_n^2), full frame, lazily
    kr2_hat: Array | None = None
    P_D: Array | None = None


class ZogyPlan:
    """PSF transforms and ZOGY filters for one image shape and one (new, ref) PSF pair.

    Build it once and pass it to :func:`zogy` for every image (or sub-tile) of
    that shape sharing these PSFs: the PSF transforms are computed here, the
    filters on first use for a given (new_sigma, ref_sigma, flux_ratio) and the
    last set is kept. A plan holds about seven (ny, nx//2+1) complex arrays
    (~120 MB at 2048^2 in float32) once source-noise kernels are needed.

    Parameters
    ----------
    shape : (ny, nx) of the images.
    new_psf, ref_psf : odd-sized (m, m') stamps, centre on the middle pixel; normalised
        to unit sum here. Arrays of the namespace the images will use.
    dtype : "float32" (default) or "float64"; spectra are complex64 / complex128.
    workers : threads for scipy.fft on the NumPy path (None = 1). Keep 1 under Dask.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        new_psf: Array,
        ref_psf: Array,
        *,
        dtype: Any = "float32",
        workers: int | None = None,
    ) -> None:
        xp = get_namespace(new_psf, ref_psf)
        self.xp: ModuleType = xp
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = float_dtype(xp, dtype)
        self.workers = workers
        self.new_psf = normalise_psf(xp, new_psf, self.dtype, "new_psf")
        self.ref_psf = normalise_psf(xp, ref_psf, self.dtype, "ref_psf")
        ny, nx = self.shape
        for name, p in (("new_psf", self.new_psf), ("ref_psf", self.ref_psf)):
            if p.shape[0] > ny or p.shape[1] > nx:
                raise ValueError(
                    f"{name} stamp {tuple(p.shape)} is larger than the image {self.shape}: "
                    "crop the stamp (odd size) or use a bigger image / sub-tile"
                )
        # Full-frame PSF spectra (pruned transforms of the small stamps).
        self.Pn_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, self.new_psf), self.shape, workers)
        self.Pr_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, self.ref_psf), self.shape, workers)
        # Small grid for compact kernels (k_n, k_r, P_D): 4x the larger stamp, >= 64.
        m = max(self.new_psf.shape + self.ref_psf.shape)
        my = min(ny, _fft.next_fast_len(max(64, 4 * m)))
        mx = min(nx, _fft.next_fast_len(max(64, 4 * m)))
        self.small_shape = (my, mx)
        self.stamp_shape = (
            max(self.new_psf.shape[0], self.ref_psf.shape[0]),
            max(self.new_psf.shape[1], self.ref_psf.shape[1]),
        )
        self._filters: _Filters | None = None

    # ------------------------------------------------------------------ filters
    def filters(self, new_sigma: float, ref_sigma: float, flux_ratio: float) -> _Filters:
        """The frequency-space filters for scalar noise levels and flux ratio (cached)."""
        key = (float(new_sigma), float(ref_sigma), float(flux_ratio))
        if self._filters is not None and self._filters.key == key:
            return self._filters
        sn, sr, beta = key
        if not (sn > 0 and sr > 0 and math.isfinite(sn) and math.isfinite(sr)):
            raise ValueError(
                f"background noise must be positive and finite; got new_sigma={sn}, ref_sigma={sr}"
            )
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"flux_ratio must be positive and finite; got {beta}")
        xp = self.xp
        ny, nx = self.shape
        npix = ny * nx
        self._filters = None  # free the previous set before allocating a new one
        Pn, Pr = self.Pn_hat, self.Pr_hat
        a_n = xp.empty(Pn.shape, dtype=Pn.dtype)
        a_r = xp.empty(Pn.shape, dtype=Pn.dtype)
        c_s = xp.empty(Pn.shape, dtype=Pn.dtype)
        w = _fft.hermitian_weights(xp, nx, self.dtype)  # full-plane sums from the half plane
        tiny = 1e-30 * (sn * sn + beta * beta * sr * sr)
        F_S = sum_kn2 = sum_kr2 = 0.0
        for b in _row_blocks(xp, Pn.shape):
            pn, pr = Pn[b], Pr[b]
            pr2 = _fft.abs2(xp, pr)
            pn2 = _fft.abs2(xp, pn)
            den = xp.maximum(pr2 * (sn * sn) + pn2 * (beta * beta * sr * sr), tiny)
            isd = 1.0 / xp.sqrt(den)
            an = pr * isd
            a_n[b] = an
            a_r[b] = pn * (beta * isd)
            c_s[b] = xp.conj(an) * xp.conj(pn) * beta
            # |a_n|^2 = |P_r|^2/den, |a_r|^2 = beta^2 |P_n|^2/den, |c_s|^2 = beta^2 |P_n|^2 |a_n|^2;
            # |k_n^|^2 = |c_s|^2 |a_n|^2 and |k_r^|^2 = |c_s|^2 |a_r|^2  [eqs. 28-29]
            u = pr2 / den
            cs2 = pn2 * u * (beta * beta) * w
            F_S += float(xp.sum(cs2))
            sum_kn2 += float(xp.sum(cs2 * u))
            sum_kr2 += float(xp.sum(cs2 * pn2 / den)) * (beta * beta)
        F_S /= npix
        sum_kn2 /= npix
        sum_kr2 /= npix
        F_D = beta / math.sqrt(sn * sn + beta * beta * sr * sr)
        self._filters = _Filters(key, a_n, a_r, c_s, F_S, F_D, sum_kn2, sum_kr2)
        return self._filters

    def _small_spectra(self, new_sigma: float, ref_sigma: float, beta: float):
        xp = self.xp
        sn, sr = new_sigma, ref_sigma
        Pn = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, self.new_psf), self.small_shape))
        Pr = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, self.ref_psf), self.small_shape))
        pr2, pn2 = _fft.abs2(xp, Pr), _fft.abs2(xp, Pn)
        den = (sn * sn) * pr2 + (beta * beta * sr * sr) * pn2
        tiny = 1e-30 * (sn * sn + beta * beta * sr * sr)
        den = xp.where(den > tiny, den, tiny)
        return Pn, Pr, pn2, pr2, den

    def psf_of_difference(self, f: _Filters) -> Array:
        """P_D as a centred unit-sum stamp (the larger of the two PSF stamp sizes)."""
        if f.P_D is None:
            xp = self.xp
            sn, sr, beta = f.key
            Pn, Pr, _, _, den = self._small_spectra(sn, sr, beta)
            PD_hat = Pr * Pn * (beta / f.F_D) / xp.sqrt(den)
            pd = _fft.irfft2(xp, PD_hat, self.small_shape)
            stamp = _fft.wrapped_to_stamp(xp, pd, self.stamp_shape)
            f.P_D = stamp / xp.sum(stamp)
        return f.P_D

    def source_noise_kernels(self, f: _Filters) -> tuple[Array, Array]:
        """Full-frame rfft2 of k_n^2 and k_r^2 (for V(S_N), V(S_R) with variance maps)."""
        if f.kn2_hat is None:
            xp = self.xp
            sn, sr, beta = f.key
            Pn, Pr, pn2, pr2, den = self._small_spectra(sn, sr, beta)
            kn_hat = xp.conj(Pn) * (beta * pr2 / den)
            kr_hat = xp.conj(Pr) * ((beta * beta) * pn2 / den)
            out = []
            for k_hat, exact in ((kn_hat, f.sum_kn2), (kr_hat, f.sum_kr2)):
                k = _fft.irfft2(xp, k_hat, self.small_shape)
                k2 = k * k
                # Renormalise so the zero frequency equals the exact full-grid sum of k^2
                # (guards against truncation of the kernel on the small grid).
                k2 = k2 * (exact / float(xp.sum(k2)))
                out.append(_fft.wrapped_rfft2(xp, k2, self.shape, self.workers))
            f.kn2_hat, f.kr2_hat = out
        return f.kn2_hat, f.kr2_hat
