import json

import numpy as np
import torch
from PIL import Image

from tests.conftest import optional_import

optional_import("plenoptic", "the quality bench needs plenoptic (pip install 'nca3d[bench]')", module_level=True)

from nca3d.bench import main as bench_main  # noqa: E402
from nca3d.train.quality import TextureStatistics, print_quality, reference_scores  # noqa: E402
from tests.train.test_trainer import make_exemplar, tiny_config  # noqa: E402


def test_statistics_rank_a_crop_above_a_blur():
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.random((3, 256, 256))).float()
    stats = TextureStatistics(size=64)
    scores = reference_scores(noise, stats)
    assert scores["ceiling"] < scores["floor"]
    assert stats.distance(noise[:, :128, :128], noise[:, :128, :128]) < 1e-6
    assert not scores["tiled"]
    assert scores["scale"] == 2
    tiled = reference_scores(noise[:, :128, :128].repeat(1, 2, 2), stats)
    # a 2 x 2 tiling's halves are the same pixels: it is measured within one tile instead
    assert tiled["tiled"] and tiled["scale"] == 4
    assert torch.equal(tiled["reference"], noise[:, :64, :64])
    assert 0 < tiled["ceiling"] < tiled["floor"]
    # periodic along the diagonal (tiles A B / B A): the ceiling compares A with B, not A with itself
    a, b = noise[:, :64, :64], noise[:, 64:128, :64]
    diagonal = reference_scores(torch.cat([torch.cat([a, b], 2), torch.cat([b, a], 2)], 1), stats)
    assert not diagonal["tiled"] and diagonal["scale"] == 2
    assert 0 < diagonal["ceiling"] < diagonal["floor"]
    # a model trained at zoom 2 spans half the exemplar: it is measured within the top-left half
    zoomed = reference_scores(noise, stats, zoom=2)
    assert torch.equal(zoomed["region"], noise[:, :128, :128])
    assert torch.equal(zoomed["reference"], noise[:, :64, :64]) and zoomed["scale"] == 2
    assert 0 < zoomed["ceiling"] < zoomed["floor"]


def test_quality_bench_trains_evaluates_and_writes_panels(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_exemplar(data / "blobs.png", size=64)
    models = tmp_path / "models"
    config = tiny_config(tmp_path, iters=3)
    config.exemplar, config.out = str(data / "blobs.png"), str(models / "blobs_2d.nca3d")
    from nca3d.progress import Progress
    from nca3d.train.trainer import Trainer

    Trainer(config, Progress("none")).run()
    out = tmp_path / "out"
    assert bench_main(["quality", "--data", str(data), "--models", str(models), "--out", str(out), "--json",
                       "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    row = results["rows"][0]
    print_quality(results)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-3:] == ["score@256", "score@1024", "score@2048"] and "blobs.png" in table[1]
    for key in ("distance_256", "distance_1024", "distance_2048", "score_256", "score_1024", "score_2048",
                "ceiling", "floor"):
        assert np.isfinite(row[key])
    panel = Image.open(row["panel"])
    assert panel.size[0] == 4 * panel.size[1]  # exemplar | 256 | 1024 | 2048 steps
    assert (out / "quality_2d.json").exists()
