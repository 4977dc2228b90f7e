"""Run-time device choice: CUDA when present, otherwise CPU."""

from __future__ import annotations

import torch

from .errors import NCA3DError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a usable torch.device."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise NCA3DError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NCA3DError(f"device '{name}' requested but CUDA is not available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NCA3DError(
                f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices); use cuda:0 or auto"
            )
    elif device.type != "cpu":
        raise NCA3DError(f"unsupported device '{name}'; use auto, cpu, cuda or cuda:N")
    return device
