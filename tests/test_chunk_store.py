"""Datasets keep ingested images where they are and the rest in a chunked store: pixels come back
as the one-file-per-image layout gave them, referenced files are read in place (and named when
they vanish), a killed writer leaves nothing, and datasets of the old layout still open."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from pipeline import store
from pipeline.errors import PipelineError
from pipeline.imaging import display_levels
from pipeline.ingest import ingest
from pipeline.model import log_intensity, resize
from pipeline.simulate import simulate_dataset, simulate_image
from pipeline.store.chunks import SHARD, STORE
from tests.test_store import kill_when_marked

NAMES = ["Ring", "Halo"]
REPO = Path(__file__).resolve().parents[1]


def stored_files(dataset: Path) -> list[Path]:
    return [p for p in dataset.rglob("*") if p.is_file()]


def some_images() -> list[np.ndarray]:
    """Whole counts (also above float32's 2²⁴), fractional values, and an odd shape."""
    rng = np.random.default_rng(3)
    counts = rng.poisson(20.0, (32, 32)).astype(np.float64)
    counts[0, 0] = 2**24 + 2  # float32 rounds it; the old layout stored that rounded value
    return [counts, rng.gamma(2.0, 3.0, (32, 32)), rng.poisson(4.0, (20, 28)),
            np.zeros((32, 32)), rng.normal(50.0, 10.0, (32, 32))]


def test_images_round_trip_the_chunk_store_as_the_old_npy_files_gave_them(tmp_path):
    images = some_images()
    with store.DatasetWriter(tmp_path, "mixed", NAMES) as ds:
        for image in images:
            ds.add(image, [1, 0])
    dataset = store.open_dataset("mixed", tmp_path)
    for i, image in enumerate(images):
        old = np.load(_old_layout_npy(tmp_path, image))  # what the old writer kept
        got = dataset.load_image(i)
        assert got.dtype == np.float32 and np.array_equal(got, old), i
    assert not (dataset.path / "images").exists()
    assert len(stored_files(dataset.path)) < 20  # a few shard files, not one file per image


def _old_layout_npy(folder: Path, image) -> Path:
    path = folder / "old.npy"
    np.save(path, np.asarray(image).astype(np.float32))
    return path


def test_many_images_share_shard_files_and_read_back_in_any_order(tmp_path):
    n = SHARD + 40
    rng = np.random.default_rng(0)
    images = rng.poisson(6.0, (n, 16, 16))
    with store.DatasetWriter(tmp_path, "many", NAMES) as ds:
        for image in images:
            ds.add(image, [0, 1])
    dataset = store.open_dataset("many", tmp_path)
    assert len(stored_files(dataset.path)) < 20
    for i in (0, SHARD - 1, SHARD, n - 1):
        assert np.array_equal(dataset.load_image(i), images[i])
    rows = [n - 1, 3, SHARD]
    assert np.array_equal(dataset.load_thumbnails(rows),
                          np.stack([display_levels(images[i], store.THUMB_SIZE) for i in rows]))
    # Read as a batch (as inference reads them): across shards, out of order, one twice.
    rows = [SHARD + 5, 0, n - 1, 0, 7]
    batch = dataset.load_images(rows)
    assert [b.dtype for b in batch] == [np.float32] * len(rows)
    assert all(np.array_equal(b, images[i]) for b, i in zip(batch, rows, strict=True))


def test_model_inputs_are_made_from_the_full_images_not_stored(tmp_path):
    path = simulate_dataset(tmp_path, 3, size=64, seed=4, dataset_id="s", progress=False)
    dataset = store.open_dataset(path)
    image = simulate_image(np.random.default_rng([4, 2]), 64)[0]
    assert np.array_equal(dataset.load_image(2), image)
    assert dataset.input_size is None and not (path / STORE / "inputs").exists()
    got = dataset.load_inputs([2], size=48)
    np.testing.assert_array_equal(got[0], resize(log_intensity(image), 48))
    with pytest.raises(PipelineError, match="stores no model inputs; name an input size"):
        dataset.load_inputs([0])


def test_a_chunk_store_with_model_inputs_still_serves_them(tmp_path):
    """Chunk stores written before inputs were made on demand hold them at `input_size`."""
    import zarr

    images = np.random.default_rng(2).poisson(6.0, (5, 24, 24))
    with store.DatasetWriter(tmp_path, "older", NAMES) as ds:
        for image in images:
            ds.add(image, [0, 1])
    inputs = np.stack([resize(log_intensity(image), 16) for image in images]).astype(np.float16)
    group = zarr.open_group(str(tmp_path / store.DATASETS / "older" / STORE), mode="a")
    group.create_array("inputs", shape=inputs.shape, dtype="float16", chunks=(1, 16, 16),
                       shards=(SHARD, 16, 16))[:] = inputs
    group.attrs["input_size"] = 16
    dataset = store.open_dataset("older", tmp_path)
    assert dataset.input_size == 16
    np.testing.assert_array_equal(dataset.load_inputs([4, 1]), inputs[[4, 1]].astype(np.float32))
    np.testing.assert_array_equal(dataset.load_inputs([1], size=20)[0],
                                  resize(log_intensity(images[1]), 20))


def test_a_shard_of_blank_images_is_kept_and_reads_back(tmp_path):
    with store.DatasetWriter(tmp_path, "blank", NAMES) as ds:
        for _ in range(SHARD + 1):
            ds.add(np.zeros((8, 8)), [0, 0])
    dataset = store.open_dataset("blank", tmp_path)
    assert not dataset.load_image(SHARD - 1).any() and not dataset.load_image(SHARD).any()


def test_a_lost_shard_file_is_an_error_naming_it_not_a_black_image(tmp_path):
    with store.DatasetWriter(tmp_path, "d", NAMES) as ds:
        ds.add(np.ones((8, 8)), [1, 0])
    dataset = store.open_dataset("d", tmp_path)
    [shard] = [p for p in (dataset.path / STORE / "full").rglob("c/0/0/0")]
    shard.unlink()
    with pytest.raises(PipelineError, match=f"image data file {shard} is missing"):
        dataset.load_image(0)


# ---------------------------------------------------------------- images referenced in place


def ingested(tmp_path: Path) -> tuple[store.Dataset, dict[str, np.ndarray]]:
    """Three TIFFs and a frame of an HDF5 stack, ingested; returns the dataset and the pixels."""
    folder = tmp_path / "beamline"
    (folder / "run1").mkdir(parents=True)
    rng = np.random.default_rng(1)
    pixels = {f"run1/scan_{k}.tif": rng.poisson(30, (120, 100)).astype(np.uint16)
              for k in range(3)}
    for rel, array in pixels.items():
        tifffile.imwrite(folder / rel, array)
    stack = rng.poisson(9, (2, 90, 90)).astype(np.int32)
    with h5py.File(folder / "stack.h5", "w") as f:
        f["entry/data/data"] = stack
    pixels["stack.h5"] = stack[0]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,Ring,Halo\n" + "".join(f"{rel},1,0\n" for rel in pixels))
    result = ingest(folder, labels, tmp_path / "data", dataset_id="lab", progress=False)
    assert result.n_images == 4
    return store.open_dataset(result.path), pixels


def test_ingested_images_are_read_in_place_and_no_full_pixels_are_copied(tmp_path):
    dataset, pixels = ingested(tmp_path)
    by_id = {image_id: i for i, image_id in enumerate(dataset.images["image_id"])}
    for rel, array in pixels.items():
        assert np.array_equal(dataset.load_image(by_id[rel]), array.astype(np.float32))
    assert not (dataset.path / STORE / "full").exists()
    stored = sum(p.stat().st_size for p in stored_files(dataset.path))
    assert stored < sum(a.size for a in pixels.values()) * 4 // 2  # far below their float32s
    rows = [by_id[rel] for rel in reversed(pixels)]  # a batch reads them in place alike
    assert all(np.array_equal(image, pixels[rel].astype(np.float32))
               for image, rel in zip(dataset.load_images(rows), reversed(pixels), strict=True))
    tif = tmp_path / "beamline" / "run1" / "scan_1.tif"
    tifffile.imwrite(tif, np.full((120, 100), 7, np.uint16))  # the file is the image
    assert np.all(dataset.load_image(by_id["run1/scan_1.tif"]) == 7)


def test_a_vanished_referenced_file_is_an_error_naming_it(tmp_path):
    dataset, _ = ingested(tmp_path)
    row = int(np.flatnonzero(dataset.images["image_id"] == "run1/scan_2.tif")[0])
    gone = tmp_path / "beamline" / "run1" / "scan_2.tif"
    gone.unlink()
    with pytest.raises(PipelineError, match=f"image file {gone} is missing"):
        dataset.load_image(row)
    with pytest.raises(PipelineError, match=f"image file {gone} is missing"):
        dataset.load_images([0, row])
    thumb = dataset.load_thumbnails([row])[0]  # the stored thumbnail still shows it
    assert thumb.shape == (store.THUMB_SIZE,) * 2 and thumb.std() > 0


def test_the_detail_view_names_a_vanished_file_instead_of_failing(tmp_path, monkeypatch):
    dataset, _ = ingested(tmp_path)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    n, a = len(dataset), len(dataset.attributes)
    run = store.write_run(tmp_path / "data", attributes=dataset.attributes,
                          images=dataset.images, act=dataset.act, prd=np.full((n, a), 0.5),
                          fea=np.zeros((n, 4)), emb={s: np.zeros((n, 2)) for s in store.SPACES},
                          meta={"dataset": dataset.id}, run_id="on-lab")
    from callbacks.detail import draw_detail_image

    shown = draw_detail_image(0, "Inferno", run.name)
    assert shown["data"][0]["type"] == "heatmap"
    gone = tmp_path / "beamline" / dataset.images["image_id"].iloc[0]
    gone.unlink()
    message = json.dumps(draw_detail_image(0, "Inferno", run.name))
    assert f"image file {gone} is missing" in message and "Traceback" not in message


def test_a_reference_swapped_for_a_link_leading_outside_its_folder_is_refused(tmp_path):
    dataset, _ = ingested(tmp_path)
    secret = tmp_path / "secret.tif"
    tifffile.imwrite(secret, np.ones((8, 8), np.uint16))
    target = tmp_path / "beamline" / "run1" / "scan_0.tif"
    target.unlink()
    target.symlink_to(secret)
    row = int(np.flatnonzero(dataset.images["image_id"] == "run1/scan_0.tif")[0])
    with pytest.raises(PipelineError, match="refused, its path leads outside"):
        dataset.load_image(row)


# ---------------------------------------------------------------- writing whole or not at all

KILLED_WRITER = """
import sys, numpy as np
from pathlib import Path
from pipeline import store
data_dir, marker = Path(sys.argv[1]), Path(sys.argv[2])
with store.DatasetWriter(data_dir, "killed", ["x"]) as ds:
    for i in range(10**6):
        ds.add(np.full((16, 16), i % 7), [1])
        if i == 300:  # one shard is on disk by now
            marker.touch()
"""


def test_a_writer_killed_midway_leaves_no_dataset_and_its_leftovers_are_swept(tmp_path):
    marker, data = tmp_path / "writing", tmp_path / "data"
    kill_when_marked(KILLED_WRITER, data, marker, timeout=120)
    with pytest.raises(PipelineError, match="no dataset 'killed'"):
        store.open_dataset("killed", data)
    [leftover] = list((data / store.DATASETS).iterdir())
    assert leftover.name.startswith(store.TMP_PREFIX)
    assert list((leftover / STORE / "full").rglob("c/0/0/0"))  # it had written a shard
    assert store.sweep_stale(data / store.DATASETS) == [leftover]


# ---------------------------------------------------------------- the layout before the store


def old_layout_dataset(data_dir: Path) -> tuple[Path, list[np.ndarray]]:
    """A dataset as written before the chunk store: one float32 .npy per image."""
    folder = data_dir / store.DATASETS / "old"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    images = [rng.poisson(12.0, (40, 40)).astype(np.float32) for _ in range(3)]
    for i, image in enumerate(images):
        np.save(folder / "images" / f"{i:06d}.npy", image)
    pd.DataFrame({"index": range(3), "image_id": [f"img{i:06d}" for i in range(3)],
                  "path": [f"datasets/old/images/{i:06d}.npy" for i in range(3)],
                  "split": ["train", "train", "test"], "source": ["simulate"] * 3,
                  "height": [40] * 3, "width": [40] * 3}).to_parquet(folder / "images.parquet")
    np.save(folder / "act.npy", np.array([[1, 0], [0, 1], [1, 1]], np.uint8))
    (folder / "attributes.json").write_text(json.dumps({"names": NAMES,
                                                        "colours": ["#111", "#222"]}))
    (folder / "dataset.json").write_text(json.dumps({"id": "old", "n_images": 3}))
    return folder, images


def test_a_dataset_of_the_old_layout_still_opens_and_reads(tmp_path):
    folder, images = old_layout_dataset(tmp_path)
    dataset = store.open_dataset("old", tmp_path)
    assert dataset.input_size is None and list(dataset.indices("test")) == [2]
    for i, image in enumerate(images):
        assert np.array_equal(dataset.load_image(i), image)
    np.testing.assert_array_equal(dataset.load_inputs([2, 0], size=32),
                                  np.stack([resize(log_intensity(images[i]), 32)
                                            for i in (2, 0)]))
    assert np.array_equal(dataset.load_thumbnails([1])[0],
                          display_levels(images[1], store.THUMB_SIZE))
    with pytest.raises(PipelineError, match="stores no model inputs; name an input size"):
        dataset.load_inputs([0])
    (folder / "images" / "000001.npy").unlink()
    with pytest.raises(PipelineError, match="000001.npy is missing"):
        dataset.load_image(1)
