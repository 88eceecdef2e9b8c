"""Target wavelength grids: linear-λ, log10-λ, explicit arrays and presets.

All grids are pixel *centres* in Angstrom (float64, strictly increasing).
Pixel edges, where needed, are the midpoints between centres with the two
outer edges half a spacing beyond the end centres (the convention of
specutils' ``SpectralAxis.bin_edges``); see :func:`skybatch.spectra.pixel_edges`.

A grid is described by a small typed :class:`GridSpec`, which parses from and
prints to one string, so it can live in a CLI flag, a YAML file or store attrs:

==============================  =====================================================
string                          grid
==============================  =====================================================
``linear:3600:9824:0.8``        λ = 3600 + 0.8 i Å, up to 9824 Å inclusive (7781 px)
``linear:3600:9824:n=7781``     7781 px evenly spaced from 3600 to 9824 Å inclusive
``loglam:3.55:4.02:1e-4``       log10 λ = 3.55 + 1e-4 i, up to 4.02 inclusive (4701 px)
``loglam:3.55:4.0199:n=4700``   4700 px evenly spaced in log10 λ
``desi``                        preset: DESI brz coadd grid, ``linear:3600:9824:0.8``
``sdss``                        preset: SDSS/BOSS grid, log10 λ = 3.55 + 1e-4 i, 4700 px
``desi-loglam``                 preset: log10 λ grid at 1e-4 dex spanning the DESI range
``native``                      no resampling: keep the input grid
==============================  =====================================================

With a ``STEP`` the grid is ``START + i*STEP`` for ``i = 0 … floor((STOP-START)/STEP)``
(STOP is included when it falls on the lattice, to 1e-6 of a step), computed
as ``START + i*STEP`` in float64 (no accumulated rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, Literal

__all__ = [
    "GridSpec",
    "GRID_PRESETS",
    "linear_grid",
    "loglam_grid",
    "explicit_grid",
    "rest_frame_grid",
]

GridKind = Literal["linear", "loglam", "explicit", "native"]

_STEP_TOL = 1e-6  # fraction of a step within which STOP counts as on the lattice

#: Named grids: preset name → spec string.
GRID_PRESETS = MappingProxyType(
    {
        "desi": "linear:3600:9824:0.8",
        "sdss": "loglam:3.55:4.0199:1e-4",
        "desi-loglam": "loglam:3.5564:3.9922:1e-4",
    }
)


def _namespace(xp: ModuleType | None) -> ModuleType:
    if xp is None:
        import numpy as np

        return np
    return xp


def _count(start: float, stop: float, step: float | None, n: int | None, what: str) -> tuple[int, float]:
    """Number of pixels and the step, from (start, stop, step) or (start, stop, n)."""
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"{what}: start and stop must be finite numbers, got {start!r}, {stop!r}")
    if not stop > start:
        raise ValueError(f"{what}: stop ({stop}) must be greater than start ({start})")
    if (step is None) == (n is None):
        raise ValueError(f"{what}: give exactly one of step or n")
    if n is not None:
        if isinstance(n, bool) or int(n) != n or n < 2:
            raise ValueError(f"{what}: n must be an integer >= 2, got {n!r}")
        n = int(n)
        return n, (stop - start) / (n - 1)
    assert step is not None
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"{what}: step must be a positive number, got {step!r}")
    n_steps = (stop - start) / step
    count = int(math.floor(n_steps + _STEP_TOL)) + 1
    if count < 2:
        raise ValueError(f"{what}: step {step} is larger than stop - start = {stop - start}; fewer than 2 pixels")
    return count, float(step)


def linear_grid(
    start: float, stop: float, step: float | None = None, *, n: int | None = None, xp: ModuleType | None = None
) -> Any:
    """Linear-λ grid of pixel centres in Å: ``start + i*step``.

    Parameters
    ----------
    start, stop : float
        First and last centre (Å); ``stop`` is included when on the lattice.
    step : float, optional
        Pixel spacing (Å). Give exactly one of ``step`` and ``n``.
    n : int, optional
        Number of pixels (evenly spaced, both ends included).
    xp : array namespace, optional
        Where to build the array (default NumPy).

    Returns
    -------
    array (n_pixel,) float64
    """
    count, h = _count(float(start), float(stop), step, n, "linear grid")
    ns = _namespace(xp)
    return ns.arange(count, dtype=ns.float64) * h + float(start)


def loglam_grid(
    start: float, stop: float, step: float | None = None, *, n: int | None = None, xp: ModuleType | None = None
) -> Any:
    """Log-λ grid: centres at ``10**(start + i*step)`` Å (``start``/``stop`` in log10 Å).

    Parameters
    ----------
    start, stop : float
        log10 of the first and last centre in Å (e.g. 3.55 for 3548 Å).
    step : float, optional
        Spacing in dex (SDSS: 1e-4, i.e. 69 km/s). Give exactly one of ``step``, ``n``.
    n : int, optional
        Number of pixels.
    xp : array namespace, optional
        Where to build the array (default NumPy).

    Returns
    -------
    array (n_pixel,) float64, Å
    """
    for name, v in (("start", start), ("stop", stop)):
        if not (0.0 < float(v) < 8.0):
            raise ValueError(
                f"loglam grid: {name} = {v} is log10(Å) and must lie in (0, 8); "
                f"did you mean a linear grid (linear:START:STOP:STEP in Å)?"
            )
    count, h = _count(float(start), float(stop), step, n, "loglam grid")
    ns = _namespace(xp)
    return 10.0 ** (ns.arange(count, dtype=ns.float64) * h + float(start))


def explicit_grid(values: Any, *, xp: ModuleType | None = None) -> Any:
    """Validate an explicit grid of pixel centres (Å) and return it as float64.

    Raises
    ------
    ValueError
        Not 1-D, fewer than 2 values, non-finite, non-positive or not strictly
        increasing (the message gives the first offending index).
    """
    import numpy as np

    from skybatch.xp import to_numpy

    arr = np.asarray(to_numpy(values) if hasattr(values, "__array_namespace__") else values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"explicit grid: need a 1-D array of at least 2 wavelengths, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        raise ValueError(f"explicit grid: value {arr[bad[0]]!r} at index {bad[0]} is not a positive finite wavelength")
    steps = np.diff(arr)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        raise ValueError(
            f"explicit grid: wavelengths must increase strictly; index {bad[0] + 1} ({arr[bad[0] + 1]}) "
            f"is not above index {bad[0]} ({arr[bad[0]]})"
        )
    ns = _namespace(xp)
    return arr if ns is np else ns.asarray(arr, dtype=ns.float64)


def _number(text: str, what: str, spec: str, form: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"grid spec {spec!r}: {what} {text!r} is not a number (expected {form})") from None
    if not math.isfinite(value):
        raise ValueError(f"grid spec {spec!r}: {what} {text!r} is not finite (expected {form})")
    return value


@dataclass(frozen=True)
class GridSpec:
    """A target wavelength grid, typed and serialisable.

    Build one with :meth:`parse` (``"loglam:3.55:4.02:1e-4"``, ``"desi"``, ...)
    or :meth:`from_values` (an explicit array), then get the centres with
    :meth:`wavelength`. ``str(spec)`` gives back a string :meth:`parse` accepts
    (for explicit grids use :meth:`to_dict`).
    """

    kind: GridKind
    """``"linear"`` (Å), ``"loglam"`` (log10 Å), ``"explicit"`` (values) or ``"native"`` (input grid)."""
    start: float | None = None
    """First pixel centre: Å for linear, log10(Å) for loglam; None for explicit/native."""
    stop: float | None = None
    """Last pixel centre (included when on the lattice), same unit as ``start``."""
    step: float | None = None
    """Spacing (Å or dex); exactly one of ``step`` and ``n`` for linear/loglam."""
    n: int | None = None
    """Number of pixels; exactly one of ``step`` and ``n`` for linear/loglam."""
    values: tuple[float, ...] | None = None
    """Explicit centres in Å (kind ``"explicit"`` only)."""
    preset: str | None = None
    """Preset name this spec came from (kept for printing), or None."""

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "loglam", "explicit", "native"):
            raise ValueError(f"GridSpec.kind {self.kind!r} is not one of 'linear', 'loglam', 'explicit', 'native'")
        if self.kind in ("linear", "loglam"):
            if self.start is None or self.stop is None:
                raise ValueError(f"GridSpec({self.kind}): start and stop are required")
            if self.values is not None:
                raise ValueError(f"GridSpec({self.kind}): values are only for kind 'explicit'")
            # Validate by building the pixel count (cheap, no array).
            if self.kind == "loglam":
                for name, v in (("start", self.start), ("stop", self.stop)):
                    if not (0.0 < float(v) < 8.0):
                        raise ValueError(
                            f"GridSpec(loglam): {name} = {v} is log10(Å) and must lie in (0, 8); "
                            "did you mean linear:START:STOP:STEP (Å)?"
                        )
            _count(float(self.start), float(self.stop), self.step, self.n, f"GridSpec({self.kind})")
        elif self.kind == "explicit":
            if self.values is None:
                raise ValueError("GridSpec(explicit): values are required")
            explicit_grid(self.values)
        elif any(v is not None for v in (self.start, self.stop, self.step, self.n, self.values)):
            raise ValueError("GridSpec(native): takes no start/stop/step/n/values")

    # -- construction --------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> GridSpec:
        """Parse ``"KIND:START:STOP:STEP"``, ``"KIND:START:STOP:n=N"``, a preset or ``"native"``.

        Raises
        ------
        ValueError
            Naming the part that could not be read and the accepted forms.
        """
        if isinstance(text, GridSpec):
            return text
        if not isinstance(text, str):
            raise ValueError(f"grid spec must be a string, got {type(text).__name__}")
        spec = text.strip()
        low = spec.lower()
        if low == "native":
            return cls(kind="native")
        if low in GRID_PRESETS:
            parsed = cls.parse(GRID_PRESETS[low])
            return cls(kind=parsed.kind, start=parsed.start, stop=parsed.stop, step=parsed.step, n=parsed.n, preset=low)
        parts = spec.split(":")
        kind = parts[0].strip().lower()
        if kind not in ("linear", "loglam"):
            raise ValueError(
                f"grid spec {text!r}: unknown grid kind {parts[0]!r}; use linear:START:STOP:STEP, "
                f"loglam:START:STOP:STEP, ...:n=N, 'native' or a preset {sorted(GRID_PRESETS)}"
            )
        form = f"{kind}:START:STOP:STEP or {kind}:START:STOP:n=N"
        if len(parts) != 4:
            raise ValueError(f"grid spec {text!r}: expected 4 ':'-separated parts ({form}), got {len(parts)}")
        start = _number(parts[1].strip(), "start", text, form)
        stop = _number(parts[2].strip(), "stop", text, form)
        last = parts[3].strip()
        step: float | None = None
        n: int | None = None
        if last.lower().startswith("n="):
            raw = last[2:].strip()
            try:
                n = int(raw)
            except ValueError:
                raise ValueError(
                    f"grid spec {text!r}: pixel count {raw!r} is not an integer (expected {form})"
                ) from None
        else:
            step = _number(last, "step", text, form)
        try:
            return cls(kind=kind, start=start, stop=stop, step=step, n=n)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"grid spec {text!r}: {err}") from None

    @classmethod
    def from_values(cls, values: Any) -> GridSpec:
        """An explicit grid from an array of centres in Å (validated)."""
        arr = explicit_grid(values)
        return cls(kind="explicit", values=tuple(float(v) for v in arr))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridSpec:
        """Inverse of :meth:`to_dict`."""
        if "spec" in d:
            return cls.parse(d["spec"])
        if d.get("kind") == "explicit":
            return cls.from_values(d["values"])
        raise ValueError(
            f"GridSpec.from_dict: expected a 'spec' string or kind='explicit' with values, got keys {sorted(d)}"
        )

    # -- use -----------------------------------------------------------------------
    def wavelength(self, xp: ModuleType | None = None) -> Any:
        """Pixel centres in Å, float64, in namespace ``xp`` (default NumPy).

        Raises ValueError for ``native`` (the grid is the input's).
        """
        if self.kind == "linear":
            return linear_grid(self.start, self.stop, self.step, n=self.n, xp=xp)  # type: ignore[arg-type]
        if self.kind == "loglam":
            return loglam_grid(self.start, self.stop, self.step, n=self.n, xp=xp)  # type: ignore[arg-type]
        if self.kind == "explicit":
            return explicit_grid(self.values, xp=xp)
        raise ValueError("GridSpec('native') has no wavelengths of its own: it keeps the input grid")

    @property
    def size(self) -> int | None:
        """Number of pixels (None for native)."""
        if self.kind == "native":
            return None
        if self.kind == "explicit":
            return len(self.values or ())
        return _count(float(self.start), float(self.stop), self.step, self.n, "grid")[0]  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.preset:
            return self.preset
        if self.kind == "native":
            return "native"
        if self.kind == "explicit":
            return f"explicit[{self.size} px, {self.values[0]:g}-{self.values[-1]:g} Å]"  # type: ignore[index]
        last = f"n={self.n}" if self.n is not None else repr(self.step)
        return f"{self.kind}:{self.start!r}:{self.stop!r}:{last}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"spec": "..."}`` or ``{"kind": "explicit", "values": [...]}``."""
        if self.kind == "explicit":
            return {"kind": "explicit", "values": list(self.values or ())}
        return {"spec": str(self)}


def rest_frame_grid(
    wavelength: Any,
    z: Any,
    *,
    step: float | None = None,
    z_quantiles: tuple[float, float] = (0.005, 0.995),
) -> GridSpec:
    """A log-λ rest-frame grid covering what a survey observes over its redshift range.

    Parameters
    ----------
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å
        The observed-frame grid of the store.
    z : array (n_spectrum,)
        Redshifts of the spectra whose rest frame must fit; NaN and z <= -1 are ignored (pass
        only trustworthy ones, e.g. ``zwarn == 0``).
    step : float, optional
        Pixel spacing in dex; default the input's coarsest log spacing rounded to one significant
        digit (``1e-4`` for DESI's 0.8 Å pixels), so no input pixel is split coarser than it was.
    z_quantiles : (lo, hi)
        Redshift quantiles that bound the range (a few catastrophic redshifts do not stretch it).

    Returns
    -------
    GridSpec ``loglam:START:STOP:STEP`` from ``min λ / (1 + z_hi)`` to ``max λ / (1 + z_lo)``
    (rest-frame Å): every spectrum in the range lands on it, each covering the part it observed.

    Raises
    ------
    ValueError
        No usable redshift, or a non-positive wavelength.
    """
    import numpy as np

    wl = np.asarray(wavelength, dtype=np.float64)
    zz = np.asarray(z, dtype=np.float64).ravel()
    zz = zz[np.isfinite(zz) & (zz > -1.0)]
    if zz.size == 0:
        raise ValueError("rest_frame_grid: no usable redshift (all NaN or <= -1); give --grid explicitly")
    wl_ok = wl[np.isfinite(wl)]
    if wl_ok.size < 2 or float(wl_ok.min()) <= 0:
        raise ValueError("rest_frame_grid: the wavelength grid needs >= 2 positive values")
    z_lo, z_hi = (float(v) for v in np.quantile(zz, z_quantiles))
    lo = float(wl_ok.min()) / (1.0 + z_hi)
    hi = float(wl_ok.max()) / (1.0 + z_lo)
    if step is None:
        w1 = np.sort(np.unique(wl_ok))
        native = float(np.max(np.diff(np.log10(w1))))
        exp = math.floor(math.log10(native))
        step = round(native / 10**exp) * 10**exp
    a = math.floor(math.log10(lo) / step) * step
    b = math.ceil(math.log10(hi) / step) * step
    return GridSpec("loglam", start=round(a, 6), stop=round(b, 6), step=float(f"{step:.3g}"))
