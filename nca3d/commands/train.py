"""`nca3d train`: train a model from an exemplar image or a PBR material folder (nca3d.train.trainer);
`nca3d peek`: the model of a run in progress, from its checkpoint (nca3d.train.peek)."""

from __future__ import annotations

import argparse

from ..errors import NCA3DError, whole_numbers


def add_arguments(parser) -> None:
    """The options of `nca3d train`."""
    parser.add_argument("exemplar", help="exemplar image (PNG/JPEG), or a material folder whose maps are found by name "
                                         "(_Color/_albedo/_diff/_basecolor, _NormalGL/_NormalDX/_nor_gl/_normal, "
                                         "_Roughness/_rough/_gloss, _Displacement/_height/_disp, _AmbientOcclusion/_ao)")
    for name in ("normal", "height", "roughness", "ao"):
        parser.add_argument(f"--{name}", metavar="F", help=f"{name} map of the same size (PBR training; wins over "
                                                           f"a folder's)")
    parser.add_argument("--derive-pbr", dest="derive_pbr", action="store_true", default=None,
                        help="derive every missing map from those given: height from the normal (Frankot-Chellappa) "
                             "or from the albedo, the normal from the height, roughness from albedo statistics, "
                             "horizon-based AO; one photo is enough")
    parser.add_argument("--dark-is-high", dest="dark_is_high", action="store_true", default=None,
                        help="with --derive-pbr from a photo alone: read dark tones as high (light mortar or grout "
                             "in the recesses, as in most brick walls and tiles); default bright = high")
    parser.add_argument("--domain", default="2d", choices=["2d", "mesh", "volume"],
                        help="a flat tileable texture, a surface texture for meshes, or a solid volume (default 2d)")
    parser.add_argument("--out", required=True, help="output NAME.nca3d (checkpoint NAME.ckpt beside it)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, help="iterations (default 2000)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget instead of an iteration count")
    parser.add_argument("--resume", action="store_true", help="continue from NAME.ckpt")
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune: start from this model's weights (a .nca3d file or a bundled name)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--features", choices=["effnet", "patches", "vgg16"], help="texture features (default effnet)")
    parser.add_argument("--distance", choices=["emd", "swd"],
                        help="feature distance: relaxed EMD + moments, or sliced Wasserstein (default emd)")
    parser.add_argument("--vgg-weights", dest="vgg_weights", metavar="PATH", help="torchvision VGG16 weights")
    for name, kind, text in (
            ("channels", int, "NCA state channels per cell (default 12)"),
            ("hidden", int, "NCA hidden width (default 96)"),
            ("grid", int, "2D/volume: cells per side; mesh: icosphere frequency (default: from the feature size; a "
                          "volume trains on a periodic crop of at most 32 cells a side and runs on all of it)"),
            ("harmonics", int, "LPPN local-coordinate harmonics (default 1)"),
            ("batch", int, "pool states per iteration (default 4)"),
            ("pool", int, "state pool size (default 256)"),
            ("patch", int, "loss crop size in px (default 96)"),
            ("checkpoint_every", int, "write NAME.ckpt every this many iterations (default 50)"),
            ("lr", float, "Adam learning rate (default 1e-3; 5e-4 with --init)"),
            ("lr_decay", float, "learning-rate factor applied once (default 0.3)"),
            ("lr_decay_at", float, "... when this fraction of the budget is spent (default 0.5)"),
            ("ray_samples", int, "volume: samples per ray (default 40)"),
            ("samples", int, "feature vectors sampled per crop scale and tap (default 512)"),
            ("min_steps", int, "shortest rollout per iteration (default 32; volume 16)"),
            ("max_steps", int, "longest rollout per iteration (default 96; volume 48)"),
            ("seed_every", int, "re-inject the seed every this many iterations (default: states live ~2048 steps)"),
            ("overflow_weight", float, "weight keeping states in [-1, 1] (default 30)"),
            ("normal_height_weight", float, "PBR: weight tying the normal map to the height's slopes (default 10; 0: off)"),
            ("autocorr_weight", float, "feature auto-correlation term (default: 10 when the exemplar repeats, "
             "as bricks, knit and tiles do; else 0)"),
            ("grad_checkpoint", int, "recompute the rollout in segments of this many steps: less memory (0: off; "
                                     "default: 8 where the rollout would fill over half the free memory)"),
            ("moment_weight", float, "weight of the relaxed EMD's mean and covariance term (default 1)"),
            ("feature_upsample", float, "EfficientNet features: the loss crops are upsampled this many times first, "
                                        "so 2-4 px detail reaches its finer taps (1: about 1.5x faster iterations; "
                                        "default: 2, or 1 on 2D for large soft features: over 1.25 cells, little "
                                        "fine detail)"),
            ("tap_balance", float, "weigh feature depths by the exemplar's own variation, to this power (default 0.5)"),
            ("zoom", float, "one loss view (the 2D lattice; at most 32 volume cells or 64 icosphere cells) spans 1/ZOOM "
                          "of the exemplar: features ZOOM x larger; on a mesh 0.5-1 narrows the view to ZOOM x its "
                          "cells (default: from the feature size)"),
            ("select_every", int, "score a long rollout every this many iterations and keep the best (default 100; 0: off)"),
            ("select_after", int, "... from this iteration on (default 400)"),
            ("select_steps", int, "... grown from the seed for this many steps (default 4096)"),
            ("pool_age_steps", int, "once 40%% of the budget is spent, an eighth of the pool grows up to this many "
                                    "steps more, so the model learns to hold its texture that long (default 2048; 0: off)"),
            ("limit_steps", int, "the model's state limit: 1.5x the largest state over 2 growths of this many steps "
                                 "(default 2048)")):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=text)
    parser.add_argument("--scales", type=_scale_list, metavar="S,S,...",
                        help="loss crop scales: scale s takes min(s, 4) crops of 1/s of the view (default 1,2,4; "
                             "1,2,4,8 adds pixel-scale crops for fine grain, at about 1.3x an iteration's cost)")
    parser.add_argument("--supersample", type=int, metavar="N",
                        help="loss renders: each px the mean of up to NxN decoder samples (at most the finest crops' "
                             "px), as the area-sampled targets average the exemplar (default 2 for 2D, 1 for mesh; "
                             "2D and mesh only)")
    parser.add_argument("--target-sampling", choices=["area", "point"],
                        help="how the loss shrinks exemplar crops to its patch: antialiased (area, default) or a "
                             "texel per pixel (point), as renders sample the decoder, so fine grain is not "
                             "averaged out of the targets only")
    parser.add_argument("--license", help="licence of the exemplar (stored in the model header)")
    parser.add_argument("--credit", help="credit line for the exemplar's author")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="the training rollout's matmuls: bf16 is 1.7x faster on CPUs with native bf16 "
                             "(states, decoder and loss stay fp32); auto measures once and picks (default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="a progress bar, JSON lines for tools, or nothing")
    parser.set_defaults(run=run)


def _scale_list(text: str) -> list[int]:
    """--scales as argparse's type, so that parsing (also `nca3d batch`'s check of its jobs) refuses it."""
    try:
        return whole_numbers(text, "1,2,4,8")
    except NCA3DError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args) -> int:
    from ..progress import Progress
    from ..train.trainer import TrainConfig, Trainer

    maps = {name: getattr(args, name) for name in ("normal", "height", "roughness", "ao") if getattr(args, name)}
    options = {key: value for key, value in vars(args).items()
               if key in TrainConfig.__dataclass_fields__ and value is not None and key != "maps"}
    config = TrainConfig(maps=maps, **options)
    progress = Progress(args.progress)
    progress.done(Trainer(config, progress).run(resume=args.resume))
    return 0


def add_peek_arguments(parser) -> None:
    """The options of `nca3d peek`."""
    parser.add_argument("training", metavar="RUN", help="a training run's --out NAME.nca3d, or its checkpoint NAME.ckpt")
    parser.add_argument("--out", help="the model to write (default NAME.peek.nca3d; its .loss.png and .preview.png "
                                      "beside it)")
    parser.add_argument("--weights", default="best", choices=["best", "current"],
                        help="the best long-rollout candidate so far, what the run would ship if it stopped now "
                             "(default), or the weights of the checkpoint's iteration")
    parser.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                        help="a progress bar, JSON lines for tools, or nothing")
    parser.set_defaults(run=run_peek)


def run_peek(args) -> int:
    import sys

    from ..progress import Progress
    from ..train.peek import peek

    progress = Progress(args.progress)
    files, said = peek(args.training, args.out, weights=args.weights, progress=progress)
    if args.progress == "json":
        progress.update("peek", 1.0, said, force=True)
    else:
        print(said, file=sys.stderr)
    progress.done(files)
    return 0
