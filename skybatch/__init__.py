"""skybatch: survey-scale astronomy batch processing.

FITS spectra and image tiles (local or S3) stream through a Dask cluster into
chunked Zarr stores; preprocessing, ZOGY differencing and JAX/Equinox models
are mapped across chunks; Prefect flows and the ``skybatch`` CLI drive it.
"""

from __future__ import annotations

__version__ = "0.1.0"
