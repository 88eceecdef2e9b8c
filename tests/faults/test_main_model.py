"""A model whose class is defined in a script's ``__main__`` maps correctly (run as a real script)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import sys
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import xarray as xr

    class Encoder(eqx.Module):          # defined in __main__: cloudpickle ships it by value
        mlp: eqx.nn.MLP
        scale: float = eqx.field(static=True)

        def __call__(self, flux):
            return self.mlp(flux) * self.scale

    if __name__ == "__main__":
        from distributed import Client, LocalCluster
        sys.path.insert(0, sys.argv[2])
        from tests.helpers import make_random_store
        from skybatch.pipeline.map_model import map_model

        store = sys.argv[1]
        data = make_random_store(store, n=200, nwave=32, chunk=64)
        model = Encoder(eqx.nn.MLP(32, 3, 16, 1, key=jax.random.PRNGKey(0)), 2.0)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \\
                Client(cl) as client:
            rep = map_model(store, model, outputs=("latent",), batch_size=32, client=client, progress=True)
            print("executor:", rep.executor, "exit:", rep.exit_code, "chunks:", rep.chunks_written)
            expected = np.asarray(jax.vmap(model)(data["flux"]))
            got = xr.open_zarr(store).latent.values
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
            again = map_model(store, model, outputs=("latent",), batch_size=32, client=client, progress=False)
            print("re-run in a new call: written", again.chunks_written, "skipped", again.chunks_skipped)
            assert again.chunks_written == 0
            # forced onto the process workers it fails (equinox issue 231): the bar and exit status say so
            rep2 = map_model(store, model, outputs=("latent2",), batch_size=32, client=client, progress=True,
                             executor="dask")
            print("forced onto process workers: exit", rep2.exit_code, "failed chunks", len(rep2.failed_chunks))
            assert rep.exit_code == 0 and rep.executor == "local"
            sys.exit(0 if rep2.exit_code == 1 else 5)
''')


@pytest.mark.slow
def test_main_defined_model_maps_in_process(tmp_path):
    import os

    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "s.zarr"), root], capture_output=True, text=True,
                       timeout=600)
    print(p.stdout)
    print("\n".join(ln for ln in p.stderr.splitlines() if "FAILED" in ln or "latent2" in ln)[-600:])
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "executor: local exit: 0" in p.stdout
