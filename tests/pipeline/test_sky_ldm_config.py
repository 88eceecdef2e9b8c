"""SkyLDMConfig checks the U-Net widths up front (the U-Net has exactly two levels)."""

import pytest

from skybatch.pipeline.sky_ldm import SkyLDMConfig


def _cfg(channels):
    return SkyLDMConfig(store="sky.zarr", vae="vae", selection="dark", out="ldm", channels=channels)


@pytest.mark.parametrize("channels", [(16, 32, 64), (32,), (0, 64)])
def test_bad_channels_refused_naming_the_setting(channels):
    with pytest.raises(ValueError, match=r"channels: the U-Net takes two positive widths"):
        _cfg(channels)


def test_channels_given_as_list_become_a_pair_of_ints():
    assert _cfg(["16", 32]).channels == (16, 32)
