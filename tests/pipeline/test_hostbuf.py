"""Aligned host buffers: JAX on CPU uses them in place (the premise of the model feeders), others are copied."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from skybatch.pipeline.hostbuf import aligned_empty, is_aligned


@pytest.mark.parametrize("shape,dtype", [((128, 97), np.float32), ((3, 5, 7), np.int32), ((0, 4), np.float32),
                                         (11, np.float64)])
def test_aligned_empty_has_the_shape_dtype_and_alignment(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.shape == ((shape,) if isinstance(shape, int) else shape) and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable and is_aligned(a)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="aliasing of host memory is a CPU runtime property")
def test_jax_cpu_uses_aligned_arrays_in_place_and_copies_the_others():
    a = aligned_empty((256, 97), np.float32)
    a[...] = 1.0
    j = jax.device_put(a)
    a[0, 0] = 5.0
    assert float(j[0, 0]) == 5.0  # aliased: no host-to-device copy per batch
    plain = np.ones((256 * 97 + 1,), np.float32)[1:].reshape(256, 97)  # 4-byte offset: never aligned
    assert not is_aligned(plain)
    k = jax.device_put(plain)
    plain[0, 0] = 5.0
    assert float(k[0, 0]) == 1.0  # copied
