"""A job driver run as its own process by the fault tests (so it can be killed with SIGKILL).

usage: python driver.py ingest STORE SRC [SRC...] | preprocess IN OUT | map STORE | score STORE MODEL_DIR
Prints ``START`` when the job begins (imports and cluster done) and ``END <exit code>`` at the end.
The cluster is a threads-only LocalCluster in this process, so killing the driver kills its workers too.
The kill tests start it through a fork server that has imported Dask and the ingest / preprocess jobs once
(``_util.start_driver``): each run is still its own process, killed with SIGKILL, without ~2-3 s of imports.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


def main(argv: list[str]) -> int:
    from distributed import Client, LocalCluster

    kind, *rest = argv
    wait = float(os.environ.get("DRIVER_WAIT_LOCK", "0"))
    chunk = int(os.environ.get("DRIVER_CHUNK", "10"))
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cl, \
            Client(cl) as client:
        if kind == "ingest":
            from skybatch.pipeline.ingest import ingest

            print("START", flush=True)
            rep = ingest(rest[1:], rest[0], chunk_spectra=chunk, client=client, progress=False, wait_lock=wait)
            print(rep.summary(), flush=True)
        elif kind == "preprocess":
            from skybatch.pipeline.preprocess import preprocess

            print("START", flush=True)
            rep = preprocess(rest[0], rest[1], client=client, progress=False, wait_lock=wait,
                             grid="loglam:3.56:3.99:2e-4")
            print(rep.summary(), flush=True)
        elif kind == "map":
            import equinox as eqx
            import jax

            from skybatch.pipeline.map_model import map_model

            model = eqx.nn.MLP(int(os.environ.get("DRIVER_NWAVE", "64")), 4, 32, 2, key=jax.random.PRNGKey(0))
            print("START", flush=True)
            rep = map_model(rest[0], model, outputs=("latent",), batch_size=16, client=client, progress=False,
                            executor="dask", wait_lock=wait)
            print(rep.summary(), flush=True)
        elif kind == "score":
            from skybatch.pipeline.modeling import score

            print("START", flush=True)
            out = score(rest[0], rest[1], top=5, client=client, batch_size=16, progress=False,
                        out_dir=rest[0] + ".outputs")
            print("score exit", out["exit_code"], flush=True)
            print("END", out["exit_code"], flush=True)
            return int(out["exit_code"])
        else:
            raise SystemExit(__doc__)
    print("END", rep.exit_code, flush=True)
    return rep.exit_code


def forked_main(argv: list[str], env: dict[str, str], out: str, err: str) -> None:
    """Entry point of a driver process forked by the tests' fork server (``_util.start_driver``): stdout and
    stderr go to the files ``out`` and ``err``, ``env`` is added to the environment; exits with main's code."""
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.environ.update(env)
    sys.exit(main(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
