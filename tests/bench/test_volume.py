import json

from nca3d.bench.volume import bench_volume, print_bench_volume


def test_bench_volume_small(monkeypatch, capsys):
    results = bench_volume("cpu", quick=True, lattice=12, resolutions=(16, 24), steps=2, matmul_size=256)
    assert results["matmul_gflops"] > 0 and results["rollout"]["step_ms"] > 0
    assert [row["res"] for row in results["decode"]] == [16, 24]
    for row in results["decode"]:
        assert row["points_per_s"] > 0 and row["ratio_to_matmul"] > 0
    assert results["vdb_write"]["file_mb"] > 0 and results["vdb_write"]["peak_extra_mb"] >= 0
    json.dumps(results)
    print_bench_volume(results)
    assert "decode" in capsys.readouterr().out
