"""A texture bake's files: grow, bake each frame, write its maps (PNG, 16-bit or EXR height, ORM),
then the command's own files, all through a hidden staging folder moved into place at the end, so
that an interrupted or failed run leaves no partial files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.grow import grow
from ..io.atomic import prepare_out_dir
from ..io.images import write_pngs
from ..progress import Progress
from ..render.maps import MapSet

STAGING_PREFIX = ".nca3d-staging-"


def prepare_out(out: str) -> Path:
    folder = prepare_out_dir(out)
    for stale in folder.glob(STAGING_PREFIX + "*"):  # left by a killed run: never half a result
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def _map_file(folder: Path, name: str, kind: str, frame: int | None, suffix: str = ".png") -> Path:
    return folder / (f"{name}_{kind}.{frame:04d}{suffix}" if frame is not None else f"{name}_{kind}{suffix}")


def write_maps(maps: MapSet, folder: Path, name: str, frame: int | None, exr: bool,
               object_normals: bool = False) -> dict[str, Path]:
    """Write one frame's maps as PNG (height: 16-bit, or EXR) -> {kind: path}; the PNGs encode in
    parallel (`io.images.write_pngs`)."""
    written, pngs = {}, []
    for kind, array in maps.arrays.items():
        if kind == "normal_object" and not object_normals:
            continue
        if kind == "height" and exr:
            from ..io.exr import write_exr

            path = _map_file(folder, name, kind, frame, ".exr")
            write_exr(path, array)
        else:
            path = _map_file(folder, name, kind, frame)
            pngs.append((path, array, 16 if array.dtype == np.uint16 else 8))
        written[kind] = path
    orm = maps.orm()
    if orm is not None:
        written["orm"] = _map_file(folder, name, "orm", frame)
        pngs.append((written["orm"], orm, 8))
    write_pngs(pngs)
    return written


def bake_sequence(model, lattice, bake, config, folder: Path, progress: Progress, export) -> list[str]:
    """Grow, bake each frame, export; all files go through a staging folder moved into place at the end.

    bake(state, label) -> (MapSet, covered); export(staging, first maps, first files) -> extra record."""
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
        state = grow(model, model.seed(lattice), lattice, config.steps, generator, progress)
        frames = config.frames or 1
        first = None
        for index in range(frames):
            label = f"frame {index + 1}/{frames}: " if config.frames else ""
            if index:
                state = grow(model, state, lattice, config.every, generator, progress, label)
            maps, _ = bake(state, label)
            written = write_maps(maps, staging, config.name, index + 1 if config.frames else None, config.exr,
                                 getattr(config, "object_normals", False))
            first = first or (maps, written)
        progress.update("export", 0.0, "writing", force=True)
        extra = export(staging, *first)
        record = {"config": dataclasses.asdict(config), "model_domain": model.config.domain,
                  "model_provenance": {k: model.provenance.get(k) for k in ("exemplar", "license", "credit")},
                  "maps": sorted(first[1]), "seconds": round(time.monotonic() - start, 2), **extra}
        (staging / f"{config.name}.json").write_text(json.dumps(record, indent=2))
        files = []
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
            files.append(str(folder / path.name))
        progress.update("export", 1.0, "done", force=True)
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)
