"""Texture figures: `python -m nca3d.bench texture` (each stage of a mesh bake) and
`python -m nca3d.bench raycast` (the ray-casting backends)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.grow import grow
from ..errors import NCA3DError
from ..export.maps import write_maps
from ..progress import Progress
from ..render.maps import DEFAULT_CELLS, MeshBaker, TextureConfig
from .measure import matmul_gflops, peak_memory, timed


def bench_raycast(frequency: int = 64, rays: int = 1 << 21, points: int = 1 << 17) -> dict:
    """Ray casts and closest-point queries per second on an icosphere lattice, per backend that
    imports here, as a texture bake makes them: rays from one cell spacing outside, back along
    the normal. The matmul rate is timed in the same run."""
    from ..lattices import icosphere
    from ..render.raycast import RayCaster, available_backends

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
        cast_s = timed(lambda caster=caster: caster.cast(origins, directions), repeats=3)
        closest_s = timed(lambda caster=caster: caster.closest_points(surface[:points] + 0.1 * spacing * normals[:points]),
                          repeats=3)
        results["backends"].append({"backend": name, "build_s": build_s, "rays_per_s": rays / cast_s,
                                    "closest_per_s": points / closest_s})
    return results


def print_raycast(results: dict) -> None:
    print(f"icosphere lattice of {results['faces']} faces; {results['rays']} rays, {results['points']} closest "
          f"points; {results['threads']} threads; matmul {results['matmul_gflops']:.1f} GFLOP/s")
    print(f"{'backend':10s} {'build s':>8s} {'Mrays/s':>8s} {'Mclosest/s':>11s} {'rays per matmul GFLOP':>22s}")
    for row in results["backends"]:
        print(f"{row['backend']:10s} {row['build_s']:8.3f} {row['rays_per_s'] / 1e6:8.2f} "
              f"{row['closest_per_s'] / 1e6:11.2f} {row['rays_per_s'] / results['matmul_gflops'] / 1e3:22.1f}k")
    if not results["backends"]:
        print("no ray-casting backend imports here: pip install embreex (x86-64) or pip install 'nca3d[open3d]'")


def bench_texture(mesh_path: str, sizes=(2048, 4096), cells: int = DEFAULT_CELLS, steps: int = 96,
                  device="cpu") -> dict:
    """Time and peak memory of each stage of a mesh bake, and the bake's cost over the LPPN decode alone;
    per map size also the maps' own bytes (the bake's peak over them) and each written file's bytes."""
    from ..core.model import Model, ModelConfig
    from ..io.mesh import load_mesh
    from ..lattices.mesh import SurfacePoints
    from ..ops.uv import has_usable_uv, seam_stats, unwrap

    if not Path(mesh_path).is_file():
        raise NCA3DError(f"benchmark mesh '{mesh_path}' not found; pass --mesh PATH (a 75k-face mesh, "
                         f"e.g. ../shared/data/meshes/bunny_cgal.off)")
    torch.manual_seed(0)
    model = Model(ModelConfig(domain="mesh", outputs="pbr")).to(device).eval()  # speed only: weights do not matter
    stages: dict[str, dict] = {}

    def measure(name: str, fn):
        with peak_memory() as memory:
            start = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - start
        stages[name] = {"seconds": seconds, "peak_mib": memory["peak_extra_bytes"] / 2 ** 20}
        return result

    results = {"mesh": Path(mesh_path).name, "matmul_gflops": matmul_gflops(device=device), "sizes": [],
               "stages": stages}
    mesh = measure("load", lambda: load_mesh(mesh_path))
    results["faces"] = len(mesh.faces)
    had_uv = has_usable_uv(mesh)
    mesh = measure("unwrap", lambda: mesh if had_uv else unwrap(mesh, resolution=max(sizes)))
    stages["unwrap"].update(own_uv=had_uv, **{k: round(v, 3) for k, v in seam_stats(mesh).items()})
    config = TextureConfig(mesh=mesh_path, model="bench", out=".", cells=cells, steps=steps, device=str(device))
    baker = measure("lattice", lambda: MeshBaker(model, mesh, config, Progress("none")))
    stages["lattice"].update(cells=baker.lattice.num_cells,
                             **{k: baker.lattice_stats[k] for k in ("edge_p5", "edge_p95")})
    results["raycast_backend"] = baker.caster.backend
    generator = torch.Generator(device=device).manual_seed(0)
    state = measure("grow", lambda: grow(model, model.seed(baker.lattice), baker.lattice, steps, generator, None))
    stages["grow"]["steps"] = steps
    for size in sizes:
        baker.config = dataclasses.replace(config, size=size)
        baker.timings, baker.texels = {}, 0
        with peak_memory() as memory:
            start = time.perf_counter()
            maps, _ = baker.bake(state)
            seconds = time.perf_counter() - start
        maps_bytes = sum(array.nbytes for array in maps.arrays.values())
        with tempfile.TemporaryDirectory() as folder:
            start_write = time.perf_counter()
            written = write_maps(maps, Path(folder), "bench", None, exr=False)
            write_seconds = time.perf_counter() - start_write
            file_bytes = {kind: path.stat().st_size for kind, path in written.items()}
        del maps
        # the LPPN decode alone on as many random lattice points
        count = baker.texels
        face = torch.randint(0, len(baker.lattice.faces), (count,), generator=torch.Generator().manual_seed(1))
        bary = torch.distributions.Dirichlet(torch.ones(3)).sample((count,))
        start = time.perf_counter()
        with torch.no_grad():
            model.decode(state, baker.lattice, SurfacePoints(face, bary))
        decode_seconds = time.perf_counter() - start
        results["sizes"].append({"size": size, "texels": count, "bake_seconds": seconds,
                                 "peak_mib": memory["peak_extra_bytes"] / 2 ** 20, "maps_mib": maps_bytes / 2 ** 20,
                                 "peak_over_maps": memory["peak_extra_bytes"] / maps_bytes, "parts": baker.timings,
                                 "write_seconds": write_seconds, "file_bytes": file_bytes,
                                 "decode_only_seconds": decode_seconds, "bake_over_decode": seconds / decode_seconds})
    return results


def print_bench_texture(results: dict) -> None:
    print(f"mesh {results['mesh']} ({results['faces']} faces); matmul {results['matmul_gflops']:.1f} GFLOP/s; "
          f"ray casting with {results['raycast_backend']} (choose with NCA3D_RAYCAST=embreex|open3d)")
    for name, row in results["stages"].items():
        extra = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                          if k not in ("seconds", "peak_mib"))
        print(f"  {name:8s} {row['seconds']:7.2f} s  peak +{row['peak_mib']:7.1f} MiB  {extra}")
    for row in results["sizes"]:
        parts = "  ".join(f"{k} {v:.2f}" for k, v in row["parts"].items())
        print(f"  bake {row['size']:5d}^2: {row['texels'] / 1e6:5.2f} M texels  {row['bake_seconds']:6.2f} s "
              f"(+ write {row['write_seconds']:.2f} s)  peak +{row['peak_mib']:.0f} MiB  "
              f"decode alone {row['decode_only_seconds']:.2f} s  bake/decode {row['bake_over_decode']:.2f}")
        print(f"      parts (s): {parts}")
        files = "  ".join(f"{k} {v / 2 ** 20:.1f}" for k, v in row["file_bytes"].items())
        print(f"      maps {row['maps_mib']:.0f} MiB in memory (bake peak {row['peak_over_maps']:.2f}x that); "
              f"files (MiB): {files}")
    print("target (issue 23): bake/decode <= 1.5 (the work around the decode at most half of it); `nca3d texture` "
          "at 4K on a 50k-face mesh without UVs under 15 s end to end on 2 cores.")
