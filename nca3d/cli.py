"""The `nca3d` command. Bad input prints one line on stderr and exits 2."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import NCA3DError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        raise NCA3DError(f"{message} (see: {self.prog} --help)")


def _cmd_new(args) -> int:
    from .io.model_file import save_model
    from .model import Model, ModelConfig
    import torch

    try:
        config = ModelConfig(domain=args.domain, outputs=args.outputs or "", channels=args.channels,
                             hidden=args.hidden, harmonics=args.harmonics)
    except ValueError as exc:
        raise NCA3DError(str(exc)) from None
    torch.manual_seed(args.seed)
    header = save_model(Model(config), args.out)
    print(json.dumps({"written": str(args.out), "domain": header["domain"],
                      "nca_params": header["nca_params"], "lppn_params": header["lppn_params"]}))
    return 0


def _cmd_info(args) -> int:
    from .io.model_file import load_model, read_header
    from .models import resolve_model

    path = resolve_model(args.model)
    load_model(path)  # full validation before printing
    print(json.dumps(read_header(path)[0], indent=2, sort_keys=True))
    return 0


def _cmd_train(args) -> int:
    from .progress import Progress
    from .train.trainer import TrainConfig, Trainer

    maps = {name: getattr(args, name) for name in ("normal", "height", "roughness", "ao") if getattr(args, name)}
    options = {key: value for key, value in vars(args).items()
               if key in TrainConfig.__dataclass_fields__ and value is not None and key != "maps"}
    config = TrainConfig(maps=maps, **options)
    progress = Progress(args.progress)
    progress.done(Trainer(config, progress).run(resume=args.resume))
    return 0


def _bake_options(parser) -> None:
    """Options shared by `texture` and `maps`."""
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--name", default="", help="output file stem")
    parser.add_argument("--size", type=int, default=2048, help="map size in pixels (16-8192, default 2048)")
    parser.add_argument("--steps", type=int, default=96, help="NCA steps grown from the seed (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: another seed, another variation")
    parser.add_argument("--frames", type=int, default=0, metavar="N",
                        help="write an animated sequence NAME_albedo.0001.png ... of N frames")
    parser.add_argument("--every", type=int, default=8, metavar="K", help="NCA steps between frames (default 8)")
    parser.add_argument("--normal-convention", dest="normal_convention", choices=["opengl", "directx"],
                        default="opengl", help="tangent-space normal map green axis: +Y (opengl) or -Y (directx)")
    parser.add_argument("--exr", action="store_true", help="height as a 32-bit float EXR (default 16-bit PNG)")
    parser.add_argument("--preview-size", dest="preview_size", type=int, default=512,
                        help="preview PNG size (0: none)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="bar (stderr), json (JSON lines on stdout, for the Blender add-on) or none")


def _cmd_texture(args) -> int:
    from .progress import Progress
    from .texture import TextureConfig, texture_mesh

    options = {k: v for k, v in vars(args).items() if k in TextureConfig.__dataclass_fields__ and v is not None}
    progress = Progress(args.progress)
    progress.done(texture_mesh(TextureConfig(**options), progress))
    return 0


def _cmd_maps(args) -> int:
    from .progress import Progress
    from .texture import MapsConfig, tileable_maps

    options = {k: v for k, v in vars(args).items() if k in MapsConfig.__dataclass_fields__ and v is not None}
    progress = Progress(args.progress)
    progress.done(tileable_maps(MapsConfig(**options), progress))
    return 0


def _cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nca3d", description="Self-organising neural textures for meshes, volumes and 2D maps.")
    parser.add_argument("--version", action="version", version=f"nca3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    new = sub.add_parser("new", help="write a freshly initialised model")
    new.add_argument("--domain", required=True, choices=["2d", "mesh", "volume"])
    new.add_argument("--outputs", choices=["pbr", "rgb", "rgba"], help="output channels (default per domain)")
    new.add_argument("--channels", type=int, default=16, help="cell state channels (default 16)")
    new.add_argument("--hidden", type=int, default=128, help="NCA hidden width (default 128)")
    new.add_argument("--harmonics", type=int, default=0, help="sin/cos harmonics of grid local coordinates")
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("--out", required=True, help="output .nca3d path")
    new.set_defaults(run=_cmd_new)

    info = sub.add_parser("info", help="print a model's header as JSON")
    info.add_argument("model", help="a model file or a library name (see `nca3d models`)")
    info.set_defaults(run=_cmd_info)

    train = sub.add_parser("train", help="train a model from an exemplar image")
    train.add_argument("exemplar", help="exemplar image (PNG/JPEG); for PBR, the albedo")
    for name in ("normal", "height", "roughness", "ao"):
        train.add_argument(f"--{name}", metavar="F", help=f"{name} map of the same size (PBR training)")
    train.add_argument("--domain", default="2d", choices=["2d", "mesh", "volume"])
    train.add_argument("--out", required=True, help="output NAME.nca3d (checkpoint NAME.ckpt beside it)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, help="iterations (default 2000)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget instead of an iteration count")
    train.add_argument("--resume", action="store_true", help="continue from NAME.ckpt")
    train.add_argument("--init", metavar="MODEL",
                       help="fine-tune: start from this model's weights (a .nca3d file or a bundled name)")
    train.add_argument("--seed", type=int)
    train.add_argument("--features", choices=["effnet", "patches", "vgg16"], help="texture features (default effnet)")
    train.add_argument("--distance", choices=["emd", "swd"], help="feature distance (default emd)")
    train.add_argument("--vgg-weights", dest="vgg_weights", metavar="PATH", help="torchvision VGG16 weights")
    for name, kind in (("channels", int), ("hidden", int), ("grid", int), ("harmonics", int), ("batch", int),
                       ("pool", int), ("patch", int), ("checkpoint_every", int), ("lr", float),
                       ("lr_decay", float), ("lr_decay_at", float),
                       ("ray_samples", int), ("samples", int), ("min_steps", int), ("max_steps", int),
                       ("seed_every", int), ("overflow_weight", float), ("autocorr_weight", float), ("grad_checkpoint", int),
                       ("moment_weight", float), ("tap_balance", float), ("zoom", float),
                       ("select_every", int), ("select_after", int), ("select_steps", int)):
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind)
    train.add_argument("--license", help="licence of the exemplar (stored in the model header)")
    train.add_argument("--credit", help="credit line for the exemplar's author")
    train.add_argument("--device", default="auto")
    train.add_argument("--progress", default="bar", choices=["bar", "json", "none"])
    train.set_defaults(run=_cmd_train)

    volume = sub.add_parser("volume", help="grow a volume model and write OpenVDB (same as python -m nca3d.volume)")
    from .volume import add_arguments as add_volume_arguments, run as run_volume

    add_volume_arguments(volume)
    volume.set_defaults(run=run_volume)

    texture = sub.add_parser("texture", help="grow a mesh or volume model on a mesh; bake PBR maps, .glb and .obj")
    texture.add_argument("mesh", help="OBJ, PLY, STL, OFF, GLB or glTF file")
    _bake_options(texture)
    scale = texture.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="texture scale: cell spacing in mesh units")
    scale.add_argument("--cells", type=int, help="texture scale: lattice cells over the surface (default: a mesh model's training "
                       "icosphere count, 40962 for volume models)")
    texture.add_argument("--margin", type=int, default=0, help="seam dilation in px (default size/128, >= 4)")
    texture.add_argument("--object-normals", dest="object_normals", action="store_true",
                         help="also write an object-space normal map NAME_normal_object.png")
    texture.set_defaults(run=_cmd_texture)

    maps = sub.add_parser("maps", help="a tileable PBR map set from a 2D model")
    _bake_options(maps)
    maps.set_defaults(run=_cmd_maps)

    from .showcase import add_render_arguments, add_view_arguments, run_models, run_render, run_view

    models = sub.add_parser("models", help="list the bundled model library (names work wherever --model does)")
    models.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    models.set_defaults(run=run_models)
    render = sub.add_parser("render", help="render a model offscreen with pyvista: still, turntable or --damage panel")
    add_render_arguments(render)
    render.set_defaults(run=run_render)
    view = sub.add_parser("view", help="an interactive window where the model keeps growing (needs a display)")
    add_view_arguments(view)
    view.set_defaults(run=run_view)

    from .blender import add_arguments as add_addon_arguments

    add_addon_arguments(sub.add_parser("blender-addon", help="build the Blender extension zip (Blender 4.2+)"))

    bench = sub.add_parser("bench", help="benchmarks (same as python -m nca3d.bench)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except NCA3DError as exc:
        print(f"nca3d: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nca3d: interrupted", file=sys.stderr)
        return 130
