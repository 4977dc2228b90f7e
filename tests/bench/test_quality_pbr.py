import json

import numpy as np
import torch
from PIL import Image

from tests.conftest import optional_import

optional_import("plenoptic", "the quality bench needs plenoptic (pip install 'nca3d[bench]')", module_level=True)

from nca3d.bench import main as bench_main  # noqa: E402
from nca3d.train.quality import TextureStatistics  # noqa: E402
from tests.train.test_trainer import make_exemplar, tiny_config  # noqa: E402

# --- the lit PBR quality bench (python -m nca3d.bench quality --pbr) ------------------------------------


def make_material(folder, size=128, seed=0):
    """A tiny material folder: a height of smooth noise squashed into plateaus (not Gaussian, so its
    phase randomisation is clearly worse than another crop), the albedo from it (plus grain) and
    its normal map."""
    from nca3d.ops.pbr import normals_from_height

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    noise = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size)))
                                 * np.exp(-(f[:, None] ** 2 + f[None] ** 2) * 400)))
    height = np.clip(0.5 + 0.35 * np.tanh(4 * noise / noise.std()), 0, 1)
    albedo = np.clip(np.stack([0.3 + 0.5 * height, 0.25 + 0.3 * height, 0.2 + 0.1 * height], -1)
                     + 0.05 * rng.standard_normal((size, size, 3)), 0, 1)
    normal = normals_from_height(height, 2.0)
    Image.fromarray((albedo * 255).round().astype(np.uint8)).save(folder / "albedo.png")
    Image.fromarray((normal * 255).round().astype(np.uint8)).save(folder / "normal.png")
    Image.fromarray((height * 255).round().astype(np.uint8), "L").save(folder / "height.png")
    return folder


def test_flat_shading_lights_a_tangent_normal_map():
    from nca3d.render.preview import KEY_LIGHT, shade_flat

    albedo = np.full((4, 6, 3), 0.6, np.float32)
    flat = np.broadcast_to(np.float32([0.5, 0.5, 1.0]), (4, 6, 3))
    lit = shade_flat(albedo, flat)
    assert lit.shape == (4, 6, 3) and np.ptp(lit, axis=(0, 1)).max() < 1e-6  # a flat map shades uniformly
    assert np.allclose(shade_flat(albedo), lit)  # no normal map: flat
    towards = np.float32(KEY_LIGHT[0]) * [1, 1, 0] + [0, 0, 0.6]  # tilted towards the key light, and away
    away = np.float32(KEY_LIGHT[0]) * [-1, -1, 0] + [0, 0, 0.6]

    def encode(n):
        return np.broadcast_to(0.5 + 0.5 * n / np.linalg.norm(n), (4, 6, 3)).astype(np.float32)

    brightness = [shade_flat(albedo, encode(n)).mean() for n in (towards, away)]
    assert brightness[0] > lit.mean() + 0.05 > brightness[1] + 0.1
    # facing the key light's mirror direction (the half vector): a smoother surface has the brighter highlight
    key = np.float32(KEY_LIGHT[0]) / np.linalg.norm(KEY_LIGHT[0])
    mirror = encode(key + [0, 0, 1])
    assert shade_flat(albedo, mirror, np.full((4, 6), 0.9)).mean() + 0.05 < shade_flat(albedo, mirror, np.full((4, 6), 0.2)).mean()
    # occluded: a darker ambient; a lower albedo: darker
    assert shade_flat(albedo, flat, ao=np.zeros((4, 6, 1))).mean() < lit.mean()
    assert shade_flat(albedo * 0.5, flat).mean() < lit.mean()


def test_lit_scores_rank_the_exemplar_above_a_flat_grey_model(tmp_path):
    from nca3d.bench.quality_pbr import pbr_reference, read_material, score_pbr, shade
    from nca3d.train.quality import resize_square

    maps, notes = read_material(make_material(tmp_path / "bumps"))
    assert sorted(maps) == ["albedo", "height", "normal"] and maps["height"].shape == (1, 128, 128) and not notes
    stats = TextureStatistics(size=64)
    reference = pbr_reference(maps, stats)
    assert 0 < reference["lit"]["ceiling"] < reference["lit"]["floor"]
    assert reference["kinds"] == ["albedo", "normal", "height"] and reference["scale"] == 2
    assert shade(reference["region"]).shape == (3, 64, 64)
    # the exemplar's own maps, other crops of it (it tiles: shifted by a third), score near 1 ...
    shifted = {kind: torch.roll(image, (42, 26), (1, 2)) for kind, image in maps.items()}
    own = [{kind: resize_square(image[:, r:r + 64, c:c + 64], 64) for kind, image in shifted.items()}
           for r, c in ((0, 0), (64, 0), (0, 64))]
    own_scores = score_pbr(reference, own, stats)
    assert set(own_scores["maps"]) == {"albedo", "normal", "height"}
    assert all(0.7 < figures["score"] < 1.6 for figures in [own_scores["lit"], *own_scores["maps"].values()])
    # ... a flat grey model near or below 0
    grey = [{"albedo": torch.full((3, 64, 64), 0.5), "normal": torch.tensor([0.5, 0.5, 1.0]).view(3, 1, 1).expand(3, 64, 64)}]
    grey_scores = score_pbr(reference, grey, stats)
    assert set(grey_scores["maps"]) == {"albedo", "normal"}  # only the maps both have
    assert grey_scores["lit"]["score"] < 0.2 and own_scores["lit"]["score"] > grey_scores["lit"]["score"] + 0.5
    # a model without the normal map is lit flat, as the exemplar would be without one
    flat_lit = score_pbr(reference, [{"albedo": c["albedo"]} for c in own], stats)
    assert set(flat_lit["maps"]) == {"albedo"} and flat_lit["lit"]["score"] < own_scores["lit"]["score"]


def test_pbr_quality_bench_scores_maps_and_lit_and_writes_panels(tmp_path, capsys):
    from nca3d.bench.quality_pbr import bench_pbr_quality, print_pbr_quality
    from nca3d.progress import Progress
    from nca3d.train.trainer import Trainer

    data = tmp_path / "data"
    material = make_material(data / "07_bumps_test")
    models = tmp_path / "models"
    # any name: the bench finds it by the material folder its header names
    config = tiny_config(tmp_path, exemplar=str(material), out=str(models / "some_run.nca3d"), iters=2, select_every=0)
    Trainer(config, Progress("none")).run()
    make_material(data / "08_plain_test")  # no model: with --models it is skipped, not trained
    before = sorted(models.iterdir())
    results = bench_pbr_quality(str(data), [], str(tmp_path / "out"), models=str(models), stats_size=64, batch=1,
                                progress=Progress("none"))
    assert len(results["rows"]) == 1 and sorted(models.iterdir()) == before
    row = results["rows"][0]
    assert row["set"] == "07_bumps_test" and row["model"].endswith("some_run.nca3d")
    assert row["exemplar_maps"] == row["model_maps"] == ["albedo", "normal", "height"]
    for n in (256, 1024, 2048, 4096):
        assert np.isfinite(row[f"lit_score_{n}"]) and np.isfinite(row[f"lit_distance_{n}"])
        for kind in ("albedo", "normal", "height"):
            assert np.isfinite(row["maps"][kind][f"distance_{n}"])
            assert row["maps"][kind][f"score_{n}"] is None or np.isfinite(row["maps"][kind][f"score_{n}"])
    assert row["lit_ceiling"] < row["lit_floor"]
    assert row["normal_height_deg_exemplar"] < 5 and 0 <= row["normal_height_deg_1024"] <= 180
    panel = np.asarray(Image.open(row["panel"]))
    assert panel.shape == (4 * 64, 5 * 64, 3)  # rows: lit, albedo, normal, height; exemplar | 256 | 1024 | 2048 | 4096
    assert row["panel_rows"] == ["lit", "albedo", "normal", "height"]
    saved = json.loads((tmp_path / "out" / "quality_pbr_2d.json").read_text())
    assert saved["rows"][0]["lit_score_1024"] == row["lit_score_1024"] and saved["headline"] == "lit_score_1024"
    print_pbr_quality(results)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["set", "iters", "lit@256", "lit@1024", "lit@2048", "lit@4096"] and "07_bumps_test" in table[1]
    assert "on 0 of 1 sets" in "\n".join(table) or "on 1 of 1 sets" in "\n".join(table)


def test_pbr_quality_bench_refuses_bad_input_in_one_line(tmp_path, capsys):
    textures = tmp_path / "textures"
    textures.mkdir()
    make_exemplar(textures / "blobs.png", size=32)
    out = str(tmp_path / "out")
    material = make_material(tmp_path / "sets" / "bumps")
    for argv, expected in [(["--data", str(textures)], "no material folders in"),
                           (["--data", str(material)], "is itself one: pass the folder that holds it"),
                           (["--data", str(tmp_path / "missing")], "not found"),
                           (["--data", str(tmp_path / "sets"), "--exemplars", "lava"], "no material folder in"),
                           (["--data", str(tmp_path / "sets"), "--domain", "volume"], "volume models have no PBR maps")]:
        assert bench_main(["quality", "--pbr", "--out", out, "--device", "cpu", *argv]) == 2
        error = capsys.readouterr().err
        assert expected in error and len(error.strip().splitlines()) == 1, error
    (material / "albedo.png").unlink()  # a set without an albedo map is refused before any training
    assert bench_main(["quality", "--pbr", "--data", str(tmp_path / "sets"), "--out", out, "--device", "cpu"]) == 2
    assert "has no albedo map" in capsys.readouterr().err


def test_derive_bench_measures_derived_maps_against_a_real_set(tmp_path, capsys):
    """A set whose normal is exactly its height's: the integrated height correlates ~1 with it
    and the normal rebuilt from that height is within a degree of the real one."""
    from tests.io.test_material import make_material

    make_material(tmp_path / "sets" / "01_bumps", {"albedo": "bumps_albedo.png", "normal": "bumps_normal.png",
                                                   "height": "bumps_height.png"}, size=64)
    make_material(tmp_path / "sets" / "02_flat", {"albedo": "flat_albedo.png", "normal": "flat_normal.png"}, size=64)
    assert bench_main(["derive", "--data", str(tmp_path / "sets"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert sorted(results) == ["01_bumps", "02_flat"]
    bumps = results["01_bumps"]
    assert bumps["normal_height_corr"] > 0.95 and bumps["normal_roundtrip_angle_deg"] < 2.0
    assert "normal_height_corr" not in results["02_flat"] and results["02_flat"]["albedo_normal_angle_deg"] >= 0
    assert bench_main(["derive", "--data", str(tmp_path / "sets" / "01_bumps" / "x")]) == 2
