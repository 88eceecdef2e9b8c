"""PNGs of the top anomalies: the spectrum, its class's PCA model, the VAE reconstruction, odd regions."""

from __future__ import annotations

import os

import numpy as np

from skybatch.models.anomaly_population import QSO_REGIONS

__all__ = ["plot_overview", "plot_spectra"]


def _models(wl, flux, ivar, vae, pop, spectype):
    import jax

    pca_model = np.full(flux.shape, np.nan)
    for c in np.unique(spectype):
        rows = np.flatnonzero(spectype == c)
        pca, _ = pop.model_for(c)
        pca_model[rows] = pca.coefficients(np.where(ivar[rows] > 0, flux[rows], 0.0), ivar[rows])[1]
    f32, i32 = flux.astype(np.float32), ivar.astype(np.float32)
    recon = np.asarray(jax.vmap(lambda f, i: vae.decode(vae.encode(f, i)[0]))(f32, i32)) if len(flux) else flux
    return pca_model, recon


def _draw(ax, wl, f, iv, pca_m, recon, row) -> None:
    good = iv > 0
    if not good.any():
        return
    lo, hi = wl[good].min(), wl[good].max()
    ax.plot(wl[good], f[good], lw=0.4, color="k", label="flux")
    span = (wl >= lo) & (wl <= hi)
    ax.plot(wl[span], pca_m[span], lw=0.8, color="C0", label=f"{row['spectype']} PCA model")
    ax.plot(wl[span], recon[span], lw=0.8, color="C3", alpha=0.8, label="VAE reconstruction")
    lw = row.get("local_residual_wavelength")
    if lw is not None and np.isfinite(lw):
        ax.axvline(lw, color="C1", lw=0.8, ls="--", label="strongest local residual")
    odd = str(row.get("odd_regions") or "")
    for name, (a, b) in QSO_REGIONS.items():
        if name in [s.split(" ")[0] for s in odd.split(", ") if s] and b > lo and a < hi:
            ax.axvspan(a, b, color="C1", alpha=0.15)
    ymax = np.nanpercentile(f[good], 99.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(0.0, np.nanpercentile(f[good], 0.5)), 1.3 * max(ymax, np.nanmax(pca_m[span]), 1e-3))
    ax.set_title(f"#{int(row['rank'])} targetid {int(row['targetid'])}  {row['spectype']} z={row['z']:.3f}  "
                 f"score {row['anomaly_score']:.1f}" + (f"  odd: {odd}" if odd else ""), fontsize=7)
    ax.tick_params(labelsize=6)


def plot_overview(wl, flux, ivar, vae, pop, cat, png: str) -> None:
    """Up to 9 top anomalies in one PNG (rest-frame wavelength)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cat)
    pca_m, recon = _models(wl, flux, ivar, vae, pop, cat["spectype"].to_numpy(str))
    fig, axes = plt.subplots(max(1, n), 1, figsize=(10, 1.9 * max(1, n)), squeeze=False)
    for i, (_, row) in enumerate(cat.iterrows()):
        _draw(axes[i, 0], wl, flux[i], ivar[i], pca_m[i], recon[i], row)
    axes[0, 0].legend(fontsize=6, loc="upper right")
    axes[-1, 0].set_xlabel("rest-frame wavelength [Å]")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def plot_spectra(wl, flux, ivar, vae, pop, cat, out_dir: str) -> list[str]:
    """One PNG per top spectrum, ``out_dir/rank{NNN}_{targetid}.png``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    n = min(len(cat), len(flux))
    pca_m, recon = _models(wl, flux[:n], ivar[:n], vae, pop, cat["spectype"].to_numpy(str)[:n])
    paths = []
    for i, (_, row) in enumerate(cat.head(n).iterrows()):
        fig, ax = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        _draw(ax[0], wl, flux[i], ivar[i], pca_m[i], recon[i], row)
        ax[0].legend(fontsize=6, loc="upper right")
        good = ivar[i] > 0
        resid = np.where(good, (flux[i] - pca_m[i]) * np.sqrt(np.where(good, ivar[i], 0.0)
                                                             / (1 + ivar[i] * (0.05 * pca_m[i]) ** 2)), np.nan)
        ax[1].plot(wl[good], resid[good], lw=0.4, color="k")
        ax[1].axhline(0, color="C0", lw=0.6)
        ax[1].set_ylabel("resid [σ]", fontsize=7)
        ax[1].set_ylim(-8, 8)
        ax[1].set_xlabel("rest-frame wavelength [Å]")
        ax[1].tick_params(labelsize=6)
        fig.tight_layout()
        p = os.path.join(out_dir, f"rank{int(row['rank']):03d}_{int(row['targetid'])}.png")
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths
