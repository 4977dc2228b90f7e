"""The job list: JSONL and TOML, plural keys and globs expanded, each job checked by its command's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nca3d.batch.jobs import expand, read_entries
from nca3d.commands.batch import command_parsers
from nca3d.errors import NCA3DError


@pytest.fixture(scope="module")
def parsers():
    return command_parsers()


def write_meshes(root: Path) -> None:
    for name in ("a/one.glb", "a/b/two.glb", "three.obj"):
        (root / "assets" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "assets" / name).write_bytes(b"mesh")


def test_toml_glob_times_models(tmp_path, parsers):
    write_meshes(tmp_path)
    (tmp_path / "jobs.toml").write_text('[[job]]\ncommand = "texture"\nmeshes = "assets/**/*.glb"\n'
                                        'models = ["granite_mesh", "ore_mesh"]\nsize = 64\ndisplace = true\n')
    jobs = expand(read_entries(tmp_path / "jobs.toml"), parsers, tmp_path)
    assert [job.error for job in jobs] == [""] * 4
    meshes = sorted(str(tmp_path / "assets" / name) for name in ("a/b/two.glb", "a/one.glb"))
    assert [job.argv for job in jobs] == [[mesh, "--model", model, "--size", "64", "--displace"]
                                          for mesh in meshes for model in ("granite_mesh", "ore_mesh")]
    assert jobs[0].name.startswith("texture-two-granite_mesh-") and len({job.name for job in jobs}) == 4
    assert jobs[0].inputs == [meshes[0]]  # files a cluster worker may need from the object store
    folder = tmp_path / "out" / jobs[0].name
    assert jobs[0].run_argv(folder)[-4:] == ["--out", str(folder), "--progress", "json"]


def test_jsonl_lines_and_their_errors(tmp_path, parsers):
    (tmp_path / "ex.png").write_bytes(b"png")
    lines = [{"command": "texture", "mesh": "rock", "model": "granite_mesh", "size": 512},
             {"command": "train", "exemplar": "ex.png", "domain": "mesh", "iters": 2, "features": "patches"},
             {"command": "maps", "model": "granite_2d", "seeds": [1, 2], "job": "granite"},
             {"command": "volume", "res": 16, "npz": False},
             {"command": "texture", "mesh": "rock", "model": "granite_mesh", "sise": 3},
             {"command": "texture", "mesh": "rock", "model": "granite_mesh", "size": "big"},
             {"command": "texture", "mesh": "rock", "model": "granite_mesh", "out": "x"},
             {"command": "texture", "mesh": "rock", "model": "granite_mesh", "scale": 1, "cells": 9},
             {"command": "bake", "mesh": "rock"},
             {"command": "texture", "meshes": "missing/*.obj", "model": "granite_mesh"},
             {"command": "texture", "mesh": ["rock", "torus"], "model": "granite_mesh"}]
    text = "\n".join(json.dumps(line) for line in lines) + "\n# a comment\n\n{not json\n"
    (tmp_path / "jobs.jsonl").write_text(text)
    jobs = expand(read_entries(tmp_path / "jobs.jsonl"), parsers, tmp_path)
    assert jobs[0].argv == ["rock", "--model", "granite_mesh", "--size", "512"] and not jobs[0].error
    train = jobs[1]
    assert train.argv[0] == str(tmp_path / "ex.png") and not train.error
    folder = tmp_path / "out" / train.name
    assert train.run_argv(folder)[-5:] == ["--out", str(folder / "ex.nca3d"), "--progress", "json", "--resume"]
    assert [job.name for job in jobs[2:4]] == [f"granite-{jobs[2].name.split('-', 1)[1]}",
                                               f"granite-{jobs[3].name.split('-', 1)[1]}"]
    assert jobs[2].argv[-2:] == ["--seed", "1"] and jobs[3].argv[-2:] == ["--seed", "2"]
    assert jobs[4].argv == ["--res", "16", "--no-npz"] and not jobs[4].error
    assert jobs[4].run_argv(folder)[-1] == "json"  # a still volume starts over
    errors = [job.error for job in jobs[5:]]
    assert len(errors) == 8 and all(errors)
    assert "'sise' is not an option of nca3d texture" in errors[0]
    assert "argument --size: invalid int value: 'big'" in errors[1]
    assert "'out' is set by nca3d batch" in errors[2]
    assert "not allowed with argument" in errors[3]
    assert "'command' must be one of texture, maps, volume, train" in errors[4]
    assert "matches no files" in errors[5]
    assert "takes one value; for one job per value use the plural key" in errors[6]
    assert errors[7].startswith("jobs.jsonl line 14 is not JSON")
    assert all("\n" not in error for error in errors)


def test_same_job_twice_runs_once_and_names_stay_unique(tmp_path, parsers):
    (tmp_path / "jobs.jsonl").write_text(
        '{"command": "maps", "model": "granite_2d"}\n{"command": "maps", "model": "granite_2d"}\n'
        '{"command": "maps", "model": "granite_2d", "size": 64, "job": "g"}\n'
        '{"command": "maps", "model": "granite_2d", "size": 128, "job": "g"}\n')
    jobs = expand(read_entries(tmp_path / "jobs.jsonl"), parsers, tmp_path)
    assert len(jobs) == 3
    assert not jobs[1].error and "the job name 'g' is taken by jobs.jsonl line 3" in jobs[2].error


def test_animated_volumes_keep_their_finished_frames(tmp_path, parsers):
    (tmp_path / "jobs.jsonl").write_text('{"command": "volume", "res": 16, "frames": 3}\n')
    job, = expand(read_entries(tmp_path / "jobs.jsonl"), parsers, tmp_path)
    assert job.run_argv(tmp_path / "v")[-2:] == ["json", "--resume"]


def test_switch_and_value_types_are_checked(tmp_path, parsers):
    (tmp_path / "jobs.jsonl").write_text('{"command": "texture", "mesh": "rock", "model": "m", "exr": "yes"}\n'
                                         '{"command": "texture", "mesh": "rock", "model": "m", "size": true}\n')
    jobs = expand(read_entries(tmp_path / "jobs.jsonl"), parsers, tmp_path)
    assert "'exr' is a switch (--exr); give true or false" in jobs[0].error
    assert "'size' (--size) takes a value" in jobs[1].error


def test_unreadable_lists_are_one_line_errors(tmp_path):
    with pytest.raises(NCA3DError, match="cannot read the job list"):
        read_entries(tmp_path / "missing.jsonl")
    (tmp_path / "bad.toml").write_text("[[job]\n")
    with pytest.raises(NCA3DError, match="is not valid TOML"):
        read_entries(tmp_path / "bad.toml")
