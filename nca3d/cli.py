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


def _scale_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of whole numbers, "
                                         f"for example 1,2,4,8") from None


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

    train = sub.add_parser("train", help="train a model from an exemplar image or a PBR material folder")
    train.add_argument("exemplar", help="exemplar image (PNG/JPEG), or a material folder whose maps are found by name "
                                        "(_Color/_albedo/_diff/_basecolor, _NormalGL/_NormalDX/_nor_gl/_normal, "
                                        "_Roughness/_rough/_gloss, _Displacement/_height/_disp, _AmbientOcclusion/_ao)")
    for name in ("normal", "height", "roughness", "ao"):
        train.add_argument(f"--{name}", metavar="F", help=f"{name} map of the same size (PBR training; wins over "
                                                          f"a folder's)")
    train.add_argument("--derive-pbr", dest="derive_pbr", action="store_true", default=None,
                       help="derive every missing map from those given: height from the normal (Frankot-Chellappa) "
                            "or from the albedo, the normal from the height, roughness from albedo statistics, "
                            "horizon-based AO; one photo is enough")
    train.add_argument("--dark-is-high", dest="dark_is_high", action="store_true", default=None,
                       help="with --derive-pbr from a photo alone: read dark tones as high (light mortar or grout "
                            "in the recesses, as in most brick walls and tiles); default bright = high")
    train.add_argument("--domain", default="2d", choices=["2d", "mesh", "volume"],
                       help="a flat tileable texture, a surface texture for meshes, or a solid volume (default 2d)")
    train.add_argument("--out", required=True, help="output NAME.nca3d (checkpoint NAME.ckpt beside it)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, help="iterations (default 2000)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget instead of an iteration count")
    train.add_argument("--resume", action="store_true", help="continue from NAME.ckpt")
    train.add_argument("--init", metavar="MODEL",
                       help="fine-tune: start from this model's weights (a .nca3d file or a bundled name)")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--features", choices=["effnet", "patches", "vgg16"], help="texture features (default effnet)")
    train.add_argument("--distance", choices=["emd", "swd"],
                       help="feature distance: relaxed EMD + moments, or sliced Wasserstein (default emd)")
    train.add_argument("--vgg-weights", dest="vgg_weights", metavar="PATH", help="torchvision VGG16 weights")
    for name, kind, text in (
            ("channels", int, "NCA state channels per cell (default 12)"),
            ("hidden", int, "NCA hidden width (default 96)"),
            ("grid", int, "2D/volume: cells per side (default 64 / 32); mesh: icosphere frequency (default 64)"),
            ("harmonics", int, "LPPN local-coordinate harmonics (default 1)"),
            ("batch", int, "pool states per iteration (default 4)"),
            ("pool", int, "state pool size (default 256)"),
            ("patch", int, "loss crop size in px (default 96)"),
            ("checkpoint_every", int, "write NAME.ckpt every this many iterations (default 50)"),
            ("lr", float, "Adam learning rate (default 1e-3)"),
            ("lr_decay", float, "learning-rate factor applied once (default 0.3)"),
            ("lr_decay_at", float, "... when this fraction of the budget is spent (default 0.5)"),
            ("ray_samples", int, "volume: samples per ray (default 40)"),
            ("samples", int, "feature vectors sampled per crop scale and tap (default 512)"),
            ("min_steps", int, "shortest rollout per iteration (default 32; volume 16)"),
            ("max_steps", int, "longest rollout per iteration (default 96; volume 48)"),
            ("seed_every", int, "re-inject the seed every this many iterations (default: states live ~2048 steps)"),
            ("overflow_weight", float, "weight keeping states in [-1, 1] (default 30)"),
            ("normal_height_weight", float, "PBR: weight tying the normal map to the height's slopes (default 10; 0: off)"),
            ("autocorr_weight", float, "feature auto-correlation term for regular textures (default 0; knit 10)"),
            ("grad_checkpoint", int, "recompute the rollout in segments of this many steps: less memory (default 0: off)"),
            ("moment_weight", float, "weight of the relaxed EMD's mean and covariance term (default 1)"),
            ("tap_balance", float, "weigh feature depths by the exemplar's own variation, to this power (default 0.5)"),
            ("zoom", float, "the lattice spans 1/ZOOM of the exemplar: features ZOOM x larger (default 1)"),
            ("select_every", int, "score a long rollout every this many iterations and keep the best (default 100; 0: off)"),
            ("select_after", int, "... from this iteration on (default 400)"),
            ("select_steps", int, "... grown from the seed for this many steps (default 1024)")):
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=text)
    train.add_argument("--scales", type=_scale_list, metavar="S,S,...",
                       help="loss crop scales: scale s takes min(s, 4) crops of 1/s of the view (default 1,2,4; "
                            "1,2,4,8 adds pixel-scale crops for fine grain, at about 1.3x an iteration's cost)")
    train.add_argument("--license", help="licence of the exemplar (stored in the model header)")
    train.add_argument("--credit", help="credit line for the exemplar's author")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                       help="a progress bar, JSON lines for tools, or nothing")
    train.set_defaults(run=_cmd_train)

    volume = sub.add_parser("volume", help="grow a volume model and write OpenVDB (same as python -m nca3d.volume)")
    from .volume import add_arguments as add_volume_arguments, run as run_volume

    add_volume_arguments(volume)
    volume.set_defaults(run=run_volume)

    texture = sub.add_parser("texture", help="grow a mesh or volume model on a mesh; bake PBR maps, .glb and .obj")
    texture.add_argument("mesh", help="OBJ, PLY, STL, OFF, GLB or glTF file, or a demo mesh: rock, torus or capsule")
    _bake_options(texture)
    scale = texture.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="texture scale: cell spacing in mesh units")
    scale.add_argument("--cells", type=int, help="texture scale: lattice cells over the surface (default: a mesh model's training "
                       "icosphere count, 40962 for volume models)")
    texture.add_argument("--margin", type=int, default=0, help="seam dilation in px (default size/128, >= 4)")
    texture.add_argument("--object-normals", dest="object_normals", action="store_true",
                         help="also write an object-space normal map NAME_normal_object.png")
    texture.add_argument("--displace", action="store_true",
                         help="also write NAME_displaced.glb/.obj: vertices moved along their normals by "
                              "strength x (height - 0.5) (needs a model with a height map)")
    texture.add_argument("--displace-strength", dest="displace_strength", type=float, metavar="S",
                         help="displacement strength in mesh units (implies --displace; default 2%% of the "
                              "bounding-box diagonal, capped at half the strength at which a triangle could flip)")
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
