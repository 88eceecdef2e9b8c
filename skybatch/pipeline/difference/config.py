"""Settings of a difference run, and the errors that name a setting."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from skybatch.checks import check_tile_pattern
from skybatch.store.fsutil import StorageSettings, public_options


#: The manifest stage of per-pair completion records.
STAGE = "difference"
#: Named mask planes (LSST ``MP_*`` header keywords) that make a pixel bad by default.
BAD_MASK_PLANES = ("BAD", "SAT", "CR", "NO_DATA", "EDGE", "SUSPECT")
_PLAN_FILE = "pairs.parquet"
_PARTS = "parts"
#: Settings that change the science outputs; a store keeps the ones it was made with.
_SCIENCE_FIELDS = (
    "threshold", "sign", "cutout_size", "max_candidates", "subtile", "subtile_overlap", "psf", "psf_size",
    "default_fwhm", "flux_ratio", "noise", "gain", "saturation", "mask_bits", "background_box",
    "astrometric_sigma", "inject", "inject_snr", "inject_seed", "hdu", "psf_accuracy",
)  # fmt: skip
#: default fractional accuracy of the estimated PSFs (``psf_accuracy``)
PSF_ACCURACY = 0.005
#: mask-map bit of pixels vetoed around bright and saturated stars (beside the store's
#: bad = 1 and saturated = 2): detections there are counted per pair, not catalogued
MASK_BRIGHT_VETO = 4
_SNR_BINS = (0.0, 3.0, 5.0, 8.0, 12.0, 20.0, 50.0, math.inf)


@dataclass
class DifferenceConfig(StorageSettings):
    """Settings of one difference run (CLI flags, YAML keys and flow parameters map onto these).

    science: the science ("new") images: paths, globs, directories, ``s3://`` URLs or prefixes
        of FITS / ``.npz`` tiles, or one tile store (Zarr path or URL).
    reference: the reference images, in the same forms.
    out: the difference store (local path or ``s3://`` URL); created, or resumed when it was
        made with the same science settings. Catalogue, PNG and recovery files go beside it.
    science_view, reference_view: for tile-store inputs, the view (Zarr group: ``rubin``,
        ``euclid``...) to take planes from; default every view.
    bands: only pairs in these bands (names ``r``, ``VIS`` or keys ``rubin_r``); default all.
    tile_pattern: a regular expression with a named group ``tile`` taking the tile id from
        each file's URL (e.g. ``r"(?P<tile>tile_\\d+)"`` when science and reference files are
        named differently); default the file's keys or name (see :mod:`skybatch.sources.tiles`).
    instrument: force the instrument of every file; default inferred per file.
    hdu: FITS files: read this HDU (EXTNAME or number) as a plain image, noise from a
        VARIANCE/WEIGHT/RMS HDU of the same shape or else estimated from the image; default
        the survey layouts (IMAGE/VARIANCE, SCI/RMS), else the first 2-D image of the file
        (see :mod:`skybatch.sources._plain`).
    threshold: detection threshold on |S_corr| (sigma).
    sign: ``both``, ``positive`` (brightening only) or ``negative`` (fading only).
    cutout_size: odd side (px) of the cutout triplets.
    max_candidates: keep at most this many candidates per pair (the most significant).
    subtile: images larger than this (px, either axis) are differenced in overlapping
        sub-tiles of about this size with their own PSFs (spatially varying PSF, bounded
        memory); 0 = always the whole image.
    subtile_overlap: px added on each side of a sub-tile (more than the ZOGY kernel
        half-width, ~3 FWHM plus the PSF stamp half-width).
    psf: ``estimate`` (from the stars of each image or sub-tile, Gaussian fallback) or
        ``gaussian`` (a Gaussian of ``default_fwhm`` for both images).
    psf_size: odd PSF stamp size (px); default from the measured FWHM.
    default_fwhm: FWHM (px) of the fallback / ``gaussian`` PSF.
    flux_ratio: science counts per reference count of a static source; default fitted per
        pair (per sub-tile) from the stars.
    noise: ``map``: the inputs' noise maps (VARIANCE / RMS, source noise included) are the
        per-pixel variance ZOGY uses; ``background``: a robust background RMS, plus source
        noise from ``gain`` when given.
    gain: e-/ADU of both images, for ``noise=background`` and for the Poisson noise of
        injected sources; default none.
    saturation: raw level (image unit) at or above which a pixel is saturated, in either
        image; default each file's ``SATURATE`` / ``SATURATION`` keyword when it has one (the
        mask's SAT plane always counts).
    mask_bits: integer bit mask of the inputs' mask planes that make a pixel bad; default the
        planes named ``BAD SAT CR NO_DATA EDGE SUSPECT`` when the files name their planes
        (LSST ``MP_*`` keywords), else none (pixels with infinite noise are always bad).
    background_box: background mesh size (px).
    astrometric_sigma: registration noise (px, per axis) for ZOGY's astrometric term (eq. 30).
    psf_accuracy: fractional accuracy of the PSF models (0.005 = 0.5 %). It enters S_corr's
        variance as a PSF-error term (``(accuracy * S_I)^2`` per image: a bright star leaves a
        residual that large) and sets the bright-star veto (bit 4 of the mask map: stars whose
        residual could reach half the threshold get a veto disc; detections there are counted
        as ``n_vetoed``, not catalogued). 0 = exact PSFs (only saturated stars are vetoed).
    inject: point sources to inject into each science image (0 = none): an injection-recovery
        run (completeness against S/N, false positives per megapixel).
    inject_snr: (low, high) background-limited S/N in the science image of the injected
        sources, drawn log-uniformly.
    inject_seed: random seed of positions and fluxes (the same per pair on every run).
    plot_top: triplets in the PNG (the most significant candidates); 0 = no PNG.
    chunk_candidates: candidates per chunk of the cutouts array.
    cluster: a cluster profile name, YAML path or scheduler address.
    endpoint_url, anon: S3 settings for inputs and outputs (see :func:`skybatch.store.fsutil.s3_options`).
    source_options, store_options: extra fsspec options for inputs / the output store.
    retries: attempts for a task that fails (transient errors).
    progress: show a progress bar.
    """

    science: list[str]
    reference: list[str]
    out: str
    science_view: str | None = None
    reference_view: str | None = None
    bands: list[str] | None = None
    tile_pattern: str | None = None
    instrument: str | None = None
    hdu: str | None = None
    threshold: float = 5.0
    sign: str = "both"
    cutout_size: int = 31
    max_candidates: int = 500
    subtile: int = 0
    subtile_overlap: int = 64
    psf: str = "estimate"
    psf_size: int | None = None
    default_fwhm: float = 3.0
    flux_ratio: float | None = None
    noise: str = "map"
    gain: float | None = None
    saturation: float | None = None
    mask_bits: int | None = None
    background_box: int = 64
    astrometric_sigma: float = 0.0
    psf_accuracy: float = PSF_ACCURACY
    inject: int = 0
    inject_snr: tuple[float, float] = (3.0, 30.0)
    inject_seed: int = 0
    plot_top: int = 16
    chunk_candidates: int = 256
    cluster: str = "auto"
    retries: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(setting: str, msg: str) -> ValueError:
            return ValueError(f"{setting}: {msg} (--{setting.replace('_', '-')})")

        for name in ("science", "reference"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = [v]
            v = [str(s) for s in (v or []) if str(s).strip()]
            if not v:
                raise bad(name, "give at least one path, glob, s3:// URL or tile store of images")
            setattr(self, name, v)
        if not self.out or not str(self.out).strip():
            raise bad("out", "give a local path or s3:// URL for the difference store")
        if self.out.rstrip("/") in {s.rstrip("/") for s in self.science + self.reference}:
            raise bad("out", "must differ from the inputs")
        if isinstance(self.bands, str):
            self.bands = [self.bands]
        if self.bands is not None:
            self.bands = [str(b) for b in self.bands]
        check_tile_pattern(self.tile_pattern)
        if self.hdu is not None:
            self.hdu = str(self.hdu).strip() or None
        if not (isinstance(self.threshold, (int, float)) and self.threshold > 0 and math.isfinite(self.threshold)):
            raise bad("threshold", f"must be a positive number of sigma, got {self.threshold!r}")
        if self.sign not in ("both", "positive", "negative"):
            raise bad("sign", f"{self.sign!r} is not one of both, positive, negative")
        if not _is_int(self.cutout_size) or self.cutout_size < 3 or self.cutout_size % 2 == 0:
            raise bad("cutout_size", "must be an odd integer >= 3 (the candidate sits on the centre), got "
                      f"{self.cutout_size!r}")
        if not _is_int(self.max_candidates) or self.max_candidates < 1:
            raise bad("max_candidates", f"must be a positive integer, got {self.max_candidates!r}")
        if not _is_int(self.subtile) or self.subtile < 0 or 0 < self.subtile < 64:
            raise bad("subtile", f"must be 0 (whole images) or at least 64 px, got {self.subtile!r}")
        if not _is_int(self.subtile_overlap) or self.subtile_overlap < 0:
            raise bad("subtile_overlap", f"must be an integer >= 0, got {self.subtile_overlap!r}")
        if self.psf not in ("estimate", "gaussian"):
            raise bad("psf", f"{self.psf!r} is not one of estimate, gaussian")
        if self.psf_size is not None and (not _is_int(self.psf_size) or self.psf_size < 3 or self.psf_size % 2 == 0):
            raise bad("psf_size", f"must be an odd integer >= 3, got {self.psf_size!r}")
        if not self.default_fwhm > 0:
            raise bad("default_fwhm", f"must be positive (px), got {self.default_fwhm!r}")
        if self.flux_ratio is not None and not (self.flux_ratio > 0 and math.isfinite(self.flux_ratio)):
            raise bad("flux_ratio", f"must be positive, got {self.flux_ratio!r}")
        if self.noise not in ("map", "background"):
            raise bad("noise", f"{self.noise!r} is not one of map, background")
        if self.gain is not None and not self.gain > 0:
            raise bad("gain", f"must be positive (e-/ADU), got {self.gain!r}")
        if self.saturation is not None and not math.isfinite(self.saturation):
            raise bad("saturation", f"must be a finite level, got {self.saturation!r}")
        if self.mask_bits is not None and (not _is_int(self.mask_bits) or self.mask_bits < 0):
            raise bad("mask_bits", f"must be a non-negative integer bit mask, got {self.mask_bits!r}")
        if not _is_int(self.background_box) or self.background_box < 8:
            raise bad("background_box", f"must be an integer >= 8 px, got {self.background_box!r}")
        if not self.astrometric_sigma >= 0:
            raise bad("astrometric_sigma", f"must be >= 0 px, got {self.astrometric_sigma!r}")
        if not (isinstance(self.psf_accuracy, (int, float)) and 0 <= self.psf_accuracy < 1
                and math.isfinite(self.psf_accuracy)):
            raise bad("psf_accuracy", f"must be a fraction in [0, 1) (0.005 = 0.5 %), got {self.psf_accuracy!r}")
        if not _is_int(self.inject) or self.inject < 0:
            raise bad("inject", f"must be an integer >= 0, got {self.inject!r}")
        snr = tuple(float(s) for s in self.inject_snr)
        if len(snr) != 2 or not 0 < snr[0] <= snr[1]:
            raise bad("inject_snr", f"must be (low, high) with 0 < low <= high, got {self.inject_snr!r}")
        self.inject_snr = snr  # type: ignore[assignment]
        if not _is_int(self.plot_top) or self.plot_top < 0:
            raise bad("plot_top", f"must be an integer >= 0, got {self.plot_top!r}")
        if not _is_int(self.chunk_candidates) or self.chunk_candidates < 1:
            raise bad("chunk_candidates", f"must be a positive integer, got {self.chunk_candidates!r}")
        if not _is_int(self.retries) or self.retries < 0:
            raise bad("retries", f"must be an integer >= 0, got {self.retries!r}")


    def science_settings(self) -> dict[str, Any]:
        """The settings that shape the outputs (recorded in the store; a resumed store must match)."""
        d = {k: getattr(self, k) for k in _SCIENCE_FIELDS}
        d["inject_snr"] = list(d["inject_snr"])
        return d

    def settings_mismatch(self, stored: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The science settings that differ from a store's ``stored`` ones: {name: (store, now)}.

        A setting the store does not record (made by a version without it) counts as its
        default then, so an older store resumes when that setting is left at its default."""
        defaults = {f.name: f.default for f in fields(self)}
        out = {}
        for k, v in self.science_settings().items():
            old = stored[k] if k in stored else defaults.get(k)
            if isinstance(old, tuple):
                old = list(old)
            if old != v:
                out[k] = (stored.get(k, f"{old!r} (not recorded: the default then)"), v)
        return out

    def identity(self) -> str:
        return hashlib.sha256(json.dumps(self.science_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """Every setting as recorded in store attrs (no credentials); of ``science`` and ``reference`` the
        first few (their numbers as ``n_science_given``/``n_reference_given``; every image is in the plan)."""
        from skybatch.pipeline.sourcejob import bounded_list

        d = asdict(self)
        for k in ("science", "reference"):
            d[f"n_{k}_given"] = 1 if isinstance(d[k], str) else len(d[k])
            d[k] = bounded_list(d[k])
        d["source_options"] = public_options(self.source_options)
        d["store_options"] = public_options(self.store_options)
        d["inject_snr"] = list(d["inject_snr"])
        d.pop("progress", None)
        d.pop("_s3_cache", None)
        return d


def mismatch_message(out: str, diff: dict[str, tuple[Any, Any]]) -> str:
    """The error for resuming ``out`` with other science settings: each setting, its flag and both values."""
    items = "; ".join(f"{k} (--{k.replace('_', '-')}): store {a!r}, now {b!r}" for k, (a, b) in diff.items())
    return (f"out: {out} already holds differences made with other settings: {items}. Give the store's values "
            "to resume it, choose another --out, or delete it to start over")


class DifferenceSettingsError(ValueError):
    """A setting that does not fit the inputs or the existing store; the message names it and what to do."""


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
