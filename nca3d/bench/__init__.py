"""Benchmarks that print figures: `python -m nca3d.bench core [--json]`.

Speed is reported as a ratio to a dense fp32 matmul timed in the same run, since the
machines are noisy and differ.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import NCA3DError, listed, whole_numbers

# One module per bench (core, volume, texture, train, quality, quality_pbr, transfer, realtime, capacity,
# stability), all over the measuring helpers of .measure; nothing outside this package imports it but
# the CLI's `nca3d bench`.


def _run_raycast(args, device):
    from .texture import bench_raycast, print_raycast

    return bench_raycast(rays=1 << (16 if args.quick else 21), points=1 << (12 if args.quick else 17)), print_raycast


def _run_core(args, device):
    from .core import bench_core, print_core

    return bench_core(device=device, quick=args.quick), print_core


def _run_volume(args, device):
    from .volume import bench_volume, print_bench_volume

    return bench_volume(device=device, quick=args.quick), print_bench_volume


def _run_quality(args, device):
    from ..progress import Progress

    exemplars = listed(args.exemplars)
    progress = Progress("none" if args.json else "bar")
    if args.pbr:
        from .quality_pbr import bench_pbr_quality, print_pbr_quality

        results = bench_pbr_quality(args.data or "../shared/data/pbr", exemplars, args.out, domain=args.domain,
                                    minutes=args.minutes, models=args.models, device=device, progress=progress)
        return results, print_pbr_quality
    from .quality import bench_quality, print_quality

    results = bench_quality(args.data or "../shared/data/textures", exemplars, args.out, domain=args.domain,
                            minutes=args.minutes, models=args.models, device=device, progress=progress)
    return results, print_quality


def _run_derive(args, device):
    from .quality_pbr import bench_derive, print_derive

    exemplars = listed(args.exemplars)
    return bench_derive(args.data or "../shared/data/pbr", exemplars), print_derive


def _run_train(args, device):
    from .train import bench_train, print_bench_train

    return bench_train(device=device, quick=args.quick), print_bench_train


def _run_texture(args, device):
    from .texture import bench_texture, print_bench_texture

    sizes = (256, 512) if args.quick else (2048, 4096)
    return bench_texture(args.mesh, sizes=sizes, device=device), print_bench_texture


def _run_realtime(args, device):
    from .realtime import bench_realtime, print_realtime

    if args.steps_per_frame < 1:
        raise NCA3DError(f"--steps-per-frame {args.steps_per_frame} must be at least 1")
    return bench_realtime(device=device, quick=args.quick, steps_per_frame=args.steps_per_frame), print_realtime


def _run_capacity(args, device):
    from ..progress import Progress
    from .capacity import bench_capacity, print_capacity

    if args.iters < 1:
        raise NCA3DError(f"--iters {args.iters} must be at least 1")
    exemplars = listed(args.exemplars)
    grids, scales = whole_numbers(args.grids, "48,128", "--grids"), whole_numbers(args.scales, "1,2,4,8", "--scales")
    results = bench_capacity(args.data or "../shared/data/textures", exemplars, args.out, grids, scales,
                             iterations=20 if args.quick else args.iters, device=device,
                             progress=Progress("none" if args.json else "bar"), target_sampling=args.target_sampling)
    return results, print_capacity


def _run_transfer(args, device):
    from .transfer import bench_transfer, print_transfer

    models = listed(args.models)
    if not models:
        raise NCA3DError("the transfer bench needs --models NAME,... (bundled mesh models or .nca3d files)")
    meshes = listed(args.meshes)
    return bench_transfer(models, meshes, args.data or "../shared/data",
                          steps=256 if args.quick else 1024, device=device), print_transfer


def _run_stability(args, device):
    from ..progress import Progress
    from .stability import bench_stability, print_stability

    progress = Progress("none" if args.json else "bar")
    return bench_stability(listed(args.models), device=device, quick=args.quick, progress=progress), print_stability


BENCHES = {"core": _run_core, "volume": _run_volume, "quality": _run_quality, "train": _run_train,
           "texture": _run_texture, "raycast": _run_raycast, "derive": _run_derive, "transfer": _run_transfer,
           "realtime": _run_realtime, "capacity": _run_capacity, "stability": _run_stability}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nca3d.bench", description=__doc__)
    parser.add_argument("bench", choices=list(BENCHES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (smoke test)")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--data", help="folder of exemplar images (default ../shared/data/textures), or with "
                                        "--pbr of material folders (default ../shared/data/pbr); transfer: a folder the models' "
                                        "exemplars are in at any depth (default ../shared/data)")
    quality.add_argument("--pbr", action="store_true",
                         help="score PBR models per map and lit (shaded like the preview) against material folders")
    quality.add_argument("--exemplars", help="comma-separated name fragments (default: all)")
    quality.add_argument("--domain", default="2d", choices=["2d", "mesh", "volume"])
    quality.add_argument("--minutes", type=float, default=30.0, help="training budget per exemplar")
    quality.add_argument("--models", help="folder of trained NAME_DOMAIN.nca3d models to evaluate instead (with "
                                          "--pbr also any model whose header names the material folder); "
                                          "transfer: mesh models NAME,... (bundled names or files); stability: models "
                                          "NAME,... (default: every bundled one)")
    quality.add_argument("--out", default="nca3d_out/quality", help="where panels and figures go")
    transfer = parser.add_argument_group("transfer")
    transfer.add_argument("--meshes", help="comma-separated meshes (files or rock, torus, capsule) to grow on")
    texture = parser.add_argument_group("texture")
    texture.add_argument("--mesh", default="../shared/data/meshes/bunny_cgal.off",
                         help="mesh to bake (default: the 75k-face bunny of ../shared/data)")
    capacity = parser.add_argument_group("capacity (also --data, --exemplars, --out)")
    capacity.add_argument("--grids", help="comma-separated lattice sizes to fit at (default: the trainer's choice)")
    capacity.add_argument("--scales", help="the loss's crop scales, e.g. 1,2,4,8 (default: the trainer's)")
    capacity.add_argument("--iters", type=int, default=400, help="fitting iterations per exemplar and grid")
    capacity.add_argument("--target-sampling", choices=["area", "point"], default="area",
                          help="how the loss shrinks exemplar crops (nca3d train --target-sampling; default area)")
    realtime = parser.add_argument_group("realtime")
    realtime.add_argument("--steps-per-frame", type=int, default=1, help="NCA steps per shown frame (default 1)")
    args = parser.parse_args(argv)
    from ..device import resolve_device

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
