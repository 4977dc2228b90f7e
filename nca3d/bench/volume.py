"""Volume figures: `python -m nca3d.bench volume`: rollout, dense decode and VDB write."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .core import siren_flops_per_point
from .measure import matmul_gflops, peak_memory, sync


def bench_volume(device="cpu", quick: bool = False, *, lattice: int = 64, resolutions=None,
                 steps: int | None = None, matmul_size: int = 2048) -> dict:
    """Volume export figures: rollout step time on a 64^3 lattice, decode throughput at 128^3
    and 256^3 (quick: 64^3 and 128^3), VDB write time/size of the last decode, and the peak
    memory each stage adds; speeds also as ratios to a dense matmul timed in the same run.
    lattice/resolutions/steps/matmul_size override the sizes (for smoke tests)."""
    from ..core.dense import decode_volume
    from ..core.model import Model, ModelConfig
    from ..core.nca import make_generator
    from ..export.volume import (
        ARRAY_BYTES_PER_VOXEL,
        VDB_WRITE_BYTES_PER_VOXEL,
        VDB_ZLIB_LEVEL,
        volume_transform,
    )
    from ..io.vdb import write_vdb

    device = torch.device(device)
    torch.manual_seed(0)
    reference = matmul_gflops(matmul_size, device=device)
    model = Model(ModelConfig(domain="volume", grid_size=[lattice] * 3)).to(device)
    with torch.no_grad():  # a non-trivial update that grows a varied state from the zero seed
        model.nca.hidden_to_update.weight.normal_(std=0.02)
        model.nca.perceive_to_hidden.bias.normal_(std=0.2)
    lattice = model.make_lattice()
    generator = make_generator(0, device)
    results = {"device": str(device), "threads": torch.get_num_threads(), "matmul_gflops": reference,
               "lattice": list(lattice.cell_shape), "quick": quick}

    with torch.inference_mode():
        state = model.rollout(model.seed(lattice), lattice, 4, generator)
        steps = steps or (4 if quick else 16)
        with peak_memory() as grow_mem:
            start, cpu_start = time.perf_counter(), time.process_time()
            state = sync(model.rollout(state, lattice, steps, generator), device)
            step_s = (time.perf_counter() - start) / steps
            step_cpu_s = (time.process_time() - cpu_start) / steps
    nca = model.nca
    mlp_flops = 2 * (nca.perception * nca.channels * nca.hidden + nca.hidden * nca.channels)
    fired_gflops = lattice.num_cells * nca.fire_rate * mlp_flops / step_s / 1e9
    results["rollout"] = {"steps_timed": steps, "step_ms": step_s * 1e3, "cpu_ms_per_step": step_cpu_s * 1e3,
                          "cells_per_s": lattice.num_cells / step_s,
                          "mlp_gflops": fired_gflops, "mlp_ratio_to_matmul": fired_gflops / reference,
                          "peak_extra_mb": grow_mem["peak_extra_bytes"] / 2**20}

    flops_per_point = siren_flops_per_point(model)
    results["decode"] = []
    arrays = None
    for res in resolutions or ((64, 128) if quick else (128, 256)):
        decode_volume(model, state, lattice, 32)  # warm up
        with peak_memory() as mem:
            start, cpu_start = time.perf_counter(), time.process_time()
            arrays = decode_volume(model, state, lattice, res)
            sync(None, device)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        points = res ** 3
        gflops = points / seconds * flops_per_point / 1e9
        results["decode"].append({
            "res": res, "seconds": seconds, "points_per_s": points / seconds, "siren_gflops": gflops,
            "cpu_seconds": cpu_seconds, "points_per_cpu_s": points / max(cpu_seconds, 1e-9),
            "ratio_to_matmul": gflops / reference, "peak_extra_mb": mem["peak_extra_bytes"] / 2**20,
            "arrays_mb": points * ARRAY_BYTES_PER_VOXEL / 2**20, "memory_method": mem["method"]})

    res = arrays[0].shape[0]
    voxel_size, origin = volume_transform(res, 1.0)
    with tempfile.TemporaryDirectory(prefix="nca3d-bench-") as folder:
        path = Path(folder) / "bench.vdb"
        with peak_memory() as mem:
            start = time.perf_counter()
            write_vdb(path, {"density": arrays[0], "color": arrays[1]}, voxel_size=voxel_size, origin=origin,
                      zlib_level=VDB_ZLIB_LEVEL)
            seconds = time.perf_counter() - start
        size = path.stat().st_size
    voxels = res ** 3
    results["vdb_write"] = {
        "res": res, "seconds": seconds, "voxels_per_s": voxels / seconds, "file_mb": size / 2**20,
        "bytes_per_voxel_on_disk": size / voxels, "raw_mb": voxels * ARRAY_BYTES_PER_VOXEL / 2**20,
        "peak_extra_mb": mem["peak_extra_bytes"] / 2**20,
        "peak_extra_bytes_per_voxel": mem["peak_extra_bytes"] / voxels, "memory_method": mem["method"],
        "model_bytes_per_voxel": VDB_WRITE_BYTES_PER_VOXEL}
    results["memory_note"] = ("peak_extra = peak resident memory during the stage minus resident memory before "
                              "it (VmHWM after resetting it via /proc/self/clear_refs; ru_maxrss deltas, a lower "
                              "bound, where that is unavailable); tracemalloc cannot see torch's allocations")
    return results


def print_bench_volume(results: dict) -> None:
    print(f"device {results['device']}, {results['threads']} threads; dense fp32 matmul "
          f"{results['matmul_gflops']:.1f} GFLOP/s (ratio 1.00)")
    r = results["rollout"]
    size = "x".join(str(n) for n in results["lattice"])
    print(f"rollout {size}: {r['step_ms']:.1f} ms/step ({r['cpu_ms_per_step']:.0f} CPU-ms), "
          f"{r['cells_per_s'] / 1e6:.2f} Mcells/s, "
          f"MLP ratio {r['mlp_ratio_to_matmul']:.2f}, peak +{r['peak_extra_mb']:.0f} MiB")
    print(f"{'decode':>10s} {'seconds':>8s} {'Mpts/s':>8s} {'Mpts/cpu-s':>11s} {'GFLOP/s':>8s} {'ratio':>6s} "
          f"{'peak +MiB':>10s} {'arrays MiB':>11s}")
    for row in results["decode"]:
        print(f"{str(row['res']) + '^3':>10s} {row['seconds']:8.2f} {row['points_per_s'] / 1e6:8.2f} "
              f"{row['points_per_cpu_s'] / 1e6:11.2f} {row['siren_gflops']:8.2f} {row['ratio_to_matmul']:6.2f} "
              f"{row['peak_extra_mb']:10.0f} {row['arrays_mb']:11.0f}")
    w = results["vdb_write"]
    print(f"vdb write {w['res']}^3: {w['seconds']:.2f} s ({w['voxels_per_s'] / 1e6:.2f} Mvoxels/s), "
          f"{w['file_mb']:.1f} MiB on disk ({w['bytes_per_voxel_on_disk']:.1f} B/voxel, raw {w['raw_mb']:.0f} MiB), "
          f"peak +{w['peak_extra_mb']:.0f} MiB ({w['peak_extra_bytes_per_voxel']:.0f} B/voxel; "
          f"the memory check assumes {w['model_bytes_per_voxel']})")
    print("ratio: SIREN matmul FLOP/s / dense matmul FLOP/s; MLP ratio: useful update FLOP/s (firing cells) / matmul;"
          " CPU figures use process time (all threads), steadier than wall time on a shared machine.")
    print(results["memory_note"] + ".")
