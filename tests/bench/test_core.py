import json

import torch

from nca3d.bench import main
from nca3d.bench.measure import rate_beside_matmul


def test_core_bench_prints_figures(capsys):
    assert main(["core", "--quick", "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["matmul_gflops"] > 0
    assert [row["lattice"].split()[0] for row in results["lattices"]] == ["Grid2D", "icosphere", "Grid3D"]
    for row in results["lattices"]:
        assert row["step_ms"] > 0 and row["decode_points_per_s"] > 0
        assert 0 < row["decode_ratio_to_matmul"] < 2 and row["siren_fast_over_exact"] > 0  # a CPU run
        grid = row["lattice"].startswith("Grid")
        assert (row["grid_points_per_s"] > 0 and row["grid_speedup"] > 0) if grid else row["grid_speedup"] is None
    assert main(["core", "--quick", "--device", "cpu"]) == 0
    assert "grid x generic" in capsys.readouterr().out


def test_a_rate_beside_the_matmul_is_a_ratio_of_flop_rates():
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    seconds, same = rate_beside_matmul(lambda: a @ b, 2 * 256 ** 3, size=256)
    assert seconds > 0 and 0.3 < same < 3  # the matmul itself: about 1
    _, half = rate_beside_matmul(lambda: (a @ b, a @ b), 2 * 256 ** 3, size=256)
    assert 0.15 < half < 0.8 * same  # twice the work for the same FLOP count: about half
