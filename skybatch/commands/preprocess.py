"""`skybatch run preprocess`: a spectra store into a model-ready store (grid, frame, scale)."""

from __future__ import annotations

import argparse
import dataclasses

HELP = "mask, rest-frame shift, flux-conserving resample and normalise a spectra store into a new store"


def CONFIGS():
    from skybatch.pipeline.preprocess import PreprocessConfig
    from skybatch.spectra import PreprocessRecipe

    return (PreprocessRecipe, PreprocessConfig)


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    from skybatch.jobs.preprocess import Config

    return Config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="input spectra store (required)")
    p.add_argument("--out", help="output store, new or one to resume (required)")
    p.add_argument("--grid", default=None, metavar="SPEC",
                   help="native | desi | sdss | desi-loglam | linear:START:STOP:STEP | loglam:START:STOP:STEP "
                        "(default: native; with --rest-frame, a log-λ grid covering the store's wavelengths over "
                        "its redshift range)")
    p.add_argument("--rest-frame", action="store_true", default=None, help="shift each spectrum by 1/(1+z)")
    p.add_argument("--bad-redshift", choices=["drop", "observed"], default=None,
                   help="rest frame: what happens to spectra with unusable redshifts")
    p.add_argument("--normalize", choices=["median", "mean", "total", "none"], default=None,
                   help="per-spectrum scale, over its good pixels")
    p.add_argument("--normalize-window", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="Å on the target grid (default: each spectrum's whole good range, which works at any "
                        "redshift; a fixed rest window fails where a spectrum does not cover it)")
    p.add_argument("--mask-bits", default=None, help="desi | sdss | none | desi:COSMIC,NODATA | integer")
    p.add_argument("--sky-lines", action="store_true", default=None, help="mask strong sky lines")
    p.add_argument("--continuum", choices=["none", "smooth"], default=None, help="divide by a smooth continuum")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=None, help="NumPy or CuPy on the workers")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for both stores")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def auto_rest_grid(store: str, storage_options: dict | None = None) -> tuple[str, str]:
    """A rest-frame grid for ``store`` (:func:`skybatch.spectra.grids.rest_frame_grid`) and a line
    describing it. Redshifts with ``zwarn != 0`` do not count."""
    import numpy as np

    from skybatch.spectra.grids import rest_frame_grid
    from skybatch.store.spectra_store import open_store

    ds = open_store(store, storage_options)
    z = np.asarray(ds["z"].values, np.float64)
    if "zwarn" in ds:
        z = z[np.asarray(ds["zwarn"].values) == 0]
    spec = rest_frame_grid(ds["wavelength"].values, z)
    assert spec.start is not None and spec.stop is not None  # rest_frame_grid sets both
    lo, hi = 10 ** spec.start, 10 ** spec.stop
    zq = np.quantile(z[np.isfinite(z) & (z > -1)], (0.005, 0.995))
    return str(spec), (f"rest-frame grid chosen from the store: {spec} ({lo:.0f}-{hi:.0f} Å rest, {spec.size} px; "
                       f"covers z {zq[0]:.2f}-{zq[1]:.2f}); give --grid to choose another")


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError, build_config, load_config
    from skybatch.commands._show import open_hint
    from skybatch.pipeline.preprocess import PreprocessConfig, PreprocessReport
    from skybatch.spectra import PreprocessRecipe

    settings = load_config(args.config)
    recipe_names = {f.name for f in dataclasses.fields(PreprocessRecipe) if f.init}
    recipe_settings = {k: settings.pop(k) for k in list(settings) if k in recipe_names}
    recipe_settings.update(settings.pop("recipe", None) or {})
    for name in recipe_names:
        v = getattr(args, name, None)
        if v is not None:
            recipe_settings[name] = tuple(v) if name == "normalize_window" else v
    flags = {k: getattr(args, k, None) for k in ("store", "out", "device", "cluster", "endpoint_url", "anon", "progress",
                                                 "wait_lock")}
    chosen = None
    if recipe_settings.get("rest_frame") and recipe_settings.get("grid") in (None, "native"):
        # check the other settings first, so a typo is named before the store is read
        build_config(PreprocessConfig, {**settings, "recipe": PreprocessRecipe()}, flags)
        try:
            recipe_settings["grid"], chosen = auto_rest_grid(flags["store"] or settings["store"])
        except ValueError as e:
            raise ConfigError(f"--grid: {e}") from None
    try:
        recipe = PreprocessRecipe.from_dict(recipe_settings)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config = build_config(PreprocessConfig, {**settings, "recipe": recipe}, flags)
    if chosen:
        print(chosen, flush=True)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.preprocess import preprocess_flow

    params = flow_params(config)
    params["recipe"] = config.recipe.to_dict()  # a plain mapping in the flow run's parameters
    rep = PreprocessReport(**run_flow(preprocess_flow, params))
    print(rep.summary())
    print(open_hint(config.out))
    return rep.exit_code
