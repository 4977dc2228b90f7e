"""The `nca3d` command. Bad input prints one line on stderr and exits 2."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import Parser
from .commands.batch import add_arguments as add_batch_arguments
from .commands.blender_addon import add_arguments as add_addon_arguments
from .commands.models import add_info_arguments, add_models_arguments, add_new_arguments
from .commands.render import add_arguments as add_render_arguments
from .commands.render import run as run_render
from .commands.texture import add_maps_arguments, add_texture_arguments
from .commands.train import add_arguments as add_train_arguments
from .commands.train import add_peek_arguments
from .commands.view import add_arguments as add_view_arguments
from .commands.view import run as run_view
from .commands.volume import add_arguments as add_volume_arguments
from .commands.volume import run as run_volume
from .commands.web import add_arguments as add_web_arguments
from .errors import NCA3DError

EXIT_USAGE = 2


def _cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nca3d", description="Self-organising neural textures for meshes, volumes and 2D maps.")
    parser.add_argument("--version", action="version", version=f"nca3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    add_new_arguments(sub.add_parser("new", help="write a freshly initialised model"))
    add_info_arguments(sub.add_parser("info", help="print a model's header as JSON"))
    add_train_arguments(sub.add_parser("train", help="train a model from an exemplar image or a PBR material folder"))
    add_peek_arguments(sub.add_parser("peek", help="write the model of a training run in progress from its checkpoint, "
                                                   "without stopping it"))

    volume = sub.add_parser("volume", help="grow a volume model and write OpenVDB (same as python -m nca3d.volume)")
    add_volume_arguments(volume)
    volume.set_defaults(run=run_volume)

    add_texture_arguments(sub.add_parser("texture", help="grow a mesh or volume model on a mesh; bake PBR maps, "
                                                         ".glb and .obj"))
    add_maps_arguments(sub.add_parser("maps", help="a tileable PBR map set from a 2D model"))

    add_models_arguments(sub.add_parser("models", help="list the bundled model library (names work wherever --model "
                                                       "does)"))
    render = sub.add_parser("render", help="render a model offscreen with pyvista: still, turntable or --damage panel")
    add_render_arguments(render)
    render.set_defaults(run=run_render)
    view = sub.add_parser("view", help="an interactive window where the model keeps growing (needs a display)")
    add_view_arguments(view)
    view.set_defaults(run=run_view)

    add_batch_arguments(sub.add_parser("batch", help="run many texture, maps, volume and train jobs on Ray (local or a cluster)"))
    add_web_arguments(sub.add_parser("web", help="a self-contained page that grows models live in the browser (WebGL2)"))
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
