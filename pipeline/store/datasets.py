"""Datasets: images and labels streamed into a new dataset that appears only when complete, and
read back one image, or a batch of model inputs, at a time.

A dataset keeps each ingested image where it is (a reference: the file, its folder, its frame)
and copies nothing of its pixels; its thumbnails go to the dataset's chunk store
(pipeline.store.chunks), as do the full-size images of simulated datasets, which have no file of
their own. Datasets written before the chunk store (one .npy file per image) open and read as
before, and `pipeline migrate` (pipeline.store.migrate) moves them into it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.store.chunks import (
    INPUTS,
    STORE,
    THUMB_SIZE,
    THUMBS,
    ChunkWriter,
    model_input,
    read_rows,
    store_attrs,
    thumbnail_levels,
)
from pipeline.store.files import (
    DATASETS,
    atomic_dir,
    check_array,
    check_id,
    check_images,
    now,
    read_npy,
    resolve_data_dir,
    sweep_stale,
    write_attributes,
    write_json,
)
from pipeline.store.located import load_row_image, load_row_images, reference_target


@dataclass(frozen=True)
class Thumbnailed:
    """What a dataset keeps of an image referenced in place: its shape and its thumbnail's grey
    levels. Made where the image is read, which may be another process (pipeline.ingest)."""

    height: int
    width: int
    levels: np.ndarray


def thumbnailed(pixels, image_id: str, size: int = THUMB_SIZE) -> Thumbnailed:
    """The image (2-D, finite, else a PipelineError naming `image_id`) reduced to a Thumbnailed."""
    pixels = check_array(f"image {image_id}", pixels, (None, None)).astype(np.float32)
    return Thumbnailed(pixels.shape[0], pixels.shape[1], thumbnail_levels(pixels, size))


class DatasetWriter:
    """Stream images and labels into a new dataset, which appears only when the block ends well.

        with DatasetWriter(data_dir, "demo", ATTRIBUTES, meta={...}) as ds:
            ds.add(pixels, act_row, split="train", source="simulate", true_row=...)
            ds.add_reference(pixels, "a/img.tif", root, act_row, split="test")

    `add` keeps the full-size image in the chunk store; `add_reference` keeps only where the file
    is, and the thumbnail its pixels, as read, make.
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
        try:
            self.chunks = ChunkWriter(self.tmp)
        except BaseException as err:
            self._cm.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def _labels(self, image_id: str, act_row, true_row) -> None:
        a = len(self.attributes)
        act = check_array(f"labels of {image_id}", act_row, (a,), binary=True)
        true = None if true_row is None else check_array(f"true labels of {image_id}", true_row,
                                                          (a,), binary=True)
        self.act.append(act)
        if true is not None:
            self.true_act.append(true)

    def add(self, pixels, act_row, *, image_id: str | None = None, split: str = "train",
            source: str = "", true_row=None, **extra) -> int:
        """Store one image (2-D, finite) with its annotated 0/1 labels; return its index."""
        index = len(self.rows)
        image_id = str(image_id if image_id is not None else f"img{index:06d}")
        pixels = check_array(f"image {image_id}", pixels, (None, None)).astype(np.float32)
        self._labels(image_id, act_row, true_row)
        name, slot = self.chunks.add_full(pixels)
        locator = f"{DATASETS}/{self.id}/{STORE}#{name}:{slot}"
        self.rows.append({"image_id": image_id, "path": locator, "split": split,
                          "source": source, "height": pixels.shape[0],
                          "width": pixels.shape[1], **extra})
        return index

    def add_reference(self, pixels, rel: str, root, act_row, *, frame: int = 0,
                      reader: dict | None = None, image_id: str | None = None,
                      split: str = "train", source: str = "", true_row=None, **extra) -> int:
        """Reference the image file `rel` (relative to the folder `root`, frame `frame`, read with
        the readers' options `reader`) in place; `pixels` is it as read now (or already a
        Thumbnailed), from which its thumbnail is stored. Return its index."""
        index = len(self.rows)
        root = str(Path(root).resolve())
        reference_target(root, rel)  # refused here already when it leads outside root
        image_id = str(image_id if image_id is not None else rel)
        image = pixels if isinstance(pixels, Thumbnailed) else thumbnailed(
            pixels, image_id, self.chunks.thumb_size)
        self._labels(image_id, act_row, true_row)
        self.chunks.add_thumbnail(image.levels)
        self.rows.append({"image_id": image_id, "path": str(rel), "root": root,
                          "frame": int(frame), "reader": json.dumps(reader or {}, sort_keys=True),
                          "split": split, "source": source, "height": image.height,
                          "width": image.width, **extra})
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
        self.chunks.close()
        images = check_images(pd.DataFrame(self.rows), len(self.rows))
        # zstd: a third smaller than parquet's default snappy with simulate's parameter strings
        images.to_parquet(self.tmp / "images.parquet", index=False, compression="zstd")
        np.save(self.tmp / "act.npy", np.stack(self.act).astype(np.uint8))
        if self.true_act:
            np.save(self.tmp / "true_act.npy", np.stack(self.true_act).astype(np.uint8))
        write_attributes(self.tmp, self.attributes, self.colours)
        write_json(self.tmp / "dataset.json", {"id": self.id, "created": now(),
                                                "n_images": len(self.rows), **self.meta})


class Dataset:
    """A dataset on disk: labels in memory, images loaded one at a time, thumbnails (and the
    model inputs of older chunk stores) in batches."""

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
        self.store = self.path / STORE
        self.store_attrs = store_attrs(self.store) if self.store.is_dir() else {}

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def data_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def input_size(self) -> int | None:
        """The side of the stored model inputs; None when none are stored (a chunk store written
        since inputs are made on demand, or no chunk store)."""
        return self.store_attrs.get("input_size")

    def image_path(self, index: int) -> Path:
        """Where row `index`'s image is: its file, or its chunk-store locator, made absolute."""
        row = self.images.iloc[int(index)]
        if str(row.get("root") or ""):
            return reference_target(row["root"], row["path"])
        path = Path(row["path"])
        return path if path.is_absolute() else self.data_dir / path

    def load_image(self, index: int) -> np.ndarray:
        """The full-size float32 image of row `index` (from its file or the chunk store)."""
        return load_row_image(self.images.iloc[int(index)], self.data_dir)

    def load_images(self, rows) -> list[np.ndarray]:
        """load_image of each of `rows` (a range or indices), those in the chunk store read in
        one batch per store array."""
        table = self.images.iloc[np.asarray(rows, dtype=np.int64).reshape(-1)]
        return load_row_images(table.to_dict("records"), self.data_dir)

    def load_inputs(self, rows, size: int | None = None) -> np.ndarray:
        """Model inputs of `rows` (a range or indices) as float32 len(rows) × size × size: each
        image's log1p counts, zero-padded square and resized to `size`
        (pipeline.model.resize(log_intensity(image), size)), not yet scaled by a checkpoint's
        normalisation. Read in one batch from the chunk store (float16 precision) when it holds
        inputs of that size (`size` None: the stored size); otherwise made from the full-size
        images."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        size = self.input_size if size is None else int(size)
        if size is None:
            raise PipelineError(f"dataset {self.id} stores no model inputs; name an input size")
        if size == self.input_size:
            return read_rows(self.store, INPUTS, rows).astype(np.float32)
        out = np.empty((len(rows), size, size), np.float32)
        for k, i in enumerate(rows):
            out[k] = model_input(self.load_image(int(i)), size)
        return out

    def load_thumbnails(self, rows) -> np.ndarray:
        """Thumbnails of `rows` as uint8 display levels (pipeline.imaging.display_levels;
        colour them with pipeline.imaging.colour_lut): those of images referenced in place read
        from the chunk store in one batch (so a vanished file still shows), the others made
        from their full-size images."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        size = int(self.store_attrs.get("thumb_size", THUMB_SIZE))
        out = np.empty((len(rows), size, size), np.uint8)
        stored = self._referenced(rows) if self.store_attrs else np.zeros(len(rows), bool)
        if stored.any():
            out[stored] = read_rows(self.store, THUMBS, rows[stored])
        for k in np.flatnonzero(~stored):
            out[k] = thumbnail_levels(self.load_image(int(rows[k])), size)
        return out

    def _referenced(self, rows: np.ndarray) -> np.ndarray:
        if "root" not in self.images.columns:
            return np.zeros(len(rows), bool)
        roots = self.images["root"].iloc[rows]
        return (roots.notna() & (roots.astype(str) != "")).to_numpy()

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
