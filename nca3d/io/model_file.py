"""The .nca3d model file: a safetensors file whose metadata holds one JSON header.

Header (metadata key "nca3d"): format, schema, domain, lattice, config, outputs, nca_params,
lppn_params, tensors_sha256 (over every tensor's name, shape and bytes) and provenance.
This module moves and checks the bytes (framing, format, schema, tensor data, checksum) and never
unpickles; what the header says of the model, and whether the tensors make that model, is the
core's (core.serial).
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

from ..core.serial import model_from, model_header
from ..errors import NCA3DError
from .atomic import write_bytes_atomic

SCHEMA_VERSION = 1
HEADER_KEY = "nca3d"
MAX_HEADER_BYTES = 16 << 20


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted tensor names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_model_file(path: str | os.PathLike, header: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Write `tensors` and `header` (plus format, schema and tensors_sha256) atomically as a .nca3d
    file; returns the header written."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"format": "nca3d", "schema": SCHEMA_VERSION, **header, "tensors_sha256": tensors_digest(tensors)}
    data = save_safetensors(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    write_bytes_atomic(path, data)
    return header


def save_model(model, path: str | os.PathLike) -> dict:
    """Write `model` atomically (its header from the core: core.serial.model_header); returns the header."""
    return write_model_file(path, model_header(model), model.state_dict())


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


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a .nca3d file and check its bytes: framing, header, tensor data and checksum.
    Returns (header, tensors); whether they make a model is the core's to say (core.serial)."""
    header, data = read_header(path)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise _refuse(path, f"corrupted tensor data ({exc})") from None
    if header.get("tensors_sha256") != tensors_digest(tensors):
        raise _refuse(path, "checksum mismatch: the weights are corrupted")
    return header, tensors


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """Load and fully validate a .nca3d file: its bytes here, the model by the core (core.serial.model_from)."""
    header, tensors = read_model_file(path)
    try:
        model = model_from(header, tensors)
    except ValueError as exc:
        raise _refuse(path, str(exc)) from None
    return model.to(device)
