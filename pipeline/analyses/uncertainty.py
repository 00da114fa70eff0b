"""How sure a group's metrics are: bootstrap 95 % intervals for accuracy, precision, recall and
F1 of a group of images, overall (pooled over attributes) and per attribute.

Resampling the group's images with replacement only redistributes how often each image's
outcomes count, so the bootstrap is drawn on the outcome tallies, not on the images:
- per attribute, a resampled group's (TP, FP, FN, TN) is multinomial over the four outcomes with
  the group's own frequencies;
- overall, each image contributes its vector of (TP, FP, FN, TN) counts over the attributes; a
  resampled group is multinomial over the distinct vectors (at most a few hundred for 17
  attributes), weighted by how many images have each.
Both are exact forms of the image bootstrap and cost the same for 100 or 100,000 images.
Intervals are percentile intervals; a metric undefined in a resample (0/0) is left out of it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError
from pipeline.metrics import OUTCOMES, counts, scores

N_BOOT = 2000
LEVEL = 0.95
METRICS = ("accuracy", "precision", "recall", "f1")


def _interval(samples: np.ndarray, level: float) -> np.ndarray:
    """(low, high) percentile interval along axis 0, ignoring undefined (NaN) resamples: the
    linear-interpolation percentile of numpy, taken from one sort (np.nanpercentile goes column
    by column, and was a third of a gesture's time)."""
    ordered = np.sort(samples, axis=0)  # NaN sorts last
    valid = np.sum(~np.isnan(samples), axis=0)
    bounds = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        position = q * np.maximum(valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(valid - 1, 0))
        low, high = (np.take_along_axis(ordered, np.expand_dims(i, 0), axis=0)[0]
                     for i in (below, above))
        value = low + (high - low) * (position - below)
        bounds.append(np.where(valid > 0, value, np.nan))  # undefined in every resample
    return np.stack(bounds)


def _score_samples(tallies: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of resampled tallies (... × 4 in OUTCOMES order)."""
    return scores(*(tallies[..., k] for k in range(len(OUTCOMES))))


def _image_patterns(act, prd, threshold) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (TP, FP, FN, TN) count vectors of the images (K × 4) and how many have each.

    An image's vector is coded as one integer (its TN follows from the others), so finding the
    distinct ones is a sort of N integers."""
    truth = np.asarray(act).astype(bool)
    said = np.asarray(prd) >= np.asarray(threshold, dtype=np.float32)
    base = truth.shape[1] + 1
    tp, fp, fn = ((truth & said).sum(1), (~truth & said).sum(1), (truth & ~said).sum(1))
    codes, counts = np.unique((tp * base + fp) * base + fn, return_counts=True)
    tp, rest = np.divmod(codes, base * base)
    fp, fn = np.divmod(rest, base)
    patterns = np.stack([tp, fp, fn, truth.shape[1] - tp - fp - fn], axis=1)
    return patterns, counts


def bootstrap_intervals(act, prd, threshold=0.5, *, n_boot: int = N_BOOT, level: float = LEVEL,
                        seed: int = 0) -> dict:
    """Intervals of the group (all rows of act/prd): {"overall": {metric: (lo, hi)},
    "per_attribute": {metric: A × 2 array}}. `threshold`: one number, or one per attribute."""
    act = np.asarray(act)
    n = len(act)
    if n == 0:
        raise PipelineError("a group needs at least one image for an interval")
    if not 0 < level < 1:
        raise PipelineError(f"the interval level must lie in (0, 1), not {level}")
    tally = counts(act, prd, threshold)
    per_attribute = np.stack([tally[k] for k in OUTCOMES], axis=1).astype(np.int64)  # A × 4
    patterns, how_many = _image_patterns(act, prd, threshold)
    # The resamples depend on the group only through these tallies: one group shown in two
    # places (its tiles and the comparison), or shown again, is resampled once.
    key = (per_attribute.shape, per_attribute.tobytes(), patterns.astype(np.int64).tobytes(),
           how_many.astype(np.int64).tobytes(), int(n_boot), float(level), int(seed))
    found = _resampled(key)
    return {**found, "overall": dict(found["overall"]),
            "per_attribute": dict(found["per_attribute"])}


@lru_cache(maxsize=64)
def _resampled(key) -> dict:
    shape, per_bytes, pattern_bytes, count_bytes, n_boot, level, seed = key
    per_attribute = np.frombuffer(per_bytes, dtype=np.int64).reshape(shape)
    patterns = np.frombuffer(pattern_bytes, dtype=np.int64).reshape(-1, len(OUTCOMES))
    how_many = np.frombuffer(count_bytes, dtype=np.int64)
    n = int(how_many.sum())
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, per_attribute / n, size=(n_boot, len(per_attribute)))  # B × A × 4
    per = {m: _interval(v, level).T for m, v in _score_samples(drawn).items()}
    for bounds in per.values():
        bounds.flags.writeable = False  # shared by every caller of the cache
    weights = rng.multinomial(n, how_many / n, size=n_boot)  # n_boot × K
    overall_samples = _score_samples(weights @ patterns)
    overall = {m: tuple(float(x) for x in _interval(v, level)) for m, v in overall_samples.items()}
    return {"overall": overall, "per_attribute": per, "n_images": n, "level": level}


def differ(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two groups differ beyond their intervals: the intervals do not overlap."""
    if not all(np.isfinite(x) for x in (*a, *b)):
        return False
    return a[1] < b[0] or b[1] < a[0]
