"""The ``skybatch`` command line: ``skybatch run JOB ...``, ``skybatch server ...``, ``skybatch cluster show PROFILE``.

Thin by design: it parses flags (and ``--config`` YAML files) into a job's config
(:mod:`skybatch.jobs`), then runs the job's Prefect flow (:mod:`skybatch.orchestrate`),
which calls the job's ``run_with_client``.

Exit codes: 0 done; 1 failed (re-run to retry what failed); 2 bad usage or
settings; 3 done, but some inputs were set aside (listed, and in the manifest);
130 interrupted (Ctrl-C or SIGTERM: the cluster is closed, re-run to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import sys

#: ``skybatch run`` jobs: name -> module in skybatch.commands (add_arguments, run, HELP; optional CONFIGS).
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
    "generate": "skybatch.commands.generate",
    "sample-images": "skybatch.commands.sample_images",
    "realbogus": "skybatch.commands.realbogus",
}


def _defaults_of(mod) -> dict[str, object]:
    """Setting name -> default, from the job's config dataclasses (``CONFIGS``), for ``--help``."""
    out: dict[str, object] = {}
    for cls in getattr(mod, "CONFIGS", lambda: ())():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, f.default)
    return out


def _show_defaults(p: argparse.ArgumentParser, defaults: dict[str, object]) -> None:
    """Append ``(default: X)`` to each option's help that does not state its default already."""
    for a in p._actions:
        if not a.option_strings or a.help in (None, argparse.SUPPRESS) or "default" in a.help.lower():
            continue
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
            continue
        value = a.default if a.default is not None else defaults.get(a.dest)
        if value is None or value == "" or value == ():
            continue
        if isinstance(value, (tuple, list)):
            value = " ".join(str(v) for v in value)
        a.help = f"{a.help} (default: {value})"


def _parser(with_defaults: bool = True, job: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. Flags derived from a job's config class (``CONFIG`` of its command module) are
    added for ``job`` only (the one being run, or asked ``--help`` for), and with ``with_defaults``
    (``--help``) its options' help states their defaults. Building them imports that job's pipeline
    module (``train``'s imports JAX); the other jobs' parsers get only their hand-written flags, so
    ``skybatch --help`` and ``skybatch run ingest`` import no model code."""
    p = argparse.ArgumentParser(prog="skybatch", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own log on the terminal")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a job (as a Prefect flow on a Dask cluster)")
    jobs = run.add_subparsers(dest="job", metavar="JOB")
    for name, modname in JOBS.items():
        mod = importlib.import_module(modname)
        jp = jobs.add_parser(name, help=mod.HELP, description=mod.HELP)
        jp.add_argument("--config", default=None, metavar="YAML", help="settings file (keys as the flags' names); "
                                                                        "flags override it")
        jp.add_argument("--cluster", default=None, metavar="PROFILE",
                        help="cluster profile: auto, local, local-cuda, slurm, kubernetes, address, "
                             "a YAML path, or tcp://host:port (default: auto)")
        jp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and Prefect's own log on the terminal")
        jp.add_argument("--wait-lock", type=float, default=None, metavar="SECONDS",
                        help="if another job is writing the same store, wait up to SECONDS for it (default: 0, "
                             "stop at once naming the other writer)")
        jp.add_argument("--cluster-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="change one profile setting for this run, e.g. account=m1234, qos=debug, cores=1 (repeat)")
        mod.add_arguments(jp)
        jp.set_defaults(_job=mod, _parser=jp)
        if name != job:
            continue
        if hasattr(mod, "CONFIG"):
            from skybatch.commands._flags import add_config_flags

            add_config_flags(jp, mod.CONFIG())
        if with_defaults:  # reads the config classes (imports the pipeline): only for --help
            _show_defaults(jp, _defaults_of(mod))
    srv = sub.add_parser("server", help="the local Prefect API server that skybatch runs share (start, stop, status)")
    from skybatch.commands import server

    server.add_arguments(srv)
    cl = sub.add_parser("cluster", help="cluster profiles")
    clsub = cl.add_subparsers(dest="cluster_cmd", metavar="CMD")
    show = clsub.add_parser("show", help="print what a profile would start (for SLURM, the job script), without starting it")
    show.add_argument("profile", nargs="?", default="auto", help="profile name, YAML path or address (default: auto)")
    show.add_argument("--cluster-opt", action="append", default=[], metavar="KEY=VALUE",
                      help="change one profile setting, e.g. account=m1234 (repeat)")
    clsub.add_parser("list", help="list the shipped profiles")
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the run unwinds as on Ctrl-C (cluster closed)."""


#: set once SIGTERM arrived: whatever exception the interrupted code turns it into (Prefect's task
#: engine, caught mid-start, raises ``ValueError("Task run is not set")``), the run was terminated.
_TERM_RECEIVED = False


_WAKEUP: tuple[int, int] | None = None


def _watch_signals() -> None:
    """Have the interpreter note every signal's number on a pipe (``signal.set_wakeup_fd``), whichever
    Python handler is installed then: Prefect swaps in its own SIGTERM handler while a flow runs, and an
    exception raised by a handler inside a garbage-collector callback is dropped by Python."""
    global _WAKEUP
    if _WAKEUP is None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            os.close(r)
            os.close(w)
            return
        _WAKEUP = (r, w)


def _term_seen() -> bool:
    """True once SIGTERM has reached this process (by our handler, Prefect's, or any other)."""
    global _TERM_RECEIVED
    if _WAKEUP is not None:
        try:
            while data := os.read(_WAKEUP[0], 512):
                if signal.SIGTERM in data:
                    _TERM_RECEIVED = True
        except BlockingIOError:
            pass
    return _TERM_RECEIVED


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    global _TERM_RECEIVED
    _TERM_RECEIVED = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise _Terminated()


def _quiet_unraisable(hook):
    """An ``sys.unraisablehook`` that drops a SIGTERM turned exception where Python cannot raise it (a
    garbage-collector callback, a ``__del__``): Python would print its traceback, and the run unwinds
    through ``_term_seen`` anyway. Anything else goes to ``hook``."""

    def quiet(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal":
            global _TERM_RECEIVED
            _TERM_RECEIVED = _TERM_RECEIVED or type(exc).__name__ == "TerminationSignal" or isinstance(exc, _Terminated)
            return
        hook(unraisable)

    return quiet


def _error(msg: str, debug: bool, exc: BaseException | None = None) -> None:
    if debug and exc is not None:
        import traceback

        traceback.print_exception(exc)
    print(f"error: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from skybatch.orchestrate._common import set_default_env

    set_default_env()
    argv = sys.argv[1:] if argv is None else list(argv)
    job = argv[argv.index("run") + 1] if "run" in argv[:-1] else None
    parser = _parser(with_defaults=bool({"-h", "--help"} & set(argv)) or not argv, job=job)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if args.version:
        import skybatch

        print(skybatch.__version__)
        return 0
    if debug:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    elif "prefect" not in sys.modules:  # Prefect reads its logging config once, when imported
        from pathlib import Path

        os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(Path(__file__).parent / "commands" / "cli_logging.yml"))
    old_term = signal.getsignal(signal.SIGTERM)
    old_unraisable = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable(old_unraisable)
    if threading_main():
        signal.signal(signal.SIGTERM, _on_sigterm)
        _watch_signals()
    try:
        if args.command == "cluster":
            from skybatch.cluster import ProfileError, describe, list_profiles, load_profile

            if args.cluster_cmd == "list":
                print("\n".join(list_profiles()))
                return 0
            if args.cluster_cmd == "show":
                try:
                    from skybatch.cluster import parse_options

                    print(describe(load_profile(args.profile, **parse_options(args.cluster_opt))), end="")
                except ProfileError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
                return 0
            parser.parse_args(["cluster", "--help"])
        if args.command == "server":
            from skybatch.commands import server

            return int(server.run(args))
        if args.command == "run" and getattr(args, "_job", None) is not None:
            if getattr(args, "wait_lock", None) is not None:  # read by the job core's store lock
                os.environ["SKYBATCH_WAIT_LOCK"] = str(args.wait_lock)
            from skybatch.cluster import cli_overrides, parse_options
            from skybatch.commands import server

            server.enable_for_cli(say=lambda m: print(m, file=sys.stderr, flush=True))
            with cli_overrides(parse_options(args.cluster_opt)):
                code = int(args._job.run(args))
            if _term_seen():  # the interrupted code swallowed the SIGTERM: the run did not finish as asked
                print("terminated: the cluster was closed; re-run the same command to resume where it stopped",
                      file=sys.stderr)
                return 130
            return code
        if args.command == "run":
            parser.parse_args(["run", "--help"])
        parser.print_help()
        return 2
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, _Terminated) or _term_seen() else "interrupted"
        print(f"{what}: the cluster was closed; re-run the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as e:
        if _term_seen():  # the SIGTERM surfaced as another exception from the code it interrupted
            if debug:
                import traceback

                traceback.print_exception(e)
            print("terminated: the cluster was closed; re-run the same command to resume where it stopped",
                  file=sys.stderr)
            return 130
        from skybatch.cluster import ProfileError
        from skybatch.commands._config import ConfigError, UsageError

        if isinstance(e, UsageError) and getattr(args, "_parser", None) is not None:
            args._parser.print_usage(sys.stderr)
        if isinstance(e, (ConfigError, ProfileError, ValueError, KeyError, FileNotFoundError)):
            # errors a user can act on: the message names the file, store or setting
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            _error(str(msg), debug, e)
            return 2
        _error(f"{type(e).__name__}: {e}" + ("" if debug else "  (run with --debug for the traceback)"), debug, e)
        return 1
    finally:
        from skybatch.commands import server

        server.enable_for_cli(None)
        sys.unraisablehook = old_unraisable
        if threading_main():
            signal.signal(signal.SIGTERM, old_term)


def threading_main() -> bool:
    """True in the main thread (the only one that may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
