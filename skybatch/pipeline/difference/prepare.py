"""Worker side, step 1: read a pair's frames, build masks, put the reference on the science grid, inject."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.store.fsutil import filesystem
from skybatch.store.retry import retry_call

from .config import BAD_MASK_PLANES
from .plan import PairTask


# -- worker side: read, prepare, difference, finish ------------------------------------------------


class _InputError(Exception):
    """A pair input that cannot be differenced (set aside, not retried)."""

    def __init__(self, url: str, reason: str, message: str):
        super().__init__(url, reason, message)
        self.url, self.reason, self.message = url, reason, message


@dataclass
class _SetAside:
    url: str
    reason: str
    message: str


@dataclass
class _Frame:
    image: np.ndarray
    noise: np.ndarray
    mask: np.ndarray
    wcs: str


def _read_frame(frame: dict[str, Any], options: dict[str, Any], instrument: str | None,
                tile_pattern: str | None, hdu: str | None = None) -> _Frame:
    """Read one frame's image, noise (1-sigma), mask and WCS header; bad inputs raise _InputError."""
    from skybatch.sources.base import SourceError

    try:
        if frame["kind"] == "store":
            from skybatch.store.tile_store import open_tile_group

            view, ti, bi = frame["locator"].split(":")
            v = open_tile_group(frame["url"], options, mode="r", consolidated=True)[view]
            ti, bi = int(ti), int(bi)
            if not bool(v["present"][ti, bi]):
                raise _InputError(frame["uri"], "absent", f"{frame['uri']}: the tile store has no data for this plane")
            return _Frame(np.asarray(v["image"][ti, bi], np.float32), np.asarray(v["noise"][ti, bi], np.float32),
                          np.asarray(v["mask"][ti, bi], np.uint32), str(v["wcs"][ti, bi]))
        from skybatch.sources.tiles import TilePlaneInfo, read_tile_planes

        url = frame["url"]
        fs = filesystem(url, options)
        info = TilePlaneInfo(frame["tile_id"], frame["instrument"], frame["band"], int(frame["height"]),
                             int(frame["width"]), frame["locator"], frame["unit"], frame.get("meta") or "")
        (p,) = retry_call(read_tile_planes, fs, url, [info], what=f"read {url}", instrument=instrument,
                          tile_pattern=tile_pattern, hdu=hdu)
        if not p.present:
            raise _InputError(url, "absent", f"{url}: plane {frame['tile_id']}/{frame['band']} holds no finite pixel")
        return _Frame(p.image, p.noise, p.mask, p.wcs)
    except SourceError as e:
        raise _InputError(frame["uri"], e.reason, str(e)) from None
    except FileNotFoundError as e:
        raise _InputError(frame["uri"], "not-found",
                          f"{frame['uri']}: no longer there ({e}); restore it and re-run") from None


def _bad_bits(frame: dict[str, Any], mask_bits: int | None) -> tuple[int, int]:
    """(bits that make a pixel bad, bits that mark it saturated) for one frame's mask."""
    names = json.loads(frame.get("mask_bits") or "{}")
    sat = (1 << int(names["SAT"])) if "SAT" in names else 0
    if mask_bits is not None:
        return int(mask_bits), sat & int(mask_bits)
    bad = 0
    for n in BAD_MASK_PLANES:
        if n in names:
            bad |= 1 << int(names[n])
    return bad, sat


@dataclass
class _Prepared:
    """A pair on the science grid, ready to difference (raw images, noise, masks; float32/bool (ny, nx))."""

    new: np.ndarray
    ref: np.ndarray
    new_noise: np.ndarray
    ref_noise: np.ndarray
    new_bad: np.ndarray
    ref_bad: np.ndarray
    saturated: np.ndarray
    wcs: str
    aligned: bool
    injected: dict[str, np.ndarray] | None
    flux_ratio_guess: float | None = None


def _fill_noise(noise: np.ndarray, where: str) -> np.ndarray:
    good = np.isfinite(noise) & (noise > 0)
    if not good.any():
        raise _InputError(where, "no-noise", f"{where}: the noise map has no positive finite value; fix the "
                          "VARIANCE / RMS of this file, or use --noise background")
    return np.where(good, noise, np.float32(np.median(noise[good]))).astype(np.float32)


def _prepare(task: PairTask, settings: dict[str, Any], ctx: dict[str, Any]) -> _Prepared | _SetAside:
    """Read both frames, build masks, put the reference on the science grid, inject sources."""
    try:
        return _prepare_or_raise(task, settings, ctx)
    except _InputError as e:
        return _SetAside(e.url, e.reason, f"pair {task.pair_id}: {e.message}")


def _meta(frame: dict[str, Any]) -> dict[str, float]:
    m = frame.get("meta") or ""
    return json.loads(m) if isinstance(m, str) and m else {}


def flux_ratio_guess(new_meta: dict[str, float], ref_meta: dict[str, float]) -> float | None:
    """Science counts per reference count from the headers: ``10**(0.4 (ZP_new - ZP_ref))`` when
    both have a zero point, else the ratio of exposure times when both have one, else None.

    (Zero points of total counts, as ZTF ``MAGZP``; a first guess: the fit from stars wins
    whenever there are enough of them, and the pipeline puts the reference in counts per
    science pixel, so pixel scales do not enter.)
    """
    zn, zr = new_meta.get("zero_point"), ref_meta.get("zero_point")
    if zn is not None and zr is not None:
        return float(10.0 ** (0.4 * (zn - zr)))
    tn, tr = new_meta.get("exptime"), ref_meta.get("exptime")
    if tn and tr:
        return float(tn / tr)
    return None


def _prepare_or_raise(task: PairTask, settings: dict[str, Any], ctx: dict[str, Any]) -> _Prepared:
    from skybatch.imaging import align_to_grid, same_grid
    from skybatch.store.tile_store import wcs_from_header

    opts, inst, pat, hdu = ctx["source_options"], ctx["instrument"], ctx["tile_pattern"], ctx.get("hdu")
    s = _read_frame(task.science, opts, inst, pat, hdu)
    r = _read_frame(task.reference, opts, inst, pat, hdu)
    new_meta, ref_meta = _meta(task.science), _meta(task.reference)

    def masks(fr: _Frame, frame: dict[str, Any], meta: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        bad_bits, sat_bits = _bad_bits(frame, settings["mask_bits"])
        bad = ~np.isfinite(fr.noise) | ~np.isfinite(fr.image) | (fr.noise <= 0)
        if bad_bits:
            bad |= (fr.mask & np.uint32(bad_bits)) != 0
        sat = (fr.mask & np.uint32(sat_bits)) != 0 if sat_bits else np.zeros(fr.image.shape, bool)
        # the --saturation setting overrides the file's SATURATE keyword
        level = settings["saturation"] if settings["saturation"] is not None else meta.get("saturate")
        if level is not None:
            sat |= fr.image >= level
        return bad & ~sat, sat

    new_bad, new_sat = masks(s, task.science, new_meta)
    ref_bad, ref_sat = masks(r, task.reference, ref_meta)
    new_noise = _fill_noise(s.noise, task.science["uri"])
    ref_noise = _fill_noise(r.noise, task.reference["uri"])
    new, ref = s.image, r.image
    new_wcs, ref_wcs = wcs_from_header(s.wcs), wcs_from_header(r.wcs)
    shape = tuple(new.shape)
    aligned = False
    if new_wcs is not None and ref_wcs is not None and not same_grid(ref_wcs, ref.shape, new_wcs, shape):
        # counts per science pixel (flux-conserving when pixel scales differ); ZOGY gets the white-noise
        # variance with the resampled noise's low-frequency power (see skybatch.imaging.align)
        ref_in = np.where(ref_bad | ref_sat, 0.0, ref).astype(np.float32)
        al = align_to_grid(ref_in, ref_wcs, new_wcs, shape, variance=np.square(np.where(ref_bad, 0.0, ref_noise)),
                           flux_conserving=True)
        if not al.footprint.any():
            raise _InputError(task.reference["uri"], "no-overlap",
                              f"{task.reference['uri']}: does not overlap the science image {task.science['uri']} "
                              "(their WCSs share no sky); check the pairing")
        # move the masks the same way; any touched pixel stays flagged
        moved_bad = align_to_grid(ref_bad.astype(np.float32), ref_wcs, new_wcs, shape).image
        moved_sat = align_to_grid(ref_sat.astype(np.float32), ref_wcs, new_wcs, shape).image
        ref = al.image
        ref_sat = np.nan_to_num(moved_sat, nan=0.0) >= 0.01
        ref_bad = ~(np.nan_to_num(moved_bad, nan=1.0) < 0.01) | ~np.isfinite(ref) | ~al.footprint
        ref_bad &= ~ref_sat
        assert al.variance_white is not None  # a variance was given
        white = np.where(ref_bad | ref_sat, np.nan, al.variance_white)
        ref_noise = _fill_noise(np.sqrt(white).astype(np.float32), task.reference["uri"])
        ref = np.where(np.isfinite(ref), ref, 0.0).astype(np.float32)
        aligned = True
    elif tuple(ref.shape) != shape:
        raise _InputError(
            task.reference["uri"], "shape-mismatch",
            f"{task.reference['uri']} is {ref.shape[0]}x{ref.shape[1]} px but the science image {task.science['uri']} "
            f"is {shape[0]}x{shape[1]} and {'neither has' if new_wcs is None and ref_wcs is None else 'one has no'} "
            "WCS to resample it; give both images a WCS, or a reference on the science grid",
        )
    saturated = new_sat | ref_sat
    injected = None
    if settings["inject"]:
        new, new_noise, injected = _inject(new, new_noise, new_bad | saturated, task, settings)
    return _Prepared(new.astype(np.float32, copy=False), ref.astype(np.float32, copy=False), new_noise, ref_noise,
                     new_bad, ref_bad, saturated, s.wcs, aligned, injected, flux_ratio_guess(new_meta, ref_meta))


def _inject(new: np.ndarray, noise: np.ndarray, masked: np.ndarray, task: PairTask, settings: dict[str, Any]):
    """Add ``settings['inject']`` point sources (the science image's own PSF) at random free places.

    Fluxes give a background-limited S/N in the science image alone, log-uniform in
    ``inject_snr``: ``flux = snr * sigma / sqrt(sum(P^2))``. Positions avoid masked and
    saturated pixels by a PSF stamp, the edges by 1.5 stamps, and each other by one stamp.
    """
    import scipy.ndimage as ndi

    from skybatch.imaging import estimate_background, estimate_psf, gaussian_psf, inject_point_sources

    bkg = estimate_background(new, mask=masked, box=settings["background_box"])
    sub = np.where(masked, 0.0, new - bkg.background).astype(np.float32)
    sigma = noise if settings["noise"] == "map" else float(bkg.global_rms)
    if settings["psf"] == "gaussian":
        psf = np.asarray(gaussian_psf(settings["default_fwhm"], settings["psf_size"] or _gauss_size(settings)))
    else:
        psf = np.asarray(estimate_psf(sub, sigma, size=settings["psf_size"], mask=masked,
                                      default_fwhm=settings["default_fwhm"]).psf)
    psf = psf / psf.sum()
    m = psf.shape[0]
    ny, nx = new.shape
    rng = np.random.default_rng([int(settings["inject_seed"]), int(task.pair)])
    margin = max((3 * m) // 2, settings["cutout_size"] // 2 + 1)
    forbidden = ndi.binary_dilation(masked, iterations=m) if masked.any() else masked
    xs: list[float] = []
    ys: list[float] = []
    n = int(settings["inject"])
    if ny > 2 * margin + 1 and nx > 2 * margin + 1:
        cx = rng.uniform(margin, nx - 1 - margin, 20 * n + 20)
        cy = rng.uniform(margin, ny - 1 - margin, 20 * n + 20)
        for x, y in zip(cx, cy):
            if len(xs) == n:
                break
            if forbidden[int(round(y)), int(round(x))]:
                continue
            if all((x - a) ** 2 + (y - b) ** 2 >= m * m for a, b in zip(xs, ys)):
                xs.append(float(x))
                ys.append(float(y))
    lo, hi = settings["inject_snr"]
    snr = np.exp(rng.uniform(math.log(lo), math.log(hi), len(xs)))
    sig_bg = float(np.median(noise[~masked])) if settings["noise"] == "map" else float(bkg.global_rms)
    flux = snr * sig_bg / math.sqrt(float(np.sum(np.square(psf, dtype=np.float64))))
    gain = settings["gain"]
    out = np.asarray(inject_point_sources(new, psf, xs, ys, flux, gain=gain, seed=int(rng.integers(2**31))))
    if gain and settings["noise"] == "map" and xs:
        model = np.asarray(inject_point_sources(np.zeros_like(new), psf, xs, ys, flux))
        noise = np.sqrt(np.square(noise) + np.clip(model, 0, None) / gain).astype(np.float32)
    truth = {"x": np.asarray(xs), "y": np.asarray(ys), "flux": flux, "snr_new": snr}
    return out.astype(np.float32), noise, truth


def _gauss_size(settings: dict[str, Any]) -> int:
    return max(11, int(math.ceil(6 * settings["default_fwhm"])) | 1)
