import json

import pytest
import torch

from nca3d.bench import main
from nca3d.bench.stability import grow_and_measure
from nca3d.core.model import Model, ModelConfig
from nca3d.io.model_file import save_model


def drifting_model(step: float, limit: float) -> Model:
    """A 2D model whose NCA adds `step` to channel 0 of every cell that fires, whatever the state:
    its channel 0 climbs without end (the drift the bench is for); step 0 leaves the seed as it is."""
    model = Model(ModelConfig(domain="2d", outputs="rgb", grid_size=[8, 8], channels=4, hidden=8)).eval()
    nca = model.nca
    with torch.no_grad():
        nca.perceive_to_hidden.weight.zero_()
        nca.perceive_to_hidden.bias.fill_(1.0)  # hidden = relu(1) everywhere
        nca.hidden_to_update.weight.zero_()
        nca.hidden_to_update.weight[0] = step / nca.hidden_to_update.weight.shape[1]
    model.set_state_limit(limit)
    return model


def test_a_climbing_channel_drifts_and_a_still_state_does_not():
    climbing = grow_and_measure(drifting_model(0.01, limit=10.0), steps=64)
    assert [mark["step"] for mark in climbing["marks"]] == [4, 16, 32, 48, 64]
    means = [mark["mean_abs"] for mark in climbing["marks"]]
    assert means == sorted(means) and means[-1] > 1.5 * means[2]  # one channel of four climbs ~0.005 a step
    # channel 0 moves ~0.16 over the second half, the half-way mean |s| is a quarter of its ~0.16
    assert 2.0 < climbing["drift"] < 8.0 and climbing["marks"][-1]["at_clamp"] == 0.0
    still = grow_and_measure(drifting_model(0.0, limit=10.0), steps=64)
    assert still["drift"] == 0.0 and still["marks"][-1]["max_abs"] == 0.0
    clamped = grow_and_measure(drifting_model(0.01, limit=0.05), steps=64)
    end = clamped["marks"][-1]
    assert end["max_abs"] == pytest.approx(0.05) and end["at_clamp"] == pytest.approx(0.25, abs=0.02)


def test_stability_bench_prints_each_model(tmp_path, capsys):
    path = tmp_path / "climbing.nca3d"
    save_model(drifting_model(0.01, limit=10.0), path)
    assert main(["stability", "--quick", "--json", "--device", "cpu", "--models", str(path)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["steps"] == 64 and [row["model"] for row in results["models"]] == [str(path)]
    row = results["models"][0]
    assert row["domain"] == "2d" and row["cells"] == 64 and row["state_limit"] == 10.0 and row["drift"] > 2.0
    assert main(["stability", "--quick", "--device", "cpu", "--models", str(path)]) == 0
    out = capsys.readouterr().out
    assert "drift" in out and "climbing.nca3d" in out
    assert main(["stability", "--quick", "--models", str(tmp_path / "missing.nca3d")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
