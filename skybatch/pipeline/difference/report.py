"""The outcome of a difference run (summary, exit code) and the injection-recovery summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


from .config import DifferenceConfig, _SNR_BINS


@dataclass
class DifferenceReport:
    """The outcome of a difference run.

    n_pairs: pairs in the store after the run; groups: pairs per group (image shape).
    pairs_written / pairs_skipped: this run's differenced / already-done pairs.
    failed: pairs whose task failed (re-run to retry). set_aside: inputs set aside with a
    reason (fix them and re-run). unused_references: references nothing paired with.
    n_candidates: rows of the catalogue; n_dropped: detections beyond ``max_candidates`` per pair
    (not catalogued); n_vetoed: detections inside the bright-star veto (mask bit 4: residuals
    of bright or saturated stars, counted, not catalogued); n_margin: detections inside the
    margins of mask bit 8 (near the edge of sky the reference or science does not cover, where
    that edge cuts a source, or on a filled bad pixel whose fill may leave a residual), counted,
    not catalogued. catalogue, png, recovery_json:
    files beside the store.
    recovery: injection runs: totals, completeness per S/N bin, flux pulls (else None).
    notes: NOTE lines from planning (e.g. how a single science/reference pair was paired).
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
    plan_seconds: float = 0.0
    pairs_seconds: float = 0.0
    catalogue_seconds: float = 0.0
    n_vetoed: int = 0
    n_margin: int = 0
    notes: list[str] = field(default_factory=list)

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
        lines += list(self.notes)
        lines += [
            f"store: {self.out}",
            f"pairs in store: {self.n_pairs} ({groups})",
            f"pairs: {self.pairs_written} differenced by this run, {self.pairs_skipped} already done",
            f"candidates: {self.n_candidates} in {self.catalogue}",
        ]
        if self.n_dropped:
            lines.append(f"NOTE {self.n_dropped} detections beyond --max-candidates per pair were not catalogued "
                         "(raise it, or look at those pairs' subtraction)")
        if self.n_vetoed:
            lines.append(f"vetoed: {self.n_vetoed} detections next to bright or saturated stars (mask bit 4, "
                         "not catalogued; --psf-accuracy sets the veto)")
        if self.n_margin:
            lines.append(f"margins: {self.n_margin} detections near the edge of sky the reference (or science) "
                         "does not cover, or on filled bad pixels, not differenced reliably and not catalogued "
                         "(mask bit 8)")
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
        lines.append(f"time: {self.seconds:.1f} s differencing and cataloguing (pairs {self.pairs_seconds:.1f} s, "
                     f"catalogue {self.catalogue_seconds:.1f} s; planning {self.plan_seconds:.1f} s not included)")
        return "\n".join(lines)

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
