import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from nca3d.cli import main
from nca3d.errors import NCA3DError
from nca3d.io.model_file import read_header
from nca3d.progress import Progress
from nca3d.train.scale import (
    DEFAULT_GRID,
    MAX_PX_PER_CELL,
    MAX_ZOOM,
    MIN_GRID,
    MIN_PERIODS,
    MIN_ZOOM,
    TARGET_CELLS,
    TORUS_RANGE,
    axis_repeats,
    choose_scale,
    correlation_length,
    fine_detail,
    fit_torus,
    period,
    torus_strain,
)
from nca3d.train.trainer import REGULAR_AUTOCORR_WEIGHT, TrainConfig, Trainer
from tests.conftest import requires_raycaster


def smooth_noise(size: int, sigma: float, seed: int = 0, channels: int = 3) -> np.ndarray:
    """White noise blurred by a Gaussian of `sigma` px (H, W, C) in [0, 1]: its autocorrelation is
    exp(-r^2 / 4 sigma^2), whose integral over r is sigma sqrt(pi)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(size, size, channels))
    blurred = np.stack([ndimage.gaussian_filter(noise[..., c], sigma, mode="wrap") for c in range(channels)], -1)
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return blurred.astype(np.float32)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)


@pytest.mark.parametrize("sigma", [2.0, 4.0, 8.0])
def test_correlation_length_of_blurred_noise_is_sigma_root_pi(sigma):
    length = correlation_length(as_tensor(smooth_noise(256, sigma)))
    assert length == pytest.approx(sigma * np.sqrt(np.pi), rel=0.2)


def test_fine_detail_is_the_share_of_the_variance_under_five_px_at_the_finest_crops():
    """White noise is nearly all fine detail, smooth noise (sigma 8) almost none; shrinking white noise
    4x antialiased (texel 4) leaves it white, magnifying smooth noise 4x (texel 0.25) smoother still;
    a flat image has none to measure."""
    white, smooth = as_tensor(smooth_noise(256, 0.01)), as_tensor(smooth_noise(256, 8.0))
    assert fine_detail(white, 1.0) > 0.9 and fine_detail(white, 4.0) > 0.9
    assert fine_detail(smooth, 1.0) < 0.02 and fine_detail(smooth, 0.25) < fine_detail(smooth, 1.0) / 4
    assert 0.02 < fine_detail(as_tensor(smooth_noise(256, 1.5)), 1.0) < 0.9  # between
    assert fine_detail(torch.full((3, 64, 64), 0.5), 1.0) is None


def test_correlation_length_sees_coarse_structure_under_fine_grain():
    """Large patches plus fine grain of equal variance: the half-width would say 'grain', the
    integral lands between the two."""
    coarse, fine = smooth_noise(256, 12.0, seed=1), smooth_noise(256, 1.0, seed=2)
    mixed = correlation_length(as_tensor(0.5 * coarse + 0.5 * fine))
    assert 3 * correlation_length(as_tensor(fine)) < mixed < correlation_length(as_tensor(coarse))


def test_correlation_length_colour_only_pattern_and_flat_image():
    grey = smooth_noise(128, 4.0, channels=1)[..., 0]
    # red against green with the same luminance everywhere: no luminance structure, still a texture
    colour = np.stack([grey, 1 - grey, np.full_like(grey, 0.5)], -1)
    assert correlation_length(as_tensor(colour)) == pytest.approx(4.0 * np.sqrt(np.pi), rel=0.25)
    assert correlation_length(torch.full((3, 64, 64), 0.3)) is None


def test_correlation_length_is_measured_on_a_reduced_copy_of_large_images():
    small = correlation_length(as_tensor(smooth_noise(512, 4.0)))
    image = np.repeat(np.repeat(smooth_noise(512, 4.0), 4, axis=0), 4, axis=1)  # 2048 px, features 4x larger
    assert correlation_length(as_tensor(image)) == pytest.approx(4 * small, rel=0.1)


def test_period_finds_a_repeat_and_not_in_stochastic_textures():
    tile = smooth_noise(64, 2.0, seed=3)
    tiled = np.tile(tile, (4, 4, 1))  # a regular pattern: the same 64 px tile 4 x 4 times
    assert period(as_tensor(tiled)) == pytest.approx(64, abs=2)
    assert period(as_tensor(smooth_noise(256, 2.0, seed=4))) is None
    assert period(torch.full((3, 64, 64), 0.5)) is None


def test_a_repeat_caps_the_zoom_so_a_view_holds_several():
    free = choose_scale("2d", 4.0, 1024)  # fine grain alone: zoom up to MAX_ZOOM
    capped = choose_scale("2d", 4.0, 1024, period_px=128.0)  # tiles of 128 px: at most 1024 / (4 x 128) = 2
    assert free.zoom == MAX_ZOOM and capped.zoom == 1024 / (MIN_PERIODS * 128)
    assert choose_scale("2d", 4.0, 1024, period_px=512.0).zoom == 1.0  # never below 1
    assert "repeats every 128 px" in capped.message() and capped.as_dict()["period_px"] == 128.0


def _rect_tiles(size: int, across: int, down: int, seed: int = 3) -> np.ndarray:
    """A regular pattern (size, size, 3): one smooth-noise tile `across` px wide and `down` px high
    repeated (a whole number of times in neither direction when they do not divide size)."""
    tile = smooth_noise(max(across, down), 2.0, seed=seed)[:down, :across]
    return np.tile(tile, (size // down + 1, size // across + 1, 1))[:size, :size]


def test_axis_repeats_finds_each_axis_repeat_to_a_fraction_of_a_px():
    across, down = axis_repeats(as_tensor(_rect_tiles(512, 36, 76)))
    assert across == pytest.approx(36, abs=0.2) and down == pytest.approx(76, abs=0.3)
    # a repeat only along the rows: columns of a tile 40 px wide, rows of independent noise
    columns = np.concatenate([_rect_tiles(512, 40, 512 // 8, seed=s)[: 512 // 8] for s in range(8)], 0)
    across, down = axis_repeats(as_tensor(columns))
    assert across == pytest.approx(40, abs=0.3) and down is None
    assert axis_repeats(as_tensor(smooth_noise(256, 2.0, seed=4))) == (None, None)
    assert axis_repeats(torch.full((3, 64, 64), 0.5)) == (None, None)


def test_a_chosen_2d_zoom_fits_whole_repeats_across_the_torus():
    knit = dict(period_px=70.0, repeats_px=(35.31, 75.69))  # the knit exemplar's, as measured
    loose = choose_scale("2d", 5.66, 512, period_px=70.0)  # 363 px a view: 10.3 x 4.8 repeats
    fitted = choose_scale("2d", 5.66, 512, **knit)
    assert loose.zoom == 1.41 and abs(fitted.zoom / loose.zoom - 1) <= TORUS_RANGE
    strain = [torus_strain(512 / choice.zoom, knit["repeats_px"]) for choice in (fitted, loose)]
    assert strain[0] < 0.02 < strain[1]
    assert fitted.view_repeats == pytest.approx((512 / fitted.zoom / 35.31, 512 / fitted.zoom / 75.69))
    assert fitted.as_dict()["repeats_px"] == [35.31, 75.69]
    assert "a view holds 10.82 across x 5.05 down" in fitted.message()
    assert choose_scale("2d", 5.66, 512, zoom=1.41, **knit).zoom == 1.41  # a given zoom is kept
    assert choose_scale("2d", 25.8, 1024, period_px=343.0, repeats_px=(300.0, None)).zoom == 1.0  # the whole exemplar
    assert choose_scale("volume", 5.66, 512, **knit).view_repeats is None  # 2D only
    assert fit_torus(1.5, 512, (None, None), 4.0) == 1.5  # nothing repeats: unchanged
    assert fit_torus(1.5, 512, (32.0, None), 4.0) == 1.6  # 10.7 repeats of 32 px -> 10 (11 needs 1.4545)
    assert fit_torus(1.5, 512, (32.0, None), 1.55) == 1.45  # the most zoom allows rules 1.6 out: 11 repeats, nearly


def test_choose_scale_small_features_zoom_large_ones_shrink_the_lattice():
    fine = choose_scale("2d", 4.0, 512)  # wants 128 cells across the exemplar: zoom 2 on 64 cells
    assert (fine.grid, fine.zoom) == (64, 2.0) and fine.feature_cells == pytest.approx(TARGET_CELLS)
    capped = choose_scale("2d", 1.0, 2048)
    assert capped.zoom == MAX_ZOOM and capped.feature_cells < TARGET_CELLS
    assert choose_scale("2d", 2.0, 256).zoom == 2.0  # at most 128 px of exemplar per view
    coarse = choose_scale("2d", 20.0, 1024)  # wants 51 cells: a 48-cell lattice, zoom 1
    assert (coarse.grid, coarse.zoom) == (48, 1.0) and coarse.grid % 8 == 0
    huge = choose_scale("volume", 200.0, 256)
    assert (huge.grid, huge.zoom) == (MIN_GRID["volume"], 1.0)
    near = choose_scale("2d", 8.4, 512)  # wants 61 cells: within 10% of the default keeps it
    assert (near.grid, near.zoom) == (DEFAULT_GRID["2d"], 1.0)
    assert choose_scale("mesh", 4.0, 512).grid == DEFAULT_GRID["mesh"]


def test_on_a_mesh_large_features_narrow_the_views_instead_of_shrinking_the_icosphere():
    ore = choose_scale("mesh", 12.2, 512)  # wants 42 cells across the exemplar: 0.66 of a 64-cell view
    assert (ore.grid, ore.zoom) == (DEFAULT_GRID["mesh"], 0.66) and ore.chosen == ["grid", "zoom"]
    assert ore.feature_cells == pytest.approx(TARGET_CELLS, abs=0.01)
    assert choose_scale("mesh", 100.0, 256).zoom == MIN_ZOOM["mesh"]  # at most half a view's cells go
    lava = choose_scale("mesh", 30.0, 1024)  # wants 34 cells, but 1024 px over 34 cells is 30 px each
    assert lava.zoom == 0.73 and 1024 / (lava.zoom * 64) <= MAX_PX_PER_CELL and lava.feature_cells > TARGET_CELLS
    assert choose_scale("mesh", 12.2, 512, grid=32).zoom == 1.31  # 42 cells on a 32-cell view: zoom in as before
    assert choose_scale("mesh", 12.2, 512, zoom=1.0).grid == 40  # a given zoom: the lattice shrinks as before
    for domain in ("2d", "volume"):  # their views cannot narrow
        assert choose_scale(domain, 100.0, 256).zoom == 1.0


def test_a_chosen_lattice_gives_no_cell_more_than_max_px():
    # lava flow: 1024 px with features ~35 px wants ~29 cells, but 32 cells would hold 32 px each
    lava = choose_scale("2d", 35.0, 1024)
    assert lava.grid == 48 and 1024 / lava.grid <= MAX_PX_PER_CELL and lava.feature_cells > TARGET_CELLS
    assert choose_scale("2d", 35.0, 256).grid == MIN_GRID["2d"]  # a small exemplar: 8 px per cell is fine
    assert choose_scale("volume", 200.0, 512).grid == 24  # 512 / 24 = 21 px per cell
    assert choose_scale("2d", 35.0, 1024, grid=32).grid == 32  # a given lattice is kept


def test_choose_scale_keeps_what_is_given_and_chooses_the_rest():
    grid_given = choose_scale("mesh", 15.4, 1024, grid=32)  # the stone wall on the frequency-32 icosphere
    assert grid_given.grid == 32 and grid_given.zoom == pytest.approx(2.08, abs=0.01)
    assert grid_given.chosen == ["zoom"] and "grid as given" in grid_given.message()
    zoom_given = choose_scale("2d", 20.0, 1024, zoom=2.0)  # wants 51 cells over the exemplar, half of it per view
    assert zoom_given.grid == 32 and zoom_given.chosen == ["grid"]
    both = choose_scale("2d", 4.0, 512, grid=64, zoom=1.0)
    assert both.chosen == [] and both.feature_cells == pytest.approx(0.5) and "as given" in both.message()
    unknown = choose_scale("2d", None, 512)
    assert (unknown.grid, unknown.zoom) == (64, 1.0) and "no variation" in unknown.message()


def _exemplar(path, sigma: float, size: int = 256):
    Image.fromarray((smooth_noise(size, sigma) * 255).astype(np.uint8)).save(path)
    return str(path)


def _config(tmp_path, exemplar, **overrides):
    options = dict(exemplar=exemplar, out=str(tmp_path / "m.nca3d"), iters=2, features="patches", channels=8,
                   hidden=32, pool=4, batch=2, min_steps=2, max_steps=4, patch=24, samples=64, device="cpu",
                   select_every=0, limit_steps=16)
    return TrainConfig(**(options | overrides))


def test_trainer_chooses_records_and_prints_the_scale(tmp_path, capsys):
    big = Trainer(_config(tmp_path, _exemplar(tmp_path / "big.png", 10.0)), Progress("json"))
    assert (big.config.grid, big.config.zoom) == (32, 1.0)  # ~18 px features in 256 px: 14 cells wanted, 32 at least
    assert big.model.config.grid_size == [32, 32]
    fine = Trainer(_config(tmp_path, _exemplar(tmp_path / "fine.png", 0.6)), Progress("json"))
    assert (fine.config.grid, fine.config.zoom) == (64, 2.0)  # ~1.5 px features: zoom, capped at 128 px per view
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scale_lines = [line["message"] for line in lines if line.get("stage") == "scale"]
    assert len(scale_lines) == 3 and "grid 32, zoom 1 (chosen)" in scale_lines[0] and "zoom 2" in scale_lines[2]
    # 256 px at 24 px crops of a quarter view: 2.7 exemplar px per px, so the trainer says how to see finer
    assert "see 2.7 exemplar px per px" in scale_lines[1] and "--scales 1,2,4,8 sees it" in scale_lines[1]
    given = Trainer(_config(tmp_path, _exemplar(tmp_path / "fine.png", 0.6), grid=8, zoom=1.0), Progress("none"))
    assert (given.config.grid, given.config.zoom) == (8, 1.0)
    files = given.run()
    provenance = read_header(files[0])[0]["provenance"]
    assert provenance["config"]["grid"] == 8 and provenance["scale"]["chosen"] == []
    assert provenance["scale"]["feature_px"] == pytest.approx(given.scale.feature_px, abs=0.01)


@requires_raycaster
def test_a_mesh_run_below_zoom_1_narrows_its_views_over_the_whole_exemplar(tmp_path, monkeypatch):
    monkeypatch.setenv("NCA3D_CACHE", str(tmp_path / "cache"))
    exemplar = _exemplar(tmp_path / "big.png", 10.0, size=64)  # ~12 px features: 5 cells of the 8 wanted
    mesh = dict(domain="mesh", grid=8, ray_samples=8)
    wide = Trainer(_config(tmp_path, exemplar, zoom=1.0, **mesh), Progress("none"))
    narrow = Trainer(_config(tmp_path, exemplar, **mesh), Progress("none"))
    zoom = narrow.config.zoom
    assert MIN_ZOOM["mesh"] <= zoom < 0.9 and narrow.scale.chosen == ["zoom"] and narrow.config.grid == 8
    assert narrow.task.window == pytest.approx(wide.task.window * zoom)  # zoom x the cells a view
    assert narrow.loss_fn.zoom == wide.loss_fn.zoom == 1.0  # of the whole exemplar either way
    assert narrow.scale.feature_cells == pytest.approx(TARGET_CELLS, abs=0.01)
    assert wide.scale.feature_cells == pytest.approx(TARGET_CELLS / zoom, abs=0.02)
    assert read_header(narrow.run()[0])[0]["provenance"]["config"]["zoom"] == zoom
    with pytest.raises(NCA3DError, match="below 0.5, the least a mesh run takes"):
        TrainConfig(exemplar=exemplar, out="m.nca3d", domain="mesh", zoom=0.4)
    with pytest.raises(NCA3DError, match="only a mesh's views narrow below 1"):
        TrainConfig(exemplar=exemplar, out="m.nca3d", zoom=0.5)


def test_resume_under_a_different_automatic_choice_says_what_to_pass(tmp_path, capsys):
    exemplar = _exemplar(tmp_path / "fine.png", 0.6)
    out = str(tmp_path / "m.nca3d")
    common = ["train", exemplar, "--out", out, "--features", "patches", "--channels", "8", "--hidden", "32",
              "--pool", "4", "--batch", "2", "--min-steps", "2", "--max-steps", "4", "--patch", "24",
              "--samples", "64", "--grid", "16", "--progress", "none", "--select-every", "0", "--limit-steps", "16"]
    assert main(common + ["--iters", "1", "--zoom", "1"]) == 0
    assert main(common + ["--iters", "2", "--resume"]) == 2  # zoom chosen now: 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume with --grid 16 --zoom 1" in err[0], err
    assert main(common + ["--iters", "2", "--resume", "--zoom", "1"]) == 0


def _tiled_exemplar(path, tile: int = 64, repeats: int = 4):
    """A regular pattern: one smooth-noise tile repeated repeats x repeats times."""
    image = np.tile(smooth_noise(tile, 2.0, seed=3), (repeats, repeats, 1))
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return str(path)


def test_a_regular_exemplar_turns_the_autocorrelation_term_on_by_itself(tmp_path, capsys):
    regular = Trainer(_config(tmp_path, _tiled_exemplar(tmp_path / "tiles.png")), Progress("json"))
    assert regular.scale.period_px % 64 == pytest.approx(0, abs=2)  # the tile, or a multiple of it
    assert regular.scale.repeats_px == pytest.approx((64, 64), abs=0.5)
    assert regular.config.autocorr_weight == REGULAR_AUTOCORR_WEIGHT == regular.loss_fn.autocorr_weight
    stochastic = Trainer(_config(tmp_path, _exemplar(tmp_path / "noise.png", 2.0)), Progress("json"))
    assert stochastic.config.autocorr_weight == 0.0 == stochastic.loss_fn.autocorr_weight
    messages = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()]
    assert sum("auto-correlation term is on" in m for m in messages) == 1
    given = Trainer(_config(tmp_path, _tiled_exemplar(tmp_path / "tiles.png"), autocorr_weight=0.0), Progress("none"))
    assert given.config.autocorr_weight == 0.0 and "autocorr_weight" not in given.chosen
    small = Trainer(_config(tmp_path, _tiled_exemplar(tmp_path / "tiles.png"), grid=8, zoom=1.0), Progress("none"))
    provenance = read_header(small.run()[0])[0]["provenance"]
    assert provenance["config"]["autocorr_weight"] == REGULAR_AUTOCORR_WEIGHT
    with pytest.raises(NCA3DError, match="--autocorr-weight -1 must be >= 0"):
        _config(tmp_path, _tiled_exemplar(tmp_path / "tiles.png"), autocorr_weight=-1.0)


def test_resume_of_a_run_made_without_the_automatic_term_says_what_to_pass(tmp_path, capsys):
    common = ["train", _tiled_exemplar(tmp_path / "tiles.png"), "--out", str(tmp_path / "m.nca3d"), "--features",
              "patches", "--channels", "8", "--hidden", "32", "--pool", "4", "--batch", "2", "--min-steps", "2",
              "--max-steps", "4", "--patch", "24", "--samples", "64", "--grid", "16", "--zoom", "1",
              "--progress", "none", "--select-every", "0", "--limit-steps", "16"]
    assert main(common + ["--iters", "1", "--autocorr-weight", "0"]) == 0  # as checkpoints made before it was automatic
    assert main(common + ["--iters", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume with --autocorr-weight 0," in err[0], err
    assert main(common + ["--iters", "2", "--resume", "--autocorr-weight", "0"]) == 0
