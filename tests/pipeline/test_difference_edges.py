"""Transients near the edge of sky the reference does not cover, end to end on the session Dask cluster.

The reference (0.25"/px, rotated 30 deg through its CD matrix, 0.72 of the science field's width)
leaves the science image's corners uncovered. Transients sit 6-30 px inside its footprint edge,
all within the P_D width (~38 px) the old margin kept out: along empty sky they are found now; next
to a reference source the edge cuts, where the full margin still holds, the detections kept out
are counted in the report (``n_margin``, a ``margins:`` line) and the pixels carry mask bit 8.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from skybatch.pipeline.difference import difference
from skybatch.sample.images import make_rotated_pair, write_plain_fits
from skybatch.sample.imaging import render_sources
from skybatch.store.difference_store import MASK_MARGIN, open_difference_store, read_candidates

SIZE = 256


def _edge_pair(d, seed: int, n: int = 16):
    p = make_rotated_pair((SIZE, SIZE), ref_shape=(int(SIZE * 0.72),) * 2, rotation_deg=30.0, seed=seed,
                          n_stars=SIZE * SIZE // 350, n_transients=0, n_saturated=0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rx, ry = p.ref_wcs.world_to_pixel_values(*p.new_wcs.pixel_to_world_values(xx.ravel(), yy.ravel()))
    m = p.ref.shape[0]
    covered = ((rx > 1) & (rx < m - 2) & (ry > 1) & (ry < m - 2)).reshape(SIZE, SIZE)
    depth = ndimage.distance_transform_edt(covered)
    ok = (depth >= 6) & (depth <= 30)
    ok[:25], ok[-25:], ok[:, :25], ok[:, -25:] = False, False, False, False
    cy, cx = np.nonzero(ok)
    r = np.random.default_rng(seed)
    pick: list[int] = []
    for i in r.permutation(len(cy)):
        if all(np.hypot(cy[i] - cy[j], cx[i] - cx[j]) > 20 for j in pick):
            pick.append(i)
        if len(pick) == n:
            break
    tx, ty = cx[pick] + r.uniform(-0.5, 0.5, n), cy[pick] + r.uniform(-0.5, 0.5, n)
    fwhm = p.fwhm_at(tx, "new")
    flux = r.uniform(12.0, 30.0, n) * p.new_sigma * np.sqrt(4 * np.pi) * fwhm / 2.3548  # S/N 12-30
    new = (p.new + render_sources(p.new.shape, tx, ty, flux, fwhm, size=p.new_psf.shape[0])).astype(np.float32)
    for side, img, wcs, gain in (("sci", new, p.new_wcs, p.new_gain), ("ref", p.ref, p.ref_wcs, p.ref_gain)):
        (d / side).mkdir(parents=True, exist_ok=True)
        write_plain_fits(d / side / f"edge{seed}_r.fits", img, wcs, GAIN=gain, SATURATE=p.saturation)
    return tx, ty, depth


@pytest.fixture(scope="module")
def run(tmp_path_factory, dask_client):
    d = tmp_path_factory.mktemp("edges")
    truth = {f"edge{s}/r": _edge_pair(d, s) for s in (11, 12)}
    rep = difference([str(d / "sci")], [str(d / "ref")], str(d / "edges.zarr"), client=dask_client, progress=False)
    return rep, truth


def test_transients_near_the_reference_edge_are_found_or_counted(run):
    rep, truth = run
    assert rep.exit_code == 0 and rep.pairs_written == 2, rep.summary()
    cat = read_candidates(rep.out)
    (ds,) = open_difference_store(rep.out).values()
    assert ds.aligned.values.all()
    assert ds.mask.attrs["flag_meanings"].split()[3] == "margin" and list(ds.mask.attrs["flag_masks"])[3] == MASK_MARGIN
    n_found, n_all, n_missed = 0, 0, 0
    for k, pid in enumerate(ds.pair_id.values):
        tx, ty, depth = truth[pid]
        g = cat[cat.pair_id == pid]
        dist = np.hypot(g.x.to_numpy()[:, None] - tx[None], g.y.to_numpy()[:, None] - ty[None])
        found = (dist < 2.5).any(axis=0)
        # every candidate is a transient: no residual of a source the edge cuts
        assert (dist.min(axis=1) < 2.5).all(), g[["x", "y", "S_corr"]]
        flags = ds.mask.values[k]
        margin = (flags & MASK_MARGIN) != 0
        iy, ix = np.rint(ty).astype(int), np.rint(tx).astype(int)
        # the missed ones lie in the margin kept for a source the edge cuts (bit 8), none elsewhere
        assert margin[iy, ix][~found].all()
        # the margin is narrow along empty sky: a small part of the covered field
        assert margin.mean() < 0.2
        n_found += int(found.sum())
        n_all += len(tx)
        n_missed += int((~found).sum())
    # all of them within the old P_D-width margin (none were found before): most are found now
    assert n_found >= 0.7 * n_all, (n_found, n_all)
    # and the others are not dropped silently: counted in the report
    assert rep.n_margin >= n_missed and f"margins: {rep.n_margin} detections" in rep.summary()
