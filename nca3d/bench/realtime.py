"""Real-time figures: `python -m nca3d.bench realtime`: frames per second of a grow-and-show loop,
N NCA steps plus a decode of every visible pixel per frame, for each domain at the resolution a
viewer shows it:

- 2D: a 1920x1080 view of a bundled 2D model whose lattice period spans the screen's height
  (tiled across its width): one LPPN decode per pixel;
- mesh: the frequency-64 icosphere (40,962 cells) filling a 1920x1080 view; the pixels it covers
  are located once (face + barycentrics, a G-buffer from one ray cast: the camera is still), then
  decoded every frame;
- volume: a 64^3 lattice ray-marched at 512^2 with 64 samples per ray (the web page's default).

The loop is the one `nca3d web` runs in a browser, in torch: nothing is drawn to a screen. The
matmul rate is timed in the same run, and each frame's parts are timed apart (steps, decode), so a
frame of N steps costs N x step + decode.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from ..core.nca import make_generator
from ..lattices import Grid3D, SurfacePoints, icosphere
from ..models import load_named_model
from .measure import matmul_gflops, sync, timed

SCREEN = (1920, 1080)  # width, height of the 2D and mesh views
VOLUME_SIZE, VOLUME_SAMPLES, VOLUME_CELLS = 512, 64, 64
MESH_FREQUENCY = 64
MODELS = {"2d": "granite_2d", "mesh": "granite_mesh", "volume": "volume_default"}
SPHERE_FILL = 0.9  # of the view's height the sphere spans


def screen_points(width: int, height: int, lattice) -> torch.Tensor:
    """Cell coordinates (height * width, 2) of a view's pixel centres, row by row: one lattice period
    spans the view's height, and the texture wraps across its width."""
    cells_per_pixel = lattice.sizes_xyz[1] / height
    y = (torch.arange(height, dtype=torch.float32) + 0.5) * cells_per_pixel
    x = (torch.arange(width, dtype=torch.float32) + 0.5) * cells_per_pixel  # wraps in lattice.locate
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def sphere_gbuffer(vertices: np.ndarray, faces: np.ndarray, width: int, height: int
                   ) -> tuple[np.ndarray, SurfacePoints]:
    """The pixels an orthographic view down -z sees of a unit sphere lattice spanning SPHERE_FILL of
    the view's height: flat pixel indices (P,) and their lattice points (face, barycentrics)."""
    from ..render.raycast import RayCaster

    half = 1.0 / SPHERE_FILL  # world half-height of the view
    y = (0.5 - (np.arange(height) + 0.5) / height) * 2 * half
    x = ((np.arange(width) + 0.5) / width - 0.5) * 2 * half * width / height
    grid_x, grid_y = np.meshgrid(x, y)
    origins = np.stack([grid_x.ravel(), grid_y.ravel(), np.full(grid_x.size, 2.0)], axis=1)
    directions = np.broadcast_to(np.array([0.0, 0.0, -1.0]), origins.shape)
    face, bary, _ = RayCaster(vertices, faces).cast(origins, directions)
    hit = np.flatnonzero(face >= 0)
    return hit, SurfacePoints(torch.from_numpy(face[hit]), torch.from_numpy(bary[hit]))


def domain_view(domain: str, model, quick: bool = False) -> tuple:
    """The lattice and the view of one domain's loop: (lattice, decode(state) -> the frame's decoded
    pixels, label, pixels shown, extra figures)."""
    from ..render.volume import render_volume_image

    width, height = (96, 54) if quick else SCREEN
    if domain == "2d":
        lattice = model.make_lattice()
        points = screen_points(width, height, lattice)
        return (lattice, partial(model.decode, lattice=lattice, query=points), f"2D {width}x{height}",
                width * height, {})
    if domain == "mesh":
        vertices, faces = icosphere(8 if quick else MESH_FREQUENCY)
        lattice = model.make_lattice((vertices, faces))
        start = time.perf_counter()
        _, points = sphere_gbuffer(vertices, faces, width, height)
        extra = {"gbuffer_ms": (time.perf_counter() - start) * 1e3}
        return (lattice, partial(model.decode, lattice=lattice, query=points),
                f"icosphere {len(vertices)} at {width}x{height}", len(points), extra)
    cells = 16 if quick else VOLUME_CELLS
    size, samples = (32, 8) if quick else (VOLUME_SIZE, VOLUME_SAMPLES)
    lattice = Grid3D(cells, model.config.harmonics).to(model.device)
    return (lattice, partial(render_volume_image, model, lattice=lattice, size=size, samples=samples),
            f"volume {cells}^3 at {size}^2 x {samples} samples", size * size, {})


def time_loop(model, lattice, decode, steps_per_frame: int, repeats: int, device) -> dict:
    """Median seconds of one NCA step, one decode and one frame (steps_per_frame steps + a decode),
    from a state grown 8 steps."""
    generator = make_generator(0, device)
    with torch.inference_mode():
        state = [model.rollout(model.seed(lattice), lattice, 8, generator)]

        def steps():
            state[0] = sync(model.rollout(state[0], lattice, steps_per_frame, generator), device)

        def show():
            sync(decode(state[0]), device)

        def frame():
            steps()
            show()

        frame()  # warm up
        return {"step_s": timed(steps, repeats, warmup=0) / steps_per_frame,
                "decode_s": timed(show, repeats, warmup=0), "frame_s": timed(frame, repeats, warmup=0)}


def bench_realtime(device="cpu", quick: bool = False, steps_per_frame: int = 1) -> dict:
    """Per domain: ms per NCA step, ms per decode of the visible pixels, ms per frame of
    `steps_per_frame` steps + one decode, and frames per second. quick: tiny views and lattices."""
    results = {"device": str(device), "threads": torch.get_num_threads(), "matmul_gflops": matmul_gflops(device=device),
               "steps_per_frame": steps_per_frame, "domains": []}
    for domain, name in MODELS.items():
        model = load_named_model(name, device=str(device))
        lattice, decode, label, pixels, extra = domain_view(domain, model, quick)
        seconds = time_loop(model, lattice, decode, steps_per_frame, 2 if quick else 3, device)
        results["domains"].append({
            "domain": domain, "model": name, "view": label, "cells": lattice.num_cells, "pixels": pixels,
            "step_ms": seconds["step_s"] * 1e3, "decode_ms": seconds["decode_s"] * 1e3,
            "frame_ms": seconds["frame_s"] * 1e3, "fps": 1.0 / seconds["frame_s"],
            "fps_decode_only": 1.0 / seconds["decode_s"], "steps_per_s": 1.0 / seconds["step_s"], **extra})
    return results


def print_realtime(results: dict) -> None:
    n = results["steps_per_frame"]
    print(f"device {results['device']}, {results['threads']} threads; matmul {results['matmul_gflops']:.1f} GFLOP/s; "
          f"{n} NCA step{'s' if n > 1 else ''} + one decode per frame")
    print(f"{'view':44s} {'pixels':>9s} {'step ms':>8s} {'decode ms':>10s} {'frame ms':>9s} {'FPS':>7s} "
          f"{'steps/s':>8s}")
    for row in results["domains"]:
        print(f"{row['view']:44s} {row['pixels']:9d} {row['step_ms']:8.2f} {row['decode_ms']:10.1f} "
              f"{row['frame_ms']:9.1f} {row['fps']:7.2f} {row['steps_per_s']:8.1f}")
    for row in results["domains"]:
        if "gbuffer_ms" in row:
            print(f"mesh G-buffer (one ray cast per pixel, once per camera move): {row['gbuffer_ms']:.0f} ms")
    fps = [row["fps"] for row in results["domains"] if row["domain"] in ("2d", "mesh")]
    if fps:
        print(f"goal on an H200: >= 60 FPS for 2D and mesh (here: {min(fps):.2f}-{max(fps):.2f}); "
              f"frame = {n} x step + decode")
