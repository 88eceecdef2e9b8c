"""`skybatch run quickstart`: a sample survey in real FITS layouts, ingested on a local cluster."""

from __future__ import annotations

import argparse

HELP = "generate a small sample survey (real DESI/SDSS file layouts, with ground truth) and ingest it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="skybatch-quickstart", help="where data and stores go (default ./skybatch-quickstart)")
    p.add_argument("--n-healpix", type=int, default=4, help="DESI healpix coadd files to generate")
    p.add_argument("--spectra-per-file", type=int, default=250)
    p.add_argument("--n-sdss", type=int, default=60, help="SDSS spec files to generate")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from flows.quickstart import quickstart_flow
    from skybatch.pipeline.ingest import IngestReport

    out = quickstart_flow(
        out_dir=args.dir, cluster=args.cluster or "auto", n_healpix=args.n_healpix,
        spectra_per_file=args.spectra_per_file, n_sdss=args.n_sdss, seed=args.seed,
    )
    code = 0
    print(f"\nsample survey (FITS files + truth.parquet): {out['data']}")
    for survey in ("desi", "sdss"):
        r = IngestReport(**out[survey])
        print(f"\n[{survey}]\n{r.summary()}")
        code = max(code, r.exit_code)
    print("\nopen the stores in Python:\n"
          "    import xarray as xr\n"
          f"    ds = xr.open_zarr({IngestReport(**out['desi']).store!r})\n"
          "    ds.flux.sel(wavelength=slice(6500, 6600)).isel(spectrum=0).values")
    return code
