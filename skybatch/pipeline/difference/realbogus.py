"""Score the candidates of a difference store with a real/bogus model: ``realbogus_score`` in the catalogue
(Parquet) and in the store's ``candidates`` group (Zarr)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["classify_difference_store"]


def classify_difference_store(out: str, model: Any, storage_options: dict[str, Any] | None = None,
                              batch: int = 2048, anomaly: bool = True) -> dict[str, Any]:
    """Score every candidate's cutout triplet of the store ``out`` with ``model`` (a
    :class:`~skybatch.models.realbogus.RealBogusModel` or its directory) and write
    ``realbogus_score`` (calibrated P(real)) and ``realbogus_real`` (score >= the model's
    threshold for its stated completeness) into ``OUT.candidates.parquet`` and, as variables
    (candidate,), into the store's ``candidates`` group beside the cutouts. With ``anomaly``
    (default) also ``anomaly_score``: how unusual each candidate's triplet is among the
    store's candidates (:func:`skybatch.models.realbogus_anomaly.triplet_anomaly`, learnt from
    the candidates the model calls real when there are at least 32 of them, else from all),
    so unusual real transients can be ranked first. Re-running replaces the columns and variables.
    Returns counts, the threshold and the store variables written.
    """
    from skybatch.models.realbogus import RealBogusModel
    from skybatch.store.difference_store import open_candidates, outputs, read_candidates, write_candidate_scores
    from skybatch.store.fsutil import atomic_write_bytes, filesystem

    if not isinstance(model, RealBogusModel):
        model = RealBogusModel.load(str(model))
    cat = read_candidates(out, storage_options)
    n = len(cat)
    scores = np.zeros(n)
    odd = np.zeros(n)
    if n:
        cut = open_candidates(out, storage_options)["cutouts"]
        if int(cut.sizes["candidate"]) != n:
            raise ValueError(f"{out}: {cut.sizes['candidate']} cutouts but {n} catalogue rows; run the difference "
                             "again to finish the store")
        trip = []
        for i in range(0, n, batch):
            t = np.asarray(cut[i : i + batch].values, np.float32)
            scores[i : i + batch] = model.score(t)
            if anomaly:
                trip.append(t)
        if anomaly:
            from skybatch.models.realbogus_anomaly import triplet_anomaly

            allt = np.concatenate(trip)
            real = scores >= model.threshold
            odd = triplet_anomaly(allt, train=allt[real] if real.sum() >= 32 else None)
    cat = cat.drop(columns=[c for c in ("realbogus_score", "realbogus_real", "anomaly_score") if c in cat])
    cat["realbogus_score"] = scores.astype(np.float64)
    cat["realbogus_real"] = scores >= model.threshold
    if anomaly:
        cat["anomaly_score"] = odd.astype(np.float64)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(cat, preserve_index=False), buf)
    path = outputs(out)["catalogue"]
    atomic_write_bytes(filesystem(path, storage_options), path, buf.getvalue())
    # the same columns beside the cutouts in the store's candidates group (row i = candidate i)
    cols: dict[str, tuple[np.ndarray, str]] = {
        "realbogus_score": (scores, "calibrated probability that the candidate is real (real/bogus model)"),
        "realbogus_real": (scores >= model.threshold, "realbogus_score >= the model's threshold for its stated "
                                                       "completeness"),
    }
    if anomaly:
        cols["anomaly_score"] = (odd, "how unusual the cutout triplet is among the store's candidates")
    written = write_candidate_scores(out, cols, storage_options)
    return {"n_candidates": n, "n_real": int(cat["realbogus_real"].sum()), "threshold": model.threshold,
            "completeness": model.completeness, "catalogue": path, "store_variables": written}
