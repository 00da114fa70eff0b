"""Shared fixtures: small but real runs and datasets written to disk through the run store."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from pipeline.attributes import ATTRIBUTES
from pipeline.store import DatasetWriter, get_run, write_run


def write_synthetic_run(data_dir, n: int = 60, seed: int = 0, image_size: int = 32,
                        meta: dict | None = None):
    """A run of n images with correlated labels/probabilities and random images; returns the Run.

    Labels are random; probabilities agree with them most of the time, so every outcome
    (TP, FP, FN, TN) occurs. Embeddings are noisy functions of the arrays, as t-SNE would give.
    `meta` adds to run.json (per-attribute "thresholds", say).
    """
    rng = np.random.default_rng(seed)
    a = len(ATTRIBUTES)
    act = (rng.random((n, a)) < 0.3).astype(np.uint8)
    act[act.sum(axis=1) == 0, 0] = 1
    noise = rng.normal(0, 0.25, (n, a))
    prd = np.clip(0.2 + 0.6 * act + noise, 0, 1).astype(np.float32)
    fea = np.concatenate([act * 2.0, rng.normal(size=(n, 15))], axis=1).astype(np.float32)
    dataset_id = f"synthetic-{seed}"
    with DatasetWriter(data_dir, dataset_id, ATTRIBUTES, meta={"source": "test"}) as ds:
        for i in range(n):
            ds.add(rng.poisson(5.0, (image_size, image_size)), act[i],
                   split="test" if i % 5 == 0 else "train", source="test")
    images = pd.read_parquet(ds.final / "images.parquet")
    emb = {s: rng.normal(size=(n, 2)).astype(np.float32) for s in ("act", "fea", "prd")}
    path = write_run(
        data_dir, attributes=ATTRIBUTES, images=images[["image_id", "path", "split", "source"]],
        act=act, prd=prd, fea=fea, emb=emb,
        meta={"dataset": dataset_id, "model": {"arch": "none"}, **(meta or {})},
        run_id=f"run-{dataset_id}",
    )
    return get_run(path.name, data_dir)


@pytest.fixture
def synthetic_run(tmp_path):
    """A 60-image run in a fresh data directory (tmp_path/data)."""
    return write_synthetic_run(tmp_path / "data")


N = 60  # images in the dashboard fixture's run
WAIT_S = 40  # five engineers share two cores: callbacks can be slow, never wrong


def patient(dash_duo):
    """Give every wait of this browser WAIT_S seconds instead of dash.testing's 10."""
    from selenium.webdriver.support.ui import WebDriverWait

    dash_duo._wait_timeout = WAIT_S
    dash_duo._wd_wait = WebDriverWait(dash_duo.driver, WAIT_S)
    return dash_duo


def free_port() -> int:
    """A free local port: other test runs on this machine may hold dash.testing's default."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(dash_duo, tmp_path, monkeypatch):
    """The dashboard serving a fresh 60-image run; yields (dash_duo, run)."""
    from app import create_app  # imported here: most tests never build the app

    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_synthetic_run(tmp_path / "data", n=N)
    patient(dash_duo)
    dash_duo.start_server(create_app(tmp_path / "data"), port=free_port())
    dash_duo.wait_for_text_to_equal("#header-fea", f"{N} images")
    yield dash_duo, run
