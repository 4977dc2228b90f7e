"""The summary table and the JSON summary of a batch."""

from __future__ import annotations

from nca3d.batch.report import summary_json, summary_table


def test_summary_table_and_json():
    records = {"a": {"state": "done", "attempt": 1, "seconds": 12.34},
               "b": {"state": "failed", "attempt": 3, "seconds": 2.0, "error": "killed by SIGKILL"}}
    table = summary_table(records, ["a", "b", "c"]).splitlines()
    assert table[0].split() == ["job", "state", "tries", "seconds", "error"]
    assert table[1].split() == ["a", "done", "1", "12.3"]
    assert table[2].split() == ["b", "failed", "3", "2.0", "killed", "by", "SIGKILL"]
    assert table[3].split() == ["c", "pending"]
    assert table[4] == "3 jobs: 1 done, 1 failed, 1 pending"
    assert summary_json(records)["counts"] == {"done": 1, "failed": 1}
