"""Worker side, step 2: ZOGY on each window, then stitch, detect, measure, cut triplets and record the pair."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from skybatch.store.fsutil import atomic_write_bytes, filesystem, join
from skybatch.store.manifest import Manifest

from .config import _PARTS, MASK_BRIGHT_VETO, STAGE
from .plan import PairTask, _table_bytes
from .prepare import _Prepared, _SetAside, _gauss_size, _prepare


def _difference_window(prep: _Prepared | _SetAside, window: tuple,
                       settings: dict[str, Any]) -> dict[str, Any] | _SetAside:
    """ZOGY on one window of a prepared pair; returns the interior's maps and the window's details."""
    if isinstance(prep, _SetAside):
        return prep
    from skybatch.imaging import difference_pair, gaussian_psf, psf_fwhm

    (wy0, wy1, wx0, wx1), (iy0, iy1, ix0, ix1) = window
    ws = (slice(wy0, wy1), slice(wx0, wx1))
    inner = (slice(iy0 - wy0, iy1 - wy0), slice(ix0 - wx0, ix1 - wx0))
    kw: dict[str, Any] = {}
    if settings["psf"] == "gaussian":
        p = gaussian_psf(settings["default_fwhm"], settings["psf_size"] or _gauss_size(settings))
        kw.update(new_psf=p, ref_psf=p)
    if settings["noise"] == "map":
        kw.update(new_sigma=prep.new_noise[ws], ref_sigma=prep.ref_noise[ws])
    elif settings["gain"]:
        kw.update(new_gain=settings["gain"], ref_gain=settings["gain"])
    a = float(settings["astrometric_sigma"])
    sat = prep.saturated[ws]
    # PSF and flux-ratio fallbacks warn (to the worker log) and say so in their method fields
    out = difference_pair(
        prep.new[ws], prep.ref[ws], flux_ratio=settings["flux_ratio"], flux_ratio_guess=prep.flux_ratio_guess,
        new_mask=prep.new_bad[ws] | sat, ref_mask=prep.ref_bad[ws] | sat,
        background_box=settings["background_box"], psf_size=settings["psf_size"],
        default_fwhm=settings["default_fwhm"], astrometric_sigma=(a, a),
        psf_accuracy=float(settings.get("psf_accuracy", 0.0)), fft_workers=1, **kw,
    )
    z = out.zogy
    bad = np.asarray(out.bad) | (np.asarray(z.bad) if z.bad is not None else False)
    bad &= ~sat  # saturated pixels are flagged (and dilated for detection) on their own
    from skybatch.imaging.veto import bright_star_veto

    pd_fwhm = float(psf_fwhm(z.P_D))
    veto = bright_star_veto(
        [out.new, out.ref], [float(z.new_sigma), float(z.ref_sigma)], max(out.new_psf.fwhm, out.ref_psf.fwhm),
        pd_fwhm, saturated=sat, bad=bad, accuracy=float(settings.get("psf_accuracy", 0.005)),
        threshold=float(settings["threshold"]), min_growth=float(2 * (max(z.P_D.shape) // 2)),
    )
    nan = np.float32(np.nan)
    return {
        "interior": (iy0, iy1, ix0, ix1),
        "D": np.asarray(z.D, np.float32)[inner], "S_corr": np.asarray(z.S_corr, np.float32)[inner],
        "F_psf": np.asarray(z.F_psf, np.float32)[inner], "F_psf_err": np.asarray(z.F_psf_err, np.float32)[inner],
        "new": np.where(bad | sat, nan, np.asarray(out.new, np.float32))[inner],
        "ref": np.where(bad | sat, nan, np.asarray(out.ref, np.float32))[inner],
        "bad": bad[inner], "saturated": sat[inner], "veto": veto.mask[inner],
        "fill_residual": np.asarray(out.fill_residual, np.float32)[inner], "P_D": np.asarray(z.P_D, np.float32),
        "flux_ratio": float(z.flux_ratio), "flux_ratio_err": float(z.flux_ratio_err),
        "flux_ratio_method": str(z.flux_ratio_method), "new_psf_method": str(out.new_psf.method),
        "ref_psf_method": str(out.ref_psf.method), "new_fwhm": float(psf_fwhm(out.new_psf.psf)),
        "ref_fwhm": float(psf_fwhm(out.ref_psf.psf)), "new_sigma": float(z.new_sigma), "ref_sigma": float(z.ref_sigma),
    }


def _injected_of(prep: _Prepared | _SetAside) -> dict[str, np.ndarray] | None:
    return None if isinstance(prep, _SetAside) else prep.injected


def _aligned_of(prep: _Prepared | _SetAside) -> tuple[bool, str]:
    return (False, "") if isinstance(prep, _SetAside) else (prep.aligned, prep.wcs)


class _Stitched:
    """The stitched maps of a pair, shaped like a ZogyResult for detection."""

    def __init__(self, maps: dict[str, np.ndarray], P_D: np.ndarray, bad: np.ndarray):
        self.D, self.S_corr, self.F_psf, self.F_psf_err = maps["D"], maps["S_corr"], maps["F_psf"], maps["F_psf_err"]
        self.P_D, self.bad = P_D, bad


def _method(values: list[str]) -> str:
    u = sorted(set(values))
    return u[0] if len(u) == 1 else "mixed:" + ",".join(u)


def _finish(task: PairTask, windows: list, injected, aligned_wcs: tuple[bool, str], settings: dict[str, Any],
            ctx: dict[str, Any]) -> dict[str, Any]:
    """Stitch the windows, detect, cut triplets, write the pair's maps and parts, record it done."""
    from skybatch.imaging import cutout_triplets, detect_candidates, expected_snr, recovery
    from skybatch.imaging.holes import HOLE_GROW
    from skybatch.imaging.margins import FILL_RESIDUAL_MAX, detection_margin, edge_grow_for, edge_sources
    from skybatch.imaging.psf import psf_fwhm
    from skybatch.store import difference_store as ds
    from skybatch.store.tile_store import wcs_from_header

    aside = next((w for w in windows if isinstance(w, _SetAside)), None)
    if aside is not None:
        return {"status": "set-aside", "pair": task.pair, "pair_id": task.pair_id, "url": aside.url,
                "reason": aside.reason, "message": aside.message}
    ny, nx = task.shape
    maps = {k: np.full((ny, nx), np.nan, np.float32) for k in ("D", "S_corr", "F_psf", "F_psf_err", "new", "ref")}
    bad = np.zeros((ny, nx), bool)
    sat = np.zeros((ny, nx), bool)
    veto = np.zeros((ny, nx), bool)
    fill_resid = np.zeros((ny, nx), np.float32)
    ref_sigma = np.full((ny, nx), np.nan, np.float32)
    centre, best = windows[0], math.inf
    for w in windows:
        y0, y1, x0, x1 = w["interior"]
        for k in maps:
            maps[k][y0:y1, x0:x1] = w[k]
        bad[y0:y1, x0:x1] = w["bad"]
        sat[y0:y1, x0:x1] = w["saturated"]
        veto[y0:y1, x0:x1] = w.get("veto", w["saturated"])
        fill_resid[y0:y1, x0:x1] = w["fill_residual"]
        ref_sigma[y0:y1, x0:x1] = w["ref_sigma"]
        d = (0.5 * (x0 + x1) - nx / 2) ** 2 + (0.5 * (y0 + y1) - ny / 2) ** 2
        if d < best:
            best, centre = d, w
    aligned, wcs_header = aligned_wcs
    wcs = wcs_from_header(wcs_header)
    res = _Stitched(maps, centre["P_D"], bad)
    # the veto holds the saturated pixels grown by their flux-based radius (at least the old
    # dilation); detections inside it are counted, not catalogued. Wide bad (NaN, off-footprint)
    # regions are grown by a whole P_D width where their edge cuts a reference source (its
    # residual reaches that far), by a P_D FWHM along empty sky; holes (isolated bad pixels,
    # tracks, columns: filled before ZOGY) by HOLE_GROW px, and as far as their fill may leave
    # more than FILL_RESIDUAL_MAX in S_corr (skybatch.imaging.margins). Detections kept out by
    # these margins are counted (n_margin), not catalogued; all of them carry mask bit 8.
    half = max(np.asarray(centre["P_D"]).shape) // 2
    pd_fwhm = float(psf_fwhm(np.asarray(centre["P_D"])))
    psf_radius = int(math.ceil(2.5 * max(max(w["new_fwhm"], w["ref_fwhm"]) for w in windows)))
    cut = edge_sources(bad, maps["ref"] / ref_sigma, psf_radius)
    no_go = detection_margin(bad, cut, cut_grow=2 * half, edge_grow=edge_grow_for(pd_fwhm, HOLE_GROW),
                             hole_grow=HOLE_GROW) | (fill_resid > FILL_RESIDUAL_MAX)
    det = detect_candidates(res, settings["threshold"], mask=no_go, saturated=veto | sat, saturated_dilate=0,
                            mask_dilate=0, sign=settings["sign"], wcs=wcs)
    n_all = len(detect_candidates(res, settings["threshold"], mask=no_go, saturated=sat, saturated_dilate=0,
                                  mask_dilate=0, sign=settings["sign"]))
    n_vetoed = max(n_all - len(det), 0)
    n_margin = max(len(detect_candidates(res, settings["threshold"], mask=bad, saturated=veto | sat,
                                       saturated_dilate=0, mask_dilate=0, sign=settings["sign"])) - len(det), 0)
    n_detected = len(det)
    det = det.head(settings["max_candidates"]).reset_index(drop=True)
    if "ra" not in det:
        det["ra"] = np.nan
        det["dec"] = np.nan
    det["rank"] = np.arange(len(det), dtype=np.int64)
    det["injected"] = False
    from skybatch.imaging.properties import candidate_properties

    props = candidate_properties(
        maps["D"], maps["S_corr"], det["x"].to_numpy(), det["y"].to_numpy(), det["sign"].to_numpy(),
        psf_fwhm=pd_fwhm, masked=bad | sat, ref=maps["ref"],
        stamp=settings["cutout_size"],
    )
    for k, v in props.items():
        det[k] = v
    trip = np.asarray(cutout_triplets(maps["new"], maps["ref"], maps["D"], det["x"].to_numpy(), det["y"].to_numpy(),
                                      settings["cutout_size"]), np.float32)
    inj_table = None
    n_false, n_inj = 0, 0
    if injected is not None:
        x, y, flux = injected["x"], injected["y"], injected["flux"]
        n_inj = int(len(x))
        snr = expected_snr(res, x, y, flux) if n_inj else np.zeros(0)
        recov = recovery(det, x, y, flux, snr, area=float(ny * nx))
        n_false = int(recov.n_false)
        m = recov.matched
        det.loc[m.loc[m.recovered, "det_index"].to_numpy(), "injected"] = True
        inj_table = pd.DataFrame({
            "pair": task.pair, "pair_id": task.pair_id, "x": m["x"], "y": m["y"], "flux_true": m["flux_true"],
            "snr_new": injected["snr_new"], "snr": m["snr"], "recovered": m["recovered"], "rank": m["det_index"],
            "flux": m["flux"], "flux_err": m["flux_err"], "pull": m["pull"], "dx": m["dx"], "dy": m["dy"],
        })

    out, opts = ctx["out"], ctx["store_options"]
    g = ds.open_difference_group(out, opts)
    flags = np.where(bad, ds.MASK_BAD, 0).astype(np.uint8) | np.where(sat, ds.MASK_SATURATED, 0).astype(np.uint8)
    flags |= np.where(veto & ~sat, MASK_BRIGHT_VETO, 0).astype(np.uint8)
    flags |= np.where(no_go & ~bad & ~sat & ~veto, ds.MASK_MARGIN, 0).astype(np.uint8)
    ds.write_pair_maps(g[task.group], task.index, {**{k: maps[k] for k in ds.MAP_VARIABLES}, "mask": flags})
    fs = filesystem(out, opts)
    parts = join(Manifest(out, opts).url, _PARTS)
    stem = f"pair-{task.pair:09d}-{task.fingerprint}"
    atomic_write_bytes(fs, join(parts, "candidates", stem + ".parquet"), _table_bytes(det))
    buf = io.BytesIO()
    np.save(buf, trip)
    atomic_write_bytes(fs, join(parts, "cutouts", stem + ".npy"), buf.getvalue())
    if inj_table is not None:
        atomic_write_bytes(fs, join(parts, "injections", stem + ".parquet"), _table_bytes(inj_table))
    ratio = [w["flux_ratio"] for w in windows]
    rec = {
        "chunk": task.pair, "start": task.pair, "stop": task.pair + 1, "fingerprint": task.fingerprint,
        "status": "done", "pair": task.pair, "pair_id": task.pair_id, "group": task.group, "pair_index": task.index,
        "n_candidates": int(len(det)), "n_detected": int(n_detected), "n_injected": n_inj, "n_false": n_false,
        "area": float(ny * nx), "n_vetoed": int(n_vetoed), "n_margin": int(n_margin), "veto_fraction": float(veto.mean()),
        "flux_ratio": float(np.median(ratio)),
        "flux_ratio_err": float(np.median([w["flux_ratio_err"] for w in windows])),
        "flux_ratio_method": _method([w["flux_ratio_method"] for w in windows]),
        "new_psf_method": _method([w["new_psf_method"] for w in windows]),
        "ref_psf_method": _method([w["ref_psf_method"] for w in windows]),
        "new_fwhm": float(np.median([w["new_fwhm"] for w in windows])),
        "ref_fwhm": float(np.median([w["ref_fwhm"] for w in windows])),
        "new_sigma": float(np.median([w["new_sigma"] for w in windows])),
        "ref_sigma": float(np.median([w["ref_sigma"] for w in windows])),
        "aligned": bool(aligned), "wcs": wcs_header, "n_subtiles": len(windows),
        "run_id": ctx["run_id"], "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Manifest(out, opts, stage=STAGE).mark_chunk_done(rec)
    return rec


def _pair_whole(task: PairTask, settings: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """One task for a whole pair: prepare, difference, finish."""
    prep = _prepare(task, settings, ctx)
    w = _difference_window(prep, task.windows[0], settings)
    return _finish(task, [w], _injected_of(prep), _aligned_of(prep), settings, ctx)
