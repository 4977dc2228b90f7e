"""NCA3D for Blender: neural cellular automata textures on meshes, and NCA volumes.

A Blender extension (Blender 4.2+). It holds no torch: the `nca3d` backend runs as
`<python> -m nca3d ...` in a Python of your own (set in the add-on preferences, or found on
PATH), and its JSON-lines progress is read without blocking the UI. See README.md.
"""

if "bpy" in locals():  # Reload Scripts: reload the submodules in dependency order
    import importlib

    for _module in (backend, setup_backend, runner, config, library, prefs, props, mesh_io,  # noqa: F821
                    materials, ops_texture, ops_batch, ops_volume, ui):  # noqa: F821
        importlib.reload(_module)

import bpy
from bpy.app.handlers import persistent

from . import (  # noqa: F401
    backend,
    config,
    library,
    materials,
    mesh_io,
    ops_batch,
    ops_texture,
    ops_volume,
    prefs,
    props,
    runner,
    setup_backend,
    ui,
)

_CLASSES = (*props.classes, *prefs.classes, *ops_texture.classes, *ops_batch.classes, *ops_volume.classes, *ui.classes)


@persistent
def _stop_jobs_on_load(*_args):
    """A file is being loaded: stop a running backend (its result would have nowhere to go) and free
    the add-on for the next job."""
    runner.kill_active()


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    library.register()
    ui.register()
    bpy.app.handlers.load_pre.append(_stop_jobs_on_load)


def unregister():
    runner.kill_active()
    if _stop_jobs_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_stop_jobs_on_load)
    ui.unregister()
    library.unregister()
    props.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    prefs.reset()
