"""`nca3d render`: draw a model offscreen with pyvista (render.scenes): a still, a turntable (--turntable N)
or with --damage the panel before damage | just after | healed and its figures (train.damage)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import NCA3DError
from ..models import load_named_model
from ..progress import Progress
from ..render.scenes import (
    RENDER_MAP_SIZE,
    RENDER_VOLUME_RES,
    make_scene,
    render_frames,
    require_pyvista,
    write_frames,
)
from ..train.damage import damage_experiment

MIN_SIZE, MAX_SIZE = 16, 4096


@dataclass
class RenderConfig:
    """Settings of one `nca3d render` run."""

    model: str
    out: str
    mesh: str = ""  # demo mesh name or mesh path; "" = rock for mesh models, a volume render for volumes
    size: int = 512
    steps: int = 96
    seed: int = 0
    turntable: int = 0  # > 0: N frames around the vertical axis
    damage: bool = False
    heal_steps: int = 0  # steps after the damage (0: as many as --steps)
    map_size: int = RENDER_MAP_SIZE
    cells: int = 0  # lattice cells over a mesh (0: the texture pipeline's default)
    volume_res: int = RENDER_VOLUME_RES
    device: str = "auto"

    def __post_init__(self):
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise NCA3DError(f"--size {self.size} is out of range; use {MIN_SIZE} to {MAX_SIZE} pixels")
        if self.steps < 0 or self.turntable < 0 or self.heal_steps < 0 or self.cells < 0:
            raise NCA3DError("--steps, --heal-steps, --turntable and --cells must be >= 0")
        if not 16 <= self.map_size <= 8192 or not 8 <= self.volume_res <= 512:
            raise NCA3DError("--map-size must be 16 to 8192 and --volume-res 8 to 512")
        if self.damage and self.turntable:
            raise NCA3DError("give --damage or --turntable, not both")
        suffix = Path(self.out).suffix.lower()
        if suffix not in (".png", ".gif") or (suffix == ".gif" and not self.turntable):
            raise NCA3DError(f"--out '{self.out}' must end in .png (or .gif with --turntable N)")


def render(config: RenderConfig, progress: Progress | None = None) -> dict:
    """Run `nca3d render`; returns {"written": [...], ...} (with "figures" for --damage)."""
    progress = progress or Progress("none")
    start = time.monotonic()
    model = load_named_model(config.model, config.device)
    record = {"model": config.model, "domain": model.config.domain}
    if config.damage:
        from ..io.images import write_png

        result = damage_experiment(model, config.steps, config.heal_steps or config.steps, config.seed,
                                   pixels=config.size, progress=progress)
        write_png(config.out, result.panel)
        record.update(written=[str(config.out)], figures=result.figures)
    else:
        require_pyvista()  # fail before growing when pyvista is missing
        scene = make_scene(model, config.mesh, config.map_size, config.cells, config.volume_res, config.seed,
                           progress)
        scene.advance(config.steps, report=True)
        progress.update("render", 0.0, f"{config.size} px", force=True)
        frames = render_frames(scene, config.size, config.turntable)
        if not config.turntable:
            progress.update("render", 1.0, f"{config.size} px", force=True)
        record["written"] = write_frames(frames, config.out, bool(config.turntable))
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name (see: nca3d models)")
    parser.add_argument("--mesh", default="", help="demo mesh (rock, torus, capsule) or a mesh file; mesh models "
                        "default to rock, volume models to a volume render")
    parser.add_argument("--out", required=True, help="OUT.png (a still; numbered OUT.0001.png ... with "
                        "--turntable) or OUT.gif (with --turntable)")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    parser.add_argument("--steps", type=int, default=96, help="NCA steps grown from the seed (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--turntable", type=int, default=0, metavar="N", help="N frames turning around the model")
    parser.add_argument("--damage", action="store_true", help="erase a region mid-rollout, let it heal, write the "
                        "panel before | just after | healed and print the error figures (on the model's own "
                        "lattice: --mesh does not apply)")
    parser.add_argument("--heal-steps", dest="heal_steps", type=int, default=0, help="steps after the damage "
                        "(default: as many as --steps)")
    parser.add_argument("--map-size", dest="map_size", type=int, default=RENDER_MAP_SIZE,
                        help=f"baked map size for mesh and 2D models (default {RENDER_MAP_SIZE})")
    parser.add_argument("--cells", type=int, default=0, help="lattice cells over the mesh (default: as nca3d texture)")
    parser.add_argument("--volume-res", dest="volume_res", type=int, default=RENDER_VOLUME_RES,
                        help=f"voxels per side of a volume render (default {RENDER_VOLUME_RES})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"])


def run(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in RenderConfig.__dataclass_fields__}
    record = render(RenderConfig(**options), Progress(args.progress))
    print(json.dumps(record))
    return 0
