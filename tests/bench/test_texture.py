import json

from nca3d.bench import main
from nca3d.render.raycast import default_backend
from tests.conftest import requires_raycaster


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

    from nca3d.bench.texture import bench_texture, print_bench_texture

    trimesh.creation.torus(1.0, 0.3).export(tmp_path / "torus.ply")  # no UVs: the unwrap is timed too
    results = bench_texture(str(tmp_path / "torus.ply"), sizes=(64, 128), cells=400, steps=2)
    assert set(results["stages"]) == {"load", "unwrap", "lattice", "grow"}
    unwrap = results["stages"]["unwrap"]
    assert unwrap["own_uv"] is False and 0 < unwrap["texel_use"] < 1 and unwrap["seam_length"] > 0
    assert [row["size"] for row in results["sizes"]] == [64, 128]
    assert results["raycast_backend"] == default_backend()
    for row in results["sizes"]:
        assert row["texels"] > 0 and row["bake_seconds"] > 0 and row["bake_over_decode"] > 0
        assert {"rasterise", "locate", "query", "decode", "normals", "store", "dilate"} <= set(row["parts"])
        maps = 3 * 3 + 2 + 2  # albedo, normal, normal_object; roughness, ao (8-bit); height (16-bit)
        assert row["maps_mib"] * 2 ** 20 == maps * row["size"] ** 2
        assert row["peak_over_maps"] == row["peak_mib"] / row["maps_mib"]
        assert set(row["file_bytes"]) == {"albedo", "normal", "roughness", "height", "ao", "orm"}
        assert all(size > 0 for size in row["file_bytes"].values())
    print_bench_texture(results)
    assert main(["texture", "--mesh", str(tmp_path / "missing.obj")]) == 2
