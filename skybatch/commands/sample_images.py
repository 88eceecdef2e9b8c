"""`skybatch run sample-images`: write sample science/reference image pairs (plain FITS, Rubin- and
Euclid-like), multi-band tiles and their ground truth, to try `difference` and `ingest-tiles` on."""

from __future__ import annotations

import argparse

HELP = "write sample image pairs (plain FITS, Rubin/Euclid layouts) with ground truth, and tiles, to try differencing"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="sample-images", help="directory to write into (new or empty; default sample-images)")
    p.add_argument("--pairs", type=int, default=3, metavar="N", help="pairs per layout (3; the third plain pair is a "
                   "null pair with nothing changed)")
    p.add_argument("--size", type=int, default=512, metavar="PX", help="side of the science images (512)")
    p.add_argument("--layout", action="append", dest="layouts", choices=["plain", "rubin", "euclid"], default=None,
                   help="only this layout; repeat for more (default all three)")
    p.add_argument("--tiles", type=int, default=32, metavar="N", help="multi-band tiles for the tile encoder (32; 0 = none)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError
    from skybatch.sample.images import write_sample_images

    try:
        s = write_sample_images(args.out, n_pairs=args.pairs, size=args.size, seed=args.seed,
                                layouts=tuple(args.layouts or ("plain", "rubin", "euclid")), n_tiles=args.tiles)
    except (ValueError, FileExistsError) as e:
        raise ConfigError(str(e)) from None
    print(f"sample images in {s.root}:")
    for layout in s.science:
        print(f"  {layout}: {len(s.pairs[layout])} pairs, science {s.science[layout]}, references {s.reference[layout]}")
    for inst, paths in s.tiles.items():
        print(f"  tiles/{inst}: {len(paths)} .npz tiles")
    print(f"  ground truth: {s.truth}")
    print("try:")
    print(open(s.readme).read().split("\n\n", 1)[1].split("\n\n")[0])
    return 0
