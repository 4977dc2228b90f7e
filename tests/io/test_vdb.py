"""Tests for nca3d.io.vdb: written files are proven valid by real third-party readers.

Readers (each group skips, with the reason, only when its reader cannot be imported):

1. ``tinyvdb`` (``pip install tinyvdb``), in this interpreter.
2. OpenVDB 12's own Python module, as bundled in Blender's ``bpy`` wheel, and
3. Blender itself (``bpy``: volume datablock, grid loading, Volume-to-Mesh modifier).

``bpy==5.0.1`` needs Python 3.11 and numpy < 2, so it normally lives in its own venv::

    python3.11 -m venv /tmp/bpyenv && /tmp/bpyenv/bin/pip install bpy==5.0.1 'numpy<2'
    NCA3D_BPY_PYTHON=/tmp/bpyenv/bin/python python -m pytest tests/io/test_vdb.py

Groups 2 and 3 run their reader in a subprocess: this interpreter if it can import ``openvdb``,
``pyopenvdb`` or ``bpy`` itself, else the python named by ``NCA3D_BPY_PYTHON``. The subprocess only
reads and dumps what it read (arrays as .npy, the rest as JSON); every assertion is made here.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nca3d.errors import NCA3DError
from nca3d.io import vdb as vdbmod
from nca3d.io.vdb import fit_to_box, read_vdb_info, write_vdb
from tests.conftest import optional_import

# --------------------------------------------------------------------------- test volumes


def _blob(shape, centre, width, cutoff=0.05):
    idx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum((i - c) ** 2 for i, c in zip(idx, centre, strict=True))
    d = np.exp(-r2 / (2.0 * width**2)).astype(np.float32)
    d[d < cutoff] = 0.0
    return d


def _make_cases() -> dict:
    rng = np.random.default_rng(1234)
    cases = {}

    # Small sparse blob, sizes not multiples of 8, non-zero origin, density + colour.
    d = _blob((20, 17, 13), (9, 8, 6), 2.5)
    color = np.stack([d, 0.5 * d, rng.uniform(0.1, 1.0, d.shape).astype(np.float32) * (d > 0)], axis=-1)
    cases["blob"] = dict(grids={"density": d, "color": color}, kwargs=dict(voxel_size=0.25, origin=(1.0, -2.0, 0.5)))

    # Fully dense 16^3 (every voxel active, 8 full leaves), placed with fit_to_box.
    vs, org = fit_to_box((16, 16, 16), (-0.8, -0.8, -0.8), (0.8, 0.8, 0.8))
    dense = rng.uniform(0.05, 1.0, (16, 16, 16)).astype(np.float32)
    cases["dense16"] = dict(grids={"density": dense}, kwargs=dict(voxel_size=vs, origin=org))

    # Several grids, per-axis voxel size, negative values, an explicit class, a -0.0 voxel.
    shape = (24, 10, 9)
    d = _blob(shape, (12, 5, 4), 3.0)
    temp = rng.normal(0.0, 10.0, shape).astype(np.float32)
    temp[:, :, :3] = 0.0
    temp[5, 5, 5] = -0.0  # equal to the background: inactive, reads back as +0.0
    vel = np.zeros(shape + (3,), np.float32)
    vel[4:20, 2:8, 3:7] = rng.normal(0.0, 1.0, (16, 6, 4, 3)).astype(np.float32)
    vel[10, 5, 5] = (0.0, 0.0, -3.5)  # one zero component, still active
    mask = (d > 0.5).astype(np.float32)
    cases["multi"] = dict(
        grids={"density": d, "color": vel, "temperature": temp, "mask": mask},
        kwargs=dict(voxel_size=(0.1, 0.2, 0.3), origin=(-1.0, 0.25, 3.0), grid_classes={"mask": "fog volume"}),
    )

    # All background: a valid file whose tree has no nodes below the root.
    cases["empty"] = dict(grids={"density": np.zeros((9, 9, 9), np.float32)}, kwargs={})

    # Non-zero backgrounds (a clamped SDF stored as a level set, a vector field).
    sdf = np.sqrt(sum((i - 5.5) ** 2 for i in np.meshgrid(*[np.arange(12)] * 3, indexing="ij"))) - 3.0
    sdf = np.clip(sdf, -2.0, 2.0).astype(np.float32)
    flow = np.zeros((12, 12, 12, 3), np.float32)
    flow[...] = (0.5, 0.0, 0.0)
    flow[3:6, 3:9, 2:4] = rng.normal(0.0, 1.0, (3, 6, 2, 3)).astype(np.float32)
    cases["background"] = dict(
        grids={"sdf": sdf, "flow": flow},
        kwargs=dict(background={"sdf": 2.0, "flow": (0.5, 0.0, 0.0)}, grid_classes={"sdf": "level set"},
                    voxel_size=0.5),
    )

    # Wider than one root child (4096 voxels): several root nodes, written in order.
    wide = np.zeros((4100, 2, 3), np.float32)
    wide[3, 1, 2], wide[4097, 0, 0], wide[4099, 1, 2] = 0.5, 1.0, 0.25
    cases["wide"] = dict(grids={"density": wide}, kwargs=dict(voxel_size=0.01))

    # Scattered voxels over several 128^3 internal nodes along x and y (so tree order differs
    # from raster order), stored without zlib.
    spread = np.zeros((200, 140, 30), np.float32)
    pts = rng.integers(0, (200, 140, 30), size=(300, 3))
    spread[pts[:, 0], pts[:, 1], pts[:, 2]] = rng.uniform(0.1, 1.0, 300).astype(np.float32)
    cases["spread"] = dict(grids={"density": spread}, kwargs=dict(voxel_size=0.05, compression="none"))
    return cases


def _expected(case: dict) -> dict:
    """Per grid: what a reader must return (inactive voxels = background), active mask, class."""
    kw = case["kwargs"]
    bgs = kw.get("background") or {}
    classes = kw.get("grid_classes") or {}
    out = {}
    for name, values in case["grids"].items():
        vec = values.ndim == 4
        bg = np.asarray(bgs.get(name, 0.0), np.float32)
        if vec and bg.ndim == 0:
            bg = np.repeat(bg, 3)
        active = values != bg
        if vec:
            active = active.any(axis=-1)
        readback = np.where(active[..., None] if vec else active, values, bg).astype(np.float32)
        cls = classes.get(name, "fog volume" if (name == "density" and not vec) else "unknown")
        out[name] = dict(values=readback, active=active, vec=vec, background=bg, cls=cls)
    vs = np.broadcast_to(np.asarray(kw.get("voxel_size", 1.0), np.float64), (3,))
    return dict(grids=out, voxel_size=vs, origin=np.asarray(kw.get("origin", (0.0, 0.0, 0.0)), np.float64))


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Write every case once; return case -> dict(path, case, expected, npy paths)."""
    folder = tmp_path_factory.mktemp("vdb")
    out = {}
    for name, case in _make_cases().items():
        path = folder / f"{name}.vdb"
        write_vdb(path, case["grids"], **case["kwargs"])
        npys = {}
        for g, values in case["grids"].items():
            npys[g] = str(folder / f"{name}__{g}.npy")
            np.save(npys[g], values)
        out[name] = dict(path=str(path), case=case, expected=_expected(case), npy=npys)
    return out


CASE_NAMES = list(_make_cases())


# --------------------------------------------------------------------------- own inspector


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_header_metadata_and_transform(written, case_name):
    w = written[case_name]
    info = read_vdb_info(w["path"])
    exp = w["expected"]
    assert info["file_version"] == 224 and info["library_version"] == vdbmod.LIBRARY_VERSION
    assert len(info["uuid"]) == 36 and info["metadata"] == {"creator": "nca3d"}
    assert [g["name"] for g in info["grids"]] == list(w["case"]["grids"])
    for g in info["grids"]:
        e = exp["grids"][g["name"]]
        assert g["type"] == ("Tree_vec3s_5_4_3" if e["vec"] else "Tree_float_5_4_3")
        assert g["instance_parent"] == ""
        meta = g["metadata"]
        assert meta["class"] == e["cls"] and meta["name"] == g["name"]
        assert meta["file_voxel_count"] == int(e["active"].sum())
        assert meta["is_saved_as_half_float"] is False and meta["is_local_space"] is False
        assert meta.get("vector_type") == ("invariant" if e["vec"] else None)
        if e["active"].any():
            idx = np.argwhere(e["active"])
            assert meta["file_bbox_min"] == tuple(idx.min(0)) and meta["file_bbox_max"] == tuple(idx.max(0))
        uniform = len(set(exp["voxel_size"].tolist())) == 1
        assert g["map_type"] == ("UniformScaleTranslateMap" if uniform else "ScaleTranslateMap")
        assert np.allclose(g["voxel_size"], exp["voxel_size"]) and np.allclose(g["origin"], exp["origin"])
        assert g["grid_pos"] < g["block_pos"] <= g["end_pos"]
    assert info["grids"][-1]["end_pos"] == os.path.getsize(w["path"])


def _decode_own_tree(path, index):
    """Independent decoder of the tree layout write_vdb produces (no tiles, active-value
    compression, zip or raw). Also checks what seekable readers skip: the buffer section repeats
    each leaf's value mask, which streamed (non-seekable) OpenVDB readers rely on."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    g = read_vdb_info(path)["grids"][index]
    vec = g["type"] == "Tree_vec3s_5_4_3"
    vsize = 12 if vec else 4
    pos = g["grid_pos"]

    def take(n):
        nonlocal pos
        chunk = data[pos : pos + n]
        assert len(chunk) == n, "truncated"
        pos += n
        return chunk

    def u32():
        return struct.unpack("<I", take(4))[0]

    def bits(n_bytes):
        return np.unpackbits(np.frombuffer(take(n_bytes), np.uint8), bitorder="little").astype(bool)

    def values(count):
        if flags & 1:
            (n,) = struct.unpack("<q", take(8))
            raw = zlib.decompress(take(n)) if n > 0 else take(-n)
        else:
            raw = take(count * vsize)
        assert len(raw) == count * vsize
        return np.frombuffer(raw, "<f4").reshape(count, vsize // 4)

    flags = u32()
    assert flags in (2, 3)  # active values, with or without zip
    for _ in range(u32()):  # grid metadata
        take(u32()), take(u32()), take(u32())
    take(u32())
    take(6 * 24)  # map type name and its six 3-vectors
    assert struct.unpack("<i", take(4))[0] == 1
    background = np.frombuffer(take(vsize), "<f4")
    n_tiles, n_children = u32(), u32()
    assert n_tiles == 0
    leaves = []
    for _ in range(n_children):
        root = np.array(struct.unpack("<3i", take(12)))
        child5, value5 = bits(4096), bits(4096)
        assert not value5.any() and take(1) == b"\0" and len(values(0)) == 0
        for n5 in np.flatnonzero(child5):
            o4 = root + 128 * np.array([(n5 >> 10) & 31, (n5 >> 5) & 31, n5 & 31])
            child4, value4 = bits(512), bits(512)
            assert not value4.any() and take(1) == b"\0" and len(values(0)) == 0
            for n4 in np.flatnonzero(child4):
                leaves.append((o4 + 8 * np.array([(n4 >> 8) & 15, (n4 >> 4) & 15, n4 & 15]), bits(64)))
    assert pos == g["block_pos"]
    out = []
    for origin, mask in leaves:
        assert np.array_equal(bits(64), mask), "buffer-section mask differs from the topology mask"
        assert take(1) == b"\0"
        out.append((tuple(int(v) for v in origin), mask.reshape(8, 8, 8), values(int(mask.sum()))))
    assert pos == g["end_pos"]
    return background, out


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_tree_layout_decodes_to_the_input(written, case_name):
    w = written[case_name]
    for index, e in enumerate(w["expected"]["grids"].values()):
        background, leaves = _decode_own_tree(w["path"], index)
        assert _bits_equal(background, np.atleast_1d(e["background"]))
        dims = e["active"].shape
        comps = 3 if e["vec"] else 1
        got = np.empty(tuple(-(-n // 8) * 8 for n in dims) + (comps,), np.float32)
        got[...] = np.asarray(e["background"]).reshape(-1)
        got_active = np.zeros(got.shape[:3], bool)
        for (x, y, z), mask, vals in leaves:
            got_active[x : x + 8, y : y + 8, z : z + 8] = mask
            got[x : x + 8, y : y + 8, z : z + 8][mask] = vals
        assert np.array_equal(got_active[: dims[0], : dims[1], : dims[2]], e["active"])
        outside = got_active.copy()
        outside[: dims[0], : dims[1], : dims[2]] = False
        assert not outside.any()
        want = e["values"].reshape(dims + (comps,))
        assert _bits_equal(got[: dims[0], : dims[1], : dims[2]], want)
        keys = [_traversal_key(o) for o, _, _ in leaves]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_fit_to_box():
    vs, origin = fit_to_box((64, 64, 64), (-1, -1, -1), (1, 1, 1))
    assert vs == pytest.approx(2 / 64) and origin == pytest.approx((-1 + vs / 2,) * 3)
    # first and last voxel cells touch the box faces
    assert np.allclose(np.asarray(origin) - vs / 2, -1) and np.allclose(np.asarray(origin) + 63.5 * vs, 1)
    vs, origin = fit_to_box((10, 20, 5), (0, 0, 0), (1, 1, 1))  # longest axis fills, others centred
    assert vs == pytest.approx(0.05)
    assert origin == pytest.approx((0.5 - 4.5 * 0.05, 0.025, 0.5 - 2 * 0.05))
    with pytest.raises(NCA3DError):
        fit_to_box((4, 4, 4), (1, 1, 1), (0, 2, 2))


# --------------------------------------------------------------------------- tinyvdb (in process)


def _tinyvdb():
    return optional_import("tinyvdb", "tinyvdb is not installed (pip install tinyvdb)")


def _call(obj, attr):
    value = getattr(obj, attr)
    return value() if callable(value) else value


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_tinyvdb_reads_names_metadata_transform_and_leaves(written, case_name):
    tinyvdb = _tinyvdb()
    w, exp = written[case_name], written[case_name]["expected"]
    f = tinyvdb.open(w["path"])
    f.read_grids()
    header = f.header
    assert header["file_version"] == 224 and header["has_grid_offsets"]
    count = _call(f, "grid_count")
    assert [f.grid_name(i) for i in range(count)] == list(w["case"]["grids"])
    for i in range(count):
        g = f.grid(i)
        e = exp["grids"][g.name]
        assert g.type_name == ("Tree_vec3s_5_4_3" if e["vec"] else "Tree_float_5_4_3")
        assert g.metadata["class"] == e["cls"]
        assert g.metadata["file_voxel_count"] == int(e["active"].sum())
        xf = g.transform
        assert np.allclose(xf["voxel_size"], exp["voxel_size"]) and np.allclose(xf["translation"], exp["origin"])
        if not e["vec"]:
            assert g.float_background() == float(e["background"])

        # Every leaf: all 512 values, inactive ones restored as the background. tinyvdb 0.9.0
        # reports (0, 0, 0) as every leaf's origin (for files written by OpenVDB too), so leaves
        # are matched in tree traversal order: root children by (x, y, z), then each internal
        # node's children by mask offset (x-major) -- the order OpenVDB itself writes.
        values, active, bg = e["values"], e["active"], e["background"]
        comps = 3 if e["vec"] else 1
        dims = active.shape
        padded = tuple(-(-n // 8) * 8 for n in dims)
        full = np.empty(padded + values.shape[3:], np.float32)
        full[...] = bg
        full[: dims[0], : dims[1], : dims[2]] = values
        full_active = np.zeros(padded, bool)
        full_active[: dims[0], : dims[1], : dims[2]] = active
        blocks = full_active.reshape(padded[0] // 8, 8, padded[1] // 8, 8, padded[2] // 8, 8).any(axis=(1, 3, 5))
        origins = sorted((tuple(int(v) * 8 for v in ijk) for ijk in np.argwhere(blocks)), key=_traversal_key)
        tree = g.tree
        leaves = [tree.node(n) for n in range(tree.num_nodes) if tree.node(n).type == "leaf"]
        assert len(leaves) == len(origins), f"{case_name}/{g.name}: leaf count"
        for node, (x, y, z) in zip(leaves, origins, strict=True):
            got = np.frombuffer(node.data, "<f4").reshape(8, 8, 8, comps)
            ref = full[x : x + 8, y : y + 8, z : z + 8].reshape(8, 8, 8, comps)
            assert _bits_equal(got, ref), f"{case_name}/{g.name}: leaf at {(x, y, z)} differs"

        # tinyvdb's dense/sparse exports handle float grids only and, in 0.9.0, drop voxels of
        # trees with several 128^3 internal nodes and fill voxels outside leaves with 0 rather
        # than the background (it does the same on files written by OpenVDB 12): check them
        # where they are reliable.
        if not e["vec"] and max(dims) <= 128 and float(bg) == 0.0:
            dense = g.materialize_dense((0, 0, 0), dims)
            got = np.frombuffer(dense.to_bytes(), "<f4").reshape(dims, order="F")  # x fastest
            assert _bits_equal(got, values), f"{case_name}/{g.name}: dense values differ"
            assert g.active_voxel_count() == int(active.sum())
            if active.any():
                sp = g.to_sparse()
                coords = np.frombuffer(sp["coords"], "<i4").reshape(-1, 3)
                vals = np.frombuffer(sp["values"], "<f4")
                order = np.lexsort(coords.T[::-1])
                assert np.array_equal(coords[order], np.argwhere(active))  # argwhere is x-major sorted
                assert _bits_equal(vals[order], values[active])


def _traversal_key(origin):
    x, y, z = origin
    return (x >> 12, y >> 12, z >> 12,                       # root child
            (x >> 7) & 31, (y >> 7) & 31, (z >> 7) & 31,     # 128^3 node within the 4096^3 node
            (x >> 3) & 15, (y >> 3) & 15, (z >> 3) & 15)     # leaf within the 128^3 node


# --------------------------------------------------------------------------- OpenVDB / Blender (subprocess)

_FIND_OPENVDB = r'''
import glob, importlib, importlib.util, os, sys

def find_openvdb():
    for name in ("openvdb", "pyopenvdb"):
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    spec = importlib.util.find_spec("bpy")  # Blender's wheel bundles OpenVDB's module
    for root in (spec.submodule_search_locations or []) if spec else []:
        for site in sorted(glob.glob(os.path.join(root, "*", "python", "lib", "python3*", "site-packages"))):
            if glob.glob(os.path.join(site, "openvdb*")):
                sys.path.insert(0, site)
                return importlib.import_module("openvdb")
    return None
'''

_OPENVDB_DUMP = _FIND_OPENVDB + r'''
import json, traceback
import numpy as np

manifest, out_dir = json.load(open(sys.argv[1])), sys.argv[2]
vdb = find_openvdb()
if vdb is None:
    json.dump({"unavailable": "no openvdb/pyopenvdb module and no bpy with a bundled openvdb in "
               + sys.executable}, open(os.path.join(out_dir, "result.json"), "w"))
    sys.exit(0)

def plain(v):
    if isinstance(v, (tuple, list)):
        return [plain(x) for x in v]
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)

result = {"library_version": list(vdb.LIBRARY_VERSION), "cases": {}}
for case, spec in manifest.items():
    res = result["cases"][case] = {"error": None, "grids": {}}
    try:
        res["file_metadata"] = {k: plain(v) for k, v in vdb.readMetadata(spec["file"]).items()}
        res["meta_only"] = {
            g.name: {"class": str(g.gridClass), "metadata": {k: plain(v) for k, v in g.metadata.items()}}
            for g in vdb.readAllGridMetadata(spec["file"])
        }
        for name, g_spec in spec["grids"].items():
            g = vdb.read(spec["file"], name)
            arr = np.zeros(g_spec["shape"], np.float32)
            g.copyToArray(arr)
            np.save(os.path.join(out_dir, case + "__" + name + "__values.npy"), arr)
            on = [(it.min, it.max, it.count, it.depth) for it in g.citerOnValues()]
            np.save(os.path.join(out_dir, case + "__" + name + "__active.npy"),
                    np.array([m for m, _, c, _ in on if c == 1], np.int64).reshape(-1, 3))
            t = g.transform
            probes = [(0, 0, 0), (1, 2, 3), (-4, 5, 17)]
            res["grids"][name] = {
                "type": type(g).__name__, "value_type": g.valueTypeName, "class": str(g.gridClass),
                "vector_type": str(g.vectorType), "active_voxel_count": int(g.activeVoxelCount()),
                "tiles": sum(1 for _, _, c, _ in on if c != 1), "leaf_count": int(g.leafCount()),
                "background": plain(g.background), "half": bool(g.saveFloatAsHalf),
                "bbox": plain(g.evalActiveVoxelBoundingBox()), "map_type": t.typeName,
                "voxel_size": list(t.voxelSize()),
                "index_to_world": [[p, list(t.indexToWorld(p))] for p in probes],
                "metadata": {k: plain(v) for k, v in g.metadata.items()},
            }
    except Exception:
        res["error"] = traceback.format_exc()
json.dump(result, open(os.path.join(out_dir, "result.json"), "w"))
'''

_BLENDER_DUMP = _FIND_OPENVDB + r'''
import json, traceback
manifest, out_dir = json.load(open(sys.argv[1])), sys.argv[2]
try:
    import bpy
except ImportError as exc:
    json.dump({"unavailable": "cannot import bpy in %s (%s)" % (sys.executable, exc)},
              open(os.path.join(out_dir, "result.json"), "w"))
    sys.exit(0)
import numpy as np

scene = bpy.context.scene

def mesh_of(path, grid, threshold):
    """Blender's Volume to Mesh modifier on a volume object loaded from path: sorted vertices."""
    vol = bpy.data.volumes.new("src")
    vol.filepath = path
    vob = bpy.data.objects.new("src", vol)
    scene.collection.objects.link(vob)
    me = bpy.data.meshes.new("mesh")
    mob = bpy.data.objects.new("mesh", me)
    scene.collection.objects.link(mob)
    mod = mob.modifiers.new("v2m", "VOLUME_TO_MESH")
    mod.object, mod.grid_name, mod.threshold, mod.resolution_mode = vob, grid, threshold, "GRID"
    ev = mob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    m = ev.to_mesh()
    co = np.array([v.co[:] for v in m.vertices], np.float64).reshape(-1, 3)
    ev.to_mesh_clear()
    return co[np.lexsort(co.T[::-1])] if len(co) else co

result = {"version": bpy.app.version_string, "cases": {}}
for case, spec in manifest.items():
    res = result["cases"][case] = {"error": None}
    try:
        vol = bpy.data.volumes.new(case)
        vol.filepath = spec["file"]
        res["load"] = bool(vol.grids.load())
        res["is_loaded"] = bool(vol.grids.is_loaded)
        res["error_message"] = vol.grids.error_message
        res["grids"] = {}
        for g in vol.grids:
            res["grids"][g.name] = {"data_type": g.data_type, "channels": g.channels, "load": bool(g.load()),
                                    "matrix": [list(row) for row in g.matrix_object]}
        ob = bpy.data.objects.new(case, vol)
        scene.collection.objects.link(ob)
        ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        res["bound_box"] = [list(v) for v in ev.bound_box]
        mesh = spec.get("mesh")
        if mesh:
            ours = mesh_of(spec["file"], mesh["grid"], mesh["threshold"])
            np.save(os.path.join(out_dir, case + "__mesh.npy"), ours)
            vdb = find_openvdb()  # the same volume written by OpenVDB itself, meshed the same way
            if vdb is not None:
                g = vdb.FloatGrid()
                g.copyFromArray(np.load(mesh["npy"]).astype(np.float32))
                g.name = mesh["grid"]
                t = vdb.createLinearTransform(voxelSize=mesh["voxel_size"])
                t.postTranslate(tuple(mesh["origin"]))
                g.transform = t
                ref_path = os.path.join(out_dir, case + "__openvdb_ref.vdb")
                vdb.write(ref_path, grids=[g])
                ref_mesh = mesh_of(ref_path, mesh["grid"], mesh["threshold"])
                np.save(os.path.join(out_dir, case + "__mesh_ref.npy"), ref_mesh)
    except Exception:
        res["error"] = traceback.format_exc()
json.dump(result, open(os.path.join(out_dir, "result.json"), "w"))
'''


def _reader_python(modules) -> str | None:
    if any(importlib.util.find_spec(m) is not None for m in modules):
        return sys.executable
    env = os.environ.get("NCA3D_BPY_PYTHON")
    return env if env else None


def _run_dump(script: str, manifest: dict, out_dir, python: str) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "script.py").write_text(textwrap.dedent(script))
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([python, str(out_dir / "script.py"), str(out_dir / "manifest.json"), str(out_dir)],
                          capture_output=True, text=True, timeout=600)
    result_file = out_dir / "result.json"
    if proc.returncode != 0 or not result_file.exists():
        pytest.fail(f"reader subprocess {python} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    if "unavailable" in result:
        pytest.skip(result["unavailable"])
    return result


_NO_READER = ("no Python with OpenVDB's module: install bpy==5.0.1 (Python 3.11, numpy<2) in a venv and set "
              "NCA3D_BPY_PYTHON to its python, e.g. NCA3D_BPY_PYTHON=/tmp/bpyenv/bin/python")


@pytest.fixture(scope="module")
def openvdb_dump(written, tmp_path_factory):
    python = _reader_python(("openvdb", "pyopenvdb", "bpy"))
    if python is None:
        pytest.skip(_NO_READER)
    manifest = {
        case: {"file": w["path"], "grids": {n: {"shape": list(v.shape)} for n, v in w["case"]["grids"].items()}}
        for case, w in written.items()
    }
    out = tmp_path_factory.mktemp("openvdb_dump")
    return _run_dump(_OPENVDB_DUMP, manifest, out, python), out


@pytest.fixture(scope="module")
def blender_dump(written, tmp_path_factory):
    python = _reader_python(("bpy",))
    if python is None:
        pytest.skip(_NO_READER.replace("OpenVDB's module", "bpy"))
    manifest = {}
    for case, w in written.items():
        manifest[case] = {"file": w["path"]}
        grids, kw = w["case"]["grids"], w["case"]["kwargs"]
        vs = kw.get("voxel_size", 1.0)
        if "density" in grids and np.ndim(vs) == 0 and w["expected"]["grids"]["density"]["active"].any() \
                and grids["density"].shape[0] < 1000:
            manifest[case]["mesh"] = {"grid": "density", "threshold": 0.3, "npy": w["npy"]["density"],
                                      "voxel_size": float(vs), "origin": list(kw.get("origin", (0.0, 0.0, 0.0)))}
    out = tmp_path_factory.mktemp("blender_dump")
    return _run_dump(_BLENDER_DUMP, manifest, out, python), out


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_openvdb_reads_every_grid_exactly(written, openvdb_dump, case_name):
    result, out = openvdb_dump
    res = result["cases"][case_name]
    assert res["error"] is None, res["error"]
    w, exp = written[case_name], written[case_name]["expected"]
    assert res["file_metadata"] == {"creator": "nca3d"}
    assert set(res["meta_only"]) == set(w["case"]["grids"])
    for name, e in exp["grids"].items():
        g = res["grids"][name]
        assert res["meta_only"][name]["class"] == e["cls"] and g["class"] == e["cls"]
        assert g["type"] == ("Vec3SGrid" if e["vec"] else "FloatGrid")
        assert g["value_type"] == ("vec3s" if e["vec"] else "float")
        if e["vec"]:
            assert g["vector_type"] == "invariant"
        assert g["half"] is False
        assert np.allclose(g["background"], e["background"])
        # transform: voxel size and index -> world
        uniform = len(set(exp["voxel_size"].tolist())) == 1
        assert g["map_type"] == ("UniformScaleTranslateMap" if uniform else "ScaleTranslateMap")
        assert np.allclose(g["voxel_size"], exp["voxel_size"])
        for ijk, world in g["index_to_world"]:
            assert np.allclose(world, exp["origin"] + np.asarray(ijk) * exp["voxel_size"])
        # topology: active voxels exactly where values differ from the background, no tiles
        active = e["active"]
        assert g["active_voxel_count"] == int(active.sum()) and g["tiles"] == 0
        got_active = np.load(out / f"{case_name}__{name}__active.npy")
        got_active = got_active[np.lexsort(got_active.T[::-1])] if len(got_active) else got_active.reshape(0, 3)
        assert np.array_equal(got_active, np.argwhere(active).reshape(-1, 3))
        if active.any():
            idx = np.argwhere(active)
            assert g["bbox"] == [idx.min(0).tolist(), idx.max(0).tolist()]
        else:
            assert g["leaf_count"] == 0
        # values: every voxel, bit for bit
        values = np.load(out / f"{case_name}__{name}__values.npy")
        assert _bits_equal(values, e["values"]), f"{case_name}/{name}: values differ"


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_blender_loads_volume(written, blender_dump, case_name):
    result, out = blender_dump
    res = result["cases"][case_name]
    assert res["error"] is None, res["error"]
    assert res["load"] and res["is_loaded"] and res["error_message"] == ""
    w, exp = written[case_name], written[case_name]["expected"]
    assert set(res["grids"]) == set(w["case"]["grids"])
    for name, e in exp["grids"].items():
        g = res["grids"][name]
        assert g["data_type"] == ("VECTOR_FLOAT" if e["vec"] else "FLOAT")
        assert g["channels"] == (3 if e["vec"] else 1) and g["load"]
        want = np.eye(4)
        want[:3, :3] = np.diag(exp["voxel_size"])
        want[:3, 3] = exp["origin"]
        assert np.allclose(g["matrix"], want, atol=1e-6)
    # Blender's bounds come from the grids' trees: they contain every active voxel and lie
    # within the (half-voxel padded) bounds of the written leaves.
    act = np.zeros(next(iter(exp["grids"].values()))["active"].shape, bool)
    for e in exp["grids"].values():
        act |= e["active"]
    if act.any():
        bb = np.asarray(res["bound_box"])
        lo, hi = bb.min(0), bb.max(0)
        idx = np.argwhere(act)
        vs, org = exp["voxel_size"], exp["origin"]
        tol = 1e-4 * vs
        assert np.all(lo <= org + (idx.min(0) - 0.5) * vs + tol) and np.all(hi >= org + (idx.max(0) + 0.5) * vs - tol)
        leaf_lo, leaf_hi = (idx.min(0) // 8) * 8, (idx.max(0) // 8) * 8 + 8
        assert np.all(lo >= org + (leaf_lo - 0.5) * vs - tol) and np.all(hi <= org + (leaf_hi - 0.5) * vs + tol)


@pytest.mark.parametrize("case_name", ["blob", "dense16"])
def test_blender_meshes_density_like_openvdb_file(written, blender_dump, case_name):
    """Blender's Volume to Mesh gives the same surface for our file as for OpenVDB's own file."""
    result, out = blender_dump
    assert result["cases"][case_name]["error"] is None, result["cases"][case_name]["error"]
    ours = np.load(out / f"{case_name}__mesh.npy")
    assert len(ours) > 0
    ref_file = out / f"{case_name}__mesh_ref.npy"
    if ref_file.exists():
        ref = np.load(ref_file)
        assert ours.shape == ref.shape and np.allclose(ours, ref, atol=1e-6)
    # vertices lie where the density crosses the threshold: within the active region
    e = written[case_name]["expected"]
    idx = np.argwhere(e["grids"]["density"]["values"] >= 0.3)
    vs, org = e["voxel_size"], e["origin"]
    assert np.all(ours.min(0) >= org + (idx.min(0) - 1) * vs - 1e-6)
    assert np.all(ours.max(0) <= org + (idx.max(0) + 1) * vs + 1e-6)


# --------------------------------------------------------------------------- inputs, errors, atomicity


def _good():
    return {"density": np.ones((4, 4, 4), np.float32)}


@pytest.mark.parametrize(
    "grids, kwargs, message",
    [
        ({"density": np.ones((4, 4), np.float32)}, {}, "shape must be"),
        ({"density": np.ones((4, 4, 4, 4), np.float32)}, {}, "shape must be"),
        ({"density": np.ones((4, 0, 4), np.float32)}, {}, "at least 1 voxel"),
        ({"density": np.ones((4, 4, 4), np.int32)}, {}, "floating point"),
        ({"density": np.ones((4, 4, 4), bool)}, {}, "floating point"),
        ({"density": np.ones((4, 4, 4), np.complex64)}, {}, "floating point"),
        ({"density": np.array([[[1.0, np.nan]]], np.float32)}, {}, "NaN or infinite"),
        ({"density": np.array([[[np.inf]]], np.float32)}, {}, "NaN or infinite"),
        ({"density": np.full((2, 2, 2), 1e39)}, {}, "float32 range"),
        ({"": np.ones((4, 4, 4), np.float32)}, {}, "non-empty"),
        ({"   ": np.ones((4, 4, 4), np.float32)}, {}, "non-empty"),
        ({3: np.ones((4, 4, 4), np.float32)}, {}, "non-empty strings"),
        ({"a\x1eb": np.ones((4, 4, 4), np.float32)}, {}, "control character"),
        ({}, {}, "at least one grid"),
        ([np.ones((4, 4, 4))], {}, "dict of grid name"),
        (None, {"voxel_size": 0.0}, "positive"),
        (None, {"voxel_size": -1.0}, "positive"),
        (None, {"voxel_size": float("nan")}, "finite"),
        (None, {"voxel_size": (1.0, 2.0)}, "3 numbers"),
        (None, {"origin": (0.0, 0.0)}, "3 numbers"),
        (None, {"origin": (0.0, float("inf"), 0.0)}, "finite"),
        (None, {"origin": "abc"}, "3 numbers"),
        (None, {"grid_classes": {"density": "smoke"}}, "unknown grid class"),
        (None, {"grid_classes": {"other": "fog volume"}}, "not in grids"),
        (None, {"background": float("nan")}, "background must be finite"),
        (None, {"background": (1.0, 2.0)}, "background must be a number"),
        (None, {"background": {"nope": 1.0}}, "not in grids"),
        (None, {"compression": "blosc"}, "unknown VDB compression"),
        (None, {"zlib_level": 0}, "zlib_level"),
    ],
)
def test_bad_input_raises_one_line_error(tmp_path, grids, kwargs, message):
    path = tmp_path / "bad.vdb"
    with pytest.raises(NCA3DError, match=message) as info:
        write_vdb(path, _good() if grids is None else grids, **kwargs)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(NCA3DError, match="cannot write"):
        write_vdb(blocker / "out.vdb", _good())
    folder = tmp_path / "a_folder.vdb"  # destination is an existing directory
    folder.mkdir()
    with pytest.raises(NCA3DError, match="cannot write"):
        write_vdb(folder, _good())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder.vdb", "file.txt"]
    assert list(folder.iterdir()) == []


def test_atomic_write_leaves_only_the_file(tmp_path):
    path = tmp_path / "sub" / "out.vdb"  # missing folder is created
    write_vdb(path, _good())
    assert [p.name for p in path.parent.iterdir()] == ["out.vdb"]


@pytest.mark.parametrize("failure", [RuntimeError("boom"), OSError(errno.ENOSPC, "No space left on device")])
def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "out.vdb"
    real = vdbmod._write_grid
    calls = []

    def flaky(f, spec, *args):
        calls.append(spec["name"])
        if len(calls) == 2:
            f.write(b"partial data")
            raise failure
        return real(f, spec, *args)

    monkeypatch.setattr(vdbmod, "_write_grid", flaky)
    grids = {"density": np.ones((4, 4, 4), np.float32), "color": np.ones((4, 4, 4, 3), np.float32)}
    with pytest.raises(NCA3DError if isinstance(failure, OSError) else RuntimeError):
        write_vdb(path, grids)
    assert calls == ["density", "color"] and list(tmp_path.iterdir()) == []

    # An existing file is left untouched by a failed rewrite.
    monkeypatch.setattr(vdbmod, "_write_grid", real)
    write_vdb(path, grids)
    before = path.read_bytes()
    calls.clear()
    monkeypatch.setattr(vdbmod, "_write_grid", flaky)
    with pytest.raises((RuntimeError, NCA3DError)):
        write_vdb(path, grids)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.vdb"]


def test_accepts_float64_float16_and_torch(tmp_path):
    import torch

    base = _blob((9, 9, 9), (4, 4, 4), 2.0)
    grids = {"a": base.astype(np.float64), "b": base.astype(np.float16), "c": torch.from_numpy(base)}
    write_vdb(tmp_path / "t.vdb", grids)
    info = read_vdb_info(tmp_path / "t.vdb")
    counts = [g["metadata"]["file_voxel_count"] for g in info["grids"]]
    assert counts == [int((base != 0).sum())] * 3


def test_sparse_file_is_small_and_fast(tmp_path):
    """Only leaves with active voxels are stored; a 128^3 sparse volume writes quickly."""
    d = np.zeros((128, 128, 128), np.float32)
    d[40:56, 40:56, 40:56] = np.random.default_rng(0).uniform(0.1, 1.0, (16, 16, 16))
    t0 = time.perf_counter()
    write_vdb(tmp_path / "s.vdb", {"density": d}, compression="none")
    elapsed = time.perf_counter() - t0
    # the 16^3 block at 40..55 fills exactly 2x2x2 leaves: about 16 KB of values plus masks
    size = os.path.getsize(tmp_path / "s.vdb")
    assert size < 16 * 16 * 16 * 4 + 30_000
    assert elapsed < 5.0
