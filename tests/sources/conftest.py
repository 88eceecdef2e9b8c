"""Real FITS files written once per session by the sample generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from astropy.io import fits

from skybatch.sample.desi_files import write_desi_healpix
from skybatch.sample.sdss_files import write_sdss_sample
from skybatch.sample.skyvac_file import write_skyvac
from skybatch.sample.spectra import draw_population

HEALPIX = 27345


@dataclass
class DesiPair:
    files: Any  # DesiHealpixFiles
    coadd: str
    redrock: str
    raw: dict[str, np.ndarray]  # EXTNAME -> data read with astropy (native)


def _raw_arrays(path: str) -> dict[str, np.ndarray]:
    out = {}
    with fits.open(path) as hdul:
        for h in hdul[1:]:
            if h.is_image:
                out[h.name] = np.array(h.data)
    return out


@pytest.fixture(scope="session")
def fs():
    return fsspec.filesystem("file")


@pytest.fixture(scope="session")
def desi_pair(tmp_path_factory) -> DesiPair:
    """An iron-layout pair: 24 science rows (2 anomalous), 2 SKY and 1 unassigned row; REDSHIFTS row-matched."""
    rng = np.random.default_rng(11)
    pop = draw_population(24, rng, anomaly_fraction=0.1)
    d = tmp_path_factory.mktemp("desi")
    files = write_desi_healpix(d, HEALPIX, pop, rng)
    return DesiPair(files, str(files.coadd), str(files.redrock), _raw_arrays(str(files.coadd)))


@pytest.fixture(scope="session")
def desi_small(tmp_path_factory) -> DesiPair:
    """A small pair (5 science rows, 1 SKY, 1 unassigned) for the bad-input tests."""
    rng = np.random.default_rng(15)
    pop = draw_population(5, rng)
    d = tmp_path_factory.mktemp("desi_small")
    files = write_desi_healpix(d, HEALPIX, pop, rng, n_sky=1)
    return DesiPair(files, str(files.coadd), str(files.redrock), _raw_arrays(str(files.coadd)))


@pytest.fixture(scope="session")
def desi_edr_shuffled(tmp_path_factory) -> DesiPair:
    """EDR-style uint32 masks (BZERO 2**31) and a REDSHIFTS table in a different row order."""
    rng = np.random.default_rng(12)
    pop = draw_population(16, rng)
    d = tmp_path_factory.mktemp("desi_edr")
    files = write_desi_healpix(d, HEALPIX + 1, pop, rng, survey="sv3", program="bright", mask_dtype="uint32", redrock_order="shuffled")
    return DesiPair(files, str(files.coadd), str(files.redrock), _raw_arrays(str(files.coadd)))


@pytest.fixture(scope="session")
def sdss_sample(tmp_path_factory):
    rng = np.random.default_rng(13)
    pop = draw_population(4, rng)
    return write_sdss_sample(tmp_path_factory.mktemp("sdss"), pop, rng)


@pytest.fixture(scope="session")
def skyvac(tmp_path_factory):
    rng = np.random.default_rng(14)
    return write_skyvac(Path(tmp_path_factory.mktemp("skyvac")) / "sky_spectra_vac_v1.fits", 80, rng, nan_rows=3)


class CountingFS:
    """An fsspec filesystem wrapper that records every byte range read through ``open``."""

    def __init__(self, fs):
        self._fs = fs
        self.reads: list[tuple[str, int, int]] = []  # (path, offset, nbytes)

    def open(self, path, mode="rb", **kwargs):
        f = self._fs.open(path, mode, **kwargs)
        outer = self

        class _F:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                f.close()

            def seek(self, *a):
                return f.seek(*a)

            def tell(self):
                return f.tell()

            def read(self, n=-1):
                pos = f.tell()
                data = f.read(n)
                outer.reads.append((str(path), pos, len(data)))
                return data

            def readinto(self, b):
                pos = f.tell()
                k = f.readinto(b)
                outer.reads.append((str(path), pos, k or 0))
                return k

            def close(self):
                f.close()

        return _F()

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def bytes_read(self, path: str | None = None) -> int:
        return sum(n for p, _, n in self.reads if path is None or p == str(path))

    def touched(self, path: str, start: int, stop: int) -> int:
        """Bytes read from ``path`` that fall inside [start, stop)."""
        total = 0
        for p, off, n in self.reads:
            if p == str(path):
                total += max(0, min(stop, off + n) - max(start, off))
        return total
