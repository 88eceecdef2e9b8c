"""Every built-in model kind loads in a fresh process (no module imported beforehand)."""

from __future__ import annotations

import subprocess
import sys

import jax

from skybatch.models.registry import BUILTIN_KINDS, save
from skybatch.models.tile_objective import TileJEPAModel


def test_tile_jepa_model_loads_in_a_fresh_process(tmp_path):
    model = TileJEPAModel(["rubin_u", "euclid_h"], image_size=8, patch=4, width=8, depth=1, heads=2, stem_hidden=8,
                          readout_reduce=2, predictor_width=8, key=jax.random.PRNGKey(0))
    save(tmp_path / "m", model)
    code = (
        "import sys, skybatch.models.registry as r\n"
        "assert 'skybatch.models.tile_objective' not in sys.modules\n"
        f"m, card = r.load({str(tmp_path / 'm')!r})\n"
        "print(card['kind'], type(m).__name__, sorted(r.MODEL_KINDS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["tile_jepa", "TileJEPAModel"]


def test_builtin_kind_table_names_the_registering_modules():
    import importlib

    for kind, module in BUILTIN_KINDS.items():
        mod = importlib.import_module(module)
        from skybatch.models.registry import MODEL_KINDS

        assert kind in MODEL_KINDS, f"{module} does not register {kind!r}"
        assert getattr(MODEL_KINDS[kind], "registry_kind", kind) == kind and mod is not None
