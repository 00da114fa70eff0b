"""Which images an attribute filter keeps: a label, a prediction or an outcome holding for any or
all of the chosen attributes."""

from __future__ import annotations

import numpy as np

from pipeline.metrics import OUTCOMES, outcomes, threshold_columns

FILTER_TARGETS = ("act", "prd", *OUTCOMES)


def uses_threshold(attributes, on: str = "act") -> bool:
    """Whether the attribute filter's answer depends on the decision thresholds: only a filter
    with chosen attributes on the predictions or on an outcome."""
    return bool(attributes) and (on or "act") != "act"


def filter_mask(act, prd, threshold: float | np.ndarray, attributes, match: str = "any",
                on: str = "act"):
    """Which images pass the attribute filter (all of them when no attribute is chosen).

    `on` is "act" (label is 1), "prd" (probability ≥ threshold) or an outcome name, which must
    hold for ANY or ALL of the chosen attributes. `threshold` is one number or one per
    attribute of the run (shape (A,)); each chosen attribute is judged at its own.
    """
    attributes = [int(a) for a in attributes or []]
    if not attributes:
        return np.ones(len(act), dtype=bool)
    limit = threshold_columns(threshold, attributes)
    if on == "act":
        hits = np.asarray(act[:, attributes]).astype(bool)
    elif on == "prd":
        hits = np.asarray(prd[:, attributes]) >= limit
    elif on in OUTCOMES:
        hits = outcomes(act[:, attributes], prd[:, attributes], limit) == OUTCOMES.index(on)
    else:
        raise ValueError(f"unknown filter target {on!r}; expected one of {FILTER_TARGETS}")
    return hits.all(axis=1) if match == "all" else hits.any(axis=1)
