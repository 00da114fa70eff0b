"""`python -m pipeline migrate` moves a data directory of one .npy file per image into the chunk
store whole or not at all: the same pixels, labels and runs afterwards, nothing changed when it
fails, an interrupted switch completed by the next run, and a second run refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import store
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.store import migrate as migration
from pipeline.store.chunks import STORE

NAMES = ["Ring", "Halo"]


def old_dataset(data_dir: Path, dataset_id: str, n: int, seed: int) -> list[np.ndarray]:
    """A dataset as written before the chunk store: one float32 .npy per image, true labels
    and a parameter column; one image has fractional values, one counts above 2²⁴."""
    folder = data_dir / store.DATASETS / dataset_id
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = [rng.poisson(12.0, (24, 20)).astype(np.float32) for _ in range(n)]
    images[0][3, 4] = 2**24 + 2**20
    images[-1] = rng.gamma(2.0, 3.0, (24, 20)).astype(np.float32)
    for i, image in enumerate(images):
        np.save(folder / "images" / f"{i:06d}.npy", image)
    pd.DataFrame({"index": range(n), "image_id": [f"{dataset_id}-{i}" for i in range(n)],
                  "path": [f"datasets/{dataset_id}/images/{i:06d}.npy" for i in range(n)],
                  "split": ["train"] * (n - 1) + ["test"], "source": ["simulate"] * n,
                  "height": [24] * n, "width": [20] * n,
                  "params": [json.dumps({"seed": i}) for i in range(n)]}
                 ).to_parquet(folder / "images.parquet")
    act = rng.integers(0, 2, (n, 2)).astype(np.uint8)
    np.save(folder / "act.npy", act)
    np.save(folder / "true_act.npy", 1 - act)
    (folder / "attributes.json").write_text(json.dumps({"names": NAMES,
                                                        "colours": ["#111111", "#222222"]}))
    (folder / "notes.txt").write_text(f"beamtime notes of {dataset_id}")
    (folder / "dataset.json").write_text(json.dumps({"id": dataset_id, "n_images": n,
                                                     "created": "2026-01-02T03:04:05+00:00",
                                                     "seed": seed}))
    return images


def old_data_dir(data_dir: Path) -> dict[str, list[np.ndarray]]:
    """Two old datasets and a run over the second one's images (in another order)."""
    images = {"alpha": old_dataset(data_dir, "alpha", 5, 1),
              "beta": old_dataset(data_dir, "beta", 4, 2)}
    beta = store.open_dataset("beta", data_dir)
    rows = beta.images.iloc[[2, 0, 3]]
    store.write_run(data_dir, attributes=NAMES, images=rows, act=beta.act[[2, 0, 3]],
                    prd=np.full((3, 2), 0.5), fea=np.zeros((3, 4)),
                    emb={s: np.zeros((3, 2)) for s in store.SPACES}, meta={"dataset": "beta"},
                    run_id="on-beta")
    return images


def assert_reads_as_before(data_dir: Path, images: dict[str, list[np.ndarray]]) -> None:
    for dataset_id, pixels in images.items():
        dataset = store.open_dataset(dataset_id, data_dir)
        for i, image in enumerate(pixels):
            got = dataset.load_image(i)
            assert got.dtype == np.float32 and np.array_equal(got, image), (dataset_id, i)
    run = store.get_run("on-beta", data_dir)
    for k, i in enumerate([2, 0, 3]):
        assert np.array_equal(run.load_image(k), images["beta"][i])


def visible_leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.rglob(".*"))


def test_migrate_moves_every_old_dataset_and_its_runs_into_the_chunk_store(tmp_path, capsys):
    data = tmp_path / "data"
    images = old_data_dir(data)
    before = store.open_dataset("alpha", data)
    assert main(["migrate", "--data-dir", str(data)]) == 0
    out = capsys.readouterr()
    assert "migrated 2 datasets (9 images)" in out.out and "on-beta" in out.out
    assert "migrate" in out.err  # the progress bar
    assert_reads_as_before(data, images)
    alpha = store.open_dataset("alpha", data)
    assert (alpha.path / STORE).is_dir() and not (alpha.path / "images").exists()
    assert np.array_equal(alpha.act, before.act) and np.array_equal(alpha.true_act,
                                                                    before.true_act)
    assert alpha.colours == ["#111111", "#222222"] and alpha.meta["seed"] == 1
    assert alpha.meta["created"] == "2026-01-02T03:04:05+00:00"
    assert list(alpha.images["params"]) == list(before.images["params"])
    assert list(alpha.images["split"]) == list(before.images["split"])
    assert (alpha.path / "notes.txt").read_text() == "beamtime notes of alpha"
    assert not any(p.suffix == ".npy" for p in (data / store.DATASETS).rglob("images/*"))
    run_paths = pd.read_parquet(data / store.RUNS / "on-beta" / "images.parquet")["path"]
    assert all(f"{STORE}#" in p for p in run_paths)
    assert visible_leftovers(data) == []


def test_migrating_again_is_refused_with_a_clear_message(tmp_path, capsys):
    data = tmp_path / "data"
    old_data_dir(data)
    assert main(["migrate", "--data-dir", str(data), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["migrate", "--data-dir", str(data)]) == 2
    assert f"data directory {data} is already migrated" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["migrate", "--data-dir", str(empty)]) == 2
    assert "holds no datasets: nothing to migrate" in capsys.readouterr().err


def test_a_failed_migration_changes_nothing(tmp_path):
    data = tmp_path / "data"
    images = old_data_dir(data)
    damaged = data / store.DATASETS / "beta" / "images" / "000003.npy"
    damaged.write_bytes(b"not an array")  # the last image of the last dataset
    with pytest.raises(PipelineError, match="000003.npy"):
        migration.migrate(data, progress=False)
    assert [p.name for p in migration.old_datasets(data)] == ["alpha", "beta"]
    assert visible_leftovers(data) == []
    damaged.unlink()
    np.save(damaged, images["beta"][3])
    assert_reads_as_before(data, images)  # the old layout, untouched
    assert migration.migrate(data, progress=False).images == 9


def test_a_switch_cut_short_is_completed_by_the_next_migrate(tmp_path, monkeypatch):
    data = tmp_path / "data"
    images = old_data_dir(data)
    rename = os.rename

    def die_before_beta_moves_in(src, dst):
        if Path(dst) == data / store.DATASETS / "beta":  # alpha switched, beta moved out only
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(os, "rename", die_before_beta_moves_in)
    with pytest.raises(KeyboardInterrupt):
        migration.migrate(data, progress=False)
    monkeypatch.undo()
    assert (data / migration.SWITCH / "old" / store.DATASETS / "alpha" / "images").is_dir()
    assert not (data / store.DATASETS / "beta").exists()
    result = migration.migrate(data, progress=False)
    assert result.resumed and result.datasets == []
    assert_reads_as_before(data, images)
    assert migration.old_datasets(data) == [] and visible_leftovers(data) == []


def test_old_datasets_still_open_without_migrating(tmp_path):
    data = tmp_path / "data"
    images = old_data_dir(data)
    assert_reads_as_before(data, images)
    assert [p.name for p in migration.old_datasets(data)] == ["alpha", "beta"]
