"""The manifest: appended whole lines, the last per job wins, a torn line is skipped, outputs checked by sha256."""

from __future__ import annotations

import hashlib
import json

import pytest

from nca3d.batch.manifest import NAME, Manifest, file_sha256, read_records
from nca3d.errors import NCA3DError


def test_last_record_wins_and_a_torn_line_is_skipped(tmp_path):
    with Manifest(tmp_path) as manifest:
        manifest.write({"job": "a", "state": "running", "attempt": 1})
        manifest.write({"job": "b", "state": "running", "attempt": 1})
        manifest.write({"job": "a", "state": "done", "attempt": 1})
    with open(tmp_path / NAME, "ab") as handle:
        handle.write(b'{"job": "b", "state": "do')  # a driver killed mid-write
    records = read_records(tmp_path)
    assert list(records) == ["a", "b"]
    assert records["a"]["state"] == "done" and records["b"]["state"] == "running"
    with Manifest(tmp_path) as manifest:  # a new run compacts the file: one whole line per job
        manifest.write({"job": "b", "state": "failed", "attempt": 2})
    lines = (tmp_path / NAME).read_text().splitlines()
    assert [json.loads(line)["state"] for line in lines] == ["done", "running", "failed"]
    assert read_records(tmp_path / "nothing") == {}


def test_finished_means_done_with_the_same_spec_and_unchanged_outputs(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"pixels")
    digest = hashlib.sha256(b"pixels").hexdigest()
    assert file_sha256(folder / "a.png") == digest and file_sha256(folder / "none") is None
    with Manifest(tmp_path) as manifest:
        manifest.write({"job": "job", "spec": "s1", "state": "done", "outputs": {"a.png": digest}})
        assert manifest.finished("job", "s1")
        assert not manifest.finished("job", "s2")  # the job changed
        assert not manifest.finished("other", "s1")
        (folder / "a.png").write_bytes(b"edited")
        assert not manifest.finished("job", "s1")
        (folder / "a.png").unlink()
        assert not manifest.finished("job", "s1")
        manifest.write({"job": "job", "spec": "s1", "state": "failed", "outputs": {}})
        assert not manifest.finished("job", "s1")


def test_one_batch_at_a_time_per_folder(tmp_path):
    pytest.importorskip("fcntl")
    with Manifest(tmp_path), pytest.raises(NCA3DError, match="another nca3d batch is running into"):
        Manifest(tmp_path).open()
    with Manifest(tmp_path):  # released at the end of the run
        pass
