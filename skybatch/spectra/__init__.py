"""Pure array functions on spectra: mask, resample, rest frame, normalise.

Everything here takes arrays and returns arrays, written once against the
array namespace of its inputs (NumPy on CPU, CuPy on GPU; see
:mod:`skybatch.xp`), vectorised over a whole chunk (n_spectrum × n_wave).
The pipeline maps :func:`preprocess_block` with a :class:`PreprocessRecipe`
over store chunks.

Conventions: wavelengths in Å (vacuum), flux density per Å, ``ivar = 0``
means no information and always comes with ``flux = 0`` in outputs; masks
are uint32 bit fields (survey bits plus skybatch bits 29-31).
"""

from __future__ import annotations

from skybatch.spectra import camera_coadd as _camera_coadd
from skybatch.spectra import continuum as _continuum
from skybatch.spectra import flags as _flags
from skybatch.spectra import grids as _grids
from skybatch.spectra import mask as _mask
from skybatch.spectra import normalize as _normalize
from skybatch.spectra import recipe as _recipe
from skybatch.spectra import redshift as _redshift
from skybatch.spectra import resample as _resample
from skybatch.spectra import skylines as _skylines
from skybatch.spectra.camera_coadd import *  # noqa: F403
from skybatch.spectra.continuum import *  # noqa: F403
from skybatch.spectra.flags import *  # noqa: F403
from skybatch.spectra.grids import *  # noqa: F403
from skybatch.spectra.mask import *  # noqa: F403
from skybatch.spectra.normalize import *  # noqa: F403
from skybatch.spectra.recipe import *  # noqa: F403
from skybatch.spectra.redshift import *  # noqa: F403
from skybatch.spectra.resample import *  # noqa: F403
from skybatch.spectra.skylines import *  # noqa: F403

#: Each submodule's public names (its ``__all__``), re-exported here: mask, grids, resample, rest frame,
#: normalise, sky lines and continuum, b/r/z camera coadd, per-spectrum flags, the recipe.
__all__ = [
    *_mask.__all__,
    *_grids.__all__,
    *_resample.__all__,
    *_redshift.__all__,
    *_normalize.__all__,
    *_skylines.__all__,
    *_continuum.__all__,
    *_camera_coadd.__all__,
    *_flags.__all__,
    *_recipe.__all__,
]
