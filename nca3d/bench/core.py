"""Core figures: `python -m nca3d.bench core`: NCA step time per lattice, LPPN decode throughput, and
on squares and cubes the dense-grid decode (core.dense: 2D maps, previews, volumes) against the generic one."""

from __future__ import annotations

from functools import partial

import torch

from ..core.dense import METHODS, decode_grid
from ..core.model import Model, ModelConfig
from ..core.nca import make_generator
from .measure import matmul_gflops, rate_beside_matmul, sync, timed


def siren_flops_per_point(model: Model) -> int:
    return sum(2 * layer.in_features * layer.out_features for layer in model.lppn.layers)


def _synced_grid(model, state, lattice, side: int, method: str, device):
    """decode_grid of a side^d grid, synchronised."""
    return sync(decode_grid(model, state, lattice, side, method=method), device)


def bench_core(device="cpu", quick: bool = False) -> dict:
    """NCA step time per lattice and LPPN decode throughput (model.decode in inference mode: on the
    CPU the fast decode, gather and SIREN block by block), with ratios to the matmul rate (each to a
    matmul timed beside each run: measure.rate_beside_matmul); the fast SIREN
    forward's speed over the exact one (siren_fast_over_exact) on the same features; on grid
    lattices also the separable dense-grid decode of one period at as many points (grid_points_per_s)
    and its speed over the generic locate + decode of the same grid (grid_speedup)."""
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
            cells = batch * lattice.num_cells
            nca = model.nca
            mlp_flops = 2 * (nca.perception * nca.channels * nca.hidden + nca.hidden * nca.channels)
            step_s, mlp_ratio = rate_beside_matmul(lambda: sync(model.nca.step(state, lattice, generator), device),
                                                   cells * nca.fire_rate * mlp_flops, repeats=3 if quick else 7,
                                                   device=device)
            fired_gflops = cells * nca.fire_rate * mlp_flops / step_s / 1e9
            points = 1 << (16 if quick else 20)
            if domain == "mesh":
                from ..lattices import SurfacePoints

                g = torch.Generator().manual_seed(1)
                bary = torch.rand(points, 3, generator=g)
                bary = bary / bary.sum(1, keepdim=True)
                query = SurfacePoints(torch.randint(0, lattice.faces.shape[0], (points,), generator=g), bary)
            else:
                query = lattice.sample_points(1.0)
                query = (query.repeat(points // len(query) + 1, 1)[:points] * 1.37)
            one = state[:1]
            decode_s, decode_ratio = rate_beside_matmul(lambda: sync(model.decode(one, lattice, query), device),
                                                        points * siren_flops_per_point(model), repeats=3 if quick else 7,
                                                        device=device)
            siren_s = {}
            if torch.device(device).type == "cpu":  # the fast forward is the CPU's
                features = torch.randn(1 << 16, model.lppn.layers[0].in_features)
                siren_s = {name: timed(partial(forward, features), repeats=3)
                           for name, forward in (("exact", model.lppn.exact), ("fast", model.lppn.fast))}
            grid_s = {}
            if domain != "mesh":
                side = round(points ** (1 / len(lattice.cell_shape)))  # a side^2 map or side^3 volume
                for method in METHODS:
                    grid_s[method] = timed(partial(_synced_grid, model, one, lattice, side, method, device), repeats=3)
                grid_points = side ** len(lattice.cell_shape)
        points_per_s = points / decode_s
        decode_gflops = points_per_s * siren_flops_per_point(model) / 1e9
        results["lattices"].append({
            "lattice": label, "batch": batch, "step_ms": step_s * 1e3,
            "cells_per_s": cells / step_s,
            "mlp_gflops": fired_gflops, "mlp_ratio_to_matmul": mlp_ratio,
            "decode_points_per_s": points_per_s, "decode_gflops": decode_gflops,
            "decode_ratio_to_matmul": decode_ratio,
            "siren_fast_over_exact": siren_s["exact"] / siren_s["fast"] if siren_s else None,
            "grid_points_per_s": grid_points / grid_s["separable"] if grid_s else None,
            "grid_speedup": grid_s["generic"] / grid_s["separable"] if grid_s else None,
        })
    return results


def print_core(results: dict) -> None:
    print(f"device {results['device']}, {results['threads']} threads; "
          f"dense fp32 matmul {results['matmul_gflops']:.1f} GFLOP/s (ratio 1.00)")
    print(f"{'lattice':28s} {'step ms':>9s} {'Mcells/s':>9s} {'MLP ratio':>10s} "
          f"{'decode Mpts/s':>14s} {'decode ratio':>13s} {'fast x exact':>13s} {'grid Mpts/s':>12s} "
          f"{'grid x generic':>15s}")
    for row in results["lattices"]:
        grid = (f"{row['grid_points_per_s'] / 1e6:12.2f} {row['grid_speedup']:15.2f}" if row["grid_speedup"]
                else f"{'-':>12s} {'-':>15s}")
        fast = f"{row['siren_fast_over_exact']:13.2f}" if row["siren_fast_over_exact"] else f"{'-':>13s}"
        print(f"{row['lattice']:28s} {row['step_ms']:9.1f} {row['cells_per_s'] / 1e6:9.2f} "
              f"{row['mlp_ratio_to_matmul']:10.2f} {row['decode_points_per_s'] / 1e6:14.2f} "
              f"{row['decode_ratio_to_matmul']:13.2f} {fast} {grid}")
    print("MLP ratio: useful update-MLP FLOP/s (firing cells only) / a matmul timed beside each step; "
          "decode ratio: SIREN matmul FLOP/s / a matmul timed beside each decode (medians of the pairs); "
          "fast x exact: the CPU inference SIREN forward "
          "(blocked, numpy sine) over the exact one (torch.sin, autograd's); "
          "grid: the separable dense-grid decode of one period "
          "(2D maps and previews, volumes) and its speed over the generic locate + decode of the same grid.")
