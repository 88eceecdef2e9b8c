"""``realbogus`` is a model kind like the others: ``run train --model realbogus --store DIFF --out M`` and
``run classify --store DIFF --model M`` (``run realbogus`` stays as the older spelling)."""

from __future__ import annotations

import pandas as pd

from skybatch.cli import main
from skybatch.jobs import difference
from skybatch.store.difference_store import read_candidates

from ..pipeline.test_difference import SATURATION, make_field, write_pair


def test_train_and_classify_a_difference_store(tmp_path, dask_client, capsys):
    root = tmp_path / "data"
    write_pair(str(root), "tile_0100", make_field(11, (192, 192), 5, (0.0, 0.0)))
    diff = str(tmp_path / "diff.zarr")
    rep = difference.run(difference.Config(science=[str(root / "sci")], reference=[str(root / "ref")], out=diff,
                                           cutout_size=21, plot_top=0, saturation=SATURATION, progress=False),
                         client=dask_client)
    assert isinstance(rep, difference.Report) and rep.exit_code == 0
    n = len(read_candidates(diff))
    assert n > 0
    model = tmp_path / "rb"
    # a stamp larger than the store's cutouts is refused, naming the setting
    assert main(["run", "train", "--model", "realbogus", "--store", diff, "--out", str(model), "--stamp", "25"]) == 2
    assert "stamp" in capsys.readouterr().err and not model.exists()
    assert main(["run", "train", "--model", "realbogus", "--store", diff, "--out", str(model), "--examples", "600",
                 "--epochs", "2", "--stamp", "15"]) == 0
    assert "held-out generated triplets: ECE" in capsys.readouterr().out
    assert main(["run", "classify", "--store", diff, "--model", str(model)]) == 0
    assert f"scored {n} candidates" in capsys.readouterr().out
    cat = read_candidates(diff)
    assert cat.realbogus_score.between(0, 1).all() and cat.realbogus_real.dtype == bool
    # the older spelling gives the same scores
    before = cat.realbogus_score.to_numpy()
    assert main(["run", "realbogus", "--store", diff, "--model", str(model)]) == 0
    pd.testing.assert_series_equal(read_candidates(diff).realbogus_score, pd.Series(before, name="realbogus_score"))
