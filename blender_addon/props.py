"""Settings stored with the scene (texture, volume) and the job status on the window manager."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import library, materials


def _model_props(picker: str, description: str):
    get, set_ = library.model_accessors(picker)
    return {
        "model": EnumProperty(
            name="Model", description=description,
            items=library.texture_model_items if picker == "texture" else library.volume_model_items,
            get=get, set=set_),
        "model_name": StringProperty(
            name="Model Name", description="The chosen model's name (empty: the picker's default model)",
            default="", options={"HIDDEN"}),
        "model_file": StringProperty(
            name="Model File",
            description="Path of a .nca3d model file (used when Model is 'Model File')",
            subtype="FILE_PATH", default=""),
    }


class NCA3DTextureSettings(bpy.types.PropertyGroup):
    __annotations__ = {
        **_model_props("texture", "The NCA model: a mesh model grows on a cell lattice over the surface; a volume "
                                  "model colours it as a solid texture, as if carved from a block. Its maps "
                                  "(RGB models: albedo only) are shown below. 2D models are for `nca3d maps`"),
        "size": IntProperty(
            name="Map Size", description="Width and height of the baked maps in pixels",
            default=1024, min=16, max=8192, soft_min=64, soft_max=4096),
        "scale": FloatProperty(
            name="Texture Scale",
            description="Cell spacing of the texture in world units, the same on every object of the scene "
                        "(smaller: finer pattern). 0: the model's training spacing (a mesh model's, as trained on "
                        f"a sphere of radius 1; a volume model's, its grid over {library.VOLUME_EDGE:g} units). "
                        "An object's own Object Texture Scale overrides it",
            default=0.0, min=0.0, soft_max=1.0, precision=4, subtype="DISTANCE", unit="LENGTH"),
        "steps": IntProperty(
            name="Steps", description="NCA growth steps from the seed before the maps are baked",
            default=96, min=0, soft_max=512),
        "seed": IntProperty(
            name="Seed", description="Random seed: another seed gives another variation of the texture",
            default=0, min=0),
        "use_albedo": BoolProperty(
            name="Albedo", description="Bake the albedo (base colour) map into Base Color", default=True),
        "use_normal": BoolProperty(
            name="Normal", description="Bake the tangent-space normal map into a Normal Map node (greyed out: the "
                                        "model has no normal output)", default=True),
        "use_roughness": BoolProperty(
            name="Roughness",
            description="Bake the roughness map into Roughness (greyed out: the model has no roughness output; "
                        f"the material's roughness is then a constant {materials.MATTE_ROUGHNESS})",
            default=True),
        "use_height": BoolProperty(
            name="Height", description="Bake the height map into a Displacement node (greyed out: the model has no "
                                        "height output)", default=True),
        "use_ao": BoolProperty(
            name="Multiply AO",
            description="Multiply the ambient-occlusion map into the base colour (off: AO is not used; greyed "
                        "out: the model has no AO output)",
            default=False),
        "displacement": FloatProperty(
            name="Bump Height", description="Height map strength as a fraction of the object's size, as a "
                                            "bump (without Displace)",
            default=0.02, min=0.0, soft_max=0.2, precision=3),
        "displace": BoolProperty(
            name="Displace",
            description="Move the surface by the height map in Cycles (the material's displacement method "
                        "Displacement, at the strength the backend's `--displace` chose for this mesh, or Displace "
                        "Strength); off: the height is a bump only. Cycles moves the mesh's vertices: add a "
                        "Subdivision Surface modifier with Adaptive Subdivision for finer relief",
            default=False),
        "displace_strength": FloatProperty(
            name="Displace Strength",
            description="World units per unit of height (0: automatic, 2% of the object's bounding-box diagonal, "
                        "capped so no triangle can fold over)",
            default=0.0, min=0.0, soft_max=0.5, precision=4, subtype="DISTANCE", unit="LENGTH"),
        "animate": BoolProperty(
            name="Animate", description="Bake an animated image sequence that keeps growing, played by the "
                                        "timeline from the scene's start frame", default=False),
        "frames": IntProperty(
            name="Frames", description="Number of frames of the animated maps", default=24, min=1, soft_max=500),
        "every": IntProperty(
            name="Steps per Frame", description="NCA steps between two frames of the animation",
            default=8, min=1, soft_max=64),
        "loop": BoolProperty(
            name="Loop", description="Repeat the animated maps after their last frame", default=True),
        "storage": EnumProperty(
            name="Store Images", description="Where the baked images are kept",
            items=[("PACK", "Pack into .blend",
                    "Pack the images into the .blend file, nothing on disk (animated maps are always files)"),
                   ("FILES", "Save as Files",
                    "Save the images as files in a folder NCA_<object> in the Output Folder (default: 'nca3d' "
                    "next to the .blend, which must be saved first)")],
            default="PACK"),
    }


class NCA3DVolumeSettings(bpy.types.PropertyGroup):
    __annotations__ = {
        **_model_props("volume", "The NCA volume model (a bundled one, with its preview, or a .nca3d file): "
                                 "grows a 3D block of density and colour"),
        "res": IntProperty(
            name="Resolution", description="Voxels per axis of the exported volume",
            default=128, min=8, max=1024, soft_max=512),
        "steps": IntProperty(
            name="Steps", description="NCA growth steps from the seed", default=96, min=0, soft_max=512),
        "seed": IntProperty(
            name="Seed", description="Random seed: another seed gives another variation", default=0, min=0),
        "lattice": IntProperty(
            name="Lattice", description="NCA cells per axis (0: the model's own grid)", default=0, min=0, max=512),
        "size": FloatProperty(
            name="Size", description="Edge length of the volume cube in world units, centred on the 3D cursor",
            default=library.VOLUME_EDGE, min=0.001, soft_max=100.0, subtype="DISTANCE", unit="LENGTH"),
        "density_scale": FloatProperty(
            name="Density Scale", description="Multiplies the density grid (thicker or thinner)",
            default=1.0, min=0.0001, soft_max=10.0),
        "shading": EnumProperty(
            name="Shading", description="How the material renders the grids",
            items=[("PREVIEW", "Emissive",
                    "Emission-absorption, as the model's own preview: emission colour = color, strength = density"),
                   ("SMOKE", "Smoke", "Scattering smoke coloured by the color grid")],
            default="PREVIEW"),
        "animate": BoolProperty(
            name="Animate", description="Write a VDB sequence that keeps growing, played by the timeline",
            default=False),
        "frames": IntProperty(
            name="Frames", description="Number of frames of the VDB sequence", default=24, min=1, soft_max=500),
        "every": IntProperty(
            name="Steps per Frame", description="NCA steps between two frames", default=8, min=1, soft_max=64),
        "loop": BoolProperty(
            name="Loop", description="Repeat the VDB sequence after its last frame (off: it holds its last frame)",
            default=True),
    }


class NCA3DJobStatus(bpy.types.PropertyGroup):
    running: BoolProperty(name="Running", description="A backend job is running", default=False)
    label: StringProperty(name="Job", description="What the running job does", default="")
    stage: StringProperty(name="Stage", description="The backend's current stage", default="")
    message: StringProperty(name="Message", description="The backend's latest progress message", default="")
    fraction: FloatProperty(name="Progress", description="Progress of the current stage",
                            default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    last_message: StringProperty(name="Last Result", description="What the last job reported", default="")
    last_level: StringProperty(name="Last Level", description="INFO, WARNING or ERROR", default="")


classes = (NCA3DTextureSettings, NCA3DVolumeSettings, NCA3DJobStatus)


def register() -> None:
    bpy.types.Object.nca3d_texture_scale = FloatProperty(
        name="Object Texture Scale",
        description="This object's cell spacing in world units, overriding the scene's Texture Scale "
                    "(0: the scene's)",
        default=0.0, min=0.0, soft_max=1.0, precision=4, subtype="DISTANCE", unit="LENGTH")
    bpy.types.Scene.nca3d_texture = PointerProperty(type=NCA3DTextureSettings,
                                                    description="NCA texture settings")
    bpy.types.Scene.nca3d_volume = PointerProperty(type=NCA3DVolumeSettings, description="NCA volume settings")
    bpy.types.WindowManager.nca3d_job = PointerProperty(type=NCA3DJobStatus, description="NCA job status")


def unregister() -> None:
    del bpy.types.WindowManager.nca3d_job
    del bpy.types.Scene.nca3d_volume
    del bpy.types.Scene.nca3d_texture
    del bpy.types.Object.nca3d_texture_scale
