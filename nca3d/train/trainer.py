"""The training loop: state pool, random rollouts, texture loss, checkpoints and resume.

A run writes NAME.nca3d (with provenance and the resolved config in its header), and next to it
NAME.ckpt (safetensors: weights, Adam state, pool, RNG; rewritten atomically every
`checkpoint_every` iterations), NAME.loss.png and NAME.preview.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..core.grow import LargestState, state_limit
from ..core.model import PBR_CHANNELS, Model, ModelConfig, pbr_subset
from ..core.nca import make_generator
from ..core.threads import StepThreads, run_threads, shared_numbers
from ..device import (
    bf16_matmul_pays,
    keep_cpu_allocations,
    release_kept_allocations,
    resolve_device,
)
from ..errors import NCA3DError
from ..io.atomic import write_bytes_atomic
from ..io.images import MIN_EXEMPLAR_SIZE, read_exemplar, write_png
from ..io.material import find_material_maps, read_map
from ..io.model_file import load_model, read_header, save_model
from ..io.run_lock import run_lock
from ..memory import available_memory, human_bytes
from ..models import resolve_model
from ..ops.pbr import derive_missing_maps
from ..progress import Progress
from .features import make_feature_extractor
from .losses import (
    RESAMPLINGS,
    TextureLoss,
    crop_count,
    normal_height_misfit,
    overflow_loss,
    relief_strength,
)
from .quality import (
    orientation_distance,
    orientation_histogram,
    resize_square,
    zoomed_region,
)
from .scale import (
    ScaleChoice,
    ScaleMeasures,
    choose_scale,
    exemplar_zoom,
    fine_detail,
    min_zoom,
    scale_measures,
    view_cells,
    view_span,
)
from .tasks import DEFAULT_SCALES, Texture2DTask, VolumeTask

PBR_MAPS = PBR_CHANNELS[1:]  # the maps beside the albedo, in output order
REGULAR_AUTOCORR_WEIGHT = 10.0  # the auto-correlation term of an exemplar with a period (bricks, knit, tiles)
# Decoder samples a px side of the loss renders (--supersample). Point-sampled renders alias detail
# finer than a px that the area-sampled targets average out, so the coarse crops penalised the fine
# detail the finest ones ask for. Side by side, one thread each, quality at 256 / 1024 / 2048 / 4096
# steps, 1 sample a px against 2: rust 06 (30 minutes) 0.15 / 0.18 / 0.22 / 0.15 against 0.41 / 0.34 /
# 0.34 / 0.30; granite 15 (25 minutes) 0.80 / 0.62 / 0.49 / 0.54 against 0.74 / 0.72 / 0.72 / 0.64; green
# marble 12 (25 minutes; its large veins) 0.16 / 0.29 / 0.06 / 0.26 against 0.33 / 0.30 / -0.02 / 0.03; in
# 12-17% fewer iterations (an iteration costs 1.16x on one thread, 1.32x on two).
DEFAULT_SUPERSAMPLE = {"2d": 2, "mesh": 1, "volume": 1}
# EfficientNet upsamples the loss crops 2x (--feature-upsample) so that 2-4 px detail reaches its finer
# taps, at 4x its cost, the largest part of an iteration. A 2D exemplar of large soft structure wants
# iterations more than that detail: features the lattice's floors (train.scale: MIN_GRID,
# MAX_PX_PER_CELL) leave at over LARGE_FEATURE_CELLS cells each, and under FINE_DETAIL_SHARE of its
# variance in detail under 5 px of the finest crops (train.scale.fine_detail). It gets 1x: 1.57x the
# iterations on one thread (1.34x on two). 30 minutes, one thread each, two side by side, quality at
# 256 / 1024 / 2048 / 4096 steps, 2x against 1x: green marble (1.95 cells, fine share 0.04) 0.51 / 0.26
# / 0.13 / 0.05 (1,324 iterations) against 0.47 / 1.08 / 1.21 / 1.02 (2,066) and, seed 1, 1.13 / 0.94 /
# 1.03 / 1.20 (2,132); lava flow (1.39, 0.05) 0.26 / 0.34 / 0.38 / 0.46 (1,001) against 0.57 / 0.47 /
# 0.58 / 0.49 (1,735) and 0.18 / 0.21 / 0.23 / 0.15 (1,512; even on average); but coral cells (1.44,
# 0.16: sharp rims) 0.94 / 0.96 / 0.80 / 0.83 (1,179) against 0.21 / 0.40 / 0.79 / 0.47 (1,417), and
# rust (2.52, 0.10: speckle) 0.41 / 0.34 / 0.34 / 0.30 and 0.11 / 0.25 / 0.12 / 0.12 against 0.37 /
# 0.32 / 0.33 / 0.28 (1,503): those keep 2x.
LARGE_FEATURE_CELLS = 1.25
FINE_DETAIL_SHARE = 0.08
# The training rollout's autograd memory per cell and step of the batch, measured (peak RSS over a
# 24-step rollout on 2D, mesh and volume lattices): 250-280 B with bf16 matmuls, 480-750 B in fp32.
ROLLOUT_BYTES_PER_CELL_STEP = 600
AUTO_CHECKPOINT_STEPS = 8  # a frequency-32 mesh iteration: 4.1 -> 3.1 GB peak, 1.26x the time

# How many steps a pool state lives on average before it is reset to the seed: each reseed
# replaces one state, and meanwhile the pool advances batch x mean-steps steps per iteration
# spread over all states, so a state's expected age is seed_every x batch x mean steps whatever
# the pool size. States as old as the long rollouts users run keep the model stable there
# (2D and mesh defaults: 8 x 4 x 64; volumes, batch 2 at 16-48 steps: 32 x 2 x 32).
POOL_AGE_STEPS = 2048
# But a slot is picked once every pool / batch iterations, so no state is older (in steps) than the
# iterations run: a run of 800 iterations never trains on a state past ~800 steps, and its model
# may drift, streak or overflow by 2048-4096 (shipped granite_2d at 4096). So once AGE_POOL_AT of
# the budget is spent an eighth of the pool grows pool_age_steps more without gradients (in chunks
# of at most AGE_CHUNK_CELLS cells), capped at AGE_COST x the state-steps trained so far (a
# gradient-free step costs ~1/4 of a trained one, so at most ~20% of the run; 2-5% at 1800 its).
AGE_POOL_AT = 0.4
AGE_COST = 2.0
AGE_CHUNK_CELLS = 1 << 18
# Iterations on each thread count, in turn, that choose the count of the next window of them
# (core.threads.StepThreads): their rollouts' random lengths even out over 3
ITERATION_PROBES = 3

# Above this many exemplar px per px of the finest loss crops, fine detail is invisible to the loss:
# blurring a 1024 px rust (2.7 px per px at 1,2,4) by 1 px moved its loss 1.0 sd of the crop-to-crop
# noise, and 6.7 sd with scale 8 added (granite, 512 px at 1.3 px per px: 4.0 sd). The trainer says so.
FINE_TEXEL = 2.0
BATCH_PARTS = 2  # a CPU iteration's batch is grown and scored in this many parts (Trainer.step)
STRIPE_WEIGHT = 1.0  # the selection score's orientation term (Trainer.long_rollout_score)
# The selection scores each candidate's growth at these step counts on its way to select_steps: the
# counts the quality bench judges (a fine-tuned amethyst_volume scored at 256 and 4096 only grew
# diagonal stripes at 2048 that had gone again by 4096)
SELECT_AT = (256, 1024, 2048)
# A fine-tune's default learning rate: at 1e-3 the shipped eroded_concrete_mesh's loss went from 1.78 to 3.24
# in its first step; every shipped fine-tune ran at 3e-4 to 5e-4
FINE_TUNE_LR = 5e-4


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved into the model header and the checkpoint."""

    exemplar: str  # an image, or a material folder (its albedo becomes the exemplar, its maps `maps`)
    out: str
    domain: str = "2d"
    maps: dict = field(default_factory=dict)  # PBR maps by name -> path (2d / mesh); flags win over a folder's
    material: str | None = None  # the material folder the maps were found in (set from `exemplar`)
    derive_pbr: bool = False  # derive every PBR map missing (height, normal, roughness, AO) from those given
    dark_is_high: bool = False  # derive_pbr from an albedo alone: dark tones are high (light grout in recesses)
    iters: int = 0  # 0: 2000, or unlimited when `minutes` is set
    minutes: float = 0.0  # > 0: stop when this much time has been spent (checkpointed)
    seed: int = 0
    features: str = "effnet"
    distance: str = "emd"
    vgg_weights: str | None = None
    channels: int = 12
    hidden: int = 96
    grid: int = 0  # 2d / volume: cells per side; mesh: icosphere frequency (0: chosen by train.scale)
    harmonics: int = 1
    pool: int = 256
    batch: int = 4
    seed_every: int = 0  # re-inject the seed every this many iterations (0: POOL_AGE_STEPS / (batch x mean steps))
    min_steps: int = 0  # rollout length range per iteration (0: 32-96, volumes 16-48)
    max_steps: int = 0
    lr: float = 0.0  # Adam's learning rate (0: 1e-3, or FINE_TUNE_LR for a fine-tune)
    lr_decay: float = 0.3  # the learning rate is multiplied by this ...
    lr_decay_at: float = 0.5  # ... once this fraction of the budget (iterations or minutes) is spent
    overflow_weight: float = 30.0
    autocorr_weight: float | None = None  # feature auto-correlation term (None: REGULAR_AUTOCORR_WEIGHT when
    # the exemplar repeats, train.scale.period; else 0)
    grey_weight: float = 10.0
    normal_height_weight: float = 10.0  # models with normal and height: weight tying the normal to the height's slopes
    moment_weight: float = 1.0  # weight of the relaxed EMD's moment term (mean + covariance)
    tap_balance: float = 0.5  # 0: taps weigh alike (the paper); 1: each tap weighed by the exemplar's own variation there
    zoom: float = 0.0  # the lattice's full view matches 1/zoom of the exemplar: features zoom x larger in cells (0: chosen)
    scales: list = field(default_factory=lambda: list(DEFAULT_SCALES))  # crop scale s: crop_count(s) crops of 1/s the view
    target_sampling: str = "area"  # exemplar crops shrink to the loss's patch antialiased ("area") or a texel per
    # pixel ("point", as the renders sample the decoder, so fine grain aliases in both alike)
    supersample: int = 0  # loss renders (2D, mesh): each px the mean of up to N x N decoder samples, at most the
    # finest crops' px (train.tasks.samples_per_px), so coarse crops see detail averaged as their area targets
    # do (0: DEFAULT_SUPERSAMPLE of the domain)
    feature_upsample: float = 0.0  # effnet: the crops are upsampled this many times before the network, so
    # detail of 2-4 px reaches its finer taps (1: about 1.5x faster iterations; 0: chosen, feature_upsample_for)
    patch: int = 96
    samples: int = 512
    ray_samples: int = 40
    checkpoint_every: int = 50
    init: str | None = None  # start from this model's weights (fine-tuning; fresh optimiser and pool)
    select_every: int = 100  # > 0: every this many iterations, score a long rollout and keep the best weights
    select_after: int = 400  # ... from this iteration on
    select_steps: int = 4096  # ... grown from the seed for this many steps (scored at SELECT_AT and here)
    pool_age_steps: int = POOL_AGE_STEPS  # once AGE_POOL_AT of the budget is spent, an eighth of the pool grows
    # up to this many steps without gradients, so a short run trains on states as old as long growths (0: never)
    limit_steps: int = 2048  # the state limit is measured over 2 growths of this many steps (core.grow.state_limit)
    grad_checkpoint: int = -1  # > 0: gradient checkpointing every this many rollout steps (less memory); 0: off;
    # -1: AUTO_CHECKPOINT_STEPS where the rollout's activations would fill over half the free memory
    precision: str = "auto"  # the training rollout's MLP: fp32, bf16 (autocast; states stay fp32), auto: bf16 where it pays
    license: str | None = None
    credit: str | None = None
    device: str = "auto"

    def __post_init__(self):
        if self.domain not in ("2d", "mesh", "volume"):
            raise NCA3DError(f"unknown training domain '{self.domain}'; use 2d, mesh or volume")
        if self.iters == 0:
            self.iters = 10 ** 9 if self.minutes > 0 else 2000
        self.grid = max(0, self.grid)
        self.lr = self.lr or (FINE_TUNE_LR if self.init else 1e-3)
        volume = self.domain == "volume"
        self.min_steps = self.min_steps or (16 if volume else 32)
        self.max_steps = self.max_steps or (48 if volume else 96)
        if self.seed_every <= 0:
            mean_steps = (self.min_steps + self.max_steps) / 2
            self.seed_every = max(1, round(POOL_AGE_STEPS / (self.batch * mean_steps)))
        if Path(self.exemplar).is_dir():
            found = find_material_maps(self.exemplar)
            self.material, self.exemplar, self.maps = found.folder, found.albedo, {**found.maps, **self.maps}
        if (self.maps or self.derive_pbr) and self.domain == "volume":
            raise NCA3DError("volume models learn colour only; drop the --normal/--height/--roughness/--ao maps "
                             "and --derive-pbr")
        if self.dark_is_high and not self.derive_pbr:
            raise NCA3DError("--dark-is-high says how to derive a height from the albedo; add --derive-pbr, or drop it")
        if self.dark_is_high and {"height", "normal"} & set(self.maps):
            raise NCA3DError(f"--dark-is-high derives a height from the albedo, but this set has a "
                             f"{'height' if 'height' in self.maps else 'normal'} map that gives the relief; drop it")
        unknown = set(self.maps) - set(PBR_MAPS)
        if unknown:
            raise NCA3DError(f"unknown map kinds {sorted(unknown)}; use {', '.join(PBR_MAPS)}")
        if self.iters < 1 or self.batch < 1 or self.pool < self.batch:
            raise NCA3DError("need iters >= 1, batch >= 1 and pool >= batch")
        if not 1 <= self.min_steps <= self.max_steps:
            raise NCA3DError("need 1 <= min_steps <= max_steps")
        if not 0.0 < self.lr_decay <= 1.0 or not 0.0 <= self.lr_decay_at <= 1.0:
            raise NCA3DError("need 0 < lr_decay <= 1 and 0 <= lr_decay_at <= 1")
        lowest = min_zoom(self.domain)
        if self.zoom and self.zoom < lowest:
            narrowed = " (below 1 the views narrow to fewer cells)" if lowest < 1 else " (only a mesh's views narrow below 1)"
            raise NCA3DError(f"--zoom {self.zoom:g} is below {lowest:g}, the least a {self.domain} run takes{narrowed}; "
                             f"use {lowest:g} or more: at 1 the lattice spans the whole exemplar, above 1 it spans "
                             f"1/zoom of it, so the texture's features grow zoom x larger")
        self.scales = sorted({int(s) for s in self.scales})
        if not self.scales or self.scales[0] < 1 or self.scales[-1] > 16:
            raise NCA3DError(f"--scales {','.join(map(str, self.scales))} is out of range; give crop scales from 1 to 16, "
                             f"for example 1,2,4 (the default) or 1,2,4,8 (adds pixel-scale crops)")
        self.supersample = self.supersample or DEFAULT_SUPERSAMPLE[self.domain]
        if self.supersample < 1 or (self.domain == "volume" and self.supersample > 1):
            raise NCA3DError(f"--supersample {self.supersample} does not apply here; give 1 or more for 2D and mesh "
                             f"renders (a volume's views march rays: 1 or leave it out)")
        if self.feature_upsample and not 1 <= self.feature_upsample <= 4:
            raise NCA3DError(f"--feature-upsample {self.feature_upsample:g} is out of range; give 1 to 4 (2 lets "
                             f"EfficientNet see 2-4 px detail; 1 trains about 1.5x faster) or leave it out")
        if self.target_sampling not in RESAMPLINGS:
            raise NCA3DError(f"--target-sampling {self.target_sampling} is unknown; use {' or '.join(RESAMPLINGS)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise NCA3DError(f"--precision {self.precision} is unknown; use auto, fp32 or bf16")
        if self.autocorr_weight is not None and not self.autocorr_weight >= 0:
            raise NCA3DError(f"--autocorr-weight {self.autocorr_weight:g} must be >= 0 (0: off; regular textures "
                             f"get {REGULAR_AUTOCORR_WEIGHT:g} by themselves)")
        if self.select_every < 0 or self.select_steps < 1 or self.pool_age_steps < 0:
            raise NCA3DError("need select_every >= 0, select_steps >= 1 and pool_age_steps >= 0")


# Settings newer than some checkpoints, with the value a checkpoint without them was trained with.
SETTINGS_BEFORE_THEY_EXISTED = {"pool_age_steps": 0, "derive_pbr": False, "dark_is_high": False, "normal_height_weight": 0.0, "tap_balance": 0.0, "moment_weight": 1.0, "zoom": 1.0, "scales": list(DEFAULT_SCALES), "target_sampling": "area", "supersample": 1, "feature_upsample": 2.0}

# Settings that may differ when a run is resumed: the budget, where it runs, bookkeeping, when
# candidates are scored (a run whose budget ends before --select-after can resume with an earlier one;
# select_steps stays, so every candidate's score is of the same growth), and where the files are (a run
# folder moved or copied elsewhere: the exemplar digest checks that the images are the same)
RESUMABLE_CHANGES = ("iters", "minutes", "device", "checkpoint_every", "grad_checkpoint", "precision", "limit_steps",
                     "license", "credit", "select_every", "select_after", "out", "exemplar", "maps", "material")


def _setting(value) -> str:
    """A config value as a resume refusal names it: 0.5, 1,2,4, area, a/b/c.png."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(_setting, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def init_mismatch(theirs, mine, different: list[str], provenance: dict, derive_pbr: bool) -> str:
    """What differs between a fine-tune's starting model config `theirs` and this run's `mine`, in words,
    with the flag that mends a map difference where the starting model derived its maps."""
    def setting(config, key):
        if key != "outputs":
            return getattr(config, key)
        return f"{config.outputs} ({', '.join(o.name for o in config.output_channels)})"

    words = [f"its {key} {setting(theirs, key)}, this run's {setting(mine, key)}" for key in different]
    derived = provenance.get("config", {}).get("derive_pbr")
    if "outputs" in different and derived and not derive_pbr:
        words.append("its maps were derived: add --derive-pbr")
    return "; ".join(words) or "its settings"


def _square(pixels: np.ndarray) -> np.ndarray:
    """Centre-crop (H, W, C) to a square: the full lattice view maps onto the whole exemplar."""
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return pixels[top:top + side, left:left + side]


def exemplar_digest(exemplar: str | Path, maps: dict[str, str | Path]) -> str:
    """sha256 of the exemplar's bytes then each given map's, in PBR_MAPS order: a model header's
    exemplar_sha256."""
    digest = hashlib.sha256(Path(exemplar).read_bytes())
    for name in (name for name in PBR_MAPS if name in maps):
        digest.update(Path(maps[name]).read_bytes())
    return digest.hexdigest()


def load_exemplar_stack(config: TrainConfig) -> tuple[torch.Tensor, list[str], bool, str, list[str]]:
    """The exemplar (K, S, S) in [0, 1]: the albedo and the maps it has (and, with `derive_pbr`, those
    derived from them), in output order; the map kinds, whether it is grey, its sha256 and notes on
    conversions (DirectX normals, gloss) and derivations."""
    albedo, grey = read_exemplar(config.exemplar)
    maps = {"albedo": _square(albedo)}
    notes = list(find_material_maps(config.material).notes) if config.material else []  # e.g. GL used, DX ignored
    for name in PBR_MAPS:
        if name not in config.maps:
            continue
        pixels, note = read_map(config.maps[name], name)
        if pixels.shape[:2] != albedo.shape[:2]:
            raise NCA3DError(f"{name} map '{config.maps[name]}' is {pixels.shape[1]}x{pixels.shape[0]} px but the "
                             f"albedo is {albedo.shape[1]}x{albedo.shape[0]}; give maps of the same size")
        maps[name] = _square(pixels)
        notes += [note] if note else []
    if config.derive_pbr:
        maps, derived = derive_missing_maps(maps, config.dark_is_high)
        notes += derived
    kinds = [name for name in PBR_CHANNELS if name in maps]
    grey = grey and kinds == ["albedo"]
    stack = np.concatenate([maps[name] for name in kinds], axis=2).transpose(2, 0, 1)
    digest = exemplar_digest(config.exemplar, config.maps)
    return torch.from_numpy(np.ascontiguousarray(stack)).float(), kinds, grey, digest, notes


def map_widths(kinds: list[str]) -> list[int]:
    """Channels of each map kind in a stack: 3 for albedo and normal, 1 for the others."""
    return [3 if kind in ("albedo", "normal") else 1 for kind in kinds]


def map_slices(kinds: list[str]) -> dict[str, slice]:
    """Each map's channels in a stack of `kinds` (3 for albedo and normal, 1 for the others)."""
    starts = np.cumsum([0] + map_widths(kinds))
    return {kind: slice(int(a), int(b)) for kind, a, b in zip(kinds, starts[:-1], starts[1:])}


def loss_views(kinds: list[str]) -> list[slice]:
    """The exemplar channels the texture loss compares as one image each: the albedo, the normal,
    and the one-channel maps, three consecutive ones (height, roughness, AO) packed into one
    pseudo-colour view, for half the feature extractions of one view per map."""
    views, run = [], []  # run: starts of consecutive one-channel maps not yet packed
    for channels in map_slices(kinds).values():
        if channels.stop - channels.start == 1:
            run.append(channels.start)
            if len(run) == 3:
                views.append(slice(run[0], run[0] + 3))
                run = []
            continue
        views += [slice(r, r + 1) for r in run] + [channels]
        run = []
    return views + [slice(r, r + 1) for r in run]


def _finite_or_none(selection: list[tuple[int, float]], digits: int | None = None) -> list[list]:
    """The selection as JSON-safe pairs: a blown-up growth's inf score as null."""
    return [[i, (round(s, digits) if digits is not None else s) if math.isfinite(s) else None] for i, s in selection]


def feature_upsample_for(domain: str, scale: ScaleChoice) -> float:
    """EfficientNet's crop upsampling when --feature-upsample is not given: 1 on 2D lattices whose
    features land at over LARGE_FEATURE_CELLS cells with under FINE_DETAIL_SHARE of the variance in
    fine detail (scale.fine_detail), else 2 (see LARGE_FEATURE_CELLS)."""
    large = (scale.feature_cells or 0.0) > LARGE_FEATURE_CELLS
    soft = scale.fine_detail is not None and scale.fine_detail < FINE_DETAIL_SHARE
    return 1.0 if domain == "2d" and large and soft else 2.0


def make_task(domain: str, grid: int, harmonics: int, patch: int, ray_samples: int, device,
              scales=DEFAULT_SCALES, rays_per_px: int = 1, zoom: float = 1.0):
    """The supervision task of a domain: its lattice and a renderer of loss crops at `scales`;
    rays_per_px: the 2D and mesh tasks' px average up to that many decoder samples a side (the mesh
    task's cached rays), at most the finest crops' px (train.tasks.samples_per_px; volumes: 1);
    zoom: the run's (below 1 it narrows the mesh task's views, train.scale.view_span)."""
    if domain == "2d":
        return Texture2DTask(grid, harmonics, patch, scales, supersample=rays_per_px)
    if domain == "volume":
        # a volume trains on a periodic crop of view_cells a side: 32 of the default 64, 8x fewer cells
        return VolumeTask(grid, harmonics, patch, scales, samples=ray_samples, crop=view_cells(domain, grid))
    from .mesh_task import MeshTask

    # A full view covers 64 cells at the default frequency (fewer on coarse test spheres or below zoom 1).
    return MeshTask(frequency=grid, patch=patch, scales=scales, view_cells=view_span(domain, grid, zoom),
                    supersample=rays_per_px).to(device)


def checkpoint_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".ckpt")


def read_checkpoint(path: Path, fix: str = "delete it to start over",
                    tensors: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """A run's checkpoint: its record (iteration, losses, config, ...) and its tensors (none unless
    `tensors`: a mesh run's pool alone can take 500 MB)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["nca3d_checkpoint"])
        return meta, load_file(str(path)) if tensors else {}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise NCA3DError(f"checkpoint '{path}' is unreadable ({exc}); {fix}") from None


class Trainer:
    def __init__(self, config: TrainConfig, progress: Progress | None = None):
        self.config = config
        self.progress = progress or Progress("bar")
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            keep_cpu_allocations()  # large activations stay mapped between iterations (about 2x faster)
        # bf16 matmuls in the training rollout: 1.7x faster rollouts on a CPU with native bf16, the
        # same gradients (cosine 1.000) and losses; states, the decoder and the loss stay fp32
        self.rollout_bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_matmul_pays(self.device))
        exemplar, kinds, self.grey, self.exemplar_sha256, self.map_notes = load_exemplar_stack(config)
        slices = loss_views(kinds)
        if len(kinds) > 1:
            given = ", ".join(f"{kind} {Path(path).name}" for kind, path in
                              [("albedo", config.exemplar), *[(k, config.maps[k]) for k in PBR_MAPS if k in config.maps]])
            self.progress.update("maps", 1.0, f"PBR maps: {given}", force=True)
            for note in self.map_notes:
                self.progress.update("maps", 1.0, note, force=True)
        channels = map_slices(kinds)
        albedo = scale_measures(exemplar[channels["albedo"]])
        height = scale_measures(exemplar[channels["height"]]) if "height" in channels else ScaleMeasures(None, None)
        self.scale = choose_scale(config.domain, albedo.length, exemplar.shape[-1], grid=config.grid, zoom=config.zoom,
                                  period_px=max(filter(None, [albedo.period, height.period]), default=None),
                                  repeats_px=albedo.repeats if any(albedo.repeats) else height.repeats)
        config.grid, config.zoom = self.scale.grid, self.scale.zoom
        self.chosen = list(self.scale.chosen)  # the settings chosen here: a resume must find them unchanged
        if config.autocorr_weight is None:
            config.autocorr_weight = REGULAR_AUTOCORR_WEIGHT if self.scale.period_px else 0.0
            self.chosen.append("autocorr_weight")
        spanned = exemplar_zoom(config.zoom)  # a full view spans 1/spanned of the exemplar
        if exemplar.shape[-1] / spanned < MIN_EXEMPLAR_SIZE:
            raise NCA3DError(f"--zoom {config.zoom:g} leaves {exemplar.shape[-1] / spanned:.0f} px of the "
                             f"{exemplar.shape[-1]} px exemplar per lattice view; use at most "
                             f"--zoom {exemplar.shape[-1] / MIN_EXEMPLAR_SIZE:g}")
        finest_texel = exemplar.shape[-1] / (spanned * max(config.scales) * config.patch)  # exemplar px per px
        self.scale.fine_detail = fine_detail(exemplar[channels["albedo"]], finest_texel)
        if not config.feature_upsample:
            config.feature_upsample = feature_upsample_for(config.domain, self.scale)
            self.chosen.append("feature_upsample")
        # the exemplar's normal-height strength per texel of the finest loss crops
        self.relief_strength = None if not {"normal", "height"} <= channels.keys() else relief_strength(
            exemplar[None, channels["normal"]], exemplar[None, channels["height"]], texel=finest_texel)
        outputs = pbr_subset(kinds) if len(kinds) > 1 else ("rgba" if config.domain == "volume" else "rgb")
        sizes = {"2d": dict(grid_size=[config.grid] * 2), "volume": dict(grid_size=[config.grid] * 3),
                 "mesh": dict(icosphere_frequency=config.grid)}[config.domain]
        model_config = ModelConfig(domain=config.domain, outputs=outputs, channels=config.channels,
                                   hidden=config.hidden, **sizes,
                                   harmonics=0 if config.domain == "mesh" else config.harmonics)
        torch.manual_seed(config.seed)
        self.model = Model(model_config).to(self.device)
        self.init_record = self._load_init(config.init) if config.init else None
        # a fine-tune's start model gone since its run began: its record came from the checkpoint (_load_init)
        self.init_missing = bool(config.init) and not resolve_model(config.init).exists()
        start = self.init_record or {}
        dropped = [key for key, value in self.license_and_credit().items() if start.get(key) and not value]
        if dropped:
            self.progress.update("init", 0.0, f"--init: not carrying over the start model's {' and '.join(dropped)} "
                                 f"(it learned another exemplar); give --license / --credit for this one", force=True)
        if config.domain == "mesh":
            self.progress.update("raycast", 0.0, "ray-cast views of the icosphere (cached after the first run)")
        self.task = make_task(config.domain, config.grid, config.harmonics, config.patch, config.ray_samples,
                              self.device, config.scales, rays_per_px=config.supersample, zoom=config.zoom)
        self.progress.update("features", 0.0, f"loading {config.features} features")
        extractor = make_feature_extractor(config.features, vgg_weights=config.vgg_weights, device=self.device,
                                           upsample=config.feature_upsample)
        self.progress.update("scale", 0.0, self.scale.message(), force=True)  # once nothing can refuse the run
        if finest_texel > FINE_TEXEL:
            self.progress.update("scale", 0.0, f"the finest loss crops see {finest_texel:.1f} exemplar px per px, so "
                                 f"detail under ~{2 * finest_texel:.0f} px barely counts; --scales "
                                 f"{','.join(map(str, [*config.scales, 2 * max(config.scales)]))} sees it "
                                 f"(about 1.4x the time per iteration)", force=True)
        if config.grad_checkpoint < 0:
            config.grad_checkpoint = self._auto_checkpoint()
        if "feature_upsample" in self.chosen and getattr(extractor, "upsample", None) == 1:  # EfficientNet's
            self.progress.update("scale", 0.0, f"large soft features ({self.scale.feature_cells:.2f} cells, "
                                 f"{self.scale.fine_detail:.0%} of the variance in fine detail): EfficientNet sees "
                                 f"the loss crops unscaled, for about 1.5x the iterations (--feature-upsample 2 sees "
                                 f"2-4 px detail)", force=True)
        if "autocorr_weight" in self.chosen and config.autocorr_weight:
            self.progress.update("scale", 0.0, f"a regular pattern: the auto-correlation term is on (weight "
                                 f"{config.autocorr_weight:g}); --autocorr-weight 0 turns it off", force=True)
        self.loss_fn = TextureLoss(exemplar.to(self.device), extractor, distance=config.distance,
                                   patch=config.patch, samples=config.samples, map_slices=slices, seed=config.seed,
                                   autocorr_weight=config.autocorr_weight, moment_weight=config.moment_weight,
                                   tap_balance=config.tap_balance, zoom=spanned, scales=config.scales,
                                   target_sampling=config.target_sampling)
        # the exemplar's directional structure at one full view, to catch stripes in long rollouts
        self.view_orientation = orientation_histogram(
            resize_square(zoomed_region(exemplar[channels["albedo"]], spanned).float(), config.patch))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.pool = self.model.seed(self.task.lattice, config.pool)
        self.iteration, self.elapsed, self.losses = 0, 0.0, []
        self.lr_decayed_at: int | None = None  # the iteration where the learning rate was decayed
        self.pool_aged: list | None = None  # [iteration, states, steps] of the pool's ageing (age_pool)
        self.selection: list[tuple[int, float]] = []  # (iteration, long-rollout score; inf: blew up) of each candidate
        self.best: dict[str, torch.Tensor] | None = None  # weights of the best-scoring candidate
        self.peeked: dict | None = None  # a model written from a checkpoint while its run goes on (train.peek)

    def _auto_checkpoint(self) -> int:
        """AUTO_CHECKPOINT_STEPS where the longest rollout's activations (ROLLOUT_BYTES_PER_CELL_STEP per
        cell and step of the batch) would take over half the free memory (the GPU's on CUDA), else 0."""
        cfg = self.config
        need = self.task.lattice.num_cells * cfg.batch * cfg.max_steps * ROLLOUT_BYTES_PER_CELL_STEP
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else available_memory()[0]
        if free is None or need <= free / 2:
            return 0
        self.progress.update("memory", 0.0, f"the rollout's activations would take ~{human_bytes(need)} of "
                             f"{human_bytes(free)} free: recomputing it in segments of {AUTO_CHECKPOINT_STEPS} "
                             f"steps (about 1.3x the time per iteration; --grad-checkpoint 0 turns it off)", force=True)
        return AUTO_CHECKPOINT_STEPS

    def _load_init(self, name_or_path: str) -> dict:
        """Copy a model's weights into the new one (fine-tuning); it must have the same architecture.
        When the file is gone, the record the run's checkpoint kept of it (a resume needs no weights)."""
        path = resolve_model(name_or_path)
        ckpt = checkpoint_path(self.config.out)
        if not path.exists() and ckpt.exists():
            recorded = read_checkpoint(ckpt, tensors=False)[0].get("init")
            if recorded:
                return recorded  # what a resume needs of it
        start = load_model(path, device=self.device)
        mine, theirs = self.model.config, start.config
        different = [key for key in ("domain", "outputs", "channels", "hidden", "harmonics")
                     if getattr(mine, key) != getattr(theirs, key)]
        if different or self.model.state_dict().keys() != start.state_dict().keys():
            mismatch = init_mismatch(theirs, mine, different, start.provenance, self.config.derive_pbr)
            raise NCA3DError(f"--init model '{name_or_path}' does not match this run ({mismatch}); train with the "
                             f"same --domain, maps, --channels, --hidden and --harmonics")
        self.model.load_state_dict(start.state_dict())
        return {"model": Path(path).name, "tensors_sha256": read_header(path)[0]["tensors_sha256"],
                "iterations": start.provenance.get("iterations"), "state_limit": start.config.state_limit,
                **{key: start.provenance.get(key) for key in ("exemplar_sha256", "license", "credit")}}

    def license_and_credit(self) -> dict[str, str | None]:
        """The licence and credit the model records: as given, else a fine-tune's start model's where it
        learned the same exemplar and maps (the same digest), since the new model learns the same data."""
        cfg, start = self.config, self.init_record or {}
        same_data = start.get("exemplar_sha256") == self.exemplar_sha256
        return {key: given or (start.get(key) if same_data else None)
                for key, given in (("license", cfg.license), ("credit", cfg.credit))}

    # --- checkpoints -----------------------------------------------------------------------
    def _checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        for index, param in enumerate(self.model.parameters()):
            for key, value in self.optimizer.state.get(param, {}).items():
                tensors[f"adam.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["pool"] = self.pool.cpu().contiguous()
        tensors["rng"] = self.generator.get_state().contiguous()
        for key, value in (self.best or {}).items():
            tensors[f"best.{key}"] = value.cpu().contiguous()
        return tensors

    def save_checkpoint(self) -> None:
        meta = {"iteration": self.iteration, "elapsed": self.elapsed, "losses": self.losses,
                "lr_decayed_at": self.lr_decayed_at, "pool_aged": self.pool_aged, "rng_device": self.device.type,
                "selection": _finite_or_none(self.selection), "config": dataclasses.asdict(self.config), "exemplar_sha256": self.exemplar_sha256,
                "init": self.init_record}
        write_bytes_atomic(checkpoint_path(self.config.out),
                           save(self._checkpoint_tensors(), metadata={"nca3d_checkpoint": json.dumps(meta)}))

    def resume(self, path: Path | None = None) -> bool:
        """Continue from NAME.ckpt (or the checkpoint at `path`) if it exists; False when there is none."""
        path = path or checkpoint_path(self.config.out)
        if not path.exists():
            return False
        meta, tensors = read_checkpoint(path)
        if meta["exemplar_sha256"] != self.exemplar_sha256:
            raise NCA3DError(f"checkpoint '{path}' was trained on a different exemplar; delete it or change --out")
        current = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in RESUMABLE_CHANGES}
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | SETTINGS_BEFORE_THEY_EXISTED
        saved = {k: meta["config"].get(k, defaults.get(k)) for k in current}  # keys newer than the checkpoint
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current[k])
            chosen = [k for k in changed if k in self.chosen]
            if chosen:
                keys = (["grid", "zoom"] if {"grid", "zoom"} & set(chosen) else []) + \
                    [k for k in ("autocorr_weight", "feature_upsample") if k in chosen]
                given = " ".join(f"--{k.replace('_', '-')} {saved[k]:g}" for k in keys)
                now = ", ".join(f"{k.replace('_', ' ')} {getattr(self.config, k):g}" for k in keys)
                raise NCA3DError(f"checkpoint '{path}' was made at {given}, but the automatic choice is now "
                                 f"{now}; resume with {given}, or delete it to start over")
            differences = "; ".join(f"--{k.replace('_', '-')} {_setting(saved.get(k))} there, {_setting(current[k])} now"
                                    for k in changed)
            raise NCA3DError(f"checkpoint '{path}' was made with different settings ({differences}); "
                             f"use the same options or delete it")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for index, param in enumerate(self.model.parameters()):
            state = {k.split(".", 2)[2]: v.to(self.device) for k, v in tensors.items() if k.startswith(f"adam.{index}.")}
            if state:
                self.optimizer.state[param] = state
        self.pool = tensors["pool"].to(self.device)
        self.iteration, self.elapsed, self.losses = meta["iteration"], meta["elapsed"], meta["losses"]
        if meta.get("rng_device", "cpu") == self.device.type:
            self.generator.set_state(tensors["rng"])
        else:  # a CUDA generator's state means nothing to a CPU one (and back): a fresh stream, seeded
            self.generator.manual_seed(self.config.seed + self.iteration)
            self.progress.update("train", self.budget_fraction(), f"the checkpoint's random stream is from "
                                 f"{meta['rng_device']}: continuing on {self.device.type} with a fresh one", force=True)
        self.lr_decayed_at = meta.get("lr_decayed_at")
        self.pool_aged = meta.get("pool_aged")
        # The weights the run started from, as they were then: the --init file may since have changed
        # (a fine-tuned model copied over the one it was tuned from)
        self.init_record = meta.get("init", self.init_record)
        self.selection = [(i, math.inf if s is None else s) for i, s in meta.get("selection", [])]
        best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best = best or None
        return True

    # --- one iteration ---------------------------------------------------------------------
    def budget_fraction(self) -> float:
        """How much of the budget is spent, 0..1: iterations, or time when `minutes` is set."""
        cfg = self.config
        fraction = self.iteration / cfg.iters
        if cfg.minutes > 0:
            fraction = max(fraction, self.elapsed / (cfg.minutes * 60))
        return min(fraction, 1.0)

    def _lr(self) -> float:
        """Step decay once `lr_decay_at` of the budget is spent, so a time-budgeted run anneals too.

        The decay sticks: a run resumed with a larger budget does not raise its learning rate again."""
        cfg = self.config
        if self.lr_decayed_at is None and cfg.lr_decay < 1.0 and self.budget_fraction() >= cfg.lr_decay_at:
            self.lr_decayed_at = self.iteration
        return cfg.lr * (cfg.lr_decay if self.lr_decayed_at is not None else 1.0)

    def _losses(self, state: torch.Tensor, generator: torch.Generator,
                crops: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Texture loss of a render of `state` (or of its `crops`), and the regularisers (overflow; grey tie)."""
        cfg = self.config
        crops = self.task.render(self.model, state, generator) if crops is None else crops
        extra = cfg.overflow_weight * overflow_loss(state)
        if self.grey:
            greys = [c.mean(1, keepdim=True) for c in crops]
            extra = extra + cfg.grey_weight * sum((c - gc).abs().mean() for c, gc in zip(crops, greys)) / len(crops)
            crops = [gc.expand_as(c) for c, gc in zip(crops, greys)]
        slices = self.model.channel_slices()
        if cfg.normal_height_weight > 0 and self.relief_strength is not None:
            finest = crops[-crop_count(max(cfg.scales)):]  # the crops whose texels are nearest the exemplar's
            extra = extra + cfg.normal_height_weight * sum(
                normal_height_misfit(c[:, slices["normal"]], c[:, slices["height"]], self.relief_strength)
                for c in finest) / len(finest)
        return self.loss_fn.score(crops, generator=generator), extra

    @torch.no_grad()
    def long_rollout_score(self, batch: int = 2) -> float:
        """Mean loss of `batch` textures grown from the seed, at each of SELECT_AT (256, 1024 and 2048
        steps) and at `select_steps`, plus STRIPE_WEIGHT x how far their full views' orientation
        histograms are from the exemplar's. Scoring on the way costs a render each, next to the
        growth: stripes that come and go between 256 and 4096 steps count too.

        Training only sees rollouts of up to `max_steps` from the pool; this is how the run learns
        whether the texture still holds (no drift, collapse or stripes) long after that. The texture
        loss barely sees a texture turning into diagonal streaks after 1000-2000 steps; the
        orientation histogram does (train.quality.orientation_distance). The growth is clamped from
        `limit_steps` on as the shipped model's will be, so a candidate is judged by what users get
        (a 64^3 volume fine-tune's unclamped growths reached 1e14-1e22 and NaN; the shipped model is
        clamped); one that still reaches inf or NaN scores inf."""
        cfg, nca = self.config, self.model.nca
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919)  # the same test each time
        state, done, scores = self.model.seed(self.task.lattice, batch), 0, []
        scored = {min(at, cfg.select_steps) for at in SELECT_AT} | {cfg.select_steps}
        # Grown as the model will ship: unclamped for limit_steps, tracking its states, then clamped
        # at the state limit that gives (finish measures the shipped one the same way, on 2 seeds).
        largest = LargestState(self.device)
        with nca.limited(0.0):
            for steps in sorted(scored | {min(cfg.limit_steps, cfg.select_steps)}):
                tracking = done < cfg.limit_steps
                state = self.model.rollout(state, self.task.lattice, steps - done, generator, largest if tracking else None)
                done = steps
                if steps == cfg.limit_steps:
                    nca.state_limit = largest.limit()
                if steps not in scored:
                    continue
                crops = self.task.render(self.model, state, generator)
                if not all(bool(torch.isfinite(c).all()) for c in (state, *crops)):
                    return math.inf  # the growth blew up (inf or NaN): the worst candidate, whatever came before
                texture, extra = self._losses(state, generator, crops)
                full_views = crops[0][:, :3]  # scale 1 comes first, albedo (or rgb) first: (B, 3, p, p)
                stripes = orientation_distance(full_views, self.view_orientation)
                scores.append(float(texture + extra) + STRIPE_WEIGHT * stripes)
        return float(np.mean(scores))

    def _select(self) -> None:
        score = self.long_rollout_score()
        if not self.selection or score < min(s for _, s in self.selection):
            self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.selection.append((self.iteration, score))

    def step(self) -> float:
        """One iteration: a batch of pool states grown `steps` random steps, scored, and one Adam step.

        On a CPU the batch is grown and scored in BATCH_PARTS parts, each with its own generator drawn
        from the run's, on one stream per core (core.threads.run_threads; one torch thread each) or,
        on one thread, one part after the other: the same numbers either way. The loss is the batch's
        mean, so its gradient is the parts' mean weighted by their sizes. torch's own threads split
        every small op of a rollout across the cores and meet at a barrier after each; independent
        streams do not wait."""
        cfg, g = self.config, self.generator
        index = torch.randperm(cfg.pool, generator=g, device=self.device)[:cfg.batch]
        state = self.pool[index].clone()
        if self.iteration % cfg.seed_every == 0:
            state[0] = 0.0  # re-inject the seed
        steps = int(torch.randint(cfg.min_steps, cfg.max_steps + 1, (1,), generator=g, device=self.device))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.device.type != "cpu" or cfg.batch < BATCH_PARTS:
            grown, texture, grads = self._grow_and_score(state, steps, g, params)
        else:
            parts = state.chunk(BATCH_PARTS)
            seeds = torch.randint(0, 2 ** 62, (len(parts),), generator=g, device=self.device).tolist()
            results: list = [None] * len(parts)
            numbers = shared_numbers(len(parts))

            def stream(_: int) -> None:
                for number in numbers():
                    results[number] = self._grow_and_score(parts[number], steps,
                                                           make_generator(seeds[number], self.device), params)

            run_threads(stream, min(len(parts), torch.get_num_threads()))
            weights = [part.shape[0] / cfg.batch for part in parts]  # the batch mean of the parts' means
            grown = torch.cat([r[0] for r in results])
            texture = sum(w * r[1] for w, r in zip(weights, results))
            grads = [None if all(r[2][k] is None for r in results) else
                     sum(w * r[2][k] for w, r in zip(weights, results) if r[2][k] is not None)
                     for k in range(len(params))]
        if not all(bool(torch.isfinite(grad).all()) for grad in grads if grad is not None):
            # A pool state blown past float range (as a fine-tune's unclamped ageing made them) would turn
            # every weight into NaN for the rest of the run: the step is skipped, the batch's states reseeded
            self.pool[index] = 0.0
            self.progress.update("train", self.budget_fraction(), f"it {self.iteration}: the gradient is not "
                                 f"finite; step skipped, its {cfg.batch} pool states reseeded", force=True)
            self.iteration += 1
            return float(texture)
        for param, grad in zip(params, grads):
            param.grad = grad
        for param in self.model.nca.parameters():  # per-tensor gradient normalisation
            if param.grad is not None:
                param.grad /= param.grad.norm() + 1e-8
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.optimizer.step()
        self.pool[index] = grown
        self.iteration += 1
        return float(texture)

    def _grow_and_score(self, state: torch.Tensor, steps: int, generator: torch.Generator,
                        params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """`state` (b, *cells, C) grown `steps` steps and scored: the grown states (detached), the
        texture loss and the gradients of the whole loss for `params` (None where one is unused)."""
        # Without autocast's cache each step casts the weights anew (a few thousand numbers), so their
        # gradients meet in fp32; with it, concurrent parts shared casts by timing (run-to-run noise)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.rollout_bf16, cache_enabled=False):
            state = self.model.rollout(state, self.task.lattice, steps, generator,
                                       checkpoint_segment=self.config.grad_checkpoint)
        texture, extra = self._losses(state, generator)
        grads = torch.autograd.grad(texture + extra, params, allow_unused=True)
        return state.detach(), texture.detach(), list(grads)

    @torch.no_grad()
    def age_pool(self) -> None:
        """Grow an eighth of the pool's states `pool_age_steps` steps without gradients, fewer when
        that would cost over AGE_COST x the state-steps trained by AGE_POOL_AT of the budget (see
        there): so a fine-tune ageing early, at its first candidate, may spend the share a run from
        scratch spends at AGE_POOL_AT, not only what it has trained so far.

        A fine-tune's states grow clamped at its starting model's state limit, as that model ships:
        unclamped, amethyst_volume's pool states reached 1e27-1e29 within 2542 steps, all 32 of them,
        and a state past float range has no finite gradient."""
        cfg, lattice, nca = self.config, self.task.lattice, self.model.nca
        count = max(cfg.batch, cfg.pool // 8)
        planned = self.iteration / max(self.budget_fraction(), 1e-9)  # the run's iterations, estimated
        iterations = max(self.iteration, AGE_POOL_AT * min(planned, cfg.iters))
        trained = iterations * cfg.batch * (cfg.min_steps + cfg.max_steps) / 2
        steps = int(min(cfg.pool_age_steps, AGE_COST * trained / count))
        slots = torch.randperm(cfg.pool, generator=self.generator, device=self.device)[:count]
        chunks = slots.split(max(1, AGE_CHUNK_CELLS // lattice.num_cells)) if steps else ()
        with nca.limited((self.init_record or {}).get("state_limit", 0.0)):
            for number, chunk in enumerate(chunks):
                self.progress.update("train", self.budget_fraction(), f"it {self.iteration}: ageing {count} of the "
                                     f"pool's states {steps} steps, to train on long growths ({number + 1}/{len(chunks)})",
                                     force=True)
                self.pool[chunk] = self.model.rollout(self.pool[chunk], lattice, steps, self.generator)
        self.pool_aged = [self.iteration, count, steps]

    # --- the run ---------------------------------------------------------------------------
    def run(self, resume: bool = False) -> list[str]:
        """Train to the budget (from NAME.ckpt when `resume`), then finish(); one process per --out."""
        with run_lock(Path(self.config.out).with_suffix(".lock"), f"run '{self.config.out}'",
                      "wait for it to end or stop it, or choose another --out"):
            return self._run(resume)

    def _run(self, resume: bool) -> list[str]:
        cfg = self.config
        if resume and self.resume():
            self.progress.update("train", self.budget_fraction(), f"resumed at iteration {self.iteration}", force=True)
        elif self.init_missing:
            raise NCA3DError(f"--init model '{cfg.init}' not found; give its path, or add --resume to continue the "
                             f"run from its checkpoint (which holds what it needs of it)")
        start, start_elapsed = time.monotonic(), self.elapsed
        threads = StepThreads(probe_steps=ITERATION_PROBES)
        threads.begin(active=self.device.type == "cpu")
        try:
            self._iterate(threads, start, start_elapsed)
        finally:
            threads.end()
        if cfg.select_every and self.iteration >= cfg.select_after and \
                (not self.selection or self.selection[-1][0] != self.iteration):
            self._select()  # the final weights are a candidate too
        self.save_checkpoint()
        return self.finish()

    def _iterate(self, threads: StepThreads, start: float, start_elapsed: float) -> None:
        """The iterations of run() to the budget, each on the thread count `threads` chooses, with the
        pool ageing, candidate selections and checkpoints between them."""
        cfg = self.config
        while self.iteration < cfg.iters:
            with threads.step():
                loss = self.step()
            if self.device.type == "cpu":
                release_kept_allocations()  # only when the machine runs short
            self.losses.append(loss)
            self.elapsed = start_elapsed + time.monotonic() - start
            fraction = self.budget_fraction()
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (_lr decides it once per step)
            self.progress.update("train", fraction, f"it {self.iteration} loss {loss:.4f} lr {lr:.1e}")
            selects = self._selects_now()
            # A fine-tune starts from weights that grow long already, so its pool ages just before its
            # first candidate: fine-tunes scored before their pool aged blew up at 4096 steps (ore_mesh
            # 1e6 at 50-150, the 64^3 volume_default 1e14-1e22 to 330, NaN at 100), and held from the
            # ageing on (1.65-6.8; 4.4-13.9). Its cap is the share of a run ageing at AGE_POOL_AT:
            # counting only the iterations before the candidate, amethyst_volume's aged 400 of 2048
            # steps at 100 and darkens by 4096; counting the init's too, a 1.5-minute fine-tune of a
            # frequency-64 mesh model spent many minutes ageing
            if cfg.pool_age_steps and self.pool_aged is None and (fraction >= AGE_POOL_AT or (cfg.init and selects)):
                self.age_pool()
            if selects:
                self.progress.update("train", fraction, f"it {self.iteration}: scoring a "
                                     f"{cfg.select_steps}-step rollout", force=True)
                self._select()
            if self.iteration % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if cfg.minutes > 0 and self.elapsed >= cfg.minutes * 60:
                break

    def _selects_now(self) -> bool:
        """Whether this iteration scores a candidate: every select_every iterations from select_after."""
        cfg = self.config
        return cfg.select_every > 0 and self.iteration >= cfg.select_after and self.iteration % cfg.select_every == 0

    def finish(self) -> list[str]:
        cfg = self.config
        out = Path(cfg.out)
        selected = self.iteration
        if self.best is not None:
            self.model.load_state_dict(self.best)
            selected = min(self.selection, key=lambda pair: pair[1])[0]
        self.progress.update("finish", 1.0, "measuring the state range of long growths (the state limit)", force=True)
        self.model.set_state_limit(state_limit(self.model, self.task.lattice, steps=self.config.limit_steps))
        self.model.provenance.update(
            selected_iteration=selected, lr_decayed_at=self.lr_decayed_at, pool_aged=self.pool_aged, selection=_finite_or_none(self.selection, digits=5),
            exemplar=Path(cfg.exemplar).name, exemplar_sha256=self.exemplar_sha256, **self.license_and_credit(),
            iterations=self.iteration,
            final_loss=float(np.mean(self.losses[-50:])) if self.losses else None,
            grey=self.grey, config=dataclasses.asdict(cfg), scale=self.scale.as_dict(), minutes=round(self.elapsed / 60, 2),
            rollout_precision="bf16" if self.rollout_bf16 else "fp32",
            maps={kind: Path(path).name for kind, path in cfg.maps.items()}, map_notes=self.map_notes,
            derived_maps=[kind for kind in self.model.channel_slices() if kind != "albedo" and kind not in cfg.maps])
        if self.init_record:
            self.model.provenance["init"] = self.init_record
        if self.peeked:
            self.model.provenance["peek"] = self.peeked
        save_model(self.model, out)
        files = [str(out)]
        loss_png = out.with_suffix(".loss.png")
        write_png(loss_png, plot_curve(self.losses))
        preview_png = out.with_suffix(".preview.png")
        with torch.no_grad():
            state = self.model.rollout(self.model.seed(self.task.lattice), self.task.lattice, 128,
                                       torch.Generator(device=self.device).manual_seed(1))
            image = self.task.preview(self.model, state)
        write_png(preview_png, image[..., :3])
        return files + [str(loss_png), str(preview_png)]


def plot_curve(values: list[float], width: int = 480, height: int = 240) -> np.ndarray:
    """A loss curve (log scale, with a moving average) as an RGB image (H, W, 3)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=np.float64)
    if len(values) >= 2:
        logs = np.log10(values)
        smooth = np.convolve(logs, np.ones(min(25, len(logs))) / min(25, len(logs)), mode="valid")
        lo, hi = logs.min(), logs.max() if logs.max() > logs.min() else logs.min() + 1
        margin = 30

        def xy(i, v, n):
            return (margin + (width - 2 * margin) * i / max(n - 1, 1),
                    height - margin - (height - 2 * margin) * (v - lo) / (hi - lo))

        draw.line([xy(i, v, len(logs)) for i, v in enumerate(logs)], fill=(190, 190, 220))
        offset = (len(logs) - len(smooth)) // 2
        draw.line([xy(i + offset, v, len(logs)) for i, v in enumerate(smooth)], fill=(20, 40, 160), width=2)
        draw.text((margin, 5), f"loss (log10) {10 ** hi:.3g} .. {10 ** lo:.3g}; {len(values)} iterations", fill="black")
    return np.asarray(image, dtype=np.float32) / 255.0
