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
