"""A texture model: NCA dynamics on a lattice + LPPN decoder + named output channels."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lattices import Grid2D, Grid3D, Lattice, MeshLattice, icosphere
from ..lattices.base import cpu_empty, transpose_into
from .gather import weighted_gather
from .lppn import SIREN
from .nca import NCA
from .threads import run_threads, shared_numbers, threads_for

DECODE_CHUNK = 65536  # query points per decoder call: bounds peak memory at any resolution
TABLE_POINTS_PER_CELL = 4  # fast decodes of at least this many points per cell gather first-layer tables

CHANNEL_NAMES = ("albedo", "height", "roughness", "ao", "normal", "rgb", "density")
COLOUR_SPACES = ("srgb", "non-color")
ACTIVATIONS = {"offset": lambda x: x + 0.5, "relu": F.relu, "softplus": F.softplus}  # name -> function


@dataclass(frozen=True)
class OutputChannel:
    """One named output map. activation: offset (raw + 0.5), relu, or softplus."""

    name: str
    size: int
    colour_space: str
    activation: str = "offset"


OUTPUT_PRESETS: dict[str, tuple[OutputChannel, ...]] = {
    "pbr": (
        OutputChannel("albedo", 3, "srgb"),
        OutputChannel("height", 1, "non-color"),
        OutputChannel("roughness", 1, "non-color"),
        OutputChannel("ao", 1, "non-color"),
        OutputChannel("normal", 3, "non-color"),
    ),
    "rgb": (OutputChannel("rgb", 3, "srgb"),),
    "rgba": (OutputChannel("rgb", 3, "srgb", "relu"), OutputChannel("density", 1, "non-color", "softplus")),
}


PBR_CHANNELS = tuple(c.name for c in OUTPUT_PRESETS["pbr"])


def pbr_subset(names) -> str:
    """The outputs setting of a PBR model with only these maps (albedo always): "pbr" for all of
    them, else the names in preset order joined by "+", e.g. "albedo+height+normal"."""
    chosen = {"albedo", *names}
    unknown = chosen - set(PBR_CHANNELS)
    if unknown:
        raise ValueError(f"unknown PBR maps {sorted(unknown)}; use {', '.join(PBR_CHANNELS)}")
    return "pbr" if chosen == set(PBR_CHANNELS) else "+".join(n for n in PBR_CHANNELS if n in chosen)


@dataclass(frozen=True)
class DomainSpec:
    lattice: str
    outputs: tuple[str, ...]  # allowed presets, default first


DOMAINS: dict[str, DomainSpec] = {
    "2d": DomainSpec("grid2d", ("pbr", "rgb")),
    "mesh": DomainSpec("mesh", ("rgb", "pbr")),
    "volume": DomainSpec("grid3d", ("rgba",)),
}
DEFAULT_GRID_SIZE = {"2d": [128, 128], "volume": [64, 64, 64]}


@dataclass
class ModelConfig:
    """Everything that fixes a model's architecture (saved in the .nca3d header)."""

    domain: str = "2d"
    outputs: str = ""  # preset name, or PBR maps joined by "+" (pbr_subset); "" picks the domain's default
    channels: int = 16
    hidden: int = 128
    fire_rate: float = 0.5
    lppn_width: int = 32
    lppn_hidden_layers: int = 3
    omega0: float = 10.0
    harmonics: int = 0  # squares/cubes: sin/cos harmonics of the local coordinate (C0 when > 0)
    triangle_coord: str = "sorted_cdf"  # triangles: sorted_cdf (C0) or barycentric
    grid_size: list[int] = field(default_factory=list)  # 2d: [H, W]; volume: [D, H, W]
    icosphere_frequency: int = 64  # mesh: the training lattice
    # > 0: every step clamps states to [-state_limit, state_limit]; set after training to STATE_MARGIN x the
    # largest |state| of long rollouts on the training lattice (grow.state_limit), so it never binds there
    # and keeps states from running away on lattices unlike it (remeshed scans, open boundaries)
    state_limit: float = 0.0

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain '{self.domain}'; use one of {', '.join(DOMAINS)}")
        allowed = DOMAINS[self.domain].outputs
        if not self.outputs:
            self.outputs = allowed[0]
        if "+" in self.outputs and "pbr" in allowed:
            if pbr_subset(self.outputs.split("+")) != self.outputs:
                raise ValueError(f"outputs '{self.outputs}' must start with albedo and list PBR maps once each, "
                                 f"in the order {'+'.join(PBR_CHANNELS)}")
        elif self.outputs not in allowed:
            raise ValueError(f"outputs '{self.outputs}' do not fit domain '{self.domain}'; use {' or '.join(allowed)}")
        if self.domain in DEFAULT_GRID_SIZE:
            self.grid_size = list(self.grid_size or DEFAULT_GRID_SIZE[self.domain])
            if len(self.grid_size) != len(DEFAULT_GRID_SIZE[self.domain]) or min(self.grid_size) < 3:
                raise ValueError(f"grid_size {self.grid_size} is invalid for domain '{self.domain}'")
        else:
            self.grid_size = []
        for name in ("channels", "hidden", "lppn_width", "lppn_hidden_layers", "icosphere_frequency"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 < self.fire_rate <= 1.0:
            raise ValueError("fire_rate must be in (0, 1]")
        if self.harmonics < 0:
            raise ValueError("harmonics must be >= 0")
        if not (self.state_limit >= 0 and math.isfinite(self.state_limit)):
            raise ValueError("state_limit must be a finite number >= 0")

    @property
    def lattice_kind(self) -> str:
        return DOMAINS[self.domain].lattice

    @property
    def output_channels(self) -> tuple[OutputChannel, ...]:
        if "+" in self.outputs:
            names = self.outputs.split("+")
            return tuple(c for c in OUTPUT_PRESETS["pbr"] if c.name in names)
        return OUTPUT_PRESETS[self.outputs]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**data)


class Model(nn.Module):
    """NCA + LPPN + named outputs. States are (B, *cells, C) on a lattice of the model's kind."""

    def __init__(self, config: ModelConfig, provenance: dict | None = None):
        super().__init__()
        self.config = config
        self.provenance = dict(provenance or {})
        perception = Grid2D.perception_size if config.lattice_kind == "grid2d" else Grid3D.perception_size
        self.nca = NCA(config.channels, config.hidden, perception, config.fire_rate, config.state_limit)
        local_dim = self.local_dim
        self.lppn = SIREN(local_dim + config.channels, self.num_outputs, config.lppn_width,
                          config.lppn_hidden_layers, config.omega0)

    def set_state_limit(self, limit: float) -> None:
        """Clamp states to [-limit, limit] after every step from now on (0: no clamp); saved in the config."""
        self.config.state_limit = self.nca.state_limit = float(limit)

    # --- structure -------------------------------------------------------------------------
    @property
    def outputs(self) -> tuple[OutputChannel, ...]:
        return self.config.output_channels

    @property
    def num_outputs(self) -> int:
        return sum(c.size for c in self.outputs)

    @property
    def local_dim(self) -> int:
        dims = {"grid2d": 2, "grid3d": 3}.get(self.config.lattice_kind)
        if dims is None:
            return MeshLattice.local_dim
        return dims if self.config.harmonics == 0 else 2 * self.config.harmonics * dims

    def channel_slices(self) -> dict[str, slice]:
        """Output channel name -> slice of the decoded K values."""
        slices, start = {}, 0
        for channel in self.outputs:
            slices[channel.name] = slice(start, start + channel.size)
            start += channel.size
        return slices

    @property
    def nca_params(self) -> int:
        return sum(p.numel() for p in self.nca.parameters())

    @property
    def lppn_params(self) -> int:
        return sum(p.numel() for p in self.lppn.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def make_lattice(self, mesh: tuple | None = None) -> Lattice:
        """The model's lattice: its grid, the training icosphere, or a given (vertices, faces) mesh."""
        cfg = self.config
        if cfg.lattice_kind == "grid2d":
            lattice = Grid2D(tuple(cfg.grid_size), cfg.harmonics)
        elif cfg.lattice_kind == "grid3d":
            lattice = Grid3D(tuple(cfg.grid_size), cfg.harmonics)
        else:
            vertices, faces = mesh if mesh is not None else icosphere(cfg.icosphere_frequency)
            lattice = MeshLattice(vertices, faces, cfg.triangle_coord)
        return lattice.to(self.device)

    def check_lattice(self, lattice: Lattice) -> None:
        if lattice.perception_size != self.nca.perception or lattice.local_dim != self.local_dim:
            raise ValueError(f"a {self.config.domain} model cannot run on a {lattice.kind} lattice "
                             f"with these settings")

    # --- dynamics --------------------------------------------------------------------------
    def seed(self, lattice: Lattice, batch: int = 1) -> Tensor:
        return lattice.seed(batch, self.config.channels, device=self.device)

    def rollout(self, state: Tensor, lattice: Lattice, steps: int, generator=None, callback=None,
                checkpoint_segment: int = 0) -> Tensor:
        self.check_lattice(lattice)
        return self.nca.rollout(state, lattice, steps, generator, callback, checkpoint_segment)

    # --- decoding --------------------------------------------------------------------------
    def activate(self, raw: Tensor, dim: int = -1) -> Tensor:
        """Apply each output channel's activation to raw LPPN outputs with the K channels along `dim`
        (last: (..., K)). Without autograd in place on raw (returned): a cat of narrow columns, and
        softplus on strided ones, cost 10x more."""
        parts = raw.split([c.size for c in self.outputs], dim=dim)
        if raw.requires_grad:
            return torch.cat([ACTIVATIONS[c.activation](part) for c, part in zip(self.outputs, parts)], dim=dim)
        if all(c.activation == "offset" for c in self.outputs):
            return raw.add_(0.5)
        for channel, part in zip(self.outputs, parts):
            part.copy_(ACTIVATIONS[channel.activation](part.contiguous()))
        return raw

    def decode_located(self, state: Tensor, located) -> Tensor:
        """state (B, *cells, C), Located with Q points -> decoded outputs (B, Q, K): _decode_fast for
        float32 CPU inference, else decode_plain."""
        if not _fast_decode(state):
            return self.decode_plain(state, located)
        count = located.corners.shape[0]
        out = cpu_empty((state.shape[0], count, self.num_outputs))
        return self._decode_fast(self._decode_sources(state, count), located, out)

    def decode_plain(self, state: Tensor, located) -> Tensor:
        """decode_located with every point's LPPN input [local, interpolated state] gathered at once,
        then the LPPN on them (SIREN.forward: exact with autograd or off the CPU, else SIREN.fast):
        the path of training and of other devices and dtypes, and dense.py's generic reference."""
        batch, channels = state.shape[0], state.shape[-1]
        flat = state.reshape(-1, channels)  # (B*M, C)
        cells = flat.shape[0] // batch
        count, corners = located.corners.shape
        index = located.corners.unsqueeze(0) + (torch.arange(batch, device=flat.device) * cells).view(-1, 1, 1)
        weights = located.weights.to(flat.dtype).unsqueeze(0).expand(batch, -1, -1)
        # A fused weighted gather: sum_k w_k s[corner_k] for every point of every batch element.
        interpolated = weighted_gather(flat, index.reshape(-1, corners), weights.reshape(-1, corners))
        interpolated = interpolated.view(batch, count, channels)
        local = located.local.to(flat.dtype).unsqueeze(0).expand(batch, -1, -1)
        raw = self.lppn(torch.cat([local, interpolated], dim=-1).reshape(batch * count, -1))
        return self.activate(raw.reshape(batch, count, -1))

    def _decode_sources(self, state: Tensor, count: int) -> tuple[Tensor, bool]:
        """What the fast decode of `count` points gathers from: the cells (B, M, C), or where the
        points are at least TABLE_POINTS_PER_CELL per cell, each element's first_layer_table
        (B, M, width) (computing it costs less than the first layer it saves); and which one."""
        cells = state.reshape(state.shape[0], -1, state.shape[-1])
        if count < TABLE_POINTS_PER_CELL * cells.shape[1]:
            return cells, False
        return self.lppn.first_layer_table(cells), True

    def _decode_fast(self, sources: tuple[Tensor, bool], located, out: Tensor) -> Tensor:
        """decode_located for float32 CPU inference into out (B, Q, K) (returned), gathering from
        `sources` (_decode_sources): per batch element the SIREN's fast_interpolated (gather and
        layers block by block), its feature-major outputs (K, Q) activated channel by channel
        (contiguous rows) and transposed into out."""
        source, tabled = sources
        corners, weights = located.corners.contiguous(), located.weights.float().contiguous()
        local = located.local.float()
        for element, values in zip(source, out):
            raw = self.lppn.fast_interpolated(element, corners, weights, local, tabled)
            transpose_into(self.activate(raw, dim=0), values)
        return out

    def decode_chunks(self, state: Tensor, lattice: Lattice, query, chunk: int = DECODE_CHUNK
                      ) -> Iterator[tuple[slice, Tensor]]:
        """Yield (query slice, outputs (B, q, K)) over chunks of `chunk // B` query points."""
        self.check_lattice(lattice)
        for rows in _spans(len(query), _points_per_chunk(state, chunk)):
            yield rows, self.decode_located(state, self._locate(lattice, query, rows))

    def decode(self, state: Tensor, lattice: Lattice, query, chunk: int = DECODE_CHUNK) -> Tensor:
        """Decode all query points (grid points (Q, d) or SurfacePoints) -> (B, Q, K). CPU inference
        shares the chunks (at least one per thread) among torch.get_num_threads() Python threads,
        each taking the next chunk free (core.threads.shared_numbers);
        float32 ones write into one output (_decode_fast)."""
        self.check_lattice(lattice)
        step = _points_per_chunk(state, chunk)
        threaded = state.device.type == "cpu" and not torch.is_grad_enabled()
        if threaded:
            step = max(1, min(step, math.ceil(len(query) / torch.get_num_threads())))
        spans = _spans(len(query), step)
        streams = threads_for(len(spans)) if threaded else 1
        out = sources = None
        if _fast_decode(state):
            out = cpu_empty((state.shape[0], len(query), self.num_outputs))
            sources = self._decode_sources(state, len(query))
        parts = [None] * len(spans)

        numbers = shared_numbers(len(spans))

        def stream(_: int) -> None:
            for number in numbers():
                located = self._locate(lattice, query, spans[number])
                if out is None:
                    parts[number] = self.decode_located(state, located)
                else:
                    self._decode_fast(sources, located, out[:, spans[number]])

        run_threads(stream, streams)
        return torch.cat(parts, dim=1) if out is None else out

    def _locate(self, lattice: Lattice, query, rows: slice):
        return lattice.locate(query[rows].to(self.device))


def _fast_decode(state: Tensor) -> bool:
    """Whether a decode of this state takes the fast path: float32 CPU inference (no autograd)."""
    return state.device.type == "cpu" and state.dtype == torch.float32 and not torch.is_grad_enabled()


def _points_per_chunk(state: Tensor, chunk: int) -> int:
    """Query points per decoder call for a batch state (B, ...): `chunk` points over all B."""
    return max(1, chunk // max(state.shape[0], 1))


def _spans(total: int, step: int) -> list[slice]:
    """Consecutive slices of at most `step` of range(total)."""
    return [slice(start, min(total, start + step)) for start in range(0, total, step)]
