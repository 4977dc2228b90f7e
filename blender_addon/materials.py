"""Node graphs of the materials the add-on builds: PBR maps on a mesh, and a VDB volume."""

from __future__ import annotations

MATTE_ROUGHNESS = 0.8  # Roughness without a roughness map (RGB models): stone, bark and rust are matte

# Colour space of each map: albedo is display-encoded, the others are data.
COLOR_SPACES = {"albedo": "sRGB", "normal": "Non-Color", "roughness": "Non-Color", "height": "Non-Color",
                "ao": "Non-Color"}


def _node_tree(material):
    if material.node_tree is None:  # Blender < 5.0: node trees only once use_nodes is set
        material.use_nodes = True
    return material.node_tree


def _clear(tree) -> None:
    for node in list(tree.nodes):
        tree.nodes.remove(node)


def _new(tree, kind: str, location, label: str = ""):
    node = tree.nodes.new(kind)
    node.location = location
    if label:
        node.label = label
    return node


def _mix_inputs(node):
    """(factor, A, B, result) sockets of a colour Mix node (ShaderNodeMix, RGBA)."""
    inputs = {s.identifier: s for s in node.inputs}
    outputs = {s.identifier: s for s in node.outputs}
    return inputs["Factor_Float"], inputs["A_Color"], inputs["B_Color"], outputs["Result_Color"]


def setup_image_user(node, frames: int, frame_start: int, cyclic: bool) -> None:
    """Make an Image Texture node play an image sequence of `frames` frames with the timeline."""
    user = node.image_user
    user.frame_duration = frames
    user.frame_start = frame_start
    user.frame_offset = 0
    user.use_cyclic = cyclic
    user.use_auto_refresh = True


def set_displacement_method(material, method: str) -> None:
    """BUMP, DISPLACEMENT or BOTH: a material property since Blender 4.1 (Cycles' before)."""
    owner = material if hasattr(material, "displacement_method") else material.cycles
    owner.displacement_method = method


def build_texture_material(material, images: dict, uv_name: str | None, displacement_scale: float,
                           multiply_ao: bool, sequence: dict | None = None, displace: bool = False) -> None:
    """(Re)build `material`: Principled BSDF fed by the NCA maps.

    images: kind -> bpy Image for albedo, normal, roughness, height, ao (any subset).
    albedo -> Base Color (times AO with multiply_ao; otherwise AO is not used); roughness ->
    Roughness (without one, a constant MATTE_ROUGHNESS); the tangent-space (OpenGL) normal map ->
    Normal Map node -> Normal; height -> a Displacement node (midlevel 0.5, Scale
    displacement_scale in world units) on the Material Output: true displacement (method
    DISPLACEMENT: Cycles moves the surface by scale x (height - 0.5) along the normal, as
    `nca3d texture --displace` does) with `displace`, else a bump (method BUMP).
    sequence: {"frames", "frame_start", "cyclic"} when the images are sequences."""
    tree = _node_tree(material)
    _clear(tree)
    links = tree.links
    output = _new(tree, "ShaderNodeOutputMaterial", (900, 300))
    bsdf = _new(tree, "ShaderNodeBsdfPrincipled", (500, 300))
    links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    uv_node = None
    if uv_name:
        uv_node = _new(tree, "ShaderNodeUVMap", (-700, 200), "NCA UV map")
        uv_node.uv_map = uv_name
    rows = {"albedo": 600, "ao": 320, "roughness": 40, "normal": -240, "height": -520}
    textures = {}
    for kind in ("albedo", "ao", "roughness", "normal", "height"):
        image = images.get(kind)
        if image is None:
            continue
        node = _new(tree, "ShaderNodeTexImage", (-400, rows[kind]), f"NCA {kind}")
        node.name = f"NCA {kind}"
        node.image = image
        node.interpolation = "Linear"
        if sequence:
            setup_image_user(node, sequence["frames"], sequence["frame_start"], sequence["cyclic"])
        if uv_node is not None:
            links.new(uv_node.outputs["UV"], node.inputs["Vector"])
        textures[kind] = node
    if "albedo" in textures:
        colour = textures["albedo"].outputs["Color"]
        if multiply_ao and "ao" in textures:
            mix = _new(tree, "ShaderNodeMix", (100, 500), "Albedo x AO")
            mix.name = "NCA AO multiply"
            mix.data_type = "RGBA"
            mix.blend_type = "MULTIPLY"
            factor, a, b, result = _mix_inputs(mix)
            factor.default_value = 1.0
            links.new(colour, a)
            links.new(textures["ao"].outputs["Color"], b)
            colour = result
        links.new(colour, bsdf.inputs["Base Color"])
    if "roughness" in textures:
        links.new(textures["roughness"].outputs["Color"], bsdf.inputs["Roughness"])
    else:
        bsdf.inputs["Roughness"].default_value = MATTE_ROUGHNESS
    if "normal" in textures:
        normal_map = _new(tree, "ShaderNodeNormalMap", (100, -240), "NCA normal (tangent)")
        normal_map.name = "NCA normal map"
        normal_map.space = "TANGENT"
        if uv_name:
            normal_map.uv_map = uv_name
        links.new(textures["normal"].outputs["Color"], normal_map.inputs["Color"])
        links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    if "height" in textures:
        displacement = _new(tree, "ShaderNodeDisplacement", (500, -300), "NCA height")
        displacement.name = "NCA displacement"
        displacement.inputs["Midlevel"].default_value = 0.5
        displacement.inputs["Scale"].default_value = displacement_scale
        displacement.space = "WORLD"  # the scale is in world units
        links.new(textures["height"].outputs["Color"], displacement.inputs["Height"])
        links.new(displacement.outputs["Displacement"], output.inputs["Displacement"])
    set_displacement_method(material, "DISPLACEMENT" if displace and "height" in textures else "BUMP")
    material["nca3d"] = True  # marks a material this add-on may rebuild


def build_volume_material(material, shading: str = "PREVIEW") -> None:
    """A Principled Volume reading the VDB grids `density` and `color`.

    PREVIEW: emission-absorption as the model's own preview renders it (Color and Absorption
    black, Emission Color = color, Emission Strength = density, Density 1 x density);
    SMOKE: scattering with Color = color."""
    tree = _node_tree(material)
    _clear(tree)
    links = tree.links
    output = _new(tree, "ShaderNodeOutputMaterial", (500, 0))
    volume = _new(tree, "ShaderNodeVolumePrincipled", (150, 0))
    volume.name = "NCA volume"
    density = _new(tree, "ShaderNodeAttribute", (-250, -150), "density grid")
    density.name = "NCA density"
    density.attribute_name = "density"
    colour = _new(tree, "ShaderNodeAttribute", (-250, 150), "color grid")
    colour.name = "NCA color"
    colour.attribute_name = "color"
    volume.inputs["Density"].default_value = 1.0
    volume.inputs["Density Attribute"].default_value = "density"
    volume.inputs["Color Attribute"].default_value = ""  # colour comes from the Attribute node
    links.new(volume.outputs["Volume"], output.inputs["Volume"])
    if shading == "SMOKE":
        links.new(colour.outputs["Color"], volume.inputs["Color"])
    else:
        volume.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
        volume.inputs["Absorption Color"].default_value = (0.0, 0.0, 0.0, 1.0)
        links.new(colour.outputs["Color"], volume.inputs["Emission Color"])
        links.new(density.outputs["Fac"], volume.inputs["Emission Strength"])
    material["nca3d"] = True


def link_pairs(material) -> set[tuple[str, str, str, str]]:
    """Every link of a material as (from node type, from socket, to node type, to socket)."""
    return {(link.from_node.bl_idname, link.from_socket.identifier, link.to_node.bl_idname,
             link.to_socket.identifier) for link in material.node_tree.links}
