"""`python -m nca3d.volume` and `nca3d volume`: grow a volume model and write OpenVDB (+ npz and a PNG
preview). The arguments are checked here; the export itself is nca3d.export.volume.
"""

from __future__ import annotations

import argparse
import sys

from ..core.dense import COLOR_SPACES, DEFAULT_CHUNK
from ..errors import NCA3DError
from ..export.volume import (
    DEFAULT_EVERY,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAME,
    DEFAULT_OUT,
    DEFAULT_PREVIEW,
    DEFAULT_RES,
    DEFAULT_STEPS,
    MAX_RES,
    MIN_RES,
    check_name,
    check_positive,
    check_res,
    default_model_path,
    generate_volume,
)
from . import Parser


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the volume export options to `parser` (also used by `nca3d volume`)."""
    parser.add_argument("--model", metavar="PATH",
                        help=f"volume model .nca3d (default: the bundled {DEFAULT_MODEL_NAME})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"output file name stem (default {DEFAULT_NAME})")
    parser.add_argument("--res", type=int, default=DEFAULT_RES,
                        help=f"voxels per axis of the exported volume ({MIN_RES}-{MAX_RES}, default {DEFAULT_RES})")
    parser.add_argument("--lattice", type=int, metavar="N",
                        help="NCA cells per axis (default: the model's grid); the cube holds N cells per axis")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"NCA steps to grow (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the stochastic updates (default 0)")
    parser.add_argument("--frames", type=int, metavar="N",
                        help="write an animated sequence NAME.0001.vdb ... of N frames of one rollout")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="K",
                        help=f"NCA steps between frames (default {DEFAULT_EVERY})")
    parser.add_argument("--resume", action="store_true",
                        help="with --frames: keep frames whose files exist (same settings required)")
    parser.add_argument("--size", type=float, default=1.0,
                        help="world edge length of the cube, centred at the origin (default 1.0)")
    parser.add_argument("--density-scale", dest="density_scale", type=float, default=1.0,
                        help="multiplies the density (VDB, npz and preview; default 1.0)")
    parser.add_argument("--color-space", dest="color_space", choices=COLOR_SPACES, default="linear",
                        help="colour grid values: linear (scene-linear, for Blender; default) or srgb")
    parser.add_argument("--preview-size", dest="preview_size", type=int, default=DEFAULT_PREVIEW,
                        help=f"preview PNG size in pixels (default {DEFAULT_PREVIEW}; 0 = no preview)")
    parser.add_argument("--no-npz", dest="npz", action="store_false", help="do not write NAME.npz")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"points per decoder call (default {DEFAULT_CHUNK}; larger is faster on GPUs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="progress display: bar (stderr), json (JSON lines on stdout) or none")
    return parser


def run(args) -> int:
    """Run an export from parsed arguments; raises NCA3DError for bad input."""
    from ..device import resolve_device
    from ..io.model_file import load_model
    from ..models import resolve_model
    from ..progress import Progress

    # Cheap checks first, so bad numbers are refused before a model is loaded.
    check_res(args.res)
    check_positive("--size", args.size)
    check_positive("--density-scale", args.density_scale)
    check_name(args.name)
    device = resolve_device(args.device)
    model_path = resolve_model(args.model) if args.model else default_model_path()
    model = load_model(model_path, device=device)
    progress = Progress(args.progress)
    files = generate_volume(
        model, args.out, args.name, args.res, args.steps, args.seed, args.frames, args.every, args.size,
        args.lattice, None, progress, density_scale=args.density_scale, preview_size=args.preview_size,
        npz=args.npz, color_space=args.color_space, chunk=args.chunk, resume=args.resume,
        model_source=str(model_path))
    progress.done(files)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m nca3d.volume",
                     description="Grow a volume texture and write it as OpenVDB (+ npz and a PNG preview).")
    return add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except NCA3DError as exc:
        print(f"nca3d: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nca3d: interrupted", file=sys.stderr)
        return 130
