import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from nca3d.cli import main
from nca3d.io.model_file import load_model
from nca3d.progress import Progress
from nca3d.train.peek import peek
from nca3d.train.trainer import Trainer, checkpoint_path

from .test_trainer import SELECT, make_exemplar, tiny_config


def test_a_peek_writes_the_best_candidate_so_far_and_leaves_the_run_alone(tmp_path):
    config = tiny_config(tmp_path, iters=10, checkpoint_every=10, **SELECT)
    run = Trainer(config, Progress("none"))
    run.run()
    ckpt = checkpoint_path(config.out)
    before = ckpt.read_bytes()
    files, said = peek(config.out)
    assert files[0] == str(tmp_path / "m.peek.nca3d") and all(map(lambda f: (tmp_path / f).exists(), files))
    best = min(run.selection, key=lambda pair: pair[1])[0]
    assert f"iteration 10: the best candidate so far, iteration {best}" in said
    model = load_model(files[0])
    assert model.provenance["peek"] == {"checkpoint": "m.ckpt", "iteration": 10, "weights": "best"}
    assert model.provenance["selected_iteration"] == best and model.provenance["iterations"] == 10
    assert model.config.state_limit > 0  # measured, as a finished run's
    shipped = load_model(config.out)  # the finished run shipped the same candidate
    for name, value in shipped.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    assert ckpt.read_bytes() == before  # the run's checkpoint is untouched: it resumes as before
    resumed = Trainer(tiny_config(tmp_path, iters=12, checkpoint_every=10, **SELECT), Progress("none"))
    assert resumed.resume() and resumed.iteration == 10


def test_a_peek_at_the_current_weights_and_before_any_candidate(tmp_path):
    config = tiny_config(tmp_path, iters=4, checkpoint_every=2, **SELECT)
    Trainer(config, Progress("none")).run()
    tensors = load_file(str(checkpoint_path(config.out)))
    files, said = peek(tmp_path / "m.ckpt", out=tmp_path / "now.nca3d", weights="current")
    assert said == "iteration 4: the current weights"
    model = load_model(files[0])
    assert model.provenance["peek"]["weights"] == "current" and model.provenance["selected_iteration"] == 4
    for name, value in model.state_dict().items():
        assert torch.equal(value, tensors[f"model.{name}"]), name
    early = tiny_config(tmp_path, out=str(tmp_path / "early.nca3d"), iters=2, checkpoint_every=2)  # select_after 400
    Trainer(early, Progress("none")).run()
    _, said = peek(early.out)
    assert said == "iteration 2: the current weights; no candidate scored yet (the first at iteration 400)"


def test_a_peek_at_a_fine_tune_whose_start_model_is_gone(tmp_path):
    start = Trainer(tiny_config(tmp_path, out=str(tmp_path / "start.nca3d"), iters=1), Progress("none")).run()[0]
    config = tiny_config(tmp_path, iters=2, init=start, checkpoint_every=2)
    Trainer(config, Progress("none")).run()
    (tmp_path / "start.nca3d").unlink()
    files, _ = peek(config.out)
    provenance = load_model(files[0]).provenance
    assert provenance["init"] == load_model(config.out).provenance["init"] and provenance["config"]["init"] == start


def test_nca3d_peek_reads_a_running_training(tmp_path, capsys):
    """A run in another process keeps going while `nca3d peek` writes its model."""
    exemplar = make_exemplar(tmp_path / "ex.png")
    out = tmp_path / "live.nca3d"
    process = subprocess.Popen(
        [sys.executable, "-m", "nca3d", "train", str(exemplar), "--out", str(out), "--features", "patches",
         "--channels", "8", "--hidden", "32", "--grid", "8", "--pool", "8", "--batch", "2", "--patch", "24",
         "--checkpoint-every", "2", "--limit-steps", "64", "--device", "cpu", "--progress", "none",
         "--iters", "100000"], cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not checkpoint_path(out).exists() and time.time() < deadline:
            time.sleep(0.2)
        assert main(["peek", str(out), "--progress", "none"]) == 0
        assert process.poll() is None  # still training
    finally:
        process.kill()
        process.wait()
    assert "the current weights" in capsys.readouterr().err
    model = load_model(tmp_path / "live.peek.nca3d")
    assert model.provenance["peek"]["iteration"] >= 2 and not out.exists()


def test_bad_peeks_give_one_clear_line(tmp_path, capsys):
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    config = tiny_config(tmp_path, iters=2, checkpoint_every=2)
    Trainer(config, Progress("none")).run()
    (tmp_path / "ex.png").rename(tmp_path / "moved.png")
    for argv, words in ((["peek", str(tmp_path / "none.nca3d")], "no checkpoint"),
                        (["peek", str(tmp_path / "junk.ckpt")], "is unreadable"),
                        (["peek", config.out, "--weights", "worst"], "invalid choice"),
                        (["peek", config.out], "exemplar")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)
