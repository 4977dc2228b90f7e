import json

import numpy as np
from PIL import Image

from tests.conftest import optional_import

optional_import("plenoptic", "the capacity bench scores with plenoptic (pip install 'nca3d[bench]')", module_level=True)

from nca3d.bench import main as bench_main  # noqa: E402
from nca3d.bench.capacity import bench_capacity, fit_free_states, print_capacity  # noqa: E402
from nca3d.progress import Progress  # noqa: E402
from nca3d.train.trainer import Trainer  # noqa: E402
from tests.train.test_trainer import make_exemplar, tiny_config  # noqa: E402


def test_free_states_fit_the_exemplar_and_are_scored_with_a_panel(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_exemplar(data / "blobs.png", size=64)
    results = bench_capacity(str(data), [], str(tmp_path / "out"), grids=[8], iterations=30, features="patches",
                             progress=Progress("none"))
    (row,) = results["rows"]
    assert row["grid"] == 8 and row["iterations"] == 30 and row["scales"] == [1, 2, 4]
    assert row["target_sampling"] == "area" and row["panel"].endswith("blobs_grid8_s4_area.capacity.png")
    assert row["px_per_cell"] == 64 / (row["zoom"] * 8)
    assert np.isfinite(row["distance"]) and (row["score"] is None or np.isfinite(row["score"]))
    panel = Image.open(row["panel"])
    assert panel.size[0] == 3 * panel.size[1]  # exemplar | fitted full view | finest crop
    assert json.loads((tmp_path / "out" / "capacity.json").read_text())["rows"][0]["grid"] == 8
    print_capacity(results)
    assert "blobs.png" in capsys.readouterr().out.splitlines()[1]


def test_the_fit_lowers_the_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), Progress("none"))
    state, losses = fit_free_states(trainer, 40)
    assert state.shape == (2, 8, 8, 8) and not state.requires_grad
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_bad_grids_are_one_line_and_exit_2(tmp_path, capsys):
    assert bench_main(["capacity", "--data", str(tmp_path), "--grids", "48,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--grids '48,x'" in err[0]
    assert bench_main(["capacity", "--data", str(tmp_path / "none")]) == 2
    assert "data folder" in capsys.readouterr().err
