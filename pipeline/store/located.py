"""Where a row's full-size image is, and reading it: the one rule datasets and runs share.

A row of an images table names its image in `path`, read as:
- with a non-empty `root` column: a file referenced in place (TIFF, EDF, CBF, HDF5, PNG, JPEG)
  at `path` relative to `root`, the folder the user pointed at; frame `frame`, read with the
  options in `reader` (JSON: inverted, h5_path, max_pixels) by pipeline.readers. A path whose
  real location (symbolic links followed) is outside `root` is refused, never read;
- `<store>.zarr#full/<H>x<W>-<dtype>:<row>`: a row of a chunk store (pipeline.store.chunks);
- anything else: one .npy file (the layout before the chunk store), relative to the data
  directory or absolute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.store.chunks import located, read_located, read_rows
from pipeline.store.files import load_pixels


def _text(row: Mapping, key: str) -> str:
    value = row.get(key)
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def load_row_image(row: Mapping, data_dir: Path) -> np.ndarray:
    """The full-size float32 image of one images-table row (see the module docstring)."""
    path, root = _text(row, "path"), _text(row, "root")
    if root:
        frame = row.get("frame")
        frame = 0 if frame is None or (isinstance(frame, float) and np.isnan(frame)) else frame
        return read_reference(root, path, int(frame), _text(row, "reader"))
    if not path:
        raise PipelineError(f"image {_text(row, 'image_id')!r} has no stored image")
    located = read_located(path, data_dir)
    if located is not None:
        return located
    file = Path(path)
    return load_pixels(file if file.is_absolute() else data_dir / file)


def load_row_images(rows: Sequence[Mapping], data_dir: Path) -> list[np.ndarray]:
    """load_row_image of each row, those in the chunk store read with one read per store array
    (one by one, reading took 2–4× as long an image: a call's own cost, not the decoding)."""
    out: list[np.ndarray | None] = [None] * len(rows)
    batches: dict[tuple[Path, str], list[tuple[int, int]]] = {}
    for k, row in enumerate(rows):
        where = None if _text(row, "root") else located(_text(row, "path"), data_dir)
        if where is None:
            out[k] = load_row_image(row, data_dir)
        else:
            batches.setdefault(where[:2], []).append((k, where[2]))
    for (store, array), slots in batches.items():
        images = read_rows(store, array, [slot for _, slot in slots])
        for (k, _), image in zip(slots, images, strict=True):
            out[k] = image.astype(np.float32)
    return out


def reference_target(root: str | Path, path: str) -> Path:
    """The file `path` names under `root`, refused when its real location is outside `root`."""
    base = Path(root).resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise PipelineError(f"image {path}: refused, its path leads outside {root}")
    return target


def read_reference(root: str, path: str, frame: int = 0, reader: str = "") -> np.ndarray:
    """A referenced image read in place; a vanished or unreadable file is a PipelineError that
    names it."""
    from pipeline.readers import describe_error, read_counts

    target = reference_target(root, path)
    if not target.is_file():
        raise PipelineError(f"image file {Path(root) / path} is missing "
                            "(the dataset reads it in place, where it was ingested)")
    options = json.loads(reader) if reader else {}
    try:
        pixels, _ = read_counts(target, inverted=bool(options.get("inverted", False)),
                                h5_path=options.get("h5_path"), frame=frame,
                                **({"max_pixels": options["max_pixels"]}
                                   if options.get("max_pixels") else {}))
    except PipelineError as err:
        raise PipelineError(f"image file {target}: {err}") from None
    except Exception as err:  # each reader library raises its own kinds
        raise PipelineError(f"image file {target}: {describe_error(err)}") from None
    return pixels
