"""Training figures: `python -m nca3d.bench train`.

- Iteration time and peak memory per domain with the default recipe (a procedural exemplar).
- The decoder's memory advantage: peak memory of one training step (rollout + decode + backward)
  of a 64^2 lattice decoded by the LPPN at 8x (512^2 px), against a plain NCA run directly at
  512^2 cells, as a ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.model import Model, ModelConfig
from ..core.nca import NCA, make_generator
from ..io.images import write_png
from ..progress import Progress
from ..train.trainer import TrainConfig, Trainer
from .measure import matmul_gflops, peak_memory, process_peak_rss_bytes


def procedural_exemplar(path: Path, size: int = 256) -> Path:
    """A stochastic blob texture, so the bench needs no data."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size, 3)) + [0.25, 0.2, 0.15]
    for cx, cy, r in zip(*rng.uniform(0, 1, (3, 60))):
        d2 = np.minimum(abs(x - cx), 1 - abs(x - cx)) ** 2 + np.minimum(abs(y - cy), 1 - abs(y - cy)) ** 2
        image += np.exp(-d2 / (2 * (0.01 + 0.02 * r) ** 2))[..., None] * [0.6, 0.4, 0.2]
    write_png(path, np.clip(image, 0, 1))
    return path


def _step_memory(run) -> int:
    with peak_memory() as memory:
        run()
    return memory["peak_extra_bytes"]


def decoder_memory_advantage(steps: int = 32, lattice: int = 64, scale: int = 8, channels: int = 12,
                             hidden: int = 96) -> dict:
    """Peak memory of a training step: LPPN at `scale`x versus a plain NCA at full resolution."""
    model = Model(ModelConfig(domain="2d", outputs="rgb", channels=channels, hidden=hidden, harmonics=1,
                              grid_size=[lattice, lattice]))
    grid = model.make_lattice()
    points = grid.sample_points(float(scale))

    def with_decoder():
        state = model.rollout(model.seed(grid), grid, steps, make_generator(0))
        model.decode(state, grid, points).square().mean().backward()

    plain = NCA(channels, hidden, 4)
    big = type(grid)(lattice * scale)

    def plain_nca():
        state = plain.rollout(big.seed(1, channels), big, steps, make_generator(0))
        state[..., :3].square().mean().backward()

    ours, theirs = _step_memory(with_decoder), _step_memory(plain_nca)
    return {"output_px": lattice * scale, "steps": steps, "lppn_bytes": ours, "plain_nca_bytes": theirs,
            "ratio_plain_over_lppn": theirs / max(ours, 1)}


def _train_iterations(domain: str, device: str, iterations: int, grid: int = 0) -> dict:
    """Seconds per iteration and peak memory of the default recipe for one domain (`grid`: its
    lattice size or icosphere frequency, 0 for the default). Memory is the whole run's peak
    resident set: above the interpreter with torch imported (set-up, features, warm-up and the
    timed steps), and the process's absolute peak; on CUDA also the peak GPU memory allocated."""
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as folder, peak_memory() as memory:
        exemplar = procedural_exemplar(Path(folder) / "blobs.png")
        small_volume = {"patch": 64, "batch": 2, "ray_samples": 20, "grid": grid or 24, "pool": 32}
        config = TrainConfig(exemplar=str(exemplar), out=str(Path(folder) / f"{domain}.nca3d"), domain=domain,
                             iters=iterations + 1, device=device,
                             **(small_volume if domain == "volume" else {"grid": grid}))
        trainer = Trainer(config, Progress("none"))
        trainer.step()  # warm-up
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.step()
        seconds = (time.perf_counter() - start) / iterations
    return {"domain": domain, "seconds_per_iteration": seconds, "iterations_per_minute": 60 / seconds,
            "peak_extra_bytes": memory["peak_extra_bytes"], "peak_rss_bytes": process_peak_rss_bytes(),
            "gpu_peak_bytes": torch.cuda.max_memory_allocated(device) if on_cuda else None,
            "settings": {k: getattr(config, k) for k in ("grid", "batch", "patch", "channels", "hidden")}}


def _in_fresh_process(call: str) -> dict:
    """Run `call` (an expression in this module) in a new interpreter: memory peaks are only
    meaningful in a process whose allocator has not already grown (the trainer keeps CPU
    allocations mapped)."""
    code = f"import json, nca3d.bench.train as b; print(json.dumps(b.{call}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_train(device="cpu", quick: bool = False) -> dict:
    iterations = 2 if quick else 5
    results = {"device": str(device), "threads": torch.get_num_threads(),
               "matmul_gflops": matmul_gflops(device=device), "domains": []}
    # the mesh default (icosphere 64) and the CPU-friendly icosphere 32 of the bundled mesh models
    for domain, grid in (("2d", 0), ("volume", 0), ("mesh", 64), ("mesh", 32)):
        results["domains"].append(
            _in_fresh_process(f"_train_iterations({domain!r}, {str(device)!r}, {iterations}, {grid})"))
    results["decoder_memory"] = _in_fresh_process(f"decoder_memory_advantage(steps={8 if quick else 32})")
    return results


def print_bench_train(results: dict) -> None:
    print(f"device {results['device']}, {results['threads']} threads; matmul {results['matmul_gflops']:.1f} GFLOP/s")
    gpu = any(row.get("gpu_peak_bytes") for row in results["domains"])
    print(f"{'domain':8s} {'s/iter':>8s} {'it/min':>8s} {'run MiB':>8s} {'RSS MiB':>8s}"
          f"{' GPU MiB' if gpu else ''}  settings")
    for row in results["domains"]:
        gpu_column = f" {row['gpu_peak_bytes'] / 2 ** 20:7.0f}" if gpu else ""
        print(f"{row['domain']:8s} {row['seconds_per_iteration']:8.2f} {row['iterations_per_minute']:8.1f} "
              f"{row['peak_extra_bytes'] / 2 ** 20:8.0f} {row['peak_rss_bytes'] / 2 ** 20:8.0f}{gpu_column}  "
              f"{row['settings']}")
    print("run MiB: peak resident memory of set-up and training above the interpreter with torch imported; "
          "RSS MiB: the process's peak" + ("; GPU MiB: peak CUDA memory allocated" if gpu else ""))
    memory = results["decoder_memory"]
    print(f"training-step memory at {memory['output_px']}^2 px output ({memory['steps']} steps): LPPN "
          f"{memory['lppn_bytes'] / 2 ** 20:.0f} MiB vs plain NCA {memory['plain_nca_bytes'] / 2 ** 20:.0f} MiB "
          f"(ratio {memory['ratio_plain_over_lppn']:.1f}x)")
