"""Text variables read back as plain ``str`` arrays.

Zarr v3 variable-length strings come back from ``xr.open_zarr`` as NumPy ``StringDType`` arrays, which
``.astype(str)``, pandas and many plotting calls refuse. :func:`plain_text` turns every text coordinate and
variable of a dataset into a fixed-width ``<U`` array (loaded: text columns hold one short string per
spectrum).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["plain_text"]


def _is_string_dtype(dtype) -> bool:
    return getattr(dtype, "kind", None) == "T"


def plain_text(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with each ``StringDType`` variable (data or coordinate) as a NumPy ``str`` array."""
    fixes = {}
    for name, var in ds.variables.items():
        if _is_string_dtype(var.dtype):
            values = np.asarray(var.values)
            fixes[name] = xr.Variable(var.dims, values.astype(object).astype(str), attrs=var.attrs,
                                      encoding=var.encoding)
    if not fixes:
        return ds
    coords = {k: v for k, v in fixes.items() if k in ds.coords}
    data = {k: v for k, v in fixes.items() if k not in ds.coords}
    return ds.assign_coords(coords).assign(data)
