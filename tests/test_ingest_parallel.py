"""A large ingest reads its images in a pool of processes: the dataset it writes is the same, byte
for byte, as one process writes, and an unreadable image is the same problem naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline import ingest as ingest_module
from pipeline import pool
from pipeline.store import open_dataset

ATTRS = ["Ring", "Halo"]


def image_folder(folder: Path, n: int = 40) -> Path:
    """n small TIFF files of varied sizes and count ranges, a corrupt one among them, and a
    labels CSV naming them all."""
    rng = np.random.default_rng(3)
    (folder / "imgs" / "sub").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"sub/img{i:03d}.tif" if i % 7 == 0 else f"img{i:03d}.tif"
        shape = (int(rng.integers(16, 90)), int(rng.integers(16, 90)))
        tifffile.imwrite(folder / "imgs" / name,
                         rng.integers(0, 10 ** int(rng.integers(1, 5)), shape).astype(np.uint16))
        rows.append(f"{name},{i % 2},{(i // 2) % 2}")
    (folder / "imgs" / "corrupt.tif").write_bytes(b"II*\x00 not a tiff at all")
    rows.insert(n // 2, "corrupt.tif,1,1")
    (folder / "labels.csv").write_text("\n".join(["file,Ring,Halo", *rows]) + "\n")
    return folder


def written(dataset: Path) -> dict[str, bytes]:
    """Every file of a dataset, its creation time left out."""
    files = {p.relative_to(dataset).as_posix(): p.read_bytes()
             for p in sorted(dataset.rglob("*")) if p.is_file()}
    meta = json.loads(files.pop("dataset.json"))
    meta.pop("created")
    return {**files, "dataset.json": json.dumps(meta, sort_keys=True).encode()}


def ingest_with(workers: int, folder: Path, data: Path, monkeypatch, **options):
    with monkeypatch.context() as patch:
        patch.setattr(pool, "workers_for", lambda n_items, minimum: workers)
        return ingest_module.ingest(folder / "imgs", folder / "labels.csv", data,
                                    dataset_id="same", progress=False, **options)


def test_the_pool_writes_the_same_dataset_as_one_process(tmp_path, monkeypatch):
    folder = image_folder(tmp_path)
    alone = ingest_with(0, folder, tmp_path / "alone", monkeypatch)
    pooled = ingest_with(2, folder, tmp_path / "pooled", monkeypatch)

    assert pooled.n_images == alone.n_images == 40
    assert [str(p) for p in pooled.problems] == [str(p) for p in alone.problems]
    assert [p.file for p in pooled.problems] == ["corrupt.tif"]
    assert pooled.problems[0].reason  # the reader's own words, as one process gives them
    assert written(pooled.path) == written(alone.path)
    ds = open_dataset(pooled.path)
    assert list(ds.images["image_id"][:3]) == ["sub/img000.tif", "img001.tif", "img002.tif"]
    assert ds.load_thumbnails(np.arange(len(ds))).any(axis=(1, 2)).all()  # no blank thumbnail


def test_with_strict_the_pool_stops_on_the_corrupt_image_and_writes_nothing(tmp_path,
                                                                            monkeypatch):
    folder = image_folder(tmp_path)
    with pytest.raises(ingest_module.IngestProblems, match="--strict") as raised:
        ingest_with(2, folder, tmp_path / "data", monkeypatch, strict=True)
    assert [p.file for p in raised.value.problems] == ["corrupt.tif"]
    assert not (tmp_path / "data" / "datasets" / "same").exists()
    assert list((tmp_path / "data" / "datasets").iterdir()) == []


def test_only_a_large_ingest_on_several_cores_uses_the_pool(monkeypatch):
    least = ingest_module.PARALLEL_MIN
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert pool.workers_for(least - 1, least) == 0
    assert pool.workers_for(least, least) == 2
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert pool.workers_for(10 * least, least) == 0


def test_the_readers_are_handed_only_a_few_tasks_ahead_of_the_writer():
    """A million-image ingest must not queue every thumbnail in memory: the pool is handed at
    most `ahead` tasks beyond the one the writer is taking, and the results come in order."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import repeat

    ahead, chunk = 3, ingest_module.POOL_CHUNK
    with ThreadPoolExecutor(2) as threads:
        handed = []
        submit = threads.submit
        threads.submit = lambda *args: handed.append(1) or submit(*args)
        results = pool.ahead_map(threads, ahead, chunk, pow, range(1000), repeat(2))
        for i, value in enumerate(results):
            assert value == i * i
            assert len(handed) <= i // chunk + 1 + ahead + 1
    assert i == 999 and len(handed) == -(-1000 // chunk)
