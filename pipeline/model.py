"""The attribute model: a compact CNN (the CPU default) or a torchvision ResNet, each with a
one-channel stem and one logit per attribute, and the log-intensity normalisation of its inputs.
Checkpoints, which carry all inference needs, are pipeline.checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from pipeline.errors import PipelineError

RESNETS = ("resnet18", "resnet34", "resnet50")
ARCHS = ("compact", *RESNETS)
_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
NORMALISATION_METHOD = "log1p-robust"
# Robust scaling uses these percentiles of log-intensity: the 1 %…99 % range is wide enough to keep
# rings and peaks apart from background yet ignores hot pixels and detector gaps.
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0
MIN_INPUT_SIZE = 32  # a ResNet halves the image five times, the compact net three
MAX_INPUT_SIZE = 1024  # the largest simulated detector; beyond it a batch alone needs gigabytes


# ---------------------------------------------------------------- architecture


class AttributeResNet(ResNet):
    """A torchvision ResNet whose first convolution sees one channel (detector images are grey).

    The state-dict keys are torchvision's own, so plain torchvision weights load into it.
    """

    def __init__(self, arch: str, n_attributes: int):
        block, layers = _LAYOUTS[arch]
        super().__init__(block, list(layers), num_classes=n_attributes)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.arch = arch

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def features(self, x: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        """The penultimate activations (N × 512 for resnet18/34, N × 2048 for resnet50); a
        ResNet takes no radial profile."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.features(x))


# Channels of the compact net: the stem at full resolution, then stages at half the previous side
# and twice the width. A fourth stage (256) measured slower and worse at the demo's step budget.
COMPACT_WIDTHS = (16, 32, 64, 128)
# Channels of the radial-profile branch's first convolutions (twice that later). 96 rather than
# 32 lifted BCC and FCC AP by about 0.15 over three training seeds, for about 25 % more
# training time (benchmarks/RESULTS.md, "spots and arcs in the profile"); checkpoints keep the
# width they were trained with.
PROFILE_WIDTH = 96


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _conv1d_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 5, stride=stride, padding=2, bias=False),
                         nn.BatchNorm1d(c_out), nn.ReLU(inplace=True))


class CompactNet(nn.Module):
    """A small CNN that trains many steps in minutes on a CPU, for the demo and small datasets.

    A ResNet's stride-2 stem and max-pool throw away fifteen sixteenths of the pixels at once,
    which at 64–96² erases thin beamstops, wedges and sharp peaks; here a 3×3 stride-1 stem keeps
    full resolution and each stage (a stride-2 and a stride-1 3×3 convolution) halves the side
    and doubles the width. The head joins average pooling (how much of a pattern there is) with
    max pooling (whether a small feature occurs anywhere). With `window_channel`, that channel
    (the full-resolution window about the beam, not aligned with the others) goes through four
    convolutions of its own (8–32 wide); with `profile_channels`, a 1-D branch of four 5-tap
    convolutions reads the radial profile (pipeline.inputs). Both are pooled the same way and
    joined to the image's features: FEA is 2 × 128 + 2 × 32 + 2 × 192 = 704 wide by default.
    """

    def __init__(self, n_attributes: int, widths: tuple[int, ...] = COMPACT_WIDTHS,
                 in_channels: int = 1, profile_channels: int = 0,
                 window_channel: int | None = None, profile_width: int = PROFILE_WIDTH):
        super().__init__()
        self.window_channel = window_channel
        if window_channel is not None:  # the beam window is not aligned with the other channels
            in_channels -= 1
            self.window = nn.Sequential(_conv_bn(1, 8), _conv_bn(8, 16, stride=2),
                                        _conv_bn(16, 32, stride=2), _conv_bn(32, 32, stride=2))
        layers = [_conv_bn(in_channels, widths[0])]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [_conv_bn(c_in, c_out, stride=2), _conv_bn(c_out, c_out)]
        self.body = nn.Sequential(*layers)
        width = profile_width
        self.profile = nn.Sequential(
            _conv1d_bn(profile_channels, width), _conv1d_bn(width, width),
            _conv1d_bn(width, 2 * width, stride=2), _conv1d_bn(2 * width, 2 * width),
        ) if profile_channels else None
        extra = (4 * width if profile_channels else 0) + (64 if window_channel is not None else 0)
        self.fc = nn.Linear(2 * widths[-1] + extra, n_attributes)
        self.arch = "compact"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv1d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def features(self, x: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        """The penultimate activations: the last conv block average- then max-pooled, and the
        profile branch's likewise when the net has one (N × feature_dim)."""
        parts = []
        if self.window_channel is not None:
            k = self.window_channel
            w = self.window(x[:, k : k + 1])
            parts += [w.mean(dim=(2, 3)), w.amax(dim=(2, 3))]
            x = torch.cat([x[:, :k], x[:, k + 1 :]], dim=1)
        x = self.body(x)
        parts = [x.mean(dim=(2, 3)), x.amax(dim=(2, 3)), *parts]
        if self.profile is not None:
            if profile is None:
                raise PipelineError("this compact net also takes the image's radial profile; "
                                    "prepare inputs with pipeline.inputs.prepare")
            p = self.profile(profile.to(x.dtype))
            parts += [p.mean(dim=2), p.amax(dim=2)]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, profile: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.features(x, profile))


def build_model(arch: str, n_attributes: int, inputs: dict | None = None,
                profile_width: int = PROFILE_WIDTH) -> nn.Module:
    """A freshly initialised model (no downloaded weights) with one logit per attribute.

    Every model has `features(x, profile)` (FEA, N × feature_dim), `fc` (features → logits)
    and `arch`; `inputs` (pipeline.inputs) says which channels and profile it takes: by default
    the architecture's own, one channel and no profile for a ResNet. `profile_width`: the
    compact net's profile branch (a checkpoint's own, when rebuilding one).
    """
    from pipeline.inputs import default_inputs

    if arch not in ARCHS:
        raise PipelineError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if n_attributes < 1:
        raise PipelineError(f"a model needs at least one attribute, got {n_attributes}")
    inputs = inputs or default_inputs(arch)
    if arch == "compact":
        profile = inputs.get("profile")
        channels = inputs["channels"]
        return CompactNet(n_attributes, in_channels=len(channels),
                          profile_channels=len(profile["stats"]) if profile else 0,
                          window_channel=channels.index("beam") if "beam" in channels else None,
                          profile_width=profile_width)
    if len(inputs["channels"]) != 1 or inputs.get("profile"):
        raise PipelineError(f"a {arch} takes one image channel and no profile")
    return AttributeResNet(arch, n_attributes)


# The compact net uses every core only while other work keeps at most this share of the
# machine busy, sampled over SAMPLE_S just before it starts.
IDLE_SHARE, SAMPLE_S = 0.25, 0.2


def compact_threads(allowed: int, busy: float | None = None) -> int:
    """CPU threads for the compact net, of the `allowed` torch may use: all of them while the
    rest of the machine is at most IDLE_SHARE busy (`busy`: that share, 0–1; sampled when not
    given), else one.

    Its small convolutions split into many short parallel regions. On an idle 2-core machine a
    second thread trains 1.6–1.7× faster; on a busy one it waits at every barrier and made
    training 3–6× slower than one thread (benchmarks/RESULTS.md, "Compact net: threads").
    Results differ in the last bits between thread counts; training records the count it used.
    """
    if allowed <= 1:
        return 1
    if busy is None:  # measured while this process waits, so it is everyone else's work
        import psutil

        busy = psutil.cpu_percent(interval=SAMPLE_S) / 100
    return allowed if busy <= IDLE_SHARE else 1


@contextlib.contextmanager
def compute_threads(arch: str, dev: torch.device) -> Iterator[int]:
    """Torch's CPU threads while a model computes, and their count: for the compact net
    compact_threads of those torch may use now (a Dask worker's own, one in tests that set
    one), unless the user set OMP_NUM_THREADS; ResNets' large convolutions keep them all."""
    before = torch.get_num_threads()
    if dev.type != "cpu" or arch != "compact" or os.environ.get("OMP_NUM_THREADS"):
        yield before
        return
    torch.set_num_threads(compact_threads(before))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def pick_device(requested: str = "auto") -> torch.device:
    """auto → CUDA when present, else CPU; asking for CUDA where there is none is an error."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PipelineError(f"device {requested!r} was asked for but no CUDA GPU is available")
        return torch.device(requested)
    raise PipelineError(f"unknown device {requested!r}; use auto, cpu or cuda")


# ---------------------------------------------------------------- normalisation


def log_intensity(image: np.ndarray) -> np.ndarray:
    """log1p of the counts, zero-padded to a square so rings stay circular when resized.

    Negative and non-finite pixels (detector gaps, masks) count as no photons.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 1:
        raise PipelineError(f"an image must be 2-D and non-empty, got shape {image.shape}")
    image = np.log1p(np.clip(np.nan_to_num(image, nan=0.0, posinf=0.0), 0, None))
    h, w = image.shape
    side = max(h, w)
    if h == w:
        return image
    out = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def resize(square: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of a square float image to size × size."""
    if square.shape == (size, size):
        return np.ascontiguousarray(square, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(square, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t[0, 0].numpy()


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Centre (median) and scale (1–99 % range) of log-intensities; scale never 0."""
    low, centre, high = np.percentile(values, [LOW_PERCENTILE, 50.0, HIGH_PERCENTILE])
    scale = float(high - low)
    return float(centre), scale if scale > 1e-6 else 1.0


def normalise(image: np.ndarray, input_size: int, stats: dict | None = None) -> np.ndarray:
    """Log-intensity normalisation and resize: float32 (input_size, input_size).

    v = (log1p(max(counts, 0)) − centre) / scale. `stats` is a checkpoint's normalisation dict;
    with dataset-wide centre/scale (fitted on the training images), absolute intensity survives,
    which "Weak scattering", "Strong scattering" and "Beam Off Image" depend on. Without them
    (None, or a plain torchvision checkpoint) each image is scaled by its own median and range.
    """
    return scale_intensity(resize(log_intensity(image), int(input_size)), stats)


def scale_intensity(v: np.ndarray, stats: dict | None) -> np.ndarray:
    """(v − centre) / scale with the stored stats, or with v's own when there are none."""
    centre, scale = (stats or {}).get("centre"), (stats or {}).get("scale")
    if centre is None or scale is None:
        centre, scale = robust_stats(v)
    return (v - np.float32(centre)) / np.float32(scale)


def fit_normalisation(images: Iterable[np.ndarray], input_size: int, seed: int = 0) -> dict:
    """Dataset-wide robust stats from (a sample of) training images, as stored in checkpoints."""
    rng = np.random.default_rng(seed)
    pooled = []
    for image in images:
        v = resize(log_intensity(image), input_size).ravel()
        pooled.append(rng.choice(v, size=min(v.size, 4096), replace=False))
    if not pooled:
        raise PipelineError("no training images to fit the normalisation on")
    centre, scale = robust_stats(np.concatenate(pooled))
    return {"method": NORMALISATION_METHOD, "centre": centre, "scale": scale,
            "percentiles": [LOW_PERCENTILE, HIGH_PERCENTILE], "pad": "square"}


def per_image_normalisation() -> dict:
    return {"method": NORMALISATION_METHOD, "centre": None, "scale": None,
            "percentiles": [LOW_PERCENTILE, HIGH_PERCENTILE], "pad": "square"}


def multiscale_sizes(input_size: int) -> list[int]:
    """Wang et al.'s (WACV 2017) 256/384/512 resizes for 224 crops, scaled to this model's
    input size."""
    return [int(math.ceil(s * input_size / 224)) for s in (256, 384, 512)]


def five_crops(square: np.ndarray, size: int) -> list[np.ndarray]:
    """Centre and four corner crops of side `size`."""
    side = square.shape[0]
    far, mid = side - size, (side - size) // 2
    corners = [(mid, mid), (0, 0), (0, far), (far, 0), (far, far)]
    return [square[r : r + size, c : c + size] for r, c in corners]
