"""The .nca3d model file: a safetensors file whose metadata holds one JSON header.

Header (metadata key "nca3d"): format, schema, domain, lattice, config, outputs, nca_params,
lppn_params, tensors_sha256 (over every tensor's name, shape and bytes) and provenance.
Loading validates everything and never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import NCA3DError
from ..model import Model, ModelConfig
from .atomic import write_bytes_atomic

SCHEMA_VERSION = 1
HEADER_KEY = "nca3d"
MAX_HEADER_BYTES = 16 << 20
PROVENANCE_KEYS = ("exemplar", "exemplar_sha256", "license", "credit", "iterations", "final_loss", "config")


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted tensor names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_header(model: Model) -> dict:
    """The JSON header describing `model` (what `nca3d info` prints)."""
    cfg = model.config
    lattice = {"kind": cfg.lattice_kind}
    if cfg.grid_size:
        lattice.update(size=list(cfg.grid_size), harmonics=cfg.harmonics)
    else:
        lattice.update(icosphere_frequency=cfg.icosphere_frequency, triangle_coord=cfg.triangle_coord)
    provenance = {key: None for key in PROVENANCE_KEYS}
    provenance.update(model.provenance)
    return {
        "format": "nca3d",
        "schema": SCHEMA_VERSION,
        "domain": cfg.domain,
        "lattice": lattice,
        "outputs": [
            {"name": c.name, "size": c.size, "colour_space": c.colour_space, "activation": c.activation}
            for c in model.outputs
        ],
        "nca_params": model.nca_params,
        "lppn_params": model.lppn_params,
        "config": cfg.to_dict(),
        "provenance": provenance,
    }


def save_model(model: Model, path: str | os.PathLike) -> dict:
    """Write `model` atomically; returns the header written."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    header = model_header(model)
    header["tensors_sha256"] = tensors_digest(tensors)
    data = save_safetensors(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    write_bytes_atomic(path, data)
    return header


def _refuse(path, problem: str) -> NCA3DError:
    return NCA3DError(f"cannot load model '{path}': {problem}")


def read_header(path: str | os.PathLike) -> tuple[dict, bytes]:
    """Read and check the file's framing and JSON header; returns (header, whole file bytes)."""
    path = Path(path)
    if not path.exists():
        raise NCA3DError(f"model file '{path}' not found; check the path of the .nca3d file")
    if not path.is_file():
        raise _refuse(path, "it is not a file")
    data = path.read_bytes()
    framed = data[8:9] == b"{"  # safetensors: an 8-byte length (its first byte may be anything), then JSON
    if not framed and (data[:1] == b"\x80" or data[:2] == b"PK"):
        raise _refuse(path, "it is a pickle / torch.save file, which nca3d never loads; "
                            "re-export the weights as a .nca3d model")
    if len(data) < 8:
        raise _refuse(path, "the file is truncated (shorter than a safetensors preamble)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise _refuse(path, "it is truncated or not a safetensors file (bad header length)")
    try:
        raw = json.loads(data[8:8 + length])
        header = json.loads(raw["__metadata__"][HEADER_KEY])
    except (ValueError, KeyError, TypeError):
        raise _refuse(path, "it has no readable nca3d header (corrupted, or a safetensors file "
                            "that is not an nca3d model)") from None
    if not isinstance(header, dict) or header.get("format") != "nca3d":
        raise _refuse(path, "its header is not an nca3d header")
    if header.get("schema") != SCHEMA_VERSION:
        raise _refuse(path, f"unsupported schema version {header.get('schema')!r} (this nca3d reads "
                            f"{SCHEMA_VERSION}); upgrade nca3d or re-save the model")
    return header, data


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """Load and fully validate a .nca3d file."""
    header, data = read_header(path)
    try:
        config = ModelConfig.from_dict(header["config"])
        model = Model(config, provenance=header.get("provenance") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(path, f"invalid model config in header ({exc})") from None
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise _refuse(path, f"corrupted tensor data ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _refuse(path, f"tensor names do not match its config (missing {missing}, unexpected {unexpected})")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise _refuse(path, f"tensor '{name}' has shape {tuple(tensor.shape)} {tensor.dtype}, "
                                f"expected {tuple(expected[name].shape)} {expected[name].dtype}")
    if header.get("tensors_sha256") != tensors_digest(tensors):
        raise _refuse(path, "checksum mismatch: the weights are corrupted")
    for key, value in (("domain", config.domain), ("nca_params", model.nca_params),
                       ("lppn_params", model.lppn_params)):
        if header.get(key) != value:
            raise _refuse(path, f"header field '{key}' is {header.get(key)!r} but the weights give {value!r}")
    model.load_state_dict(tensors)
    return model.to(device)
