import json
import subprocess
import sys

import pytest

from nca3d.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nca3d", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("domain,outputs,nca,lppn", [("2d", "pbr", 10368, 3017), ("mesh", "rgb", 12416, 2851),
                                                       ("volume", "rgba", 12416, 2884)])
def test_new_then_info(tmp_path, capsys, domain, outputs, nca, lppn):
    path = tmp_path / f"{domain}.nca3d"
    assert main(["new", "--domain", domain, "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["domain"] == domain
    assert info["nca_params"] == nca and info["lppn_params"] == lppn
    assert [o["name"] for o in info["outputs"]]
    assert "exemplar" in info["provenance"] and "license" in info["provenance"]
    assert info["config"]["outputs"] == outputs


def test_info_takes_a_library_name(capsys):
    assert main(["info", "volume_default"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["domain"] == "volume" and info["provenance"]["license"]


def test_real_command_line_and_exit_codes(tmp_path):
    path = tmp_path / "m.nca3d"
    ok = run_cli("new", "--domain", "2d", "--outputs", "rgb", "--out", str(path))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(run_cli("info", str(path)).stdout)["outputs"][0]["name"] == "rgb"
    bad = tmp_path / "bad.nca3d"
    bad.write_bytes(b"not a model at all")
    for args in (["info", str(bad)], ["info", str(tmp_path / "missing.nca3d")], ["frobnicate"],
                 ["new", "--domain", "volume", "--outputs", "pbr", "--out", str(path)],
                 ["new", "--domain", "2d", "--out", str(tmp_path / "file.txt" / "sub" / "m.nca3d")]):
        if args[-1].endswith("m.nca3d") and "file.txt" in args[-1]:
            (tmp_path / "file.txt").write_text("a file where a folder should be")
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nca3d: error:"), result.stderr
        assert "Traceback" not in result.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("nca3d ")


def test_train_help_states_the_configs_defaults():
    """Every `nca3d train` option documents itself, and a default it names is TrainConfig's."""
    import re

    from nca3d.cli import build_parser
    from nca3d.train.trainer import TrainConfig

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    fields = TrainConfig.__dataclass_fields__
    for action in train._actions:
        if action.dest == "help":
            continue
        assert action.help, f"--{action.dest} has no help text"
        named = re.match(r".*\(default ([-+0-9.e]+)[;) ]", action.help)
        if named and action.dest in fields and fields[action.dest].default not in (0, None):
            assert float(named.group(1)) == pytest.approx(fields[action.dest].default), action.dest
