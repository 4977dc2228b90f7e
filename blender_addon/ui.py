"""Panels: View3D sidebar (category NCA), Material properties, and Add > Volume > NCA Volume."""

from __future__ import annotations

import bpy

from . import config, library, runner
from .ops_batch import NCA3D_OT_texture_batch
from .ops_texture import NCA3D_OT_texture_mesh
from .ops_volume import NCA3D_OT_add_volume


class NCA3D_OT_cancel_job(bpy.types.Operator):
    """Stop the running NCA backend job; nothing in the scene changes"""

    bl_idname = "nca3d.cancel_job"
    bl_label = "NCA: Cancel Job"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return runner.busy()

    def execute(self, context):
        runner.request_cancel()
        return {"FINISHED"}


class NCA3D_OT_refresh_library(bpy.types.Operator):
    """List the backend's bundled models again (runs in the background)"""

    bl_idname = "nca3d.refresh_library"
    bl_label = "NCA: Refresh Model Library"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        if not library.refresh():
            self.report({"ERROR"}, library.error())
            return {"CANCELLED"}
        return {"FINISHED"}


def draw_status(layout, context) -> None:
    """Progress bar and Cancel while a job runs; the last result otherwise."""
    info = runner.status(context)
    if info is None:
        return
    if info.running:
        box = layout.box()
        text = f"{info.label}: {info.stage} {int(info.fraction * 100)}%"
        if hasattr(box, "progress"):
            box.progress(factor=info.fraction, type="BAR", text=text)
        else:  # pragma: no cover - Blender < 4.0
            box.prop(info, "fraction", text=text, slider=True)
        if info.message:
            box.label(text=info.message)
        box.operator(NCA3D_OT_cancel_job.bl_idname, text="Cancel (Esc)", icon="CANCEL")
    elif info.last_message:
        icon = {"ERROR": "ERROR", "WARNING": "INFO"}.get(info.last_level, "CHECKMARK")
        layout.label(text=info.last_message, icon=icon)


def draw_model(layout, settings) -> None:
    if library.models():
        layout.template_icon_view(settings, "model", show_labels=True, scale=5.0, scale_popup=5.0)
    row = layout.row(align=True)
    row.prop(settings, "model", text="Model")
    row.operator(NCA3D_OT_refresh_library.bl_idname, text="", icon="FILE_REFRESH")
    if settings.model == library.FILE_ITEM:
        layout.prop(settings, "model_file", text="")
    if library.loading():
        layout.label(text="Listing bundled models...", icon="TIME")
    elif library.error() and not library.models():
        layout.label(text=library.error()[:120], icon="ERROR")


def length_text(context, value: float) -> str:
    """A length in the scene's units (e.g. '3.76 cm'), as Blender shows lengths."""
    units = context.scene.unit_settings
    if units.system == "NONE":
        return f"{value:.4g}"
    return bpy.utils.units.to_string(units.system, "LENGTH", value * units.scale_length, precision=4)


def draw_texture_settings(layout, context) -> None:
    settings = context.scene.nca3d_texture
    draw_model(layout, settings)
    info = library.model_info(settings)
    col = layout.column(align=True)
    col.prop(settings, "size")
    col.prop(settings, "scale")
    spacing = library.scene_spacing(settings)
    if not settings.scale and spacing:
        col.label(text=f"Auto: {length_text(context, spacing)} per cell (the model's training spacing)")
    obj = context.active_object
    if obj is not None and obj.type == "MESH":
        col.prop(obj, "nca3d_texture_scale", text=f"{obj.name} Scale")
    col.prop(settings, "steps")
    col.prop(settings, "seed")
    layout.label(text="Maps:")
    makes = info["maps"] if info else library.MAP_KINDS  # unknown (unreadable file): the backend decides
    grid = layout.grid_flow(columns=2, align=True)
    for kind in ("albedo", "normal", "roughness", "height"):
        cell = grid.row(align=True)
        cell.enabled = kind in makes
        cell.prop(settings, f"use_{kind}", toggle=True)
    row = layout.row()
    row.enabled = settings.use_albedo and "ao" in makes
    row.prop(settings, "use_ao")
    missing = [kind for kind in library.MAP_KINDS if kind not in makes]
    if missing:
        layout.label(text=library.missing_maps_text(library.model_label(settings), info, missing), icon="INFO")
    col = layout.column()
    col.enabled = settings.use_height and "height" in makes
    col.prop(settings, "displace")
    col.prop(settings, "displace_strength" if settings.displace else "displacement")
    layout.prop(settings, "animate")
    if settings.animate:
        col = layout.column(align=True)
        col.prop(settings, "frames")
        col.prop(settings, "every")
        col.prop(settings, "loop")
    layout.prop(settings, "storage")
    if (settings.animate or settings.storage == "FILES") and config.output_root(context) is None:
        layout.label(text="Files need a folder: save the .blend or set an Output Folder", icon="ERROR")
    layout.operator(NCA3D_OT_texture_mesh.bl_idname, text="Texture Selected Mesh", icon="TEXTURE")
    layout.operator(NCA3D_OT_texture_batch.bl_idname, text="Texture All Selected Meshes", icon="TEXTURE")


def draw_volume_settings(layout, context) -> None:
    settings = context.scene.nca3d_volume
    draw_model(layout, settings)
    col = layout.column(align=True)
    col.prop(settings, "res")
    col.prop(settings, "steps")
    col.prop(settings, "seed")
    col.prop(settings, "lattice")
    col = layout.column(align=True)
    col.prop(settings, "size")
    col.prop(settings, "density_scale")
    layout.prop(settings, "shading")
    layout.prop(settings, "animate")
    if settings.animate:
        col = layout.column(align=True)
        col.prop(settings, "frames")
        col.prop(settings, "every")
        col.prop(settings, "loop")
    if config.output_root(context) is None:
        layout.label(text="VDB files need a folder: save the .blend or set an Output Folder", icon="ERROR")
    layout.operator(NCA3D_OT_add_volume.bl_idname, text="Add NCA Volume", icon="VOLUME_DATA")


class VIEW3D_PT_nca3d(bpy.types.Panel):
    bl_label = "Neural Cellular Automata"
    bl_idname = "VIEW3D_PT_nca3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NCA"

    def draw(self, context):
        draw_status(self.layout, context)


class VIEW3D_PT_nca3d_texture(bpy.types.Panel):
    bl_label = "Texture Mesh"
    bl_idname = "VIEW3D_PT_nca3d_texture"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NCA"
    bl_parent_id = "VIEW3D_PT_nca3d"

    def draw(self, context):
        draw_texture_settings(self.layout, context)


class VIEW3D_PT_nca3d_volume(bpy.types.Panel):
    bl_label = "Volume"
    bl_idname = "VIEW3D_PT_nca3d_volume"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NCA"
    bl_parent_id = "VIEW3D_PT_nca3d"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        draw_volume_settings(self.layout, context)


class MATERIAL_PT_nca3d(bpy.types.Panel):
    bl_label = "NCA Texture"
    bl_idname = "MATERIAL_PT_nca3d"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "material"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        obj = context.object
        return obj is not None and obj.type == "MESH"

    def draw(self, context):
        draw_status(self.layout, context)
        draw_texture_settings(self.layout, context)


def menu_add_volume(self, context):
    self.layout.operator(NCA3D_OT_add_volume.bl_idname, text="NCA Volume", icon="VOLUME_DATA")


classes = (NCA3D_OT_cancel_job, NCA3D_OT_refresh_library, VIEW3D_PT_nca3d, VIEW3D_PT_nca3d_texture,
           VIEW3D_PT_nca3d_volume, MATERIAL_PT_nca3d)


def register() -> None:
    bpy.types.VIEW3D_MT_volume_add.append(menu_add_volume)


def unregister() -> None:
    bpy.types.VIEW3D_MT_volume_add.remove(menu_add_volume)
