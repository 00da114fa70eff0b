"""Which images an attribute filter keeps: a label, a prediction or an outcome holding for any or
all of the chosen attributes."""

from __future__ import annotations

import numpy as np

from pipeline.metrics import OUTCOMES, outcomes

FILTER_TARGETS = ("act", "prd", *OUTCOMES)


def filter_mask(act, prd, threshold: float, attributes, match: str = "any", on: str = "act"):
    """Which images pass the attribute filter (all of them when no attribute is chosen).

    `on` is "act" (label is 1), "prd" (probability ≥ threshold) or an outcome name, which must
    hold for ANY or ALL of the chosen attributes.
    """
    attributes = [int(a) for a in attributes or []]
    if not attributes:
        return np.ones(len(act), dtype=bool)
    if on == "act":
        hits = np.asarray(act[:, attributes]).astype(bool)
    elif on == "prd":
        hits = np.asarray(prd[:, attributes]) >= threshold
    elif on in OUTCOMES:
        hits = outcomes(act[:, attributes], prd[:, attributes], threshold) == OUTCOMES.index(on)
    else:
        raise ValueError(f"unknown filter target {on!r}; expected one of {FILTER_TARGETS}")
    return hits.all(axis=1) if match == "all" else hits.any(axis=1)
