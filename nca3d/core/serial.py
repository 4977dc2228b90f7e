"""A Model to and from what a .nca3d file holds: its JSON header and its tensors.

The header's model part (domain, lattice, outputs, parameter counts, config, provenance) is made
here from a model, and a model is built here from a header and tensors, checked against each
other. Reading and writing the file's bytes (framing, schema, checksum) is nca3d.io.model_file's.
"""

from __future__ import annotations

import torch

from .model import Model, ModelConfig

PROVENANCE_KEYS = ("exemplar", "exemplar_sha256", "license", "credit", "iterations", "final_loss", "config")


def model_header(model: Model) -> dict:
    """The JSON header describing `model` (what `nca3d info` prints, less the file's own fields)."""
    cfg = model.config
    lattice = {"kind": cfg.lattice_kind}
    if cfg.grid_size:
        lattice.update(size=list(cfg.grid_size), harmonics=cfg.harmonics)
    else:
        lattice.update(icosphere_frequency=cfg.icosphere_frequency, triangle_coord=cfg.triangle_coord)
    provenance = {key: None for key in PROVENANCE_KEYS}
    provenance.update(model.provenance)
    return {
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


def model_from(header: dict, tensors: dict[str, torch.Tensor]) -> Model:
    """The model a header's config describes, with `tensors` as its weights; ValueError (one line,
    what is wrong) when the config is invalid or the tensors or the header's counts do not fit it."""
    try:
        config = ModelConfig.from_dict(header["config"])
        model = Model(config, provenance=header.get("provenance") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid model config in header ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"tensor names do not match its config (missing {missing}, unexpected {unexpected})")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise ValueError(f"tensor '{name}' has shape {tuple(tensor.shape)} {tensor.dtype}, "
                             f"expected {tuple(expected[name].shape)} {expected[name].dtype}")
    for key, value in (("domain", config.domain), ("nca_params", model.nca_params),
                       ("lppn_params", model.lppn_params)):
        if header.get(key) != value:
            raise ValueError(f"header field '{key}' is {header.get(key)!r} but the weights give {value!r}")
    model.load_state_dict(tensors)
    return model
