"""`nca3d web`: a self-contained static page that grows models live on the GPU with WebGL2.

The folder opens from disk (file://) and asks for nothing outside itself: the page's HTML, script
and shaders are package files (`web_page/`), and the models and mesh lattices are written as
JavaScript files that register base64 float32/int32 arrays with the page (a <script> tag loads
them, so no fetch() is needed). Files written into DIR:

    index.html        the page (from web_page/index.html)
    nca3d.js          the page's script (from web_page/nca3d.js)
    shaders.js        every web_page/glsl/*.glsl file as a string, NCA3D.shaders[NAME]
    manifest.js       the models (name, domain, outputs, data file) and the default model
    model_NAME.js     one model: its settings and weights, laid out as the shaders read them
    lattice_KEY.js    one mesh lattice: vertices, faces, neighbour lists (CSR), vertex normals

Weights are packed here so the shaders read whole RGBA quads: channels are padded to a multiple
of four (C4 = ceil(C / 4) quads), the NCA's first layer is W1 (H, P * C4 * 4) filter-major like
the torch perception, the second is W2^T (H, C4 * 4), and the LPPN's sine layers carry omega0
folded into their weights and biases exactly as `core.lppn.SIREN.forward` folds it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NCA3DError
from ..io.atomic import prepare_out_dir
from ..lattices.mesh import unique_edges
from ..ops.bake import vertex_normals
from ..render.maps import default_cells

PAGE_FOLDER = Path(__file__).resolve().parent / "web_page"
PAGE_FILES = ("index.html", "nca3d.js")
STAGING_PREFIX = ".nca3d-web-staging-"
NAME_PATTERN = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class MeshLatticeData:
    """A mesh lattice for the page: vertices (N, 3) and faces (F, 3), under a file key."""

    key: str
    vertices: np.ndarray
    faces: np.ndarray
    source: str = ""


def _b64(array: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _quads(count: int) -> int:
    return (count + 3) // 4


def _pad_columns(matrix: np.ndarray, blocks: list[tuple[int, int]]) -> np.ndarray:
    """matrix (R, sum of sizes) -> (R, sum of padded sizes): each (start, size) block of columns
    padded with zeros to a multiple of 4."""
    parts = []
    for start, size in blocks:
        block = matrix[:, start:start + size]
        parts.append(np.pad(block, ((0, 0), (0, _quads(size) * 4 - size))))
    return np.concatenate(parts, axis=1)


def nca_weights(model) -> dict:
    """The NCA packed for the step shader: w1 (H, P * C4 * 4), b1 (H,), w2t (H, C4 * 4) float32."""
    nca = model.nca
    channels, perception = nca.channels, nca.perception
    w1 = nca.perceive_to_hidden.weight.detach().cpu().float().numpy()  # (H, P*C)
    w1 = _pad_columns(w1, [(f * channels, channels) for f in range(perception)])
    w2t = nca.hidden_to_update.weight.detach().cpu().float().numpy().T  # (H, C)
    w2t = _pad_columns(w2t, [(0, channels)])
    return {"w1": w1, "b1": nca.perceive_to_hidden.bias.detach().cpu().float().numpy(), "w2t": w2t}


def lppn_weights(model) -> list[dict]:
    """The LPPN's layers for the decode shader, each {"w": (out, in padded), "b": (out,), "sine"}.

    The first layer's inputs are [local (D), cell state (C)], each part padded to whole quads;
    omega0 is folded into the sine layers as SIREN.forward folds it (float32 products)."""
    siren = model.lppn
    layers = list(siren.layers)
    packed = []
    for index, layer in enumerate(layers):
        sine = index < len(layers) - 1
        weight, bias = layer.weight.detach().cpu().float(), layer.bias.detach().cpu().float()
        if sine:
            weight, bias = weight * siren.omega0, bias * siren.omega0
        weight = weight.numpy()
        if index == 0:
            weight = _pad_columns(weight, [(0, model.local_dim), (model.local_dim, model.config.channels)])
        else:
            weight = _pad_columns(weight, [(0, weight.shape[1])])
        packed.append({"w": weight, "b": bias.numpy(), "sine": sine})
    return packed


def model_data(model, name: str, lattice_key: str | None = None) -> dict:
    """Everything the page needs of one model: settings and packed weights (base64 float32)."""
    cfg = model.config
    outputs, start = [], 0
    for channel in model.outputs:
        outputs.append({"name": channel.name, "start": start, "size": channel.size,
                        "activation": channel.activation, "colour_space": channel.colour_space})
        start += channel.size
    nca = nca_weights(model)
    layers = lppn_weights(model)
    provenance = {key: model.provenance.get(key) for key in ("exemplar", "license", "credit")}
    return {
        "name": name,
        "domain": cfg.domain,
        "lattice": cfg.lattice_kind,
        "channels": cfg.channels,
        "hidden": cfg.hidden,
        "perception": model.nca.perception,
        "fire_rate": cfg.fire_rate,
        "state_limit": cfg.state_limit,
        "local_dim": model.local_dim,
        "harmonics": cfg.harmonics,
        "triangle_coord": cfg.triangle_coord,
        "grid_size": list(cfg.grid_size),
        "mesh_lattice": lattice_key,
        "outputs": outputs,
        "num_outputs": model.num_outputs,
        "provenance": provenance,
        "nca": {"w1": _b64(nca["w1"], "<f4"), "b1": _b64(nca["b1"], "<f4"), "w2t": _b64(nca["w2t"], "<f4")},
        "lppn": [{"rows": int(layer["w"].shape[0]), "cols": int(layer["w"].shape[1]), "sine": layer["sine"],
                  "w": _b64(layer["w"], "<f4"), "b": _b64(layer["b"], "<f4")} for layer in layers],
    }


def lattice_data(lattice: MeshLatticeData) -> dict:
    """A mesh lattice for the page: positions, faces, the directed neighbour lists of the SH
    perception as CSR (offsets (N + 1,), neighbours (2E,), i -> neighbours[offsets[i]:offsets[i+1]]),
    and vertex normals; base64 little-endian float32 / int32."""
    vertices = np.asarray(lattice.vertices, dtype=np.float64)
    faces = np.asarray(lattice.faces, dtype=np.int64)
    edges = unique_edges(faces)
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=len(vertices)))])
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    return {
        "key": lattice.key,
        "source": lattice.source,
        "vertex_count": len(vertices),
        "face_count": len(faces),
        "edge_count": len(src),
        "centre": ((vertices.max(axis=0) + vertices.min(axis=0)) / 2).tolist(),
        "radius": float(np.linalg.norm(vertices - (vertices.max(axis=0) + vertices.min(axis=0)) / 2, axis=1).max()),
        "extent": float(extent.max()),
        "vertices": _b64(vertices, "<f4"),
        "faces": _b64(faces, "<i4"),
        "offsets": _b64(offsets, "<i4"),
        "neighbours": _b64(dst, "<i4"),
        "normals": _b64(vertex_normals(vertices, faces), "<f4"),
    }


def shader_sources() -> dict[str, str]:
    """Every web_page/glsl/*.glsl file: name (the stem) -> source."""
    return {path.stem: path.read_text() for path in sorted((PAGE_FOLDER / "glsl").glob("*.glsl"))}


def _script(call: str, payload) -> str:
    return f"{call}({json.dumps(payload, separators=(',', ':'))});\n"


def safe_name(name: str) -> str:
    """A model name usable in a file name."""
    return NAME_PATTERN.sub("_", name).strip("._") or "model"


def write_web(models: list[tuple[str, object]], out: str | os.PathLike,
              lattices: dict[str, MeshLatticeData] | None = None, mesh_keys: dict[str, str] | None = None,
              progress=None) -> list[str]:
    """Write the page for `models` [(name, Model)] into folder `out`; returns the written files.

    lattices: mesh lattices by key; mesh_keys: model name -> the key of its lattice (mesh
    models only). Every file is written into a hidden staging folder inside `out` and moved
    into place at the end, so a failed export leaves no partial page."""
    if not models:
        raise NCA3DError("no models to export; pass --model NAME[,NAME...] or --library")
    lattices, mesh_keys = lattices or {}, mesh_keys or {}
    folder = prepare_out_dir(out)
    for stale in folder.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        for name in PAGE_FILES:
            shutil.copyfile(PAGE_FOLDER / name, staging / name)
        (staging / "shaders.js").write_text(_script("NCA3D.registerShaders", shader_sources()))
        manifest, used = [], set()
        for number, (name, model) in enumerate(models):
            stem = safe_name(name)
            while stem in used:
                stem += "_"
            used.add(stem)
            key = mesh_keys.get(name) if model.config.domain == "mesh" else None
            if model.config.domain == "mesh" and key not in lattices:
                raise NCA3DError(f"mesh model '{name}' has no lattice to grow on")
            data = model_data(model, name, key)
            (staging / f"model_{stem}.js").write_text(_script("NCA3D.registerModel", data))
            manifest.append({"name": name, "domain": model.config.domain, "outputs": model.config.outputs,
                             "file": f"model_{stem}.js",
                             "lattice_file": f"lattice_{safe_name(key)}.js" if key else None,
                             "provenance": data["provenance"]})
            if progress is not None:
                progress.update("export", (number + 1) / (len(models) + len(lattices)), name)
        for number, (key, lattice) in enumerate(lattices.items()):
            (staging / f"lattice_{safe_name(key)}.js").write_text(_script("NCA3D.registerLattice",
                                                                         lattice_data(lattice)))
            if progress is not None:
                progress.update("export", (len(models) + number + 1) / (len(models) + len(lattices)), key)
        (staging / "manifest.js").write_text(_script("NCA3D.registerManifest", {"models": manifest}))
        files = []
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
            files.append(str(folder / path.name))
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def page_size(files: list[str]) -> int:
    """Total bytes of the written files."""
    return sum(Path(f).stat().st_size for f in files)


@torch.no_grad()
def mesh_lattice_for(model, mesh: str | None) -> MeshLatticeData:
    """The lattice a mesh model grows on in the page: its training icosphere (mesh None), or a
    demo mesh / mesh file remeshed to `nca3d texture`'s default cell count (render.maps.default_cells)."""
    from ..lattices.mesh import icosphere

    if not mesh:
        frequency = model.config.icosphere_frequency
        vertices, faces = icosphere(frequency)
        return MeshLatticeData(f"icosphere{frequency}", vertices, faces, f"icosphere frequency {frequency}")
    from ..ops.demo_meshes import load_demo_or_mesh
    from ..ops.remesh import uniform_lattice

    cells = default_cells(model)
    loaded = load_demo_or_mesh(mesh)
    lattice = uniform_lattice(loaded.vertices, loaded.faces, cells=cells)
    vertices = lattice.vertices - (lattice.vertices.max(axis=0) + lattice.vertices.min(axis=0)) / 2
    return MeshLatticeData(f"{safe_name(Path(mesh).stem)}_{cells}", vertices, lattice.faces,
                           f"{mesh} remeshed to {len(vertices)} cells")


def export_web(model_paths: list[tuple[str, str]], out: str | os.PathLike, mesh: str | None = None,
               progress=None) -> list[str]:
    """Load models [(name, path)], build the mesh lattices they need, write the page."""
    from ..io.model_file import load_model

    models, lattices, keys = [], {}, {}
    by_request: dict[tuple, str] = {}
    for name, path in model_paths:
        model = load_model(path, device="cpu")
        models.append((name, model))
        if model.config.domain == "mesh":
            # a mesh remeshed to the same cell count serves every model asking for it; else the training icosphere
            request = (mesh, default_cells(model)) if mesh else ("", model.config.icosphere_frequency)
            if request not in by_request:
                if progress is not None:
                    progress.update("lattice", 0.0, f"lattice for {name}", force=True)
                lattice = mesh_lattice_for(model, mesh)
                lattices[lattice.key] = lattice
                by_request[request] = lattice.key
            keys[name] = by_request[request]
    return write_web(models, out, lattices, keys, progress)
