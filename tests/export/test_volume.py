"""Tests for nca3d.volume (`python -m nca3d.volume`): files, arrays, VDB transform, units, frames,
resume, chunked decoding, refusals and progress. Tiny 8^3 models keep the whole file fast.

The OpenVDB / Blender round trip reuses the reader subprocess helpers of tests/io/test_vdb.py
(set NCA3D_BPY_PYTHON to a python with bpy 5.0.1 to run it; it skips otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nca3d.commands.volume import main
from nca3d.core.dense import decode_volume, srgb_to_linear
from nca3d.core.nca import make_generator
from nca3d.errors import NCA3DError
from nca3d.export import volume as volmod
from nca3d.export.volume import generate_volume
from nca3d.io import atomic
from nca3d.io.model_file import save_model
from nca3d.io.vdb import read_vdb_info
from nca3d.lattices import Grid3D
from nca3d.memory import human_bytes
from nca3d.progress import Progress
from nca3d.render.volume import march_rays
from tests.conftest import optional_import, random_model

GRID = [8, 8, 8]


def _volume_model(**config):
    """A random volume model whose state grows from the all-zero seed (non-zero update bias)."""
    torch.manual_seed(0)
    config.setdefault("grid_size", GRID)
    model = random_model("volume", **config)
    with torch.no_grad():
        model.nca.perceive_to_hidden.bias.normal_(std=0.2)
    return model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "vol.nca3d"
    save_model(_volume_model(), path)
    return path


def _run(capsys, *args):
    """main() in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _grown(model, steps, seed=0, lattice=None):
    lattice = lattice or Grid3D(tuple(model.config.grid_size), model.config.harmonics)
    with torch.inference_mode():
        return model.rollout(model.seed(lattice), lattice, steps, make_generator(seed)), lattice


# --------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory):
    """One CLI export at --res 16 --size 2.5 (shared by the readers' tests)."""
    out = tmp_path_factory.mktemp("export") / "out"
    code = main(["--model", str(model_file), "--out", str(out), "--name", "cloud", "--res", "16", "--size", "2.5",
                 "--steps", "6", "--seed", "3", "--preview-size", "24", "--progress", "none"])
    assert code == 0
    return out


def test_res_and_size_give_files_arrays_and_transform(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["cloud.json", "cloud.npz", "cloud.png", "cloud.vdb"]
    data = np.load(exported / "cloud.npz")
    assert data["density"].shape == (16, 16, 16) and data["density"].dtype == np.float32
    assert data["color"].shape == (16, 16, 16, 3) and data["color"].dtype == np.float32
    vs = 2.5 / 16
    assert float(data["voxel_size"]) == pytest.approx(vs)
    assert np.allclose(data["origin"], -1.25 + vs / 2)
    assert str(data["color_space"]) == "linear" and int(data["steps"]) == 6 and int(data["seed"]) == 3
    assert np.all(data["density"] > 0) and data["density"].std() > 0 and data["color"].max() > 0

    info = read_vdb_info(exported / "cloud.vdb")
    assert [g["name"] for g in info["grids"]] == ["density", "color"]
    density, color = info["grids"]
    assert density["type"] == "Tree_float_5_4_3" and density["metadata"]["class"] == "fog volume"
    assert color["type"] == "Tree_vec3s_5_4_3"
    for g in info["grids"]:
        assert g["map_type"] == "UniformScaleTranslateMap"
        assert np.allclose(g["voxel_size"], vs) and np.allclose(g["origin"], -1.25 + vs / 2)
        # first voxel cell starts at -size/2 and the last ends at +size/2
        assert np.allclose(np.asarray(g["origin"]) - vs / 2, -1.25)
        assert np.allclose(np.asarray(g["origin"]) + 15.5 * vs, 1.25)
    assert density["metadata"]["file_voxel_count"] == 16 ** 3

    with Image.open(exported / "cloud.png") as image:
        assert image.size == (24, 24) and image.mode == "RGB"
    record = json.loads((exported / "cloud.json").read_text())
    assert record["settings"]["res"] == 16 and record["voxel_size"] == pytest.approx(vs)
    assert record["frames"] == [{"vdb": "cloud.vdb", "npz": "cloud.npz", "png": "cloud.png"}]


def _traversal_key(origin):
    from tests.io.test_vdb import _traversal_key as key

    return key(origin)


def test_tinyvdb_reads_the_npz_values(exported):
    tinyvdb = optional_import("tinyvdb", "tinyvdb is not installed (pip install tinyvdb)")
    data = np.load(exported / "cloud.npz")
    f = tinyvdb.open(str(exported / "cloud.vdb"))
    f.read_grids()
    names = [f.grid_name(i) for i in range(f.grid_count)]
    assert names == ["density", "color"]
    for i, name in enumerate(names):
        g = f.grid(i)
        values = data[name]
        comps = 3 if values.ndim == 4 else 1
        # all 8 leaves of the 16^3 volume, in tree order; tinyvdb gives each leaf's 512 values
        origins = sorted(((x, y, z) for x in (0, 8) for y in (0, 8) for z in (0, 8)), key=_traversal_key)
        leaves = [g.tree.node(n) for n in range(g.tree.num_nodes) if g.tree.node(n).type == "leaf"]
        assert len(leaves) == len(origins)
        for node, (x, y, z) in zip(leaves, origins, strict=True):
            got = np.frombuffer(node.data, "<f4").reshape(8, 8, 8, comps)
            want = values[x:x + 8, y:y + 8, z:z + 8].reshape(8, 8, 8, comps)
            assert np.array_equal(got, want), f"{name}: leaf {(x, y, z)} differs"
        if comps == 1:
            dense = g.materialize_dense((0, 0, 0), (16, 16, 16))
            got = np.frombuffer(dense.to_bytes(), "<f4").reshape((16, 16, 16), order="F")
            assert np.array_equal(got, values)
        assert np.allclose(g.transform["voxel_size"], float(data["voxel_size"]))
        assert np.allclose(g.transform["translation"], data["origin"])


def test_voxel_ijk_is_the_lattice_xyz_and_units_follow_size_and_scale(tmp_path):
    """density[i, j, k] = model density at cell point (x, y, z) = ((i, j, k) + 0.5) * n / res,
    times 2 / size * density_scale; colour is the model's rgb, linearised or as is."""
    model = _volume_model(grid_size=[6, 8, 10])  # D, H, W = z, y, x all different
    state, lattice = _grown(model, 5)
    res = 12
    a_d, a_c = decode_volume(model, state, lattice, res, color_space="srgb")
    sizes = np.array(lattice.sizes_xyz, np.float64)  # (10, 8, 6)
    rng = np.random.default_rng(0)
    ijk = rng.integers(0, res, (40, 3))
    points = torch.tensor((ijk + 0.5) * sizes / res, dtype=torch.float32)
    with torch.no_grad():
        ref = model.decode(state, lattice, points)[0].numpy()
    sl = model.channel_slices()
    got_d = a_d[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    got_c = a_c[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    assert np.allclose(got_d, ref[:, sl["density"]][:, 0], rtol=1e-5, atol=1e-6)
    assert np.allclose(got_c, ref[:, sl["rgb"]], rtol=1e-5, atol=1e-6)

    runs = {}
    for size, scale in ((1.0, 1.0), (4.0, 3.0)):
        out = tmp_path / f"s{size}"
        generate_volume(model, out, "v", res=res, steps=5, seed=0, size=size, density_scale=scale,
                        preview_size=0)
        runs[size] = np.load(out / "v.npz")
        assert sorted(p.name for p in out.iterdir()) == ["v.json", "v.npz", "v.vdb"]
    assert np.allclose(runs[1.0]["density"], a_d * 2.0, rtol=1e-6)
    assert np.allclose(runs[4.0]["density"], a_d * 2.0 / 4.0 * 3.0, rtol=1e-6)
    assert np.allclose(runs[1.0]["color"], srgb_to_linear(torch.from_numpy(a_c)).numpy(), rtol=1e-6)
    assert np.array_equal(runs[1.0]["color"], runs[4.0]["color"])


def test_vdb_optical_depth_matches_the_preview_renderer(tmp_path):
    """Emission-absorption along +x through the written voxels (density per world unit, voxel
    size S/res) equals the preview renderer's rays through the model along the same rows."""
    model = _volume_model()
    res, size, scale = 16, 3.0, 0.8
    out = tmp_path / "o"
    generate_volume(model, out, "v", res=res, steps=4, seed=1, size=size, density_scale=scale,
                    color_space="srgb", preview_size=0)
    data = np.load(out / "v.npz")
    density, color, vs = data["density"].astype(np.float64), data["color"].astype(np.float64), float(data["voxel_size"])
    assert vs == pytest.approx(size / res)
    state, lattice = _grown(model, 4, seed=1)
    rows = [(0, 0), (3, 11), (15, 7), (8, 8)]  # (j, k) = (y, z) voxel indices
    centres = lambda n: -1.0 + (np.asarray(n) + 0.5) * 2.0 / res  # model world coordinates
    origins = torch.tensor([[-3.0, centres(j), centres(k)] for j, k in rows], dtype=torch.float32)
    background = torch.ones(3)
    with torch.no_grad():
        preview = march_rays(model, state, lattice, origins,
                             torch.tensor([1.0, 0.0, 0.0]), res, background, density_scale=scale)[0].numpy()
    for (j, k), want in zip(rows, preview, strict=True):
        alpha = 1.0 - np.exp(-density[:, j, k] * vs)
        trans = np.concatenate([[1.0], np.cumprod(1.0 - alpha + 1e-10)])
        got = (alpha[:, None] * trans[:-1, None] * color[:, j, k]).sum(0) + trans[-1]
        assert np.allclose(got, want, atol=2e-4), (j, k, got, want)
    assert 0.05 < float(np.exp(-(density[:, 0, 0] * vs).sum())) < 0.95  # a useful, not trivial, optical depth


# --------------------------------------------------------------------------- decoding


def test_chunked_decode_equals_one_chunk_and_the_models_decode():
    model = _volume_model(grid_size=[5, 7, 9], harmonics=2)
    state, lattice = _grown(model, 6)
    res = 11
    whole = decode_volume(model, state, lattice, res, chunk=res ** 3)
    for chunk in (1, 50, 121, 500, 100_000):
        parts = decode_volume(model, state, lattice, res, chunk=chunk)
        # equal up to the last bits BLAS may change with the number of rows per call
        np.testing.assert_allclose(parts[0], whole[0], rtol=1e-6, atol=1e-7, err_msg=str(chunk))
        np.testing.assert_allclose(parts[1], whole[1], rtol=1e-6, atol=1e-7, err_msg=str(chunk))
    generic = decode_volume(model, state, lattice, res, chunk=200, method="generic")
    assert np.allclose(generic[0], whole[0], rtol=1e-5, atol=1e-6)
    assert np.allclose(generic[1], whole[1], rtol=1e-5, atol=1e-6)
    # the lattice's own voxel-centre order is (z, y, x): transposed, it is our (x, y, z)
    cube = _volume_model(grid_size=[9, 9, 9], harmonics=2)
    state9, lattice9 = _grown(cube, 3)
    with torch.no_grad():
        ref = cube.decode(state9, lattice9, lattice9.sample_points(2.0))[0].numpy()  # 18^3 voxel centres
    d18, c18 = decode_volume(cube, state9, lattice9, 18, color_space="srgb")
    sl = cube.channel_slices()
    assert np.allclose(d18, ref[:, sl["density"]].reshape(18, 18, 18).transpose(2, 1, 0), rtol=1e-5, atol=1e-6)
    assert np.allclose(c18, ref[:, sl["rgb"]].reshape(18, 18, 18, 3).transpose(2, 1, 0, 3), rtol=1e-5, atol=1e-6)


def test_decode_memory_is_bounded_by_the_chunk(monkeypatch):
    """No decoder call sees more than one chunk of points."""
    model = _volume_model()
    state, lattice = _grown(model, 2)
    seen = []
    real = model.lppn.forward

    def spy(x):
        seen.append(x.shape[0])
        return real(x)

    monkeypatch.setattr(model.lppn, "forward", spy)
    decode_volume(model, state, lattice, 40, chunk=1000)
    assert max(seen) <= 1000 and sum(seen) == 40 ** 3
    seen.clear()
    decode_volume(model, state, lattice, 20, chunk=1000, method="generic")
    assert max(seen) <= 1000 and sum(seen) == 20 ** 3


# --------------------------------------------------------------------------- frames and resume


def test_frames_continue_one_rollout(model_file, tmp_path, capsys):
    out = tmp_path / "seq"
    # on the CPU, like the reference rollout below: CUDA draws another random stream
    code, _, err = _run(capsys, "--model", model_file, "--out", out, "--res", "8", "--steps", "4", "--frames", "3",
                        "--every", "2", "--preview-size", "8", "--progress", "none", "--device", "cpu")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"volume.000{i}.{ext}" for i in (1, 2, 3) for ext in ("vdb", "npz", "png")]
                           + ["volume.json"])
    frames = [np.load(out / f"volume.000{i}.npz") for i in (1, 2, 3)]
    assert [int(f["steps"]) for f in frames] == [4, 6, 8]
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not np.array_equal(frames[a]["density"], frames[b]["density"])
    for i in (1, 2, 3):
        info = read_vdb_info(out / f"volume.000{i}.vdb")
        assert [g["name"] for g in info["grids"]] == ["density", "color"]
    # frame 3 is the same rollout as a single export after 4 + 2 * 2 steps
    single = tmp_path / "single"
    assert _run(capsys, "--model", model_file, "--out", single, "--res", "8", "--steps", "8", "--preview-size", "0",
                "--no-npz", "--progress", "none", "--device", "cpu")[0] == 0
    assert sorted(p.name for p in single.iterdir()) == ["volume.json", "volume.vdb"]
    assert (single / "volume.vdb").stat().st_size == (out / "volume.0003.vdb").stat().st_size
    model = _volume_model()
    state, lattice = _grown(model, 8)
    d, _ = decode_volume(model, state, lattice, 8)
    assert np.array_equal(frames[2]["density"], d * 2.0)


def test_resume_keeps_finished_frames_and_checks_settings(model_file, tmp_path, capsys):
    out = tmp_path / "seq"
    args = ["--model", model_file, "--out", out, "--res", "8", "--steps", "3", "--frames", "3", "--every", "1",
            "--preview-size", "0", "--progress", "none"]
    assert _run(capsys, *args)[0] == 0
    first = np.load(out / "volume.0002.npz")["density"]
    stamp = (out / "volume.0001.vdb").stat().st_mtime_ns
    (out / "volume.0002.vdb").unlink()
    (out / "volume.0003.npz").unlink()
    code, _, err = _run(capsys, *args, "--resume")
    assert code == 0, err
    assert (out / "volume.0001.vdb").stat().st_mtime_ns == stamp  # kept
    assert (out / "volume.0002.vdb").exists() and (out / "volume.0003.npz").exists()
    assert np.array_equal(np.load(out / "volume.0002.npz")["density"], first)  # redone identically
    for changed in (["--seed", "5"], ["--every", "2"], ["--size", "2"]):
        code, _, err = _run(capsys, *args, "--resume", *changed)
        assert code == 2 and err.startswith("nca3d: error: cannot resume") and err.count("\n") == 1, err
    (out / "volume.json").unlink()
    code, _, err = _run(capsys, *args, "--resume")
    assert code == 2 and "cannot resume" in err


# --------------------------------------------------------------------------- refusals


def _bad_models(tmp_path):
    corrupt = tmp_path / "corrupt.nca3d"
    corrupt.write_bytes(b"\x00" * 64)
    flat = tmp_path / "flat.nca3d"
    torch.manual_seed(0)
    save_model(random_model("2d", grid_size=[8, 8]), flat)
    mesh = tmp_path / "mesh.nca3d"
    save_model(random_model("mesh", icosphere_frequency=2), mesh)
    return {"missing": tmp_path / "nope.nca3d", "corrupt": corrupt, "2d": flat, "mesh": mesh}


BAD_CASES = [
    ("missing", [], "not found"),
    ("corrupt", [], "cannot load model"),
    ("2d", [], "2D texture model"),
    ("mesh", [], "mesh texture model"),
    ("good", ["--res", "0"], "--res must be between 8 and 1024"),
    ("good", ["--res", "-5"], "--res must be between"),
    ("good", ["--res", "100000"], "PiB of memory"),
    ("good", ["--size", "-1"], "--size must be a positive"),
    ("good", ["--size", "0"], "--size must be a positive"),
    ("good", ["--size", "nan"], "--size must be a positive"),
    ("good", ["--density-scale", "0"], "--density-scale must be a positive"),
    ("good", ["--frames", "0"], "--frames must be"),
    ("good", ["--lattice", "2"], "--lattice must be"),
    ("good", ["--name", "a/b"], "--name must be a plain file name"),
    ("good", ["--res", "abc"], "invalid int value"),
    ("good", ["--device", "tpu"], "device"),
]


@pytest.mark.parametrize("model_key, extra, message", BAD_CASES, ids=[f"{m}{''.join(e)}" for m, e, _ in BAD_CASES])
def test_bad_input_is_one_line_and_writes_nothing(model_file, tmp_path, capsys, model_key, extra, message):
    models = _bad_models(tmp_path) if model_key != "good" else {"good": model_file}
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--model", models[model_key], "--out", out, "--progress", "json", *extra)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nca3d: error:"), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


def test_missing_default_model_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(volmod, "default_model_candidates", lambda: [tmp_path / "a" / "x.nca3d",
                                                                     tmp_path / "b" / "x.nca3d"])
    code, _, err = _run(capsys, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert "no default volume model" in err and "--model" in err and "nca3d new --domain volume" in err
    assert not (tmp_path / "out").exists()


def test_default_model_is_used_when_present(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(volmod, "default_model_candidates", lambda: [tmp_path / "none.nca3d", model_file])
    code, _, err = _run(capsys, "--out", tmp_path / "out", "--res", "8", "--steps", "1", "--preview-size", "0",
                        "--progress", "none")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "volume.json").read_text())["model"] == str(model_file)


def test_memory_refusal_names_the_estimate(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(volmod, "available_memory", lambda: (1 << 30, 4 << 30))
    code, _, err = _run(capsys, "--model", model_file, "--out", tmp_path / "out", "--res", "512")
    assert code == 2 and err.count("\n") == 1
    need = volmod.estimate_memory(512, 8 ** 3, 16)
    assert f"--res 512 needs about {human_bytes(need)}" in err and "1.0 GiB of 4.0 GiB is available" in err
    assert "use --res" in err and not (tmp_path / "out").exists()
    suggested = int(err.split("use --res ")[1].split()[0])
    assert volmod.estimate_memory(suggested, 8 ** 3, 16) <= 1 << 30 < volmod.estimate_memory(suggested + 8, 8 ** 3, 16)
    monkeypatch.setattr(volmod, "available_memory", lambda: (100 << 20, 4 << 30))  # not even the minimum
    code, _, err = _run(capsys, "--model", model_file, "--out", tmp_path / "out", "--res", "8")
    assert code == 2 and "free some memory" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["file_as_folder", "under_a_file", "name_is_a_folder"])
def test_unwritable_output_is_refused(model_file, tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    if where == "file_as_folder":
        out = blocker
    elif where == "under_a_file":
        out = blocker / "sub"
    else:
        out = tmp_path / "out"
        (out / "volume.vdb").mkdir(parents=True)
    code, _, err = _run(capsys, "--model", model_file, "--out", out, "--res", "8", "--steps", "1",
                        "--progress", "none")
    assert code == 2 and err.count("\n") == 1 and err.startswith("nca3d: error:"), err
    assert blocker.read_text() == "a file where a folder should be"
    left = sorted(p.name for p in tmp_path.rglob("*"))
    assert left == (["blocker", "out", "volume.vdb"] if where == "name_is_a_folder" else ["blocker"])


def test_read_only_folder_is_refused(model_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anywhere: simulate the refusal
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    out.chmod(0o500)
    try:
        code, _, err = _run(capsys, "--model", model_file, "--out", out, "--res", "8", "--progress", "none")
    finally:
        out.chmod(0o700)
    assert code == 2 and err.count("\n") == 1
    assert "cannot write to output folder" in err and "Permission denied" in err and list(out.iterdir()) == []


def test_failure_while_writing_leaves_only_complete_files(model_file, tmp_path, capsys, monkeypatch):
    from nca3d.io import vdb

    def broken(path, *args, **kwargs):
        raise NCA3DError(f"cannot write VDB file '{path}': No space left on device")

    monkeypatch.setattr(vdb, "write_vdb", broken)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "--model", model_file, "--out", out, "--res", "8", "--progress", "none")
    assert code == 2 and err.count("\n") == 1 and "No space left" in err
    # the npz (written before) is complete; no temporary files remain
    assert sorted(p.name for p in out.iterdir()) == ["volume.json", "volume.npz"]
    assert np.load(out / "volume.npz")["density"].shape == (8, 8, 8)


# --------------------------------------------------------------------------- progress and the real command


def test_progress_json_lines(model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--model", model_file, "--out", out, "--res", "8", "--steps", "3",
                             "--preview-size", "8", "--progress", "json")
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]
    stages = [e["stage"] for e in events]
    assert stages[-1] == "done" and stages.count("done") == 1
    order = [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    assert order == ["grow", "decode", "write", "preview", "done"]
    for event in events[:-1]:
        assert set(event) == {"stage", "fraction", "message"} and 0.0 <= event["fraction"] <= 1.0
    files = events[-1]["files"]
    assert [Path(f).name for f in files] == ["volume.vdb", "volume.npz", "volume.png", "volume.json"]
    assert all(Path(f).is_file() for f in files)


def test_real_command_line(model_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = tmp_path / "out"
    ok = subprocess.run([sys.executable, "-m", "nca3d.volume", "--model", str(model_file), "--out", str(out),
                         "--res", "8", "--steps", "2", "--preview-size", "0", "--progress", "json"],
                        check=False, capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["stage"] == "done"
    bad = subprocess.run([sys.executable, "-m", "nca3d.volume", "--model", str(model_file), "--out", str(out),
                          "--res", "0"], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("nca3d: error: --res")


def test_bar_progress_goes_to_stderr(model_file, tmp_path, capsys):
    code, stdout, err = _run(capsys, "--model", model_file, "--out", tmp_path / "o", "--res", "8", "--steps", "1",
                             "--preview-size", "0")
    assert code == 0 and stdout == "" and "wrote" in err


def test_api_accepts_a_progress_object_and_a_lattice_size(tmp_path, capsys):
    model = _volume_model()
    files = generate_volume(model, tmp_path / "o", "api", res=8, steps=2, lattice_size=12, preview_size=0,
                            npz=False, progress=Progress("json"))
    assert [Path(f).name for f in files] == ["api.vdb", "api.json"]
    assert json.loads((tmp_path / "o" / "api.json").read_text())["settings"]["lattice"] == [12, 12, 12]
    assert '"stage": "decode"' in capsys.readouterr().out


# --------------------------------------------------------------------------- OpenVDB and Blender


def _reader(modules):
    from tests.io import test_vdb

    python = test_vdb._reader_python(modules)
    if python is None:
        pytest.skip(test_vdb._NO_READER)
    return test_vdb, python


def test_openvdb_reads_the_export_exactly(exported, tmp_path):
    helpers, python = _reader(("openvdb", "pyopenvdb", "bpy"))
    data = np.load(exported / "cloud.npz")
    manifest = {"cloud": {"file": str(exported / "cloud.vdb"),
                          "grids": {n: {"shape": list(data[n].shape)} for n in ("density", "color")}}}
    result = helpers._run_dump(helpers._OPENVDB_DUMP, manifest, tmp_path, python)
    res = result["cases"]["cloud"]
    assert res["error"] is None, res["error"]
    vs = float(data["voxel_size"])
    for name, kind in (("density", "FloatGrid"), ("color", "Vec3SGrid")):
        g = res["grids"][name]
        assert g["type"] == kind and g["class"] == ("fog volume" if name == "density" else "unknown")
        assert np.allclose(g["voxel_size"], vs)
        for ijk, world in g["index_to_world"]:
            assert np.allclose(world, data["origin"] + np.asarray(ijk) * vs)
        values = np.load(tmp_path / f"cloud__{name}__values.npy")
        assert np.array_equal(values, data[name]), name


def test_blender_loads_the_export(exported, tmp_path):
    helpers, python = _reader(("bpy",))
    data = np.load(exported / "cloud.npz")
    result = helpers._run_dump(helpers._BLENDER_DUMP, {"cloud": {"file": str(exported / "cloud.vdb")}},
                               tmp_path, python)
    res = result["cases"]["cloud"]
    assert res["error"] is None, res["error"]
    assert res["load"] and res["is_loaded"] and res["error_message"] == ""
    assert res["grids"]["density"]["data_type"] == "FLOAT" and res["grids"]["color"]["data_type"] == "VECTOR_FLOAT"
    vs = float(data["voxel_size"])
    want = np.eye(4)
    want[:3, :3] *= vs
    want[:3, 3] = data["origin"]
    for g in res["grids"].values():
        assert np.allclose(g["matrix"], want, atol=1e-6)
    bb = np.asarray(res["bound_box"])  # every voxel is active: the box is the cube [-S/2, S/2]^3
    assert np.allclose(bb.min(0), -1.25, atol=1e-4) and np.allclose(bb.max(0), 1.25, atol=1e-4)
