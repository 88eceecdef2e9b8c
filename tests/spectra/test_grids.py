"""Target grids and GridSpec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import GridSpec, explicit_grid, linear_grid, loglam_grid, resample


def test_desi_preset_matches_the_coadd_grid():
    w = GridSpec.parse("desi").wavelength()
    assert w.size == 7781 and w.dtype == np.float64
    files = np.arange(3600.0, 9824.0 + 0.4, 0.8)  # how the coadd files' grid was made
    np.testing.assert_allclose(w, files, rtol=0, atol=1e-8)
    assert w[-1] == pytest.approx(9824.0)
    # Resampling file data onto the preset is an exact copy despite the 1e-9 Å arange drift.
    rng = np.random.default_rng(0)
    flux = rng.normal(size=(2, w.size)).astype(np.float32)
    ivar = rng.uniform(1, 2, flux.shape).astype(np.float32)
    out = resample(flux, ivar, None, files, w)
    np.testing.assert_array_equal(out.flux, flux)
    np.testing.assert_array_equal(out.ivar, ivar)


def test_sdss_preset_is_the_boss_log_grid():
    w = GridSpec.parse("sdss").wavelength()
    assert w.size == 4700
    np.testing.assert_allclose(np.log10(w), 3.55 + 1e-4 * np.arange(4700), atol=1e-12)


def test_spec_strings_with_step_or_count():
    a = GridSpec.parse("loglam:3.55:4.02:1e-4")
    assert a.size == 4701
    b = GridSpec.parse("linear:3600:9824:n=7781")
    np.testing.assert_allclose(b.wavelength(), GridSpec.parse("desi").wavelength(), atol=1e-9)
    assert GridSpec.parse(str(a)) == a
    assert str(GridSpec.parse("desi")) == "desi"
    c = GridSpec.parse("linear:4000:4010.5:1")  # stop not on the lattice: last pixel below it
    np.testing.assert_allclose(c.wavelength(), np.arange(4000.0, 4011.0))


def test_builders():
    np.testing.assert_allclose(linear_grid(1000, 1010, n=11), np.arange(1000.0, 1011.0))
    w = loglam_grid(3.0, 3.001, 1e-4)
    assert w.size == 11 and w[0] == pytest.approx(1000.0)
    assert np.allclose(np.diff(np.log10(w)), 1e-4)
    e = explicit_grid([1.0, 2.0, 4.0])
    assert e.dtype == np.float64


@pytest.mark.parametrize(
    "spec, message",
    [
        ("loglam:3.55:x:1e-4", "stop 'x' is not a number"),
        ("loglam:3600:9800:1e-4", "did you mean linear"),
        ("linear:3600:9800", "expected 4"),
        ("linear:9800:3600:1", "must be greater than start"),
        ("linear:3600:9800:-1", "step must be a positive"),
        ("linear:3600:9800:n=two", "pixel count 'two'"),
        ("cubic:1:2:3", "unknown grid kind 'cubic'"),
        ("linear:3600:3601:5", "fewer than 2 pixels"),
    ],
)
def test_bad_specs_name_the_bad_part(spec, message):
    with pytest.raises(ValueError, match=message):
        GridSpec.parse(spec)


def test_explicit_grid_errors_and_round_trip():
    with pytest.raises(ValueError, match="index 2"):
        explicit_grid([1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="positive finite"):
        explicit_grid([1.0, np.nan])
    g = GridSpec.from_values([4000.0, 4001.0, 4003.0])
    assert GridSpec.from_dict(g.to_dict()) == g
    np.testing.assert_array_equal(g.wavelength(), [4000.0, 4001.0, 4003.0])
    with pytest.raises(ValueError, match="native"):
        GridSpec.parse("native").wavelength()
