"""Benchmarks that print figures: `python -m nca3d.bench core [--json]`.

Speed is reported as a ratio to a dense fp32 matmul timed in the same run, since the
machines are noisy and differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from .errors import NCA3DError
from .model import Model, ModelConfig
from .nca import make_generator


def timed(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def matmul_gflops(size: int = 2048, device="cpu") -> float:
    """Dense fp32 matmul rate in GFLOP/s: the yardstick for every ratio."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = timed(lambda: _sync(a @ b, device), repeats=5)
    return 2 * size ** 3 / seconds / 1e9


def _sync(result, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return result


def siren_flops_per_point(model: Model) -> int:
    return sum(2 * layer.in_features * layer.out_features for layer in model.lppn.layers)


def bench_core(device="cpu", quick: bool = False) -> dict:
    """NCA step time per lattice and LPPN decode throughput, with ratios to the matmul rate."""
    torch.manual_seed(0)
    reference = matmul_gflops(device=device)
    results = {"device": str(device), "threads": torch.get_num_threads(), "matmul_gflops": reference,
               "lattices": []}
    cases = [("2d", 4, "Grid2D 128^2 x4"), ("mesh", 1, "icosphere 40,962 vertices"), ("volume", 1, "Grid3D 64^3")]
    for domain, batch, label in cases:
        model = Model(ModelConfig(domain=domain)).to(device)
        torch.nn.init.normal_(model.nca.hidden_to_update.weight, std=0.02)  # a non-trivial update
        lattice = model.make_lattice()
        state = model.seed(lattice, batch)
        generator = make_generator(0, device)
        with torch.inference_mode():
            state = model.rollout(state, lattice, 4, generator)
            step_s = timed(lambda: _sync(model.nca.step(state, lattice, generator), device),
                           repeats=3 if quick else 7)
            cells = batch * lattice.num_cells
            nca = model.nca
            mlp_flops = 2 * (nca.perception * nca.channels * nca.hidden + nca.hidden * nca.channels)
            fired_gflops = cells * nca.fire_rate * mlp_flops / step_s / 1e9
            points = 1 << (16 if quick else 20)
            if domain == "mesh":
                from .lattices import SurfacePoints

                g = torch.Generator().manual_seed(1)
                bary = torch.rand(points, 3, generator=g)
                bary = bary / bary.sum(1, keepdim=True)
                query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (points,), generator=g), bary)
            else:
                query = lattice.sample_points(1.0)
                query = (query.repeat(points // len(query) + 1, 1)[:points] * 1.37)
            one = state[:1]
            decode_s = timed(lambda: _sync(model.decode(one, lattice, query), device), repeats=3)
        points_per_s = points / decode_s
        decode_gflops = points_per_s * siren_flops_per_point(model) / 1e9
        results["lattices"].append({
            "lattice": label, "batch": batch, "step_ms": step_s * 1e3,
            "cells_per_s": cells / step_s,
            "mlp_gflops": fired_gflops, "mlp_ratio_to_matmul": fired_gflops / reference,
            "decode_points_per_s": points_per_s, "decode_gflops": decode_gflops,
            "decode_ratio_to_matmul": decode_gflops / reference,
        })
    return results


def _print_core(results: dict) -> None:
    print(f"device {results['device']}, {results['threads']} threads; "
          f"dense fp32 matmul {results['matmul_gflops']:.1f} GFLOP/s (ratio 1.00)")
    print(f"{'lattice':28s} {'step ms':>9s} {'Mcells/s':>9s} {'MLP ratio':>10s} "
          f"{'decode Mpts/s':>14s} {'decode ratio':>13s}")
    for row in results["lattices"]:
        print(f"{row['lattice']:28s} {row['step_ms']:9.1f} {row['cells_per_s'] / 1e6:9.2f} "
              f"{row['mlp_ratio_to_matmul']:10.2f} {row['decode_points_per_s'] / 1e6:14.2f} "
              f"{row['decode_ratio_to_matmul']:13.2f}")
    print("MLP ratio: useful update-MLP FLOP/s (firing cells only) / matmul; "
          "decode ratio: SIREN matmul FLOP/s / matmul.")


def _volume_bench():
    from .volume import bench_volume, print_bench_volume

    return bench_volume, print_bench_volume


BENCHES = {"core": lambda: (bench_core, _print_core), "volume": _volume_bench}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nca3d.bench", description=__doc__)
    parser.add_argument("bench", choices=sorted(BENCHES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (smoke test)")
    args = parser.parse_args(argv)
    from .device import resolve_device

    try:
        device = resolve_device(args.device)
        run, show = BENCHES[args.bench]()
        results = run(device=device, quick=args.quick)
    except NCA3DError as exc:
        print(f"nca3d.bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        show(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
