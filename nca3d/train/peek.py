"""A model from a training run's checkpoint, written while the run goes on (`nca3d peek`).

The run's NAME.ckpt is rewritten atomically every `checkpoint_every` iterations; a peek reads it and
writes what the run would ship if it stopped there (the best long-rollout candidate so far, with its
state limit measured, a loss curve and a preview), or the current weights. The run is not touched.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NCA3DError
from ..progress import Progress
from .trainer import (
    SETTINGS_BEFORE_THEY_EXISTED,
    TrainConfig,
    Trainer,
    checkpoint_path,
    read_checkpoint,
)

WEIGHTS = ("best", "current")


def peek_path(run: str | Path) -> Path:
    """Where a peek at run NAME (NAME.nca3d or NAME.ckpt) goes by default: NAME.peek.nca3d."""
    return checkpoint_path(run).with_suffix(".peek.nca3d")


def peek(run: str | Path, out: str | Path | None = None, weights: str = "best",
         progress: Progress | None = None) -> tuple[list[str], str]:
    """Write the model of run `run` (its NAME.nca3d or NAME.ckpt) as its checkpoint holds it.

    weights: "best", the best-scoring candidate so far (the current weights before the first), or
    "current". Returns the files written and a line saying which weights they are."""
    if weights not in WEIGHTS:
        raise NCA3DError(f"unknown weights '{weights}'; use best or current")
    path = checkpoint_path(run)
    if not path.is_file():
        raise NCA3DError(f"no checkpoint '{path}': a run writes NAME.ckpt beside its --out NAME.nca3d every "
                         f"--checkpoint-every iterations (50 by default); peek once the first is written")
    meta, _ = read_checkpoint(path, fix="give the NAME.nca3d or NAME.ckpt of a run of nca3d train", tensors=False)
    out = Path(out) if out else peek_path(run)
    settings = {**SETTINGS_BEFORE_THEY_EXISTED, **meta["config"], "out": str(out)}
    config = TrainConfig(**{key: value for key, value in settings.items() if key in TrainConfig.__dataclass_fields__})
    for name in [config.exemplar, *config.maps.values()]:
        if not Path(name).exists():
            raise NCA3DError(f"the run's exemplar '{name}' is not found from here; peek from the folder the run was "
                             f"started in (the model's header records the exemplar it learned)")
    start, config.init = config.init, None  # a fine-tune's start model: the checkpoint records it, and may outlive it
    trainer = Trainer(config, progress or Progress("none"))
    config.init = start
    trainer.resume(path)
    if weights == "current" or trainer.best is None:
        trainer.best = None
        reason = "" if weights == "current" else (
            f"; no candidate scored yet (the first at iteration {config.select_after})" if config.select_every else "")
        said = f"iteration {trainer.iteration}: the current weights{reason}"
    else:
        best, score = min(trainer.selection, key=lambda pair: pair[1])
        said = (f"iteration {trainer.iteration}: the best candidate so far, iteration {best} (long-rollout score "
                f"{score:.4g}, lower is better, of {len(trainer.selection)} scored)")
    trainer.peeked = {"checkpoint": path.name, "iteration": trainer.iteration,
                      "weights": "current" if trainer.best is None else "best"}
    return trainer.finish(), said
