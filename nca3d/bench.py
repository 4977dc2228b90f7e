"""Benchmarks that print figures: `python -m nca3d.bench core [--json]`.

Speed is reported as a ratio to a dense fp32 matmul timed in the same run, since the
machines are noisy and differ.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Iterator

import numpy as np
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


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss_bytes() -> int:
    """getrusage's lifetime peak resident set, in bytes (kB on Linux, bytes on macOS)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def process_peak_rss_bytes() -> int:
    """This process's peak resident set so far (VmHWM on Linux, else getrusage's ru_maxrss)."""
    return _proc_status_bytes("VmHWM") or _ru_maxrss_bytes()


@contextlib.contextmanager
def peak_memory() -> Iterator[dict]:
    """Measure the peak resident memory a block adds above the resident memory before it.

    tracemalloc does not see torch's allocations, so this reads the kernel's counters: on Linux
    it resets the high-water mark (writing 5 to /proc/self/clear_refs) and reads VmHWM after the
    block ('reset' method). Elsewhere, or where the reset is refused, it falls back to
    getrusage's ru_maxrss, which never goes down: its delta is then only the growth of the
    process-lifetime peak, a lower bound ('ru_maxrss' method).
    """
    result: dict = {}
    before = _proc_status_bytes("VmRSS")
    method = None
    if before is not None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            method = "reset"
        except OSError:
            method = None
    if method is None:
        start_peak = _ru_maxrss_bytes()
        before = start_peak if before is None else before
    try:
        yield result
    finally:
        if method == "reset":
            peak = _proc_status_bytes("VmHWM") or before
        else:
            peak = _ru_maxrss_bytes()
            before = start_peak
            method = "ru_maxrss"
        result.update(peak_extra_bytes=max(0, peak - before), method=method)


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


def bench_raycast(frequency: int = 64, rays: int = 1 << 21, points: int = 1 << 17) -> dict:
    """Ray casts and closest-point queries per second on an icosphere lattice, per backend that
    imports here, as a texture bake makes them: rays from one cell spacing outside, back along
    the normal. The matmul rate is timed in the same run."""
    from .lattices import icosphere
    from .render.raycast import RayCaster, available_backends

    vertices, faces = icosphere(frequency)
    rng = np.random.default_rng(0)
    chosen = rng.integers(0, len(faces), rays)
    weights = rng.dirichlet([1.0, 1.0, 1.0], rays)
    surface = np.einsum("qk,qkd->qd", weights, vertices[faces[chosen]])
    normals = surface / np.linalg.norm(surface, axis=1, keepdims=True)
    spacing = float(np.linalg.norm(vertices[faces[:, 0]] - vertices[faces[:, 1]], axis=1).mean())
    origins, directions = surface + spacing * normals, -normals
    results = {"faces": len(faces), "rays": rays, "points": points, "matmul_gflops": matmul_gflops(),
               "threads": torch.get_num_threads(), "backends": []}
    for name in available_backends():
        start = time.perf_counter()
        caster = RayCaster(vertices, faces, backend=name)
        build_s = time.perf_counter() - start
        cast_s = timed(lambda: caster.cast(origins, directions), repeats=3)
        closest_s = timed(lambda: caster.closest_points(surface[:points] + 0.1 * spacing * normals[:points]),
                          repeats=3)
        results["backends"].append({"backend": name, "build_s": build_s, "rays_per_s": rays / cast_s,
                                    "closest_per_s": points / closest_s})
    return results


def _print_raycast(results: dict) -> None:
    print(f"icosphere lattice of {results['faces']} faces; {results['rays']} rays, {results['points']} closest "
          f"points; {results['threads']} threads; matmul {results['matmul_gflops']:.1f} GFLOP/s")
    print(f"{'backend':10s} {'build s':>8s} {'Mrays/s':>8s} {'Mclosest/s':>11s} {'rays per matmul GFLOP':>22s}")
    for row in results["backends"]:
        print(f"{row['backend']:10s} {row['build_s']:8.3f} {row['rays_per_s'] / 1e6:8.2f} "
              f"{row['closest_per_s'] / 1e6:11.2f} {row['rays_per_s'] / results['matmul_gflops'] / 1e3:22.1f}k")
    if not results["backends"]:
        print("no ray-casting backend imports here: pip install embreex (x86-64) or pip install 'nca3d[open3d]'")


def _run_raycast(args, device):
    return bench_raycast(rays=1 << (16 if args.quick else 21), points=1 << (12 if args.quick else 17)), _print_raycast


def _run_core(args, device):
    return bench_core(device=device, quick=args.quick), _print_core


def _run_volume(args, device):
    from .volume import bench_volume, print_bench_volume

    return bench_volume(device=device, quick=args.quick), print_bench_volume


def _run_quality(args, device):
    from .progress import Progress

    exemplars = [key for key in (args.exemplars or "").split(",") if key]
    progress = Progress("none" if args.json else "bar")
    if args.pbr:
        from .train.quality_pbr import bench_pbr_quality, print_pbr_quality

        results = bench_pbr_quality(args.data or "../shared/data/pbr", exemplars, args.out, domain=args.domain,
                                    minutes=args.minutes, models=args.models, device=device, progress=progress)
        return results, print_pbr_quality
    from .train.quality import bench_quality, print_quality

    results = bench_quality(args.data or "../shared/data/textures", exemplars, args.out, domain=args.domain,
                            minutes=args.minutes, models=args.models, device=device, progress=progress)
    return results, print_quality


def _run_derive(args, device):
    from .train.quality_pbr import bench_derive, print_derive

    exemplars = [key for key in (args.exemplars or "").split(",") if key]
    return bench_derive(args.data or "../shared/data/pbr", exemplars), print_derive


def _run_train(args, device):
    from .train.bench import bench_train, print_bench_train

    return bench_train(device=device, quick=args.quick), print_bench_train


def _run_texture(args, device):
    from .texture import bench_texture, print_bench_texture

    sizes = (256, 512) if args.quick else (2048, 4096)
    return bench_texture(args.mesh, sizes=sizes, device=device), print_bench_texture


BENCHES = {"core": _run_core, "volume": _run_volume, "quality": _run_quality, "train": _run_train,
           "texture": _run_texture, "raycast": _run_raycast, "derive": _run_derive}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nca3d.bench", description=__doc__)
    parser.add_argument("bench", choices=list(BENCHES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (smoke test)")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--data", help="folder of exemplar images (default ../shared/data/textures), or with "
                                        "--pbr of material folders (default ../shared/data/pbr)")
    quality.add_argument("--pbr", action="store_true",
                         help="score PBR models per map and lit (shaded like the preview) against material folders")
    quality.add_argument("--exemplars", help="comma-separated name fragments (default: all)")
    quality.add_argument("--domain", default="2d", choices=["2d", "mesh", "volume"])
    quality.add_argument("--minutes", type=float, default=30.0, help="training budget per exemplar")
    quality.add_argument("--models", help="folder of trained NAME_DOMAIN.nca3d models to evaluate instead (with "
                                          "--pbr also any model whose header names the material folder)")
    quality.add_argument("--out", default="nca3d_out/quality", help="where panels and figures go")
    texture = parser.add_argument_group("texture")
    texture.add_argument("--mesh", default="../shared/data/meshes/bunny_cgal.off",
                         help="mesh to bake (default: the 75k-face bunny of ../shared/data)")
    args = parser.parse_args(argv)
    from .device import resolve_device

    try:
        results, show = BENCHES[args.bench](args, resolve_device(args.device))
    except NCA3DError as exc:
        print(f"nca3d.bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, default=str))
    else:
        show(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
