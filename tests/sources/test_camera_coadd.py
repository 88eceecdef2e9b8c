"""The pure arm-combining function, on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra.camera_coadd import arm_offsets, coadd_cameras


def two_arms():
    # arm 1 covers pixels 0..5, arm 2 covers 4..9; overlap 4..5
    f1 = np.array([[1, 2, 3, 4, 10, 20]], np.float32)
    i1 = np.array([[1, 1, 0, 1, 1, 3]], np.float32)
    m1 = np.array([[0, 4, 4, 0, 1, 0]], np.uint32)
    f2 = np.array([[30, 40, 5, 6, 7, 8]], np.float32)
    i2 = np.array([[3, 1, 1, 0, 1, 1]], np.float32)
    m2 = np.array([[2, 0, 0, 8, 0, 0]], np.uint32)
    return [f1, f2], [i1, i2], [m1, m2]


def test_known_answers_two_arms():
    f, i, m = two_arms()
    flux, ivar, mask = coadd_cameras(f, i, m, [0, 4], 11, nodata_bit=8)
    # single-arm pixels copied, including the flux of an ivar = 0 pixel (pixel 2)
    np.testing.assert_array_equal(flux[0, :4], [1, 2, 3, 4])
    np.testing.assert_array_equal(flux[0, 6:10], [5, 6, 7, 8])
    # overlap: (1*10 + 3*30)/4 = 25 ; (3*20 + 1*40)/4 = 25
    np.testing.assert_allclose(flux[0, 4:6], [25.0, 25.0])
    np.testing.assert_array_equal(ivar[0, :10], [1, 1, 0, 1, 4, 4, 1, 0, 1, 1])
    # mask: cleared wherever ivar > 0; kept (OR-ed in overlaps) where ivar == 0; NODATA where no arm
    np.testing.assert_array_equal(mask[0, :10], [0, 0, 4, 0, 0, 0, 0, 8, 0, 0])
    assert flux[0, 10] == 0 and ivar[0, 10] == 0 and mask[0, 10] == 256
    assert flux.dtype == np.float32 and mask.dtype == np.uint32


def test_overlap_with_no_information_gives_zero_and_ored_mask():
    f, i, m = two_arms()
    i[0][0, 4] = 0
    i[1][0, 0] = 0
    flux, ivar, mask = coadd_cameras(f, i, m, [0, 4], 10)
    assert flux[0, 4] == 0 and ivar[0, 4] == 0 and mask[0, 4] == (1 | 2)


def test_single_arm_is_returned_unchanged():
    f, i, m = two_arms()
    flux, ivar, mask = coadd_cameras(f[:1], i[:1], m[:1], [0], 6)
    np.testing.assert_array_equal(flux, f[0])
    np.testing.assert_array_equal(mask, m[0])  # no mask clearing with one arm (desispec returns it as is)


def test_argument_checks():
    f, i, m = two_arms()
    with pytest.raises(ValueError, match="does not fit"):
        coadd_cameras(f, i, m, [0, 6], 10)
    with pytest.raises(ValueError, match="one entry per arm"):
        coadd_cameras(f, i[:1], m, [0, 4], 10)
    assert arm_offsets([3600.0, 5760.0, 7520.0], 3600.0, 0.8) == [0, 2700, 4900]
    with pytest.raises(ValueError, match="off the 0.8"):
        arm_offsets([3600.3], 3600.0, 0.8)


def test_same_result_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    f, i, m = two_arms()
    ref = coadd_cameras(f, i, m, [0, 4], 11, nodata_bit=8)
    got = coadd_cameras([xps.asarray(a) for a in f], [xps.asarray(a) for a in i], [xps.asarray(a) for a in m], [0, 4], 11, nodata_bit=8)
    assert type(got[0]).__module__.startswith("array_api_strict")
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_combine_arms_into_is_bit_identical_to_clean_then_coadd(seed):
    """Big-endian arm bytes combined in place == per-arm cleaning then coadd_cameras, bit for bit (NaN, inf, -0, ivar<0)."""
    from skybatch.sources._arms import combine_arms_into
    from skybatch.sources._common import clean_nonfinite

    rng = np.random.default_rng(seed)
    n, offs, widths, nw = 40, [0, 2700, 4900], [2751, 2326, 2881], 7781
    Fb, Ib, Mb = [], [], []  # big-endian arm arrays, as read from FITS
    for w in widths:
        f = rng.standard_normal((n, w)).astype(">f4")
        i = rng.uniform(-0.1, 2, (n, w)).astype(">f4")
        i[rng.random((n, w)) < 0.1] = 0
        f[rng.random((n, w)) < 0.01] = np.nan
        i[rng.random((n, w)) < 0.01] = np.inf
        f[rng.random((n, w)) < 0.01] = -0.0
        m = rng.integers(-2**31, 2**31 - 1, (n, w)).astype(">i4")
        m[rng.random((n, w)) < 0.7] = 0
        Fb.append(f)
        Ib.append(i)
        Mb.append(m)
    fl = [np.ascontiguousarray(x, dtype=np.float32) for x in Fb]
    iv = [np.ascontiguousarray(x, dtype=np.float32) for x in Ib]
    mk = [np.ascontiguousarray(x.astype("<i4")).view(np.uint32) for x in Mb]
    n_bad = sum(clean_nonfinite(a, b, c, 8) for a, b, c in zip(fl, iv, mk))
    rf, ri, rm = coadd_cameras(fl, iv, mk, offs, nw, nodata_bit=8)
    of, oi, om = np.full((n, nw), 7, np.float32), np.full((n, nw), 7, np.float32), np.full((n, nw), 7, np.uint32)
    assert combine_arms_into(Fb, Ib, Mb, offs, of, oi, om, nodata_bit=8) == n_bad > 0
    assert np.array_equal(rf.view(np.uint32), of.view(np.uint32))
    assert np.array_equal(ri.view(np.uint32), oi.view(np.uint32))
    assert np.array_equal(rm, om)
