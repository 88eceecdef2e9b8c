"""The ``skybatch`` command line: ``skybatch run JOB ...``, ``skybatch cluster show PROFILE``.

Thin by design: it parses flags (and ``--config`` YAML files), then calls the
Prefect flows in ``flows/``, which call :mod:`skybatch.pipeline`.

Exit codes: 0 done; 1 failed (re-run to retry what failed); 2 bad usage or
settings; 3 done, but some inputs were set aside (listed, and in the manifest).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: ``skybatch run`` jobs: name -> module in skybatch.commands (add_arguments, run, HELP).
JOBS = {
    "quickstart": "skybatch.commands.quickstart",
    "ingest": "skybatch.commands.ingest",
    "ingest-tiles": "skybatch.commands.ingest_tiles",
    "preprocess": "skybatch.commands.preprocess",
    "train": "skybatch.commands.train",
    "score": "skybatch.commands.score",
    "classify": "skybatch.commands.classify",
    "embed": "skybatch.commands.embed",
    "difference": "skybatch.commands.difference",
    "sample-images": "skybatch.commands.sample_images",
    "realbogus": "skybatch.commands.realbogus",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skybatch", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a job (as a Prefect flow on a Dask cluster)")
    jobs = run.add_subparsers(dest="job", metavar="JOB")
    for name, modname in JOBS.items():
        mod = importlib.import_module(modname)
        jp = jobs.add_parser(name, help=mod.HELP, description=mod.HELP)
        jp.add_argument("--config", default=None, metavar="YAML", help="settings file; flags override it")
        jp.add_argument("--cluster", default=None, metavar="PROFILE",
                        help="cluster profile: auto (default), local, local-cuda, slurm, kubernetes, address, "
                             "a YAML path, or tcp://host:port")
        mod.add_arguments(jp)
        jp.set_defaults(_job=mod)
    cl = sub.add_parser("cluster", help="cluster profiles")
    clsub = cl.add_subparsers(dest="cluster_cmd", metavar="CMD")
    show = clsub.add_parser("show", help="print what a profile would start (for SLURM, the job script), without starting it")
    show.add_argument("profile", nargs="?", default="auto")
    clsub.add_parser("list", help="list the shipped profiles")
    return p


def main(argv: list[str] | None = None) -> int:
    from flows._common import set_default_env

    set_default_env()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        import skybatch

        print(skybatch.__version__)
        return 0
    try:
        if args.command == "cluster":
            from skybatch.cluster import ProfileError, describe, list_profiles, load_profile

            if args.cluster_cmd == "list":
                print("\n".join(list_profiles()))
                return 0
            if args.cluster_cmd == "show":
                try:
                    print(describe(load_profile(args.profile)), end="")
                except ProfileError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
                return 0
            parser.parse_args(["cluster", "--help"])
        if args.command == "run" and getattr(args, "_job", None) is not None:
            return int(args._job.run(args))
        parser.print_help()
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as e:
        from skybatch.cluster import ProfileError
        from skybatch.commands._config import ConfigError

        if isinstance(e, (ConfigError, ProfileError, ValueError, KeyError, FileNotFoundError)):
            # errors a user can act on: the message names the file, store or setting
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
