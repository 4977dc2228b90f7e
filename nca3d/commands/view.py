"""`nca3d view`: an interactive window where the NCA keeps running (a timer: a few steps per tick,
then the texture or volume is decoded again); keys: d = damage, r = restart from the seed,
space = pause. The scene is render.scenes'; the model is loaded as `nca3d render` loads it
(models.load_named_model)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ..errors import NCA3DError
from ..models import load_named_model
from ..progress import Progress
from ..render.scenes import (
    VIEW_MAP_SIZE,
    VIEW_VOLUME_RES,
    Scene,
    make_scene,
    new_plotter,
    require_pyvista,
)


@dataclass
class ViewConfig:
    """Settings of one `nca3d view` window."""

    model: str
    mesh: str = ""
    steps: int = 0  # grown before the window opens (0: watch it grow from the seed)
    speed: int = 2  # NCA steps per timer tick
    interval_ms: int = 100
    seed: int = 0
    size: int = 800
    map_size: int = VIEW_MAP_SIZE
    cells: int = 0
    volume_res: int = VIEW_VOLUME_RES
    device: str = "auto"

    def __post_init__(self):
        if self.steps < 0 or self.speed < 1 or self.interval_ms < 1 or self.cells < 0:
            raise NCA3DError("need --steps >= 0, --speed >= 1 and --cells >= 0")
        if not 64 <= self.size <= 4096 or not 16 <= self.map_size <= 8192 or not 8 <= self.volume_res <= 512:
            raise NCA3DError("--map-size must be 16 to 8192 and --volume-res 8 to 512")


def display_available(platform: str | None = None, environ=None) -> bool:
    """Whether a window can open: on Linux and other X11/Wayland systems only with DISPLAY or
    WAYLAND_DISPLAY set; macOS and Windows are assumed to have a display."""
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def check_display(platform: str | None = None, environ=None) -> None:
    if not display_available(platform, environ):
        raise NCA3DError("no display: `nca3d view` opens a window, and neither DISPLAY nor WAYLAND_DISPLAY is "
                         "set; run it on a desktop session, or render images offscreen with "
                         "`nca3d render --model M --out preview.png` (add --turntable 36 for an animation)")


def view_tick(scene: Scene, plotter=None, steps: int = 2) -> int:
    """One timer tick of `nca3d view`: run `steps` NCA steps, decode again, update the plotter's
    textures or volume and its status line. Returns the steps done so far."""
    scene.advance(steps)
    scene.refresh()
    if plotter is not None:
        plotter.add_text(f"step {scene.steps_done}   d: damage   r: restart   space: pause", position="lower_left",
                         font_size=9, color="white", name="status")
        plotter.render()
    return scene.steps_done


def view(config: ViewConfig) -> None:
    """Open the interactive window (blocks until it is closed)."""
    check_display()
    require_pyvista()
    model = load_named_model(config.model, config.device)
    progress = Progress("bar")
    scene = make_scene(model, config.mesh, config.map_size, config.cells, config.volume_res, config.seed, progress)
    scene.advance(config.steps, report=True)
    plotter = new_plotter(config.size, off_screen=False, supersample=1)
    scene.add_to(plotter)
    scene.place_camera(plotter)
    paused = {"on": False}

    def tick(_step=None):
        if not paused["on"]:
            view_tick(scene, plotter, config.speed)

    def damage():
        scene.damage()
        view_tick(scene, plotter, 0)

    def restart():
        scene.reset()
        view_tick(scene, plotter, 0)

    def pause():
        paused["on"] = not paused["on"]

    plotter.add_key_event("d", damage)
    plotter.add_key_event("r", restart)
    plotter.add_key_event("space", pause)
    view_tick(scene, plotter, 0)
    plotter.add_timer_event(max_steps=10 ** 9, duration=config.interval_ms, callback=tick)
    plotter.show(title=f"nca3d view: {config.model}")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a .nca3d file or a bundled model name")
    parser.add_argument("--mesh", default="", help="demo mesh (rock, torus, capsule) or a mesh file")
    parser.add_argument("--steps", type=int, default=0, help="steps grown before the window opens (default 0)")
    parser.add_argument("--speed", type=int, default=2, help="NCA steps per tick (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-size", dest="map_size", type=int, default=VIEW_MAP_SIZE)
    parser.add_argument("--cells", type=int, default=0)
    parser.add_argument("--volume-res", dest="volume_res", type=int, default=VIEW_VOLUME_RES)
    parser.add_argument("--device", default="auto")


def run(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in ViewConfig.__dataclass_fields__}
    view(ViewConfig(**options))
    return 0
