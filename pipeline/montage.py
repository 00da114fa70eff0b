"""Contact sheets of a dataset: one row per attribute, with example images tagged with it; or,
with `--compare`, a realism sheet putting real detector images beside simulated ones.

`python -m pipeline montage` writes the PNG; each tile is drawn by pipeline.imaging, as the
dashboard draws the same image, so real and simulated tiles share one intensity scaling.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.errors import PipelineError
from pipeline.imaging import DEFAULT_COLOUR_MAP, colour_lut, false_colour
from pipeline.readers import read_image
from pipeline.store import Dataset, open_dataset

TILE, PAD, LABEL_WIDTH, HEADER = 128, 4, 190, 28
BACKGROUND, EMPTY, TEXT = (24, 24, 28), (48, 48, 54), (235, 235, 235)


def montage_size(n_rows: int, per_attribute: int, tile: int = TILE) -> tuple[int, int]:
    """Width and height in pixels of a montage with n_rows attributes."""
    return LABEL_WIDTH + per_attribute * (tile + PAD) + PAD, HEADER + n_rows * (tile + PAD) + PAD


def pick_examples(labels: np.ndarray, per_attribute: int, seed: int = 0) -> list[np.ndarray]:
    """For each attribute up to `per_attribute` image indices tagged with it, seeded, sorted."""
    rng = np.random.default_rng(seed)
    picks = []
    for column in labels.T:
        tagged = np.flatnonzero(column)
        take = min(per_attribute, len(tagged))
        picks.append(np.sort(rng.choice(tagged, take, replace=False)) if take else tagged)
    return picks


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def montage(
    dataset: Dataset,
    per_attribute: int = 4,
    tile: int = TILE,
    *,
    true_labels=False,
    colour_map: str = DEFAULT_COLOUR_MAP,
    seed: int = 0,
) -> Image.Image:
    """The contact sheet as a PIL image: a row per attribute, its name and count on the left."""
    labels = dataset.true_act if true_labels and dataset.true_act is not None else dataset.act
    picks = pick_examples(labels, per_attribute, seed)
    sheet = Image.new("RGB", montage_size(len(picks), per_attribute, tile), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    which = "true tags" if labels is dataset.true_act else "annotations"
    draw.text(
        (PAD, 6),
        f"{dataset.id}: {len(dataset)} images, examples by {which}, log intensity ({colour_map})",
        fill=TEXT,
        font=_font(14),
    )
    colour_lut(colour_map)  # an unknown name fails here, before any image is read
    small = _font(11)
    for row, (name, indices) in enumerate(zip(dataset.attributes, picks, strict=True)):
        top = HEADER + row * (tile + PAD)
        draw.text((PAD, top + tile // 2 - 16), name, fill=TEXT, font=_font(15))
        draw.text(
            (PAD, top + tile // 2 + 4),
            f"{int(labels[:, row].sum())} images",
            fill=(170, 170, 170),
            font=small,
        )
        for col in range(per_attribute):
            left = LABEL_WIDTH + col * (tile + PAD)
            if col >= len(indices):
                draw.rectangle([left, top, left + tile - 1, top + tile - 1], fill=EMPTY)
                continue
            rgb = false_colour(dataset.load_image(indices[col]), tile, colour_map)
            sheet.paste(Image.fromarray(rgb), (left, top))
            draw.text((left + 3, top + 2), str(int(indices[col])), fill=(255, 255, 255), font=small)
    return sheet


def _tile_caption(pixels: np.ndarray) -> str:
    """What a scientist reads off a detector image first: its range in decades and its peak."""
    p50, p999 = np.percentile(pixels, [50, 99.9])
    decades = np.log10(max(float(p999), 1.0) / max(float(p50), 1.0))
    return f"{decades:.1f} dec, max {float(pixels.max()):.3g}"


def _draw_row(sheet, draw, top: int, title: str, images, names, tile: int, colour_map: str):
    draw.text((PAD, top + tile // 2 - 10), title, fill=TEXT, font=_font(15))
    small = _font(11)
    for col, (pixels, name) in enumerate(zip(images, names, strict=True)):
        left = LABEL_WIDTH + col * (tile + PAD)
        sheet.paste(Image.fromarray(false_colour(pixels, tile, colour_map)), (left, top))
        draw.text((left + 3, top + 2), name, fill=(255, 255, 255), font=small)
        draw.text((left + 3, top + tile - 14), _tile_caption(pixels), fill=(255, 255, 255),
                  font=small)


def compare_sheet(
    dataset: Dataset,
    real: list[tuple[str, np.ndarray]],
    tile: int = TILE,
    *,
    rows: int = 2,
    colour_map: str = DEFAULT_COLOUR_MAP,
    seed: int = 0,
) -> Image.Image:
    """Real images (name, counts) in the top row, `rows` rows of the dataset's images below,
    every tile drawn by pipeline.imaging.false_colour and captioned with its range and peak."""
    colour_lut(colour_map)  # an unknown name fails here, before any image is drawn
    per_row = max(len(real), 4)
    count = min(len(dataset), per_row * rows)
    picks = np.sort(np.random.default_rng(seed).choice(len(dataset), count, replace=False))
    n_rows = 1 + -(-count // per_row)
    sheet = Image.new("RGB", montage_size(n_rows, per_row, tile), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    detector = (dataset.meta.get("detector") or {}).get("name", "?")
    draw.text((PAD, 6), f"real images beside {dataset.id} ({detector}), log intensity "
              f"({colour_map}), same window rule", fill=TEXT, font=_font(14))
    _draw_row(sheet, draw, HEADER, "real", [c for _, c in real], [n for n, _ in real], tile,
              colour_map)
    for r in range(n_rows - 1):
        chunk = picks[r * per_row : (r + 1) * per_row]
        _draw_row(sheet, draw, HEADER + (r + 1) * (tile + PAD), "simulated",
                  [dataset.load_image(i) for i in chunk], [str(int(i)) for i in chunk], tile,
                  colour_map)
    return sheet


def write_montage(
    dataset_ref,
    out,
    *,
    per_attribute: int = 4,
    tile: int = TILE,
    data_dir=None,
    true_labels: bool = False,
    colour_map: str = DEFAULT_COLOUR_MAP,
    compare=(),
    inverted: bool = False,
) -> Path:
    """Write the montage PNG whole (temporary file, then rename); return its path.

    With `compare` (paths of real detector images, read by pipeline.readers.read_image;
    `inverted` for exports where dark is intense) the realism sheet is written instead.
    """
    if not 1 <= per_attribute <= 50:
        raise PipelineError(f"--per-attribute must be from 1 to 50, got {per_attribute}")
    if not 16 <= tile <= 512:
        raise PipelineError(f"--tile must be from 16 to 512 pixels, got {tile}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PipelineError(f"montage output {out} must be a .png file")
    dataset = open_dataset(dataset_ref, data_dir)
    if compare:
        real = [(Path(p).name, read_image(p, inverted=inverted)) for p in compare]
        sheet = compare_sheet(dataset, real, tile, colour_map=colour_map)
    else:
        sheet = montage(
            dataset, per_attribute, tile, true_labels=true_labels, colour_map=colour_map
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
