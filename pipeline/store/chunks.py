"""A dataset's chunk store, images.zarr: what the pipeline keeps of a dataset's pixels, in a few
large compressed files instead of one file per image.

Arrays (Zarr format 3, Blosc zstd level 1, lossless; sharded: one file holds SHARD images, each
image compressed on its own so one can be read without the rest):

    thumbs           n × T × T uint8     display levels of pipeline.imaging (T = THUMB_SIZE):
                                         the thumbnail under any colour map (bit shuffle), of
                                         images referenced in place; zeros (60 bytes) in the
                                         rows of images kept here, whose thumbnails are made
                                         from them when asked
    full/<H>x<W>-<dtype>                 full-size images that have no file of their own
                                         (simulated ones): int32 when every pixel is a whole
                                         count, else float32 (byte shuffle)
    inputs           n × S × S float16   only in stores written before model inputs were made
                                         on demand: log1p counts padded square and resized to
                                         the store's `input_size` attribute

Row i of thumbs (and inputs) is the dataset's row i. A full-size image kept here is named in the
images table's `path` column by a locator, `datasets/<id>/images.zarr#full/256x256-int32:17`
(array row 17), so that a run that copies the table finds it as it finds any image.

What can be remade from a full-size image kept here is not stored: no stage read the model
inputs (training and inference prepare every channel from the full-size image, pipeline.inputs)
nor the thumbnails (the dashboard draws its own from the image, and caches them), and together
they took 9 KB of the 47 a simulated image took. A referenced image's thumbnail is kept: its
file may be slow to read, or gone.

The writer buffers SHARD images per array and writes each shard once, whole: its memory does not
grow with the number of images.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

STORE = "images.zarr"
SHARD = 256  # images per file
THUMB_SIZE = 72  # the dashboard's thumbnail side
INPUTS, THUMBS = "inputs", "thumbs"
LOCATOR = re.compile(r"(?P<store>.+\.zarr)#(?P<array>full/\d+x\d+-(?:int32|float32)):(?P<slot>\d+)")
_INT32_MAX = 2**31 - 1


def _compressor(shuffle: str):
    from zarr.codecs import BloscCodec

    # Level 1: writes 3.4× as fast as level 9 for 4 % more disk (benchmarks/RESULTS.md). Poisson
    # counts take 2 % less with byte shuffle than bit shuffle at level 1, and the uint8 levels
    # of a thumbnail 4 % less with bit shuffle.
    return BloscCodec(cname="zstd", clevel=1, shuffle=shuffle)


def model_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """The model-size input of one image before intensity scaling, float32 size × size."""
    from pipeline.model import log_intensity, resize  # torch: imported only when inputs are made

    return resize(log_intensity(pixels), int(size))


def thumbnail_levels(pixels: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    from pipeline.imaging import display_levels

    return display_levels(pixels, size)


def full_array_name(pixels: np.ndarray) -> tuple[str, np.ndarray]:
    """The array a full-size image goes to, and the image in that array's dtype (lossless)."""
    h, w = pixels.shape
    whole = pixels.size and pixels.min() >= 0 and pixels.max() <= _INT32_MAX
    if whole and np.array_equal(pixels, np.floor(pixels)):
        return f"full/{h}x{w}-int32", pixels.astype(np.int32)
    return f"full/{h}x{w}-float32", pixels.astype(np.float32)


class ChunkWriter:
    """Appends images to a new images.zarr in `folder`, one whole shard at a time."""

    def __init__(self, folder: Path, thumb_size: int = THUMB_SIZE):
        import zarr

        self.path = Path(folder) / STORE
        self.group = zarr.open_group(str(self.path), mode="w-")
        self.thumb_size = int(thumb_size)
        self.pending: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, int] = {}
        self.arrays: dict = {}
        self._create(THUMBS, (self.thumb_size,) * 2, "uint8", "bitshuffle")

    def _create(self, name: str, shape: tuple[int, int], dtype: str, shuffle: str) -> None:
        # Empty chunks written too (a setting of this handle, not stored: appends go through
        # it): a shard of zeros is then a file like any other, and a missing file always a
        # lost one (see read_rows).
        self.arrays[name] = self.group.create_array(
            name, shape=(0, *shape), dtype=dtype, chunks=(1, *shape), shards=(SHARD, *shape),
            compressors=_compressor(shuffle), fill_value=0, config={"write_empty_chunks": True})
        self.pending[name], self.counts[name] = [], 0

    def add_derived(self, pixels: np.ndarray) -> int:
        """Store the thumbnail of the next row, an image referenced in place; return the row."""
        return self.add_thumbnail(thumbnail_levels(pixels, self.thumb_size))

    def add_thumbnail(self, levels: np.ndarray) -> int:
        """Store the next row's thumbnail, made already (thumbnail_levels at this store's size);
        return the row."""
        levels = np.asarray(levels)
        if levels.shape != (self.thumb_size,) * 2 or levels.dtype != np.uint8:
            raise ValueError(f"a thumbnail must be {self.thumb_size}² uint8, got "
                             f"{levels.shape} {levels.dtype}")  # a programming error, not input
        return self._put(THUMBS, levels)

    def add_full(self, pixels: np.ndarray) -> tuple[str, int]:
        """Store the next row's full-size image losslessly (its thumbnail row holds zeros);
        return (array name, row in it)."""
        name, typed = full_array_name(pixels)
        if name not in self.pending:
            self._create(name, typed.shape, typed.dtype.name, "shuffle")
        self._put(THUMBS, np.zeros((self.thumb_size,) * 2, np.uint8))
        return name, self._put(name, typed)

    def _put(self, name: str, item: np.ndarray) -> int:
        self.pending[name].append(item)
        slot = self.counts[name] + len(self.pending[name]) - 1
        if len(self.pending[name]) == SHARD:
            self._flush(name)
        return slot

    def _flush(self, name: str) -> None:
        items = self.pending[name]
        if items:
            self.arrays[name].append(np.stack(items), axis=0)
            self.counts[name] += len(items)
            self.pending[name] = []

    def close(self) -> None:
        """Write what is buffered and record the store's sizes."""
        for name in list(self.pending):
            self._flush(name)
        self.group.attrs.update({"thumb_size": self.thumb_size})


# ---------------------------------------------------------------- reading


def _open(path: str, name: str):
    """The array `name` of the store at `path`, opened once per process and store version."""
    meta = Path(path) / name / "zarr.json"
    try:
        stamp = os.stat(meta).st_mtime_ns
    except OSError:
        raise PipelineError(f"image store {path} lacks its array {name}") from None
    return _open_cached(path, name, stamp)


@lru_cache(maxsize=64)
def _open_cached(path: str, name: str, _stamp: int):
    import zarr

    return zarr.open_array(store=path, path=name, mode="r")


def store_attrs(path: Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def read_rows(path: Path, name: str, rows) -> np.ndarray:
    """Rows of one array; a lost or damaged shard is a PipelineError naming its file."""
    array = _open(str(path), name)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= array.shape[0]):
        raise PipelineError(f"image store {path} has {array.shape[0]} rows in {name}; "
                            f"row {int(rows.max() if rows.max() >= 0 else rows.min())} asked")
    for shard in np.unique(rows // SHARD):
        file = Path(path) / name / "c" / str(int(shard)) / "0" / "0"
        if not file.is_file():  # zarr would return zeros for a missing shard
            raise PipelineError(f"image data file {file} is missing")
    try:
        if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
            return array[int(rows[0]) : int(rows[0]) + rows.size]
        return array.oindex[rows]
    except Exception as err:  # the codecs raise their own kinds on a damaged file
        raise PipelineError(f"image store {path}: {name} cannot be read ({err})") from None


def located(locator: str, data_dir: Path) -> tuple[Path, str, int] | None:
    """(store, array, row) a `store#array:row` locator names, the store made absolute against
    the data directory; None when `locator` is not one."""
    match = LOCATOR.fullmatch(locator)
    if match is None:
        return None
    store = Path(match["store"])
    return store if store.is_absolute() else data_dir / store, match["array"], int(match["slot"])


def read_located(locator: str, data_dir: Path) -> np.ndarray | None:
    """The full-size image a `store#array:row` locator names (relative to the data directory or
    absolute), as float32; None when `locator` is not one."""
    where = located(locator, data_dir)
    if where is None:
        return None
    store, array, row = where
    return read_rows(store, array, [row])[0].astype(np.float32)
