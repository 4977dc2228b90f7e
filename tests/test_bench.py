import json

from nca3d.bench import main


def test_core_bench_prints_figures(capsys):
    assert main(["core", "--quick", "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["matmul_gflops"] > 0
    assert [row["lattice"].split()[0] for row in results["lattices"]] == ["Grid2D", "icosphere", "Grid3D"]
    for row in results["lattices"]:
        assert row["step_ms"] > 0 and row["decode_points_per_s"] > 0
        assert 0 < row["decode_ratio_to_matmul"] < 2


def test_texture_bench_times_every_stage(tmp_path):
    import pytest

    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("open3d")
    from nca3d.texture import bench_texture, print_bench_texture

    trimesh.creation.torus(1.0, 0.3).export(tmp_path / "torus.ply")  # no UVs: the unwrap is timed too
    results = bench_texture(str(tmp_path / "torus.ply"), sizes=(64, 128), cells=400, steps=2)
    assert set(results["stages"]) == {"load", "unwrap", "lattice", "grow"}
    assert [row["size"] for row in results["sizes"]] == [64, 128]
    for row in results["sizes"]:
        assert row["texels"] > 0 and row["bake_seconds"] > 0 and row["bake_over_decode"] > 0
        assert {"rasterise", "locate", "decode", "normals", "store", "dilate"} <= set(row["parts"])
    print_bench_texture(results)
    assert main(["texture", "--mesh", str(tmp_path / "missing.obj")]) == 2
