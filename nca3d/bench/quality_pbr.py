"""Lit quality of PBR models: `python -m nca3d.bench quality --pbr --data DIR` (DIR holds material folders).

For each material folder it trains a PBR model from the folder (or, with --models, takes the sets'
models from there and trains none), grows it from the seed, and scores it with train.quality's
texture distance (in units of the exemplar's own crop-to-crop spread), ceiling (another crop of
the exemplar) and floor (the nearer of a blurred and a phase-randomised crop):
- each map that both the model and the exemplar have (albedo, normal, height, roughness, AO;
  one-channel maps as grey RGB, normals as their encoded RGB), and
- the lit look: the maps shaded flat with the preview's GGX key and fill light
  (render.preview.shade_flat). The exemplar is shaded with all its maps; the model with those of
  its maps the exemplar has too, and the defaults where it lacks one (flat normal, roughness 0.5,
  AO 1), as the exemplar is where it lacks one: a map only the model has (derived) has nothing to
  be compared with, so it is left out of the lit render. The floor degrades the maps (all with the
  same blur or the same random phases), then shades.
The headline is the lit score after 1024 steps (the target: >= 0.5 on most sets). Panels: a row
of the lit exemplar and the lit model after 256 | 1024 | 2048 | 4096 steps, then a row per map.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import NCA3DError
from ..io.images import write_png
from ..io.material import MAP_SUFFIXES, find_material_maps, map_kind
from ..io.model_file import load_model, read_header
from ..ops.pbr import normal_height_agreement
from ..progress import Progress
from ..render.preview import shade_flat
from ..train.quality import (
    STATS_SIZE,
    TextureStatistics,
    band_score,
    degradations,
    reference_band,
    reference_crops,
    resize_square,
)
from ..train.trainer import TrainConfig, Trainer, load_exemplar_stack, map_widths
from .quality import STEPS, grow, score_text, supersample_for

MAP_KINDS = ("albedo", "normal", "height", "roughness", "ao")  # scored maps, in panel row order
HEADLINE_STEPS = 1024
TARGET = 0.5  # the target for the lit score at HEADLINE_STEPS, on most sets
BLANK = 0.12  # panel cells for a map one side lacks


def _has_maps(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in MAP_SUFFIXES and map_kind(p) for p in folder.iterdir())


def material_folders(data: str) -> list[Path]:
    """The material folders in `data` (sub-folders holding files named as maps), sorted."""
    root = Path(data)
    if not root.is_dir():
        raise NCA3DError(f"data folder '{data}' not found; --pbr needs a folder of material folders "
                         f"(like ../shared/data/pbr)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _has_maps(p))
    if not folders:
        hint = f"; '{data}' is itself one: pass the folder that holds it, --data {root.parent}" if _has_maps(root) else ""
        raise NCA3DError(f"no material folders in '{data}' (sub-folders holding albedo.png, normal.png, ... "
                         f"named as maps){hint}; --pbr needs a folder of them, like ../shared/data/pbr")
    return folders


def read_material(folder: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A material folder's maps {kind: (C, S, S)} in [0, 1], read and centre-cropped square as
    training reads them (trainer.load_exemplar_stack), and notes on conversions (DirectX normals, gloss)."""
    stack, kinds, _, _, notes = load_exemplar_stack(TrainConfig(exemplar=str(folder), out=""))
    return dict(zip(kinds, stack.split(map_widths(kinds)))), notes

def find_set_model(models: str | Path, set_name: str, domain: str) -> Path | None:
    """The model of a material set in a --models folder: SET_DOMAIN.nca3d, else the one model of
    that domain whose header says it was trained from a folder of that name (provenance.config's
    `material`, or the folder of its `exemplar`); None when there is none."""
    models = Path(models)
    exact = models / f"{set_name}_{domain}.nca3d"
    if exact.exists():
        return exact
    matches = []
    for path in sorted(models.glob("*.nca3d")) if models.is_dir() else []:
        try:
            header, _ = read_header(path)
        except NCA3DError:
            continue
        if (header.get("config") or {}).get("domain") != domain:
            continue
        config = (header.get("provenance") or {}).get("config") or {}
        folders = {Path(config[key]).name for key in ("material",) if config.get(key)}
        folders |= {Path(config["exemplar"]).parent.name} if config.get("exemplar") else set()
        if set_name in folders:
            matches.append(path)
    if len(matches) > 1:
        raise NCA3DError(f"--models '{models}' holds {len(matches)} {domain} models of material '{set_name}' "
                         f"({', '.join(p.name for p in matches)}); name the one to score {set_name}_{domain}.nca3d")
    return matches[0] if matches else None


def model_maps(model, name: str = "the model") -> dict[str, slice]:
    """{kind: slice} of a model's outputs among MAP_KINDS; a colour-only model's rgb is its albedo."""
    slices = model.channel_slices()
    if "rgb" in slices and "albedo" not in slices and model.config.domain != "volume":
        slices = {"albedo": slices["rgb"]}
    maps = {kind: slices[kind] for kind in MAP_KINDS if kind in slices}
    if "albedo" not in maps:
        raise NCA3DError(f"{name} has outputs {model.config.outputs} ({model.config.domain}), not PBR maps; "
                         f"--pbr scores 2D or mesh models trained from material folders")
    return maps


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """(1 or 3, H, W) -> (3, H, W): a one-channel map as grey."""
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def shade(maps: dict[str, torch.Tensor], kinds=None) -> torch.Tensor:
    """(3, H, W) lit sRGB of maps {kind: (C, H, W)} by shade_flat; only `kinds` of them (None: all)
    are used, the others shade at their defaults."""
    def hwc(kind):
        if kind not in maps or (kinds is not None and kind not in kinds):
            return None
        return maps[kind].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    lit = shade_flat(hwc("albedo"), hwc("normal"), hwc("roughness"), hwc("ao"))
    return torch.from_numpy(lit).permute(2, 0, 1)


def pbr_reference(maps: dict[str, torch.Tensor], stats: TextureStatistics, zoom: float = 1.0) -> dict:
    """Reference crops and ceiling / floor distances of each map and of the lit maps.

    The crops are quality.reference_crops of the stacked maps (so every map and the lit render
    are cut alike), brought to the statistics size before shading; the floor blurs the maps
    there, then shades them."""
    kinds = [kind for kind in MAP_KINDS if kind in maps]
    widths = [maps[kind].shape[0] for kind in kinds]
    crops = reference_crops(torch.cat([maps[kind].float() for kind in kinds]), zoom)

    def split(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(kinds, resize_square(image, stats.size).split(widths)))

    reference = split(crops["reference"])
    others = [split(c) for c in crops["others"]]
    degraded = [[dict(zip(kinds, d.split(widths))) for d in degradations(c, stats.size)] for c in crops["others"]]
    samples = [split(c) for c in crops["spread"]]

    def scale(ref: torch.Tensor, convert) -> dict:
        ref_stats = stats(ref)
        spread = stats.spread([convert(sample) for sample in samples])
        return reference_band(ref_stats, spread, [convert(o) for o in others],
                              [[convert(d) for d in kinds] for kinds in degraded], stats)

    result = {"kinds": kinds, "scale": crops["scale"], "tiled": crops["tiled"], "region": split(crops["region"]),
              "region_px": crops["region"].shape[-1],
              "maps": {kind: scale(_rgb(reference[kind]), lambda m, k=kind: _rgb(m[k])) for kind in kinds},
              "lit": scale(shade(reference), shade)}
    return result


def score_pbr(reference: dict, crops: list[dict[str, torch.Tensor]], stats: TextureStatistics) -> dict:
    """Mean distances and scores of crops [{kind: (C, S, S)}] (a model's, or any maps') against
    pbr_reference: per map both have, and lit (the crops' maps the exemplar has, defaults for the rest)."""
    result = {"maps": {}}
    for kind in reference["kinds"]:
        if kind in crops[0]:
            target = reference["maps"][kind]
            distance = float(np.mean([stats.distance(_rgb(c[kind].float().clamp(0, 1)), b_stats=target["stats"],
                                                     spread=target["spread"]) for c in crops]))
            result["maps"][kind] = {"distance": distance, "score": band_score(target["ceiling"], target["floor"], distance)}
    lit = reference["lit"]
    distance = float(np.mean([stats.distance(shade(c, reference["kinds"]), b_stats=lit["stats"], spread=lit["spread"])
                              for c in crops]))
    result["lit"] = {"distance": distance, "score": band_score(lit["ceiling"], lit["floor"], distance)}
    return result


def _agreement(normal: torch.Tensor, height: torch.Tensor) -> float:
    """normal_height_agreement's mean angle (degrees) of (3, H, W) encoded normals and (1, H, W) height."""
    return normal_height_agreement(normal.clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                                   height.clamp(0, 1)[0].cpu().numpy())["mean_angle_deg"]


@torch.no_grad()
def evaluate_pbr_model(model, maps: dict[str, torch.Tensor], stats: TextureStatistics, out_png: Path,
                       seed: int = 0, batch: int = 4, name: str = "the model") -> dict:
    """Grow `batch` textures; after each of STEPS score their crops of the reference's extent per
    map and lit (see the module doc), and write the panel: a row of the lit exemplar and the lit
    first texture's full view after each of STEPS, then one row per map (exemplar | the model's
    map after each of STEPS; a dark cell where one side lacks the map)."""
    slices = model_maps(model, name)
    config = model.provenance.get("config") or {}
    reference = pbr_reference(maps, stats, zoom=config.get("zoom", 1.0))
    region, kinds = reference["region"], reference["kinds"]
    grey = bool(model.provenance.get("grey")) and list(slices) == ["albedo"]
    blank = torch.full((3, stats.size, stats.size), BLANK)
    shown = [kind for kind in MAP_KINDS if kind in region or kind in slices]
    rows = {"lit": [shade(region)], **{kind: [_rgb(region[kind]) if kind in region else blank] for kind in shown}}
    results = {"maps": {kind: {"ceiling": reference["maps"][kind]["ceiling"], "floor": reference["maps"][kind]["floor"]}
                        for kind in kinds if kind in slices},
               "lit_ceiling": reference["lit"]["ceiling"], "lit_floor": reference["lit"]["floor"]}
    both = {"normal", "height"} <= set(kinds) and {"normal", "height"} <= set(slices)
    if {"normal", "height"} <= set(kinds):
        results["normal_height_deg_exemplar"] = _agreement(region["normal"], region["height"])

    def split(image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {kind: torch.nan_to_num(image[s].float(), nan=0.0) for kind, s in slices.items()}  # a diverged model
        if grey:
            out["albedo"] = out["albedo"].mean(0, keepdim=True).expand(3, -1, -1)
        return out

    supersample = supersample_for(model.config.domain, reference["region_px"], reference["scale"], stats.size)
    results["supersample"] = supersample
    for steps, state, crops, scored in grow(model, stats.size, reference["scale"], seed, batch, supersample):
        scores = score_pbr(reference, [split(c) for c in scored], stats)
        for kind, figures in scores["maps"].items():
            results["maps"][kind].update({f"distance_{steps}": figures["distance"], f"score_{steps}": figures["score"]})
        results[f"lit_distance_{steps}"] = scores["lit"]["distance"]
        results[f"lit_score_{steps}"] = scores["lit"]["score"]
        results[f"overflow_{steps}"] = float((state - state.clamp(-1, 1)).abs().mean())
        full = {kind: image.clamp(0, 1).cpu() for kind, image in split(crops[0][0]).items()}
        rows["lit"].append(shade(full, kinds))
        for kind in shown:
            rows[kind].append(_rgb(full[kind]) if kind in full else blank)
        if steps == HEADLINE_STEPS and both:
            views = [split(crops[0][i]) for i in range(crops[0].shape[0])]
            results[f"normal_height_deg_{steps}"] = float(np.mean([_agreement(v["normal"], v["height"]) for v in views]))
    panel = torch.cat([torch.cat(row, dim=2) for row in rows.values()], dim=1)
    write_png(out_png, panel.clamp(0, 1).permute(1, 2, 0).numpy())
    results.update(tiled_exemplar=reference["tiled"], panel=str(out_png), panel_rows=list(rows),
                   panel_columns=["exemplar", *(f"{n} steps" for n in STEPS)])
    return results


def bench_pbr_quality(data: str, sets: list[str], out: str, domain: str = "2d", minutes: float = 30.0,
                      models: str | None = None, device="cpu", progress: Progress | None = None,
                      stats_size: int = STATS_SIZE, batch: int = 4) -> dict:
    """Train (or load) and evaluate one PBR model per material folder in `data`; returns the
    figures and writes them as OUT/quality_pbr_DOMAIN.json. `stats_size` and `batch` (textures
    grown per set) trade the figures' precision for time (tests)."""
    if domain == "volume":
        raise NCA3DError("--pbr scores 2D and mesh models (volume models have no PBR maps); use --domain 2d or mesh")
    progress = progress or Progress("bar")
    folders = material_folders(data)
    chosen = [f for f in folders if not sets or any(key in f.name for key in sets)]
    if models:  # evaluate the models given; train none
        chosen = [f for f in chosen if find_set_model(models, f.name, domain)]
    if not chosen:
        where = f" with a {domain} model in '{models}'" if models else ""
        raise NCA3DError(f"no material folder in '{data}'{where} matches {sets or 'any name'}; check --data, "
                         f"--exemplars and --models (found {', '.join(f.name for f in folders)})")
    for folder in chosen:  # refuse a bad set before hours of training
        find_material_maps(folder)
    stats = TextureStatistics(stats_size)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in chosen:
        name = f"{folder.name}_{domain}"
        start = time.monotonic()
        maps, notes = read_material(folder)
        model_path = find_set_model(models, folder.name, domain) if models else out_dir / f"{name}.nca3d"
        if not model_path.exists():
            config = TrainConfig(exemplar=str(folder), out=str(model_path), domain=domain, minutes=minutes,
                                 device=str(device), derive_pbr=False)
            Trainer(config, progress).run(resume=True)
        model = load_model(model_path, device)
        if model.config.domain != domain:
            raise NCA3DError(f"model '{model_path}' is a {model.config.domain} model, not {domain}; "
                             f"pass --domain {model.config.domain}")
        row = {"set": folder.name, "domain": domain, "model": str(model_path),
               "exemplar_maps": [kind for kind in MAP_KINDS if kind in maps],
               "model_maps": list(model_maps(model, f"model '{model_path}'")), "map_notes": notes,
               "iterations": model.provenance.get("iterations"), "train_minutes": model.provenance.get("minutes"),
               **evaluate_pbr_model(model, maps, stats, out_dir / f"{name}.pbr_quality.png",
                                    batch=batch, name=f"model '{model_path}'")}
        row["seconds"] = time.monotonic() - start
        rows.append(row)
    results = {"mode": "pbr", "domain": domain, "stats_size": stats.size, "headline": f"lit_score_{HEADLINE_STEPS}",
               "target": TARGET, "rows": rows}
    (out_dir / f"quality_pbr_{domain}.json").write_text(json.dumps(results, indent=2))
    return results


def print_pbr_quality(results: dict) -> None:
    short = {"albedo": "albedo", "normal": "normal", "height": "height", "roughness": "rough", "ao": "ao"}
    print(f"{'set':32s} {'iters':>6s} " + " ".join(f"{f'lit@{n}':>8s}" for n in STEPS) + " "
          + " ".join(f"{short[k]:>7s}" for k in MAP_KINDS) + f" {'nh° ex':>7s} {f'nh° {HEADLINE_STEPS}':>8s}")
    for row in results["rows"]:
        per_map = [row["maps"].get(kind) for kind in MAP_KINDS]
        angles = [row.get("normal_height_deg_exemplar"), row.get(f"normal_height_deg_{HEADLINE_STEPS}")]
        print(f"{row['set']:32s} {row['iterations'] or 0:6d} "
              + " ".join(score_text(row[f"lit_score_{n}"], 8) for n in STEPS) + " "
              + " ".join(f"{'-':>7s}" if m is None else score_text(m[f"score_{HEADLINE_STEPS}"], 7) for m in per_map)
              + " " + " ".join(f"{'-':>{w}s}" if a is None else f"{a:{w}.1f}" for a, w in zip(angles, (7, 8))))
    print("lit@N: score of the maps shaded with the preview's key and fill light after N steps; albedo .. ao: "
          f"each map's score after {HEADLINE_STEPS} steps ('-': not in both). score = (floor - d) / (floor - ceiling): "
          "1 = as close as another crop of the exemplar, 0 = as far as the nearer of a blur and a phase-randomised "
          "crop; n/a: the band is too narrow to rank.")
    print("nh°: normal-height agreement, the mean angle between the normal map and the normals its height "
          f"implies (the exemplar's; the model's after {HEADLINE_STEPS} steps).")
    met = sum(row[f"lit_score_{HEADLINE_STEPS}"] is not None and row[f"lit_score_{HEADLINE_STEPS}"] >= TARGET
              for row in results["rows"])
    print(f"lit score >= {TARGET} after {HEADLINE_STEPS} steps on {met} of {len(results['rows'])} sets "
          f"(the target: most).")
    for row in results["rows"]:
        spans = {**row["maps"], "lit": {"ceiling": row["lit_ceiling"], "floor": row["lit_floor"]}}
        for kind, figures in spans.items():
            if band_score(figures["ceiling"], figures["floor"], 0.0) is None:
                print(f"note: {row['set']} {kind}: its degraded crops (floor {figures['floor']:.3f}) are hardly "
                      f"further than another crop (ceiling {figures['ceiling']:.3f}): the band cannot rank it; read "
                      f"its distances and the panel.")
        if row.get("tiled_exemplar"):
            print(f"note: {row['set']} is a 2x2 tiling of one image: it is scored within one period "
                  f"(quarter-extent crops).")


def bench_derive(data: str, sets: list[str]) -> dict:
    """--derive-pbr against real sets: for each material folder, nca3d.ops.pbr.derivation_figures
    of its maps (those with a normal map), and the derivations' seconds."""
    from ..ops.pbr import derivation_figures

    results = {}
    for folder in material_folders(data):
        if sets and not any(key in folder.name for key in sets):
            continue
        maps, _ = read_material(folder)
        if "normal" not in maps:
            continue
        start = time.perf_counter()
        figures = derivation_figures({kind: m.permute(1, 2, 0).numpy() for kind, m in maps.items()})
        results[folder.name] = {**figures, "size": int(maps["albedo"].shape[-1]),
                                "seconds": round(time.perf_counter() - start, 3)}
    if not results:
        raise NCA3DError(f"no material folder with a normal map in '{data}'; point --data at material folders")
    return results


def print_derive(results: dict) -> None:
    columns = [("normal_height_corr", "corr(h from normal, h)"), ("albedo_height_corr", "corr(h from albedo, h)"),
               ("albedo_normal_angle_deg", "angle(n from albedo, n)"), ("flat_normal_angle_deg", "angle(flat, n)"),
               ("albedo_slope_corr", "slope corr (albedo)"), ("normal_roundtrip_angle_deg", "angle(n of ∫n, n)")]
    print("set".ljust(28) + "".join(title.rjust(26) for _, title in columns))
    for name, figures in results.items():
        cells = [f"{figures[key]:.3f}" if key in figures else "-" for key, _ in columns]
        print(name.ljust(28) + "".join(cell.rjust(26) for cell in cells))
    print("angles in degrees; corr: Pearson correlation; h: height, n: the normal map")
