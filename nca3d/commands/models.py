"""`nca3d new` (a freshly initialised model), `nca3d info` (a model's header as JSON) and `nca3d models`
(the bundled library)."""

from __future__ import annotations

import json

from ..errors import NCA3DError


def add_new_arguments(parser) -> None:
    """The options of `nca3d new`."""
    parser.add_argument("--domain", required=True, choices=["2d", "mesh", "volume"])
    parser.add_argument("--outputs", choices=["pbr", "rgb", "rgba"], help="output channels (default per domain)")
    parser.add_argument("--channels", type=int, default=16, help="cell state channels (default 16)")
    parser.add_argument("--hidden", type=int, default=128, help="NCA hidden width (default 128)")
    parser.add_argument("--harmonics", type=int, default=0, help="sin/cos harmonics of grid local coordinates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .nca3d path")
    parser.set_defaults(run=run_new)


def add_info_arguments(parser) -> None:
    """The options of `nca3d info`."""
    parser.add_argument("model", help="a model file or a library name (see `nca3d models`)")
    parser.set_defaults(run=run_info)


def add_models_arguments(parser) -> None:
    """The options of `nca3d models`."""
    parser.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    parser.set_defaults(run=run_models)


def run_new(args) -> int:
    import torch

    from ..core.model import Model, ModelConfig
    from ..io.model_file import save_model

    try:
        config = ModelConfig(domain=args.domain, outputs=args.outputs or "", channels=args.channels,
                             hidden=args.hidden, harmonics=args.harmonics)
    except ValueError as exc:
        raise NCA3DError(str(exc)) from None
    torch.manual_seed(args.seed)
    header = save_model(Model(config), args.out)
    print(json.dumps({"written": str(args.out), "domain": header["domain"],
                      "nca_params": header["nca_params"], "lppn_params": header["lppn_params"]}))
    return 0


def run_info(args) -> int:
    from ..io.model_file import load_model, read_header
    from ..models import resolve_model

    path = resolve_model(args.model)
    load_model(path)  # full validation before printing
    print(json.dumps(read_header(path)[0], indent=2, sort_keys=True))
    return 0


def run_models(args) -> int:
    from ..models import format_library, library_entries

    entries = library_entries()
    print(json.dumps(entries, indent=2) if args.json else format_library(entries))
    return 0
