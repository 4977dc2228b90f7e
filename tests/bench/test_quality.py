import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import optional_import, random_model, requires_raycaster

optional_import("plenoptic", "the quality bench needs plenoptic (pip install 'nca3d[bench]')", module_level=True)

from nca3d.bench import main as bench_main  # noqa: E402
from nca3d.bench.quality import print_quality  # noqa: E402
from nca3d.train.quality import band_score  # noqa: E402
from tests.train.test_trainer import make_exemplar, tiny_config  # noqa: E402


def test_a_band_too_narrow_to_rank_gives_no_score_and_the_table_says_so(capsys):
    assert band_score(1.0, 1.05, 0.5) is None and band_score(1.0, 2.0, 1.5) == 0.5
    row = {"exemplar": "flat.png", "iterations": 3, "ceiling": 1.0, "floor": 1.05, "tiled_exemplar": False,
           **{f"distance_{n}": 1.0 for n in (256, 1024, 2048, 4096)}, **{f"score_{n}": None for n in (256, 1024, 2048, 4096)}}
    print_quality({"rows": [row]})
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].split()[-4:] == ["n/a"] * 4
    assert "the band cannot rank a model; judge it by the panel" in printed


def test_quality_bench_trains_evaluates_and_writes_panels(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_exemplar(data / "blobs.png", size=64)
    make_exemplar(data / "other.png", size=64)  # no model for it in --models: skipped, not trained
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
    assert len(results["rows"]) == 1
    row = results["rows"][0]
    print_quality(results)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-4:] == ["score@256", "score@1024", "score@2048", "score@4096"] and "blobs.png" in table[1]
    for key in ("distance_256", "distance_1024", "distance_2048", "distance_4096", "ceiling", "floor", "floor_blur", "floor_phase"):
        assert np.isfinite(row[key])
    for key in ("score_256", "score_1024", "score_2048", "score_4096"):  # a band too narrow to rank is None, said in the table
        assert row[key] is None or np.isfinite(row[key])
    panel = Image.open(row["panel"])
    assert panel.size[0] == 5 * panel.size[1]  # exemplar | 256 | 1024 | 2048 | 4096 steps
    assert (out / "quality_2d.json").exists()


def test_views_of_a_fine_exemplar_are_rendered_finer_and_shrunk_as_its_reference_is(tmp_path):
    """A view px that covers several exemplar px is rendered at that many px and shrunk antialiased,
    as the reference crop is: a decoder drawing detail finer than a view px then shows its mean, where
    one point per px shows aliased noise (which scored a model drawing the exemplar's grain below a blur)."""
    import torch

    from nca3d.bench.quality import rendered_views, supersample_for
    from nca3d.progress import Progress
    from nca3d.train.trainer import Trainer, make_task

    assert [supersample_for("2d", px, 2, 128) for px in (64, 256, 512, 1024, 4096)] == [1, 1, 2, 4, 4]
    assert supersample_for("volume", 1024, 2, 128) == 1
    # a mesh view averages the rays its task's cache holds: 2 a px side at half extent, 4 at full
    assert [supersample_for("mesh", 1024, scale, 128) for scale in (1, 2, 4)] == [4, 2, 1]
    assert supersample_for("mesh", 256, 2, 128) == 1
    model = Trainer(tiny_config(tmp_path), Progress("none")).model
    with torch.no_grad():  # in-cell detail: the local coordinate's first-layer weights x 300
        model.lppn.layers[0].weight[:, :model.local_dim] *= 300
    lattice = make_task("2d", 8, model.config.harmonics, 24, 8, "cpu").lattice
    with torch.no_grad():
        state = model.rollout(model.seed(lattice, 2), lattice, 8, torch.Generator().manual_seed(0))

    def views(supersample: int) -> torch.Tensor:
        task = make_task("2d", 8, model.config.harmonics, 24 * supersample, 8, "cpu")
        with torch.no_grad():
            return torch.stack(rendered_views(model, task, state, 2, torch.Generator().manual_seed(3), 24)[1])

    area = views(16)  # the px means, nearly
    point, supersampled = views(1), views(4)
    assert point.shape == supersampled.shape == area.shape == (4, model.num_outputs, 24, 24)
    assert float((supersampled - area).abs().mean()) < 0.5 * float((point - area).abs().mean())


@requires_raycaster
def test_mesh_views_average_the_rays_of_the_training_cache_instead_of_a_larger_one(tmp_path, monkeypatch):
    """A supersampled mesh view keeps the task's patch (and its ray-cast cache, 4 rays a px side at full
    extent) and averages its px's rays; rendering the view larger would build a 4x larger cache."""
    import torch

    from nca3d.bench import quality

    monkeypatch.setenv("NCA3D_CACHE", str(tmp_path))
    monkeypatch.setattr(quality, "STEPS", (2,))
    built = []

    def recording_make_task(*args, **kwargs):
        task = make_task(*args, **kwargs)
        built.append(task)
        return task

    make_task = quality.make_task
    monkeypatch.setattr(quality, "make_task", recording_make_task)
    model = random_model("mesh", icosphere_frequency=8, channels=8, hidden=16)
    with torch.no_grad():
        ((steps, state, crops, scored),) = quality.grow(model, 16, 2, batch=1, supersample=2)
    (task,) = built
    assert (task.patch, task.resolution, task.rays_per_px) == (16, 64, {1: 2, 2: 2, 4: 1})
    assert crops[0].shape == (1, model.num_outputs, 16, 16) and len(scored) == 2
    assert scored[0].shape == (model.num_outputs, 16, 16)
    model.provenance = {"config": {"zoom": 0.5}}  # trained below zoom 1: its views spanned half the cells
    with torch.no_grad():
        next(quality.grow(model, 16, 2, batch=1, supersample=2))
    assert built[1].window == pytest.approx(task.window / 2)
