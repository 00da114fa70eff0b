"""Datasets: images and labels streamed into a new dataset that appears only when complete, and
read back one image at a time."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.store.files import (
    DATASETS,
    atomic_dir,
    check_array,
    check_id,
    check_images,
    load_pixels,
    now,
    read_npy,
    resolve_data_dir,
    sweep_stale,
    write_attributes,
    write_json,
)


class DatasetWriter:
    """Stream images and labels into a new dataset, which appears only when the block ends well.

        with DatasetWriter(data_dir, "demo", ATTRIBUTES, meta={...}) as ds:
            ds.add(pixels, act_row, split="train", source="simulate", true_row=...)
    """

    def __init__(self, data_dir, dataset_id: str, attributes: Sequence[str], meta=None,
                 colours: Sequence[str] | None = None):
        self.data_dir = resolve_data_dir(data_dir)
        self.id = check_id(dataset_id, "dataset")
        self.attributes = [str(a) for a in attributes]
        self.colours = colours
        self.meta = dict(meta or {})
        self.final = self.data_dir / DATASETS / self.id
        self.rows: list[dict] = []
        self.act: list[np.ndarray] = []
        self.true_act: list[np.ndarray] = []
        self._cm = None

    def __enter__(self) -> DatasetWriter:
        if self.final.parent.exists():
            sweep_stale(self.final.parent)
        self._cm = atomic_dir(self.final)
        self.tmp = self._cm.__enter__()
        (self.tmp / "images").mkdir()
        return self

    def add(self, pixels, act_row, *, image_id: str | None = None, split: str = "train",
            source: str = "", true_row=None, **extra) -> int:
        """Store one image (2-D, finite) with its annotated 0/1 labels; return its index."""
        index = len(self.rows)
        image_id = str(image_id if image_id is not None else f"img{index:06d}")
        pixels = check_array(f"image {image_id}", pixels, (None, None)).astype(np.float32)
        a = len(self.attributes)
        self.act.append(check_array(f"labels of {image_id}", act_row, (a,), binary=True))
        if true_row is not None:
            self.true_act.append(check_array(f"true labels of {image_id}", true_row, (a,),
                                             binary=True))
        rel = f"{DATASETS}/{self.id}/images/{index:06d}.npy"
        np.save(self.tmp / "images" / f"{index:06d}.npy", pixels)
        self.rows.append({"image_id": image_id, "path": rel, "split": split, "source": source,
                          "height": pixels.shape[0], "width": pixels.shape[1], **extra})
        return index

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:  # the temporary directory goes, then the error rises
                self._cm.__exit__(type(err), err, err.__traceback__)
                raise
        return self._cm.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        if not self.rows:
            raise PipelineError(f"dataset {self.id} would hold no images")
        if self.true_act and len(self.true_act) != len(self.act):
            raise PipelineError("true labels were given for some images but not all")
        images = check_images(pd.DataFrame(self.rows), len(self.rows))
        images.to_parquet(self.tmp / "images.parquet", index=False)
        np.save(self.tmp / "act.npy", np.stack(self.act).astype(np.uint8))
        if self.true_act:
            np.save(self.tmp / "true_act.npy", np.stack(self.true_act).astype(np.uint8))
        write_attributes(self.tmp, self.attributes, self.colours)
        write_json(self.tmp / "dataset.json", {"id": self.id, "created": now(),
                                                "n_images": len(self.rows), **self.meta})


class Dataset:
    """A dataset on disk: labels in memory, images loaded one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "dataset.json").is_file():
            raise PipelineError(f"{self.path} is not a dataset (no dataset.json)")
        self.meta = json.loads((self.path / "dataset.json").read_text())
        attrs = json.loads((self.path / "attributes.json").read_text())
        self.attributes: list[str] = attrs["names"]
        self.colours: list[str] = attrs["colours"]
        self.images = pd.read_parquet(self.path / "images.parquet")
        self.act = read_npy(self.path / "act.npy")
        true = self.path / "true_act.npy"
        self.true_act = read_npy(true) if true.is_file() else None

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def data_dir(self) -> Path:
        return self.path.parent.parent

    def image_path(self, index: int) -> Path:
        path = Path(self.images["path"].iloc[int(index)])
        return path if path.is_absolute() else self.data_dir / path

    def load_image(self, index: int) -> np.ndarray:
        return load_pixels(self.image_path(index))

    def indices(self, split: str | None = None) -> np.ndarray:
        if split is None:
            return np.arange(len(self.images))
        return np.flatnonzero(self.images["split"].to_numpy() == split)

    def __len__(self) -> int:
        return len(self.images)


def open_dataset(ref: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A dataset by path, or by id inside the data directory."""
    path = Path(ref)
    if not (path / "dataset.json").is_file():
        path = resolve_data_dir(data_dir) / DATASETS / check_id(str(ref), "dataset")
    if not (path / "dataset.json").is_file():
        raise PipelineError(f"no dataset {str(ref)!r} (looked for {path}/dataset.json)")
    return Dataset(path)
