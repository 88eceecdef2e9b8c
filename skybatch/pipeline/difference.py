"""ZOGY difference imaging at survey scale: science/reference pairs -> difference store, on Dask.

Planned before it runs, like the ingests:

1. **frames**: the science and reference inputs are each a list of FITS / ``.npz`` files
   (paths, globs, directories, ``s3://`` URLs or prefixes; read with
   :mod:`skybatch.sources.tiles`: calexp-like IMAGE/MASK/VARIANCE or Euclid-like SCI/RMS/FLG
   FITS, ``.npz`` tiles) or a tile store (:mod:`skybatch.store.tile_store`, optionally one
   view). Files are inspected on the cluster (headers only); every (tile, band) plane is a
   *frame*. Unreadable files are set aside with a reason.
2. **pairs**: science and reference frames are paired on ``(tile_id, band)``. A science frame
   with no reference (``no-reference``) or repeated (``duplicate``) is set aside and listed;
   references no science frame uses are listed as unused (not an error: a reference library
   usually covers more sky than one night). Pair numbers are stable across runs: pairs of a
   later run are appended.
3. **difference**: one Dask task per pair reads its own two frames, masks bad and saturated
   pixels, resamples the reference onto the science grid when their WCSs differ, optionally
   injects point sources, and runs :func:`skybatch.imaging.difference_pair` (background,
   PSFs from stars, flux ratio, ZOGY with the frames' noise maps as variance). Images larger
   than ``subtile`` are cut into overlapping sub-tiles (:func:`skybatch.imaging.plan_subtiles`)
   with their own PSFs: one task prepares the pair, one task per sub-tile differences it, and
   one task stitches the interiors. The pair's task then detects candidates on the stitched
   ``S_corr`` (:func:`~skybatch.imaging.detect_candidates`), cuts (science, reference,
   difference) triplets, writes its own chunk of the maps, stages its candidates and cutouts
   in the manifest, and records itself done (manifest stage ``difference``).
4. **finish** (driver plus Dask): per-pair coordinates, the candidate catalogue
   ``OUT.candidates.parquet`` (row i = cutout i of the ``candidates`` group, written by tasks
   that own whole chunks), a PNG of the most significant triplets, and for injection runs
   ``OUT.recovery.json`` / ``.parquet`` (completeness per S/N bin, false positives per
   megapixel, flux pulls).

Resumable: a re-run skips every pair recorded with the same fingerprint (inputs, settings,
store) and rebuilds the catalogue only when the set of finished pairs changed, so candidates
are never duplicated. Bad inputs (missing or corrupt files, a shape mismatch with no WCS to
align, an empty plane) are set aside with a reason while the rest goes on; the report's exit
code is then 3 (1 when tasks failed: re-run to retry them).

Doors: :func:`run` (own cluster), :func:`run_with_client`, :func:`difference` (one call),
:func:`injection_recovery` (completeness run); :func:`plan_difference` and
:func:`execute_difference` are the coarse steps the Prefect flow wraps.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import skybatch
from skybatch.store.fsutil import StorageSettings, atomic_write_bytes, filesystem, join, public_options
from skybatch.store.manifest import Manifest

__all__ = [
    "DifferenceConfig",
    "DifferencePlan",
    "DifferenceReport",
    "DifferenceSettingsError",
    "PairTask",
    "plan_difference",
    "execute_difference",
    "run",
    "run_with_client",
    "difference",
    "injection_recovery",
    "STAGE",
    "BAD_MASK_PLANES",
]

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
    "astrometric_sigma", "inject", "inject_snr", "inject_seed", "hdu",
)  # fmt: skip
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
    inject: int = 0
    inject_snr: tuple[float, float] = (3.0, 30.0)
    inject_seed: int = 0
    plot_top: int = 16
    chunk_candidates: int = 256
    cluster: str = "auto"
    endpoint_url: str | None = None
    anon: bool | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    store_options: dict[str, Any] = field(default_factory=dict)
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
        if self.tile_pattern:
            try:
                pat = re.compile(self.tile_pattern)
            except re.error as e:
                raise bad("tile_pattern", f"{self.tile_pattern!r} is not a regular expression ({e})") from None
            if "tile" not in pat.groupindex:
                raise bad("tile_pattern", f"{self.tile_pattern!r} needs a named group (?P<tile>...)")
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

    def identity(self) -> str:
        return hashlib.sha256(json.dumps(self.science_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """Every setting as recorded in store attrs (no credentials)."""
        d = asdict(self)
        d["source_options"] = public_options(self.source_options)
        d["store_options"] = public_options(self.store_options)
        d["inject_snr"] = list(d["inject_snr"])
        d.pop("progress", None)
        d.pop("_s3_cache", None)
        return d


class DifferenceSettingsError(ValueError):
    """A setting that does not fit the inputs or the existing store; the message names it and what to do."""


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class PairTask:
    """One pair to difference.

    pair: the pair's number in the store. pair_id: ``"<tile_id>/<band>"``. group, index: its
    pairs group (``"<ny>x<nx>"``) and index on that group's ``pair`` axis. shape: science (ny, nx).
    science, reference: the frames (url, kind file/store, locator, checksum, shape, mask bits...).
    windows: sub-tile windows (y0, y1, x0, x1) and interiors; one covering everything = whole image.
    fingerprint: hash of inputs, settings and store; a record with it means done.
    """

    pair: int
    pair_id: str
    group: str
    index: int
    shape: tuple[int, int]
    science: dict[str, Any]
    reference: dict[str, Any]
    windows: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]
    fingerprint: str


@dataclass
class DifferencePlan:
    """What :func:`execute_difference` will do; built by :func:`plan_difference`.

    table: every pair the store holds (this run's and earlier runs'), one row each.
    todo: pairs still to difference; n_done: this run's pairs already done.
    set_aside: inputs set aside while planning.
    unused_references: reference frames no science frame matched (url, pair_id).
    """

    config: DifferenceConfig
    run_id: str
    store_uuid: str
    table: pd.DataFrame
    todo: list[PairTask]
    n_done: int
    set_aside: list[dict[str, Any]]
    unused_references: list[dict[str, Any]]
    n_science: int
    n_reference: int


@dataclass
class DifferenceReport:
    """The outcome of a difference run.

    n_pairs: pairs in the store after the run; groups: pairs per group (image shape).
    pairs_written / pairs_skipped: this run's differenced / already-done pairs.
    failed: pairs whose task failed (re-run to retry). set_aside: inputs set aside with a
    reason (fix them and re-run). unused_references: references nothing paired with.
    n_candidates: rows of the catalogue; n_dropped: detections beyond ``max_candidates`` per pair
    (not catalogued). catalogue, png, recovery_json: files beside the store.
    recovery: injection runs: totals, completeness per S/N bin, flux pulls (else None).
    """

    out: str
    manifest: str
    n_pairs: int
    groups: dict[str, int]
    pairs_written: int
    pairs_skipped: int
    failed: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    unused_references: list[dict[str, Any]]
    n_candidates: int
    n_dropped: int
    catalogue: str
    png: str | None
    recovery_json: str | None
    recovery: dict[str, Any] | None
    seconds: float
    run_id: str

    @property
    def exit_code(self) -> int:
        """0: all done; 3: done, but inputs were set aside or there was nothing to difference;
        1: pairs failed (re-run to retry)."""
        if self.failed:
            return 1
        return 3 if self.set_aside or self.n_pairs == 0 else 0

    def summary(self) -> str:
        groups = ", ".join(f"{k}: {v} pairs" for k, v in self.groups.items()) or "none"
        lines = []
        if self.n_pairs == 0:
            lines.append("NOTHING TO DIFFERENCE: no science image could be paired with a reference"
                         + (" (the reasons, file by file, are below)" if self.set_aside else
                            " (no input files were found: check the --science and --reference paths)"))
        lines += [
            f"store: {self.out}",
            f"pairs in store: {self.n_pairs} ({groups})",
            f"pairs: {self.pairs_written} differenced by this run, {self.pairs_skipped} already done",
            f"candidates: {self.n_candidates} in {self.catalogue}",
        ]
        if self.n_dropped:
            lines.append(f"NOTE {self.n_dropped} detections beyond --max-candidates per pair were not catalogued "
                         "(raise it, or look at those pairs' subtraction)")
        if self.png and self.n_candidates:
            lines.append(f"brightest triplets: {self.png}")
        if self.recovery:
            t = self.recovery["totals"]
            lines.append(
                f"injection-recovery: {t['n_recovered']}/{t['n_injected']} recovered, "
                f"{t['n_false']} false positives ({t['false_per_mpix']:.2f} per Mpix); {self.recovery_json}"
            )
            for b in self.recovery["bins"]:
                if b["n_injected"]:
                    lines.append(f"  S/N {b['snr_lo']:g}-{b['snr_hi']:g}: {b['n_recovered']}/{b['n_injected']} "
                                 f"= {b['completeness']:.2f}")
        if self.unused_references:
            ids = ", ".join(r["pair_id"] for r in self.unused_references[:5])
            more = f" and {len(self.unused_references) - 5} more" if len(self.unused_references) > 5 else ""
            lines.append(f"references with no science image (unused): {ids}{more}")
        for s in self.set_aside:
            lines.append(f"SET ASIDE [{s['reason']}] {s['message']}")
        for f in self.failed:
            lines.append(f"FAILED pair {f['pair_id']}: {f['error']} -- re-run the same command to retry")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# -- frames ------------------------------------------------------------------------------------


def _is_tile_store(src: str, options: dict[str, Any]) -> bool:
    from skybatch.sources.tiles import TILE_SUFFIXES
    from skybatch.store.tile_store import tile_store_exists

    if any(c in src for c in "*?[") or src.lower().endswith(TILE_SUFFIXES):
        return False
    try:
        return tile_store_exists(src, options)
    except Exception:  # not a Zarr group at all (a file, a prefix of files...)
        return False


def _store_frames(url: str, view: str | None, options: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """Every present (tile, band) plane of a tile store (optionally one view) as frames."""
    from skybatch.store.tile_store import open_tile_group

    g = open_tile_group(url, options, mode="r", consolidated=True)
    views = dict(g.attrs.get("views", {}))
    if view is not None and view not in views:
        raise DifferenceSettingsError(f"{side}_view: {view!r} is not a view of the tile store {url} (views: "
                                      f"{sorted(views)}) (--{side}-view)")
    uid = str(g.attrs.get("store_uuid", ""))
    out = []
    for name in sorted(views) if view is None else [view]:
        v = g[name]
        spec = views[name]
        h, w = (int(s) for s in spec["shape"])
        tile_ids = [str(t) for t in v["tile_id"][:]]
        bands = [str(b) for b in v["band"][:]]
        present = np.asarray(v["present"][:], dtype=bool)
        bits = json.dumps(dict(v.attrs.get("mask_bits", {})))
        units = dict(v.attrs.get("band_units", {}))
        for ti, bi in zip(*np.nonzero(present)):
            tid, band = tile_ids[ti], bands[bi]
            out.append({
                "url": url, "uri": f"{url}#{name}/{tid}/{band}", "kind": "store", "format": "zarr",
                "locator": f"{name}:{int(ti)}:{int(bi)}", "checksum": f"{uid}:{name}:{int(ti)}:{int(bi)}",
                "tile_id": tid, "band": band, "instrument": str(spec["instrument"]), "height": h, "width": w,
                "unit": str(units.get(band, "")), "mask_bits": bits, "meta": "",
            })
    return out


def _inspect_batch(urls: list[str], instrument: str | None, tile_pattern: str | None, options: dict[str, Any],
                   hdu: str | None = None) -> list:
    """Inspect tile files on a worker (headers only); unreadable ones come back as set-aside records."""
    from skybatch.sources.base import SourceError
    from skybatch.sources.tiles import inspect_tile_source

    out: list[Any] = []
    for url in urls:
        try:
            fs = filesystem(url, options)
            if not fs.exists(url):
                out.append({"url": url, "reason": "not-found",
                            "message": f"{url}: no such file; check the path or URL"})
                continue
            if fs.isdir(url):
                out.append({"url": url, "reason": "empty-directory",
                            "message": f"{url}: a directory with no image files (.fits, .fit, .fits.fz, .npz); "
                            "check the path"})
                continue
            out.append(inspect_tile_source(fs, url, instrument=instrument, tile_pattern=tile_pattern, hdu=hdu))
        except SourceError as e:
            out.append({"url": url, "reason": e.reason, "message": str(e)})
        except (FileNotFoundError, PermissionError) as e:
            out.append({"url": url, "reason": "unreachable",
                        "message": f"{url}: cannot be read ({type(e).__name__}: {e})"})
        except Exception as e:  # a file nothing can parse
            out.append({"url": url, "reason": "corrupt", "message": f"{url}: cannot be read ({type(e).__name__}: {e})"})
    return out


def _file_frames(sources: list[str], config: DifferenceConfig, client, run_id: str, side: str):
    from skybatch.pipeline.tile_ingest import expand_tile_sources

    opts = config.source_storage_options()
    urls = expand_tile_sources(sources, opts)
    frames: list[dict[str, Any]] = []
    set_aside: list[dict[str, Any]] = []
    if not urls:
        return frames, set_aside
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    per = max(1, min(64, math.ceil(len(urls) / (4 * n_workers))))
    batches = [urls[i : i + per] for i in range(0, len(urls), per)]
    futures = client.map(_inspect_batch, batches, instrument=config.instrument, tile_pattern=config.tile_pattern,
                         options=opts, hdu=config.hdu, pure=False, key=[f"inspect-{side}-{run_id}-{i}" for i in range(len(batches))])
    for res in client.gather(futures):
        for r in res:
            if isinstance(r, dict):
                set_aside.append({**r, "message": f"{side}: {r['message']}"})
                continue
            bits = json.dumps(dict(r.mask_bits))
            for p in r.planes:
                frames.append({
                    "url": r.url, "uri": r.url, "kind": "file", "format": r.format, "locator": p.locator,
                    "checksum": r.checksum, "tile_id": p.tile_id, "band": p.band, "instrument": p.instrument,
                    "height": int(p.height), "width": int(p.width), "unit": p.unit, "mask_bits": bits,
                    "meta": p.meta,
                })
    return frames, set_aside


def _frames(side: str, config: DifferenceConfig, client, run_id: str):
    sources = getattr(config, side)
    view = getattr(config, f"{side}_view")
    opts = config.source_storage_options()
    if len(sources) == 1 and _is_tile_store(sources[0], opts):
        frames, set_aside = _store_frames(sources[0], view, opts, side), []
    else:
        if view is not None:
            raise DifferenceSettingsError(f"{side}_view: {view!r} given, but {side} is not a tile store ({sources}); "
                                          f"drop --{side}-view or point --{side} at a tile store")
        frames, set_aside = _file_frames(sources, config, client, run_id, side)
    if config.bands:
        want = set(config.bands)
        want_keys = {b.lower() for b in config.bands}
        frames = [f for f in frames if f["band"] in want or f"{f['instrument']}_{f['band'].lower()}" in want_keys]
    return frames, set_aside


# -- planning -----------------------------------------------------------------------------------


_FRAME_FIELDS = (
    "url", "uri", "kind", "format", "locator", "checksum", "instrument", "height", "width", "unit", "mask_bits",
    "meta",
)  # fmt: skip
_PLAN_COLUMNS = ["pair", "pair_id", "group", "pair_index", "tile_id", "band", "fingerprint", "run_id", "planned_at"] + [
    f"{side}_{k}" for side in ("science", "reference") for k in _FRAME_FIELDS
]


def _empty_plan() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c in ("pair", "pair_index") else object)
                         for c in _PLAN_COLUMNS})


def _read_plan(manifest: Manifest) -> pd.DataFrame:
    """The pair plan of a store (empty frame if none)."""
    path = join(manifest.url, _PLAN_FILE)
    fs = manifest.fs
    if not fs.exists(path):
        return _empty_plan()
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def _frame_of(row: Any, side: str) -> dict[str, Any]:
    def val(k: str) -> Any:
        v = row.get(f"{side}_{k}")
        if k in ("height", "width"):
            return int(v)
        return "" if k == "meta" and not isinstance(v, str) else v  # plans of earlier versions have no meta

    return {k: val(k) for k in _FRAME_FIELDS} | {"tile_id": row["tile_id"], "band": row["band"]}


def _fingerprint(identity: str, store_uuid: str, row: Any) -> str:
    parts = [identity, store_uuid, row["pair_id"], row["group"], int(row["pair_index"])]
    for side in ("science", "reference"):
        parts += [row[f"{side}_url"], row[f"{side}_locator"], row[f"{side}_checksum"]]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _windows(shape: tuple[int, int], subtile: int, overlap: int):
    from skybatch.imaging import plan_subtiles

    ny, nx = shape
    if subtile <= 0 or max(ny, nx) <= subtile:
        return [((0, ny, 0, nx), (0, ny, 0, nx))]
    return [(st.window, st.interior) for st in plan_subtiles((ny, nx), subtile, overlap)]


def plan_difference(config: DifferenceConfig, client) -> DifferencePlan:
    """Find the frames, pair them, create or resume the store and list the pairs still to do.

    Writes the store's layout (groups, pair axis, static per-pair coordinates), the pair plan
    (``OUT.manifest/pairs.parquet``) and the quarantine. Safe to repeat.
    """
    from skybatch.store import difference_store as ds

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    st_opts = config.store_storage_options()
    manifest = Manifest(config.out, st_opts, stage=STAGE)
    identity = config.identity()
    exists = ds.difference_store_exists(config.out, st_opts)
    if exists:
        g = ds.open_difference_group(config.out, st_opts)
        if g.attrs.get("identity") != identity:
            old = dict(g.attrs.get("science_settings", {}))
            diff = {k: (old.get(k), v) for k, v in config.science_settings().items() if old.get(k) != v}
            raise DifferenceSettingsError(
                f"out: {config.out} already holds differences made with other settings (setting: (store, now) "
                f"{diff}); choose another --out, or delete it to start over"
            )

    sci, set_aside = _frames("science", config, client, run_id)
    ref, ref_aside = _frames("reference", config, client, run_id)
    set_aside += ref_aside

    def by_key(frames: list[dict[str, Any]], side: str) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for f in sorted(frames, key=lambda f: (f["uri"], f["locator"])):
            key = (f["tile_id"], f["band"])
            if key in out:
                set_aside.append({"url": f["uri"], "reason": "duplicate",
                                  "message": f"{side} {f['uri']}: tile {key[0]} band {key[1]} is also in "
                                  f"{out[key]['uri']}; leave one of them out"})
                continue
            out[key] = f
        return out

    sci_by = by_key(sci, "science")
    ref_by = by_key(ref, "reference")
    for key, f in sorted(sci_by.items()):
        if key not in ref_by:
            set_aside.append({"url": f["uri"], "reason": "no-reference",
                              "message": f"science {f['uri']}: no reference for tile {key[0]} band {key[1]} "
                              f"({len(ref_by)} reference planes found); add it to --reference, or match names "
                              "with --tile-pattern"})
    unused = [{"url": f["uri"], "pair_id": f"{k[0]}/{k[1]}"} for k, f in sorted(ref_by.items()) if k not in sci_by]

    planned = _read_plan(manifest) if exists else _empty_plan()  # a manifest without its store: start over
    old = {r["pair_id"]: r for r in planned.to_dict("records")}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n_next = (int(planned["pair"].max()) + 1) if len(planned) else 0
    per_group = planned.groupby("group").size().to_dict() if len(planned) else {}
    rows: list[dict[str, Any]] = []
    current: set[str] = set()
    for key in sorted(set(sci_by) & set(ref_by)):
        s, r = sci_by[key], ref_by[key]
        pair_id = f"{key[0]}/{key[1]}"
        group = ds.group_name((s["height"], s["width"]))
        row = {"pair_id": pair_id, "group": group, "tile_id": key[0], "band": key[1], "run_id": run_id,
               "planned_at": now}
        for side, f in (("science", s), ("reference", r)):
            for k in _FRAME_FIELDS:
                row[f"{side}_{k}"] = f[k]
        prev = old.get(pair_id)
        if prev is not None:
            if prev["group"] != group:
                set_aside.append({"url": s["uri"], "reason": "shape-changed",
                                  "message": f"science {s['uri']}: pair {pair_id} was {prev['group']} px in this store "
                                  f"and is now {group}; difference it into a new --out"})
                continue
            row["pair"], row["pair_index"] = int(prev["pair"]), int(prev["pair_index"])
            same = ("url", "locator", "checksum")
            if all(prev[f"{sd}_{k}"] == row[f"{sd}_{k}"] for sd in ("science", "reference") for k in same):
                row["run_id"], row["planned_at"] = prev["run_id"], prev["planned_at"]
        else:
            row["pair"] = n_next
            n_next += 1
            row["pair_index"] = int(per_group.get(group, 0))
            per_group[group] = row["pair_index"] + 1
        rows.append(row)
        current.add(pair_id)
    keep_old = [r for pid, r in old.items() if pid not in current]
    table = pd.DataFrame(keep_old + rows, columns=[c for c in _PLAN_COLUMNS if c != "fingerprint"])
    table = table.sort_values("pair", kind="stable").reset_index(drop=True)

    # the store: create, add groups, grow the pair axes, write the static coordinates
    settings = config.public_dict()
    if not exists:
        ds.create_difference_store(config.out, {
            "skybatch_version": skybatch.__version__, "settings": settings, "identity": identity,
            "science_settings": config.science_settings(), "provenance": {}, "manifest": manifest.url,
            "catalogue": ds.outputs(config.out)["catalogue"], "finalized": "",
        }, st_opts)
    g = ds.open_difference_group(config.out, st_opts)
    store_uuid = str(g.attrs["store_uuid"])
    table["fingerprint"] = [_fingerprint(identity, store_uuid, r) for r in table.to_dict("records")]
    groups = table.groupby("group").size().to_dict() if len(table) else {}
    changed = len(table) != len(planned) or not table[["pair", "fingerprint"]].equals(
        planned.reindex(columns=["pair", "fingerprint"]).reset_index(drop=True))
    if changed or not exists:
        for name, n in groups.items():
            ny, nx = (int(v) for v in name.split("x"))
            v = ds.ensure_pair_group(g, (ny, nx), int(n), {"skybatch_version": skybatch.__version__})
            ds.resize_pairs(v, int(n))
            sel = table[table["group"] == name].sort_values("pair_index")
            if list(sel["pair_index"]) != list(range(int(n))):
                raise RuntimeError(f"pair plan of group {name} is not contiguous; the manifest {manifest.url} is "
                                   "damaged: delete the store and its manifest and run again")
            ds.write_pair_coords(v, {
                "pair_id": sel["pair_id"].to_numpy(), "pair_number": sel["pair"].to_numpy(),
                "tile_id": sel["tile_id"].to_numpy(), "band": sel["band"].to_numpy(),
                "instrument": sel["science_instrument"].to_numpy(), "science": sel["science_uri"].to_numpy(),
                "reference": sel["reference_uri"].to_numpy(),
            })
        g.update_attributes({
            "groups": {k: {"shape": [int(x) for x in k.split("x")], "n_pairs": int(n)} for k, n in groups.items()},
            "n_pairs": int(len(table)),
            "settings": settings,
            "provenance": {
                "science": config.science, "reference": config.reference,
                "science_view": config.science_view, "reference_view": config.reference_view,
                "pairs_table": f"{_PLAN_FILE} in the manifest (science/reference URI, locator, checksum per pair)",
                "skybatch_version": skybatch.__version__, "store_options": public_options(st_opts),
                "last_run_id": run_id, "updated_at": now,
            },
        })
        ds.consolidate(config.out, st_opts)
        atomic_write_bytes(manifest.fs, join(manifest.url, _PLAN_FILE), _table_bytes(table[_PLAN_COLUMNS]))
    if set_aside:
        manifest.add_quarantine(set_aside, run_id)

    done = manifest.done_chunks()
    todo = []
    n_done = 0
    for r in table.to_dict("records"):
        if r["pair_id"] not in current:
            continue
        if r["fingerprint"] in done.get(int(r["pair"]), set()):
            n_done += 1
            continue
        shape = tuple(int(x) for x in r["group"].split("x"))
        todo.append(PairTask(
            pair=int(r["pair"]), pair_id=r["pair_id"], group=r["group"], index=int(r["pair_index"]),
            shape=shape, science=_frame_of(r, "science"), reference=_frame_of(r, "reference"),
            windows=_windows(shape, config.subtile, config.subtile_overlap), fingerprint=r["fingerprint"],
        ))
    return DifferencePlan(
        config=config, run_id=run_id, store_uuid=store_uuid, table=table, todo=todo, n_done=n_done,
        set_aside=set_aside, unused_references=unused, n_science=len(sci), n_reference=len(ref),
    )


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
        (p,) = read_tile_planes(fs, url, [info], instrument=instrument, tile_pattern=tile_pattern, hdu=hdu)
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
        default_fwhm=settings["default_fwhm"], astrometric_sigma=(a, a), fft_workers=1, **kw,
    )
    z = out.zogy
    bad = np.asarray(out.bad) | (np.asarray(z.bad) if z.bad is not None else False)
    bad &= ~sat  # saturated pixels are flagged (and dilated for detection) on their own
    nan = np.float32(np.nan)
    return {
        "interior": (iy0, iy1, ix0, ix1),
        "D": np.asarray(z.D, np.float32)[inner], "S_corr": np.asarray(z.S_corr, np.float32)[inner],
        "F_psf": np.asarray(z.F_psf, np.float32)[inner], "F_psf_err": np.asarray(z.F_psf_err, np.float32)[inner],
        "new": np.where(bad | sat, nan, np.asarray(out.new, np.float32))[inner],
        "ref": np.where(bad | sat, nan, np.asarray(out.ref, np.float32))[inner],
        "bad": bad[inner], "saturated": sat[inner], "P_D": np.asarray(z.P_D, np.float32),
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
    centre, best = windows[0], math.inf
    for w in windows:
        y0, y1, x0, x1 = w["interior"]
        for k in maps:
            maps[k][y0:y1, x0:x1] = w[k]
        bad[y0:y1, x0:x1] = w["bad"]
        sat[y0:y1, x0:x1] = w["saturated"]
        d = (0.5 * (x0 + x1) - nx / 2) ** 2 + (0.5 * (y0 + y1) - ny / 2) ** 2
        if d < best:
            best, centre = d, w
    aligned, wcs_header = aligned_wcs
    wcs = wcs_from_header(wcs_header)
    res = _Stitched(maps, centre["P_D"], bad)
    det = detect_candidates(res, settings["threshold"], mask=bad, saturated=sat, sign=settings["sign"], wcs=wcs)
    n_detected = len(det)
    det = det.head(settings["max_candidates"]).reset_index(drop=True)
    if "ra" not in det:
        det["ra"] = np.nan
        det["dec"] = np.nan
    det["rank"] = np.arange(len(det), dtype=np.int64)
    det["injected"] = False
    from skybatch.imaging import psf_fwhm
    from skybatch.imaging.properties import candidate_properties

    props = candidate_properties(
        maps["D"], maps["S_corr"], det["x"].to_numpy(), det["y"].to_numpy(), det["sign"].to_numpy(),
        psf_fwhm=float(psf_fwhm(np.asarray(centre["P_D"]))), masked=bad | sat, ref=maps["ref"],
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
        rec = recovery(det, x, y, flux, snr, area=float(ny * nx))
        n_false = int(rec.n_false)
        m = rec.matched
        det.loc[m.loc[m.recovered, "det_index"].to_numpy(), "injected"] = True
        inj_table = pd.DataFrame({
            "pair": task.pair, "pair_id": task.pair_id, "x": m["x"], "y": m["y"], "flux_true": m["flux_true"],
            "snr_new": injected["snr_new"], "snr": m["snr"], "recovered": m["recovered"], "rank": m["det_index"],
            "flux": m["flux"], "flux_err": m["flux_err"], "pull": m["pull"], "dx": m["dx"], "dy": m["dy"],
        })

    out, opts = ctx["out"], ctx["store_options"]
    g = ds.open_difference_group(out, opts)
    flags = np.where(bad, ds.MASK_BAD, 0).astype(np.uint8) | np.where(sat, ds.MASK_SATURATED, 0).astype(np.uint8)
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
        "area": float(ny * nx), "flux_ratio": float(np.median(ratio)),
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


# -- execution ---------------------------------------------------------------------------------


def _submit(client, task: PairTask, settings: dict[str, Any], ctx: dict[str, Any], retries: int):
    key = f"difference-{ctx['run_id']}-{task.pair}"
    if len(task.windows) == 1:
        return client.submit(_pair_whole, task, settings, ctx, key=key, retries=retries, pure=False)
    prep = client.submit(_prepare, task, settings, ctx, key=key + "-prepare", retries=retries, pure=False)
    wins = [client.submit(_difference_window, prep, w, settings, key=f"{key}-subtile-{i}", retries=retries, pure=False)
            for i, w in enumerate(task.windows)]
    inj = client.submit(_injected_of, prep, key=key + "-injected", pure=False)
    al = client.submit(_aligned_of, prep, key=key + "-aligned", pure=False)
    return client.submit(_finish, task, wins, inj, al, settings, ctx, key=key, retries=retries, pure=False)


def _read_parquet_files(paths: list[str], options: dict[str, Any]) -> pd.DataFrame:
    fs = filesystem(paths[0], options) if paths else None
    frames = []
    for p in paths:
        with fs.open(p, "rb") as f:
            frames.append(pq.read_table(f).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _gather_tables(client, paths: list[str], options: dict[str, Any], tag: str) -> pd.DataFrame:
    """Read many small Parquet files on the cluster, in batches, into one frame (in path order)."""
    if not paths:
        return pd.DataFrame()
    per = 64
    batches = [paths[i : i + per] for i in range(0, len(paths), per)]
    futs = client.map(_read_parquet_files, batches, options=options, pure=False,
                      key=[f"read-{tag}-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(batches))])
    parts = [p for p in client.gather(futs) if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _write_cutout_chunk(spec: tuple[int, int, list[tuple[str, int, int, int]]], out: str, options: dict[str, Any],
                        size: int) -> int:
    """Fill cutouts[start:stop] from the staged per-pair arrays and write those whole chunks."""
    from skybatch.store import difference_store as ds

    start, stop, pieces = spec
    buf = np.full((stop - start, len(ds.CUTOUT_KINDS), size, size), np.nan, np.float32)
    fs = filesystem(out, options)
    for path, lo, hi, dst in pieces:
        with fs.open(path, "rb") as f:
            arr = np.load(io.BytesIO(f.read()))
        buf[dst - start : dst - start + (hi - lo)] = arr[lo:hi]
    c = ds.open_difference_group(out, options)[ds.CANDIDATES_GROUP]
    ds.write_cutout_rows(c, start, buf)
    return stop - start


_CATALOGUE_COLUMNS = [
    "candidate", "pair", "pair_id", "group", "pair_index", "tile_id", "band", "rank", "x", "y", "ra", "dec",
    "S_corr", "significance", "sign", "flux", "flux_err", "snr", "x_peak", "y_peak", "injected",
    "fwhm", "elongation", "theta", "dipole", "masked_fraction", "ref_distance", "ref_flux",
]  # fmt: skip


def _empty_catalogue() -> pd.DataFrame:
    types = {"candidate": "int64", "pair": "int64", "pair_index": "int64", "rank": "int64", "sign": "int64",
             "x_peak": "int64", "y_peak": "int64", "injected": "bool"}
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, object if c in ("pair_id", "group", "tile_id", "band")
                                                            else "float64")) for c in _CATALOGUE_COLUMNS})


def _finalize(plan: DifferencePlan, client) -> dict[str, Any]:
    """Per-pair coordinates, the catalogue, the cutouts array, the PNG and the recovery files.

    Skipped when the finished pairs are exactly those of the last finalisation.
    """
    from skybatch.store import difference_store as ds

    config = plan.config
    out, opts = config.out, config.store_storage_options()
    paths = ds.outputs(out)
    manifest = Manifest(out, opts, stage=STAGE)
    done = manifest.done_chunks()
    table = plan.table
    done_rows = table[np.asarray([fp in done.get(int(p), set()) for p, fp in zip(table["pair"], table["fingerprint"])],
                                 dtype=bool)]
    fs = filesystem(out, opts)
    g = ds.open_difference_group(out, opts)
    key = hashlib.sha256(json.dumps([done_rows[["pair", "fingerprint"]].values.tolist(), len(table),
                                     config.chunk_candidates, config.plot_top]).encode()).hexdigest()[:16]
    if g.attrs.get("finalized") == key and fs.exists(paths["catalogue"]):
        c = g[ds.CANDIDATES_GROUP]
        rj = paths["recovery_json"] if config.inject else None
        recovery = None
        if rj and fs.exists(rj):
            with fs.open(rj, "rb") as f:
                recovery = json.loads(f.read())
        return {"n_candidates": int(c.attrs["n_candidates"]), "n_dropped": int(c.attrs.get("n_dropped", 0)),
                "recovery": recovery, "changed": False}

    rec_paths = [manifest.chunk_path(int(p), fp) for p, fp in zip(done_rows["pair"], done_rows["fingerprint"])]
    records = _gather_tables(client, rec_paths, opts, "records")
    by_pair = {int(r["pair"]): r for r in records.to_dict("records")} if len(records) else {}

    # per-pair coordinates of every group
    for name in dict(g.attrs.get("groups", {})):
        sel = table[table["group"] == name].sort_values("pair_index")
        recs = [by_pair.get(int(p)) for p in sel["pair"]]

        def col(k: str, default: Any, recs=recs) -> np.ndarray:
            return np.asarray([default if r is None else r[k] for r in recs])

        ds.write_pair_coords(g[name], {
            "done": np.asarray([r is not None for r in recs]), "wcs": col("wcs", ""),
            "flux_ratio": col("flux_ratio", np.nan), "flux_ratio_err": col("flux_ratio_err", np.nan),
            "flux_ratio_method": col("flux_ratio_method", ""), "new_psf_method": col("new_psf_method", ""),
            "ref_psf_method": col("ref_psf_method", ""), "new_fwhm": col("new_fwhm", np.nan),
            "ref_fwhm": col("ref_fwhm", np.nan), "new_sigma": col("new_sigma", np.nan),
            "ref_sigma": col("ref_sigma", np.nan), "aligned": col("aligned", False),
            "n_subtiles": col("n_subtiles", 0), "n_candidates": col("n_candidates", 0),
            "n_injected": col("n_injected", 0),
        })

    # the catalogue: staged parts of finished pairs, in pair order
    part_dir = join(manifest.url, _PARTS)
    stems = [f"pair-{int(p):09d}-{fp}" for p, fp in zip(done_rows["pair"], done_rows["fingerprint"])]
    counts = [int(by_pair[int(p)]["n_candidates"]) for p in done_rows["pair"]]
    cand = _gather_tables(client, [join(part_dir, "candidates", s + ".parquet") for s, n in zip(stems, counts) if n],
                          opts, "candidates")
    if len(cand):
        meta = table.set_index("pair")
        rows = []
        for p, n in zip(done_rows["pair"], counts):
            rows += [int(p)] * n
        cand["pair"] = np.asarray(rows, dtype=np.int64)
        cand["pair_id"] = meta.loc[cand["pair"], "pair_id"].to_numpy()
        cand["group"] = meta.loc[cand["pair"], "group"].to_numpy()
        cand["pair_index"] = meta.loc[cand["pair"], "pair_index"].to_numpy().astype(np.int64)
        cand["tile_id"] = meta.loc[cand["pair"], "tile_id"].to_numpy()
        cand["band"] = meta.loc[cand["pair"], "band"].to_numpy()
        cand["candidate"] = np.arange(len(cand), dtype=np.int64)
        cand = cand.reindex(columns=_CATALOGUE_COLUMNS)  # parts staged by earlier versions lack newer properties
    else:
        cand = _empty_catalogue()
    if len(cand) != sum(counts):
        raise RuntimeError(f"{sum(counts)} candidates recorded but {len(cand)} staged in {part_dir}; the manifest is "
                           "damaged: delete the store and its manifest and run again")
    n = len(cand)

    # the cutouts: tasks owning whole chunks copy the staged per-pair arrays
    c = ds.create_candidates_group(g, n, config.cutout_size, config.chunk_candidates,
                                   {"catalogue": paths["catalogue"], "finalized": ""})
    ds.write_candidate_coords(c, cand)
    ch = int(c.attrs["chunk_candidates"])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    specs = []
    for start in range(0, n, ch):
        stop = min(start + ch, n)
        pieces = []
        for s, lo_pair, n_pair in zip(stems, offsets[:-1], counts):
            a, b = max(start, lo_pair), min(stop, lo_pair + n_pair)
            if a < b:
                pieces.append((join(part_dir, "cutouts", s + ".npy"), a - lo_pair, b - lo_pair, a))
        specs.append((start, stop, pieces))
    if specs:
        futs = client.map(_write_cutout_chunk, specs, out=out, options=opts, size=config.cutout_size, pure=False,
                          key=[f"cutouts-{plan.run_id}-{i}" for i in range(len(specs))])
        client.gather(futs)

    atomic_write_bytes(fs, paths["catalogue"], _table_bytes(cand))
    if config.plot_top:
        from skybatch.imaging.plots import triplets_png

        top = cand.sort_values("significance", ascending=False, kind="stable").head(config.plot_top)
        idx = top["candidate"].to_numpy()
        trip = np.stack([np.asarray(c["cutouts"][int(i)]) for i in idx]) if len(idx) else np.zeros(
            (0, 3, config.cutout_size, config.cutout_size), np.float32)
        titles = [f"{p} #{int(k)} S={s:+.1f}" for p, k, s in zip(top["pair_id"], top["candidate"], top["S_corr"])]
        atomic_write_bytes(fs, paths["png"], triplets_png(trip, titles))

    recovery = None
    if config.inject:
        inj = _gather_tables(client, [join(part_dir, "injections", s + ".parquet") for s in stems], opts, "injections")
        recovery = _recovery_summary(inj, cand, records, config)
        atomic_write_bytes(fs, paths["recovery_table"], _table_bytes(recovery.pop("_table")))
        text = json.dumps(recovery, indent=1)
        atomic_write_bytes(fs, paths["recovery_json"], text.encode())
        recovery = json.loads(text)
    n_dropped = int((records["n_detected"] - records["n_candidates"]).sum()) if len(records) else 0
    c.update_attributes({"finalized": key, "n_dropped": n_dropped})
    g.update_attributes({"finalized": key})
    ds.consolidate(out, opts)
    return {"n_candidates": n, "n_dropped": n_dropped, "recovery": recovery, "changed": True}


def _recovery_summary(inj: pd.DataFrame, cand: pd.DataFrame, records: pd.DataFrame,
                      config: DifferenceConfig) -> dict[str, Any]:
    """Completeness per S/N bin, false positives per megapixel and flux pulls over all pairs."""
    cols = ["pair", "pair_id", "x", "y", "flux_true", "snr_new", "snr", "recovered", "candidate", "flux", "flux_err",
            "pull", "dx", "dy"]
    if len(inj):
        lookup = {(int(p), int(r)): int(k) for p, r, k in zip(cand["pair"], cand["rank"], cand["candidate"])}
        inj = inj.copy()
        inj["candidate"] = [lookup.get((int(p), int(r)), -1) for p, r in zip(inj["pair"], inj["rank"])]
        inj["recovered"] = inj["recovered"].astype(bool)
        table = inj[cols].reset_index(drop=True)
    else:
        table = pd.DataFrame({c: pd.Series([], dtype=float) for c in cols})
    area = float(records["area"].sum()) if len(records) else 0.0
    n_false = int(records["n_false"].sum()) if len(records) else 0
    edges = np.asarray(_SNR_BINS)
    bins = []
    snr = table["snr"].to_numpy(dtype=float)
    rec = table["recovered"].to_numpy(dtype=bool)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (snr >= lo) & (snr < hi)
        k, r = int(inb.sum()), int((inb & rec).sum())
        bins.append({"snr_lo": float(lo), "snr_hi": float(hi) if math.isfinite(hi) else "inf",
                     "n_injected": k, "n_recovered": r, "completeness": (r / k) if k else None})
    good = table[rec & (snr >= 10)]
    pulls = good["pull"].to_numpy(dtype=float)
    return {
        "settings": {"inject": config.inject, "inject_snr": list(config.inject_snr), "inject_seed": config.inject_seed,
                     "threshold": config.threshold, "match_radius_px": 2.0},
        "totals": {
            "n_pairs": int(len(records)), "n_injected": int(len(table)), "n_recovered": int(rec.sum()),
            "n_false": n_false, "area_pixels": area,
            "false_per_mpix": (n_false / (area / 1e6)) if area else 0.0,
        },
        "bins": bins,
        "pulls_snr_ge_10": {
            "n": int(len(pulls)), "mean": float(np.mean(pulls)) if len(pulls) else None,
            "std": float(np.std(pulls)) if len(pulls) > 1 else None,
            "median": float(np.median(pulls)) if len(pulls) else None,
            "std_robust": float(1.4826 * np.median(np.abs(pulls - np.median(pulls)))) if len(pulls) > 1 else None,
        },
        "position_error_px_median": float(np.median(np.hypot(good["dx"], good["dy"]))) if len(good) else None,
        "notes": "snr is the expected ZOGY S/N (flux / F_psf_err at the injected position); a detection within "
                 "2 px matches at most one injection; false positives are detections matching none (real "
                 "transients in the science images count as false positives too); pulls = (flux - flux_true) / "
                 "flux_err of recovered sources with snr >= 10 (std_robust = 1.4826 MAD: blends with bright "
                 "stars are outliers)",
        "_table": table,
    }


def execute_difference(plan: DifferencePlan, client) -> DifferenceReport:
    """Difference every pair the plan lists as to-do (one Dask task each, or one per sub-tile),
    then write the catalogue, cutouts, PNG and recovery files; returns the report."""
    from distributed import as_completed

    t0 = time.perf_counter()
    config = plan.config
    st_opts = config.store_storage_options()
    settings = config.science_settings()
    settings["inject_snr"] = tuple(settings["inject_snr"])
    ctx = {"out": config.out, "store_options": st_opts, "source_options": config.source_storage_options(),
           "instrument": config.instrument, "tile_pattern": config.tile_pattern, "run_id": plan.run_id,
           "hdu": config.hdu}
    futures = {_submit(client, t, settings, ctx, config.retries): t for t in plan.todo}
    bar = None
    if config.progress and plan.todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan.todo) + plan.n_done, initial=plan.n_done, unit="pairs", desc="difference",
                   dynamic_ncols=True)
    failed: list[dict[str, Any]] = []
    set_aside = list(plan.set_aside)
    written = 0
    for fut in as_completed(list(futures)):
        t = futures.pop(fut)
        try:
            r = fut.result()
            if r.get("status") == "set-aside":
                set_aside.append({"url": r["url"], "reason": r["reason"], "message": r["message"]})
            else:
                written += 1
        except Exception as e:  # noqa: BLE001 - reported per pair; the rest goes on
            failed.append({"pair": t.pair, "pair_id": t.pair_id, "error": f"{type(e).__name__}: {e}"})
        if bar is not None:
            bar.update(1)
        fut.release()
    if bar is not None:
        bar.close()
    new_aside = set_aside[len(plan.set_aside):]
    if new_aside:
        Manifest(config.out, st_opts, stage=STAGE).add_quarantine(new_aside, plan.run_id + "-pairs")
    fin = _finalize(plan, client)
    from skybatch.store import difference_store as ds

    paths = ds.outputs(config.out)
    groups = plan.table.groupby("group").size().to_dict() if len(plan.table) else {}
    return DifferenceReport(
        out=config.out, manifest=paths["manifest"], n_pairs=int(len(plan.table)),
        groups={k: int(v) for k, v in sorted(groups.items())}, pairs_written=written,
        pairs_skipped=int(plan.n_done), failed=failed, set_aside=set_aside,
        unused_references=plan.unused_references, n_candidates=int(fin["n_candidates"]),
        n_dropped=int(fin["n_dropped"]), catalogue=paths["catalogue"],
        png=paths["png"] if config.plot_top else None,
        recovery_json=paths["recovery_json"] if config.inject else None, recovery=fin["recovery"],
        seconds=time.perf_counter() - t0, run_id=plan.run_id,
    )


def run_with_client(config: DifferenceConfig, client) -> DifferenceReport:
    """Plan and execute a difference run on an existing Dask client."""
    return execute_difference(plan_difference(config, client), client)


def run(config: DifferenceConfig) -> DifferenceReport:
    """Plan and execute a difference run on a cluster started from ``config.cluster``."""
    from skybatch.cluster import cluster_client

    with cluster_client(config.cluster) as client:
        return run_with_client(config, client)


def difference(science: list[str] | str, reference: list[str] | str, out: str, client=None,
               **settings: Any) -> DifferenceReport:
    """Difference science images against references into the store ``out`` (see :class:`DifferenceConfig`).

    ``science`` / ``reference``: files, globs, directories, URLs, or a tile store each. With
    ``client=None`` a cluster is started from ``settings.get("cluster", "auto")``.
    """
    config = DifferenceConfig(science=science, reference=reference, out=out, **settings)
    return run(config) if client is None else run_with_client(config, client)


def injection_recovery(science: list[str] | str, reference: list[str] | str, out: str, n: int = 50,
                       snr: tuple[float, float] = (3.0, 30.0), seed: int = 0, client=None,
                       **settings: Any) -> DifferenceReport:
    """Inject ``n`` point sources of known flux into every science image, run the whole
    difference path into ``out``, and measure completeness against S/N and false positives.

    Sources use each science image's own (estimated) PSF, at background-limited S/N in the
    science image log-uniform in ``snr``, avoiding masked pixels, edges and each other.
    Returns the report; ``report.recovery`` holds totals, completeness per S/N bin and flux
    pulls, also written to ``OUT.recovery.json`` (and one row per injection to
    ``OUT.recovery.parquet``). ``out`` must be its own store (injection changes the images).
    """
    return difference(science, reference, out, client=client, inject=n, inject_snr=snr, inject_seed=seed, **settings)
