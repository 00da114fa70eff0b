"""How a detector image is shown to the eye, in one place: counts → log intensity → a percentile
window → a false-colour map. The detail image, the thumbnails, the montage and the scientific
views all draw through these functions, so one image looks the same wherever it appears.

(The model's input transform, pipeline.inputs.prepare, is a different thing: it is what the
network was trained on, not what a person looks at.)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import plotly.colors
from PIL import Image

from pipeline.errors import PipelineError

DEFAULT_COLOUR_MAP = "Inferno"
COLOUR_MAPS = ("Inferno", "Viridis", "Magma", "Cividis", "Greys_r", "Jet", "Hot")  # _r: reversed
# The window's ends, in percentiles of the log intensity: the darkest 1 % and the brightest
# 0.3 % (the direct beam, hot pixels, Bragg spots) saturate, so weak rings keep their contrast.
WINDOW = (1.0, 99.7)
LOG_UNIT = "log₁₀(1+I)"


def log_intensity(pixels) -> np.ndarray:
    """log10(1 + I) as float32, with negative (gap, masked) and non-finite pixels at 0."""
    counts = np.nan_to_num(np.asarray(pixels, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.log10(1 + np.clip(counts, 0, None))


def window(logged, percentiles=WINDOW) -> tuple[float, float]:
    """The (low, high) ends of the display window of a log-intensity image.

    The percentiles are of the pixels that counted something: module gaps, masked pixels and
    beamstop shadows (7 % of a Pilatus frame is gaps) would otherwise pull the low end to 0
    and wash out a high-background image."""
    logged = np.asarray(logged, np.float32)
    counted = logged[logged > 0]
    lo, hi = np.percentile(counted if counted.size else logged, percentiles)
    if hi <= lo:  # one level among the counting pixels (a lone peak): window from the darkest
        lo = float(logged.min())
    return float(lo), float(max(hi, lo + 1e-6))


def downsample(image, max_side: int) -> np.ndarray:
    """Block-average an image so neither side exceeds max_side (keeps weak rings visible)."""
    step = int(np.ceil(max(image.shape) / max_side))
    if step <= 1:
        return image
    h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    return image[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))


@lru_cache(maxsize=16)
def colour_lut(name: str = DEFAULT_COLOUR_MAP, n: int = 256) -> np.ndarray:
    """n × 3 uint8 colours sampled from a plotly colour scale (any name plotly knows)."""
    try:
        scale = plotly.colors.get_colorscale(name)
    except Exception:  # plotly raises its own error type for an unknown name
        raise PipelineError(
            f"unknown colour map {name!r}; try {', '.join(COLOUR_MAPS)}"
        ) from None
    stops = np.array([s for s, _ in scale])
    rgb = np.array([plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c)[0][0])
                    for _, c in scale], dtype=float)
    t = np.linspace(0, 1, n)
    lut = np.stack([np.interp(t, stops, rgb[:, k]) for k in range(3)], axis=1)
    lut = lut.round().astype(np.uint8)
    lut.flags.writeable = False  # shared by every caller through the cache
    return lut


def false_colour(pixels, size: int | None = None,
                 colour_map: str = DEFAULT_COLOUR_MAP) -> np.ndarray:
    """RGB uint8 of an image in log intensity within its percentile window, optionally
    resampled to size × size (box-averaged when shrinking, so weak rings survive)."""
    return colour_lut(colour_map)[display_levels(pixels, size)]


def display_levels(pixels, size: int | None = None) -> np.ndarray:
    """The 256 grey levels false_colour maps to colours (uint8, the window's low end at 0):
    what a dataset stores as its thumbnails, so any colour map can be applied later."""
    logged = log_intensity(pixels)
    lo, hi = window(logged)
    scaled = np.clip((logged - lo) / (hi - lo), 0, 1).astype(np.float32)
    if size and scaled.shape != (size, size):
        shrink = size < max(scaled.shape)
        method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        scaled = np.asarray(Image.fromarray(scaled).resize((size, size), method))
    return np.clip((scaled * 255).round(), 0, 255).astype(np.uint8)
