"""A run built from vectors alone (import-vectors without --images) opens in the dashboard:
the views and the detail table work and the missing pictures are named, not a crash."""

from __future__ import annotations

import numpy as np

from callbacks import detail
from callbacks.common import MISSING_THUMB, thumbnail
from pipeline.attributes import ATTRIBUTES
from pipeline.store import get_run, write_run


def write_imageless_run(data_dir, n=12):
    rng = np.random.default_rng(1)
    import pandas as pd

    act = (rng.random((n, len(ATTRIBUTES))) < 0.3).astype(np.uint8)
    images = pd.DataFrame({"image_id": [f"v{i}" for i in range(n)], "path": [""] * n,
                           "split": ["test"] * n, "source": ["import-vectors"] * n})
    write_run(data_dir, attributes=ATTRIBUTES, images=images, act=act,
              prd=rng.random(act.shape).astype(np.float32), fea=rng.normal(size=(n, 8)),
              emb={s: rng.normal(size=(n, 2)) for s in ("act", "fea", "prd")},
              meta={"dataset": "vectors"}, run_id="vectors-only")
    return get_run("vectors-only", data_dir)


def test_a_run_without_images_shows_grey_tiles_and_names_the_missing_image(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_imageless_run(tmp_path / "data")

    assert thumbnail(run, 3) == MISSING_THUMB
    figure = detail.draw_detail_image(3, "Viridis", run.id)
    message = " ".join(a["text"] for a in figure["layout"]["annotations"])
    assert "holds no image" in message and "--images" in message

    title, table, neighbours = detail.describe_detail(3, 0.5, run.id)
    assert "v3" in str(title)
    assert table is not None and neighbours is not None
