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

Modules: :mod:`.config` (settings), :mod:`.plan` (frames, pairs, store layout),
:mod:`.prepare` (read, mask, align, inject: worker side), :mod:`.worker` (ZOGY per window,
stitch, detect, measure, record), :mod:`.execute` (Dask submission, catalogue, cutouts),
:mod:`.report` (report and injection-recovery summary).
"""

from __future__ import annotations

from typing import Any


from .config import BAD_MASK_PLANES, STAGE, DifferenceConfig, DifferenceSettingsError
from .execute import execute_difference
from .plan import DifferencePlan, PairTask, plan_difference
from .prepare import flux_ratio_guess
from .report import DifferenceReport


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
    "flux_ratio_guess",
]


def run_with_client(config: DifferenceConfig, client) -> DifferenceReport:
    """Plan and execute a difference run on an existing Dask client.

    The output store's writer lock (:class:`skybatch.store.lock.StoreLock`) is held from planning to
    the catalogue: a second run into the same ``out`` waits (``--wait-lock``) or is refused, naming
    the holder.
    """
    from skybatch.store.lock import StoreLock

    with StoreLock(config.out, config.store_storage_options(), job="difference"):
        return execute_difference(plan_difference(config, client), client)


def run(config: DifferenceConfig) -> DifferenceReport:
    """Plan and execute a difference run on the current Dask client if there is one, else on a cluster
    started from ``config.cluster``."""
    from skybatch.cluster import client_for

    with client_for(None, config.cluster) as client:
        return run_with_client(config, client)


def difference(science: list[str] | str, reference: list[str] | str, out: str, client=None,
               **settings: Any) -> DifferenceReport:
    """Difference science images against references into the store ``out`` (see :class:`DifferenceConfig`).

    ``science`` / ``reference``: files, globs, directories, URLs, or a tile store each. With
    ``client=None``: the current Dask client, else a cluster from ``settings.get("cluster", "auto")``.
    """
    config = DifferenceConfig(science=[science] if isinstance(science, str) else science,
                              reference=[reference] if isinstance(reference, str) else reference, out=out, **settings)
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
