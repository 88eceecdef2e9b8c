"""Generated image pairs shared by the imaging tests (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from skybatch.sample.imaging import ImagePair, make_image_pair


def source_free_interior(pair: ImagePair, erode: int = 6, edge: int = 30) -> np.ndarray:
    """Pixels far (``erode`` px) from every source and ``edge`` px from the borders."""
    sf = ndi.binary_erosion(pair.source_free(), iterations=erode)
    sf[:edge] = sf[-edge:] = False
    sf[:, :edge] = sf[:, -edge:] = False
    return sf


@pytest.fixture(scope="session")
def star_field() -> ImagePair:
    """512^2, 400 static stars (5 saturated), 60 transients at ZOGY-ish S/N 3-40, beta 1.3."""
    return make_image_pair((512, 512), seed=5, n_stars=400, n_transients=60,
                           transient_snr=(3.0, 40.0), flux_ratio=1.3)


@pytest.fixture(scope="session")
def bright_transients() -> list[ImagePair]:
    """Two 512^2 fields with 70 transients each at S/N 6-40 (completeness and flux pulls)."""
    return [
        make_image_pair((512, 512), seed=s, n_stars=300, n_transients=70,
                        transient_snr=(6.0, 40.0), flux_ratio=0.8)
        for s in (11, 12)
    ]


@pytest.fixture(scope="session")
def null_pair() -> ImagePair:
    """512^2 star field with no transients: every detection is a false positive."""
    return make_image_pair((512, 512), seed=21, n_stars=400, n_transients=0, flux_ratio=1.1)
