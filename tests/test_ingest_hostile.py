"""`python -m pipeline ingest` against hostile and awkward input: size bombs refused before their
pixels are read, silently-wrong pixels refused, a full disk reported in one line, and labels CSVs
whose paths are relative to their own folder, as diffraction labs write them.
"""

from __future__ import annotations

import errno
import resource
import time
import zlib
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline.cli import main
from pipeline.store import open_dataset

LIMIT = "over the limit of 25,000,000 (raise it with --max-pixels)"
MB = 1024 * 1024


def ingest_cli(images: Path, labels: Path, data: Path, *extra) -> int:
    return main(
        ["ingest", "--images", str(images), "--labels", str(labels), "--data-dir", str(data)]
        + [str(e) for e in extra]
    )


def labels_csv(path: Path, names, header="file,Ring,Halo") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(f"{n},1,0" for n in names)]) + "\n")
    return path


def written(data: Path) -> list[str]:
    """Everything under the data directory's datasets/ and runs/, temporary folders included."""
    return sorted(
        f"{sub}/{p.name}" for sub in ("datasets", "runs") if (data / sub).is_dir()
        for p in (data / sub).iterdir()
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- size bombs


def sparse_tiff(path: Path, height: int, width: int) -> None:
    """A tiled TIFF declaring height × width pixels whose tiles are all absent (a few KB)."""
    tile = 1024
    n_tiles = -(-height // tile) * -(-width // tile)

    def tiles():
        yield np.zeros((tile, tile), np.uint8)  # tifffile reads the dtype from the first tile
        yield from (None for _ in range(n_tiles - 1))

    tifffile.imwrite(path, tiles(), shape=(height, width), dtype=np.uint8, tile=(tile, tile),
                     compression="zlib")


def gzip_hdf5(path: Path, side: int) -> None:
    """A gzip-compressed chunked dataset of side² pixels that holds only its fill value."""
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", shape=(side, side), dtype=np.uint16,
                         chunks=(1024, 1024), compression="gzip", fillvalue=0)


def png_of_zeros(path: Path, height: int, width: int) -> None:
    """A real 8-bit greyscale PNG of zeros, compressed row by row (never whole in memory)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    packer = zlib.compressobj(9)
    rows = bytes(width + 1) * 1000  # filter byte 0 + a row of zeros, 1000 rows at a time
    idat = b"".join(packer.compress(rows) for _ in range(height // 1000)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def gzip_edf(path: Path, height: int, width: int) -> None:
    """An EDF of height × width 8-bit zeros, gzip-compressed as the EDF header allows."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
    rows = bytes(width) * 100
    body = b"".join(packer.compress(rows) for _ in range(height // 100)) + packer.flush()
    keys = {"HeaderID": "EH:000001:000000:000000", "Image": 1, "ByteOrder": "LowByteFirst",
            "DataType": "UnsignedByte", "Dim_1": width, "Dim_2": height, "Size": len(body),
            "Compression": "gzip"}
    text = "{\n" + "".join(f"{k} = {v} ;\n" for k, v in keys.items())
    text = text.ljust(512 * -(-(len(text) + 2) // 512) - 2) + "}\n"  # headers fill 512-byte blocks
    path.write_bytes(text.encode() + body)


BOMBS = {
    "big.tif": (lambda p: sparse_tiff(p, 20000, 20000), "20000×20000 = 400,000,000"),
    "big.h5": (lambda p: gzip_hdf5(p, 60000), "60000×60000 = 3,600,000,000"),
    "big.png": (lambda p: png_of_zeros(p, 20000, 20000), "20000×20000 = 400,000,000"),
    "big.edf": (lambda p: gzip_edf(p, 10000, 10000), "10000×10000 = 100,000,000"),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_size_bomb_is_refused_from_its_header_quickly_and_nothing_is_written(
    tmp_path, capsys, name
):
    make, shape = BOMBS[name]
    folder = tmp_path / "imgs"
    folder.mkdir()
    make(folder / name)
    assert (folder / name).stat().st_size < 1 * MB  # tiny on disk, huge once decoded
    before, started = peak_rss_mb(), time.perf_counter()

    assert ingest_cli(folder, labels_csv(tmp_path / "l.csv", [name]), tmp_path / "data") == 2

    assert time.perf_counter() - started < 10
    assert peak_rss_mb() - before < 200
    out, err = capsys.readouterr()
    assert f"{name}: image is {shape} pixels, {LIMIT}" in out
    assert "error: no image could be read" in err
    assert written(tmp_path / "data") == []


def test_a_cbf_declaring_a_huge_frame_is_refused_before_decoding(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    fabio.cbfimage.CbfImage(data=np.ones((4, 4), np.int32)).write(str(folder / "big.cbf"))
    text = (folder / "big.cbf").read_bytes()
    for axis in (b"Fastest", b"Second"):  # the header declares 30000², the data stays 4²
        key = b"X-Binary-Size-" + axis + b"-Dimension: "
        text = text.replace(key + b"4", key + b"30000")
    (folder / "big.cbf").write_bytes(text)
    before = peak_rss_mb()
    assert ingest_cli(folder, labels_csv(tmp_path / "l.csv", ["big.cbf"]), tmp_path / "data") == 2
    assert peak_rss_mb() - before < 200
    assert f"big.cbf: image is 30000×30000 = 900,000,000 pixels, {LIMIT}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["small.tif", "small.png", "small.h5"])
def test_max_pixels_lowers_and_raises_the_limit(tmp_path, capsys, name):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120) % 251
    if name.endswith(".tif"):
        tifffile.imwrite(folder / name, image)
    elif name.endswith(".png"):
        Image.fromarray(image.astype(np.uint8)).save(folder / name)
    else:
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("/entry/data/data", data=image)
    csv = labels_csv(tmp_path / "l.csv", [name])
    pillow_limit = Image.MAX_IMAGE_PIXELS

    # 4,000 is under half the image, where Pillow's own bomb check fires: our message all the same
    for limit in ("4000", "10000"):
        assert ingest_cli(folder, csv, tmp_path / "data", "--max-pixels", limit) == 2
        expected = f"image is 100×120 = 12,000 pixels, over the limit of {int(limit):,}"
        assert expected in capsys.readouterr().out
    assert written(tmp_path / "data") == []
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's limit is ours only while opening
    assert ingest_cli(folder, csv, tmp_path / "data", "--max-pixels", "12000", "--id", "ok") == 0
    np.testing.assert_array_equal(open_dataset("ok", tmp_path / "data").load_image(0),
                                  image if name != "small.png" else image.astype(np.uint8))


@pytest.mark.parametrize("value", ["0", "-5", "1e6", "many"])
def test_max_pixels_must_be_a_positive_whole_number(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        ingest_cli(tmp_path, tmp_path / "l.csv", tmp_path / "data", "--max-pixels", value)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --max-pixels: expected a whole number of pixels above 0, got {value!r}" in err


# ---------------------------------------------------------------- silently wrong pixels


def test_complex_pixels_are_refused_not_cut_to_their_real_part(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "wave.tif", np.full((8, 8), 1 + 2j, np.complex64))
    tifffile.imwrite(folder / "fine.tif", np.ones((8, 8), np.uint16))
    csv = labels_csv(tmp_path / "l.csv", ["wave.tif", "fine.tif"])
    assert ingest_cli(folder, csv, tmp_path / "data", "--id", "d") == 0
    out = capsys.readouterr().out
    assert "wave.tif: pixels are complex numbers (complex64); expected real counts" in out
    assert list(open_dataset("d", tmp_path / "data").images["image_id"]) == ["fine.tif"]


def test_a_one_pixel_image_is_called_too_small_not_not_2d(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "dot.tif", np.ones((1, 1), np.uint16))
    assert ingest_cli(folder, labels_csv(tmp_path / "l.csv", ["dot.tif"]), tmp_path / "d") == 2
    out = capsys.readouterr().out
    assert "dot.tif: image is 1×1 pixels, too small: at least 2×2 are needed" in out
    assert "expected a 2-D image" not in out


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_is_one_line_naming_where_and_leaves_no_dataset(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        tifffile.imwrite(folder / f"f{k}.tif", np.ones((8, 8), np.uint16))
    csv = labels_csv(tmp_path / "l.csv", [f"f{k}.tif" for k in range(3)])
    saves = []

    def save_until_full(file, array, *args, **kwargs):
        saves.append(file)
        if len(saves) == 1:  # the labels, written after the images' store, find the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", save_until_full)
    data = tmp_path / "data"
    assert ingest_cli(folder, csv, data, "--id", "full") == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line.lower()]  # tqdm shares stderr
    assert line.startswith("error: cannot write dataset full in ") and "Traceback" not in err
    assert "the disk is full" in line and str(data / "datasets") in line
    assert written(data) == []


# ---------------------------------------------------------------- labels CSVs as labs write them


def lab_layout(root: Path, n: int = 3) -> tuple[Path, Path]:
    """labels.csv naming ./data/img_00k.tif, with the images in data/ beside it."""
    rng = np.random.default_rng(0)
    for k in range(n):
        (root / "data").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "data" / f"img_{k:03d}.tif", rng.integers(0, 9, (6, 7), np.uint16))
    csv = labels_csv(root / "labels.csv", [f"./data/img_{k:03d}.tif" for k in range(n)])
    return csv, root / "data"


@pytest.mark.parametrize(
    "images, rule",
    [("data", "by path beside the labels CSV"), (".", "by path under the images folder")],
    ids=["images-folder-is-data", "images-folder-is-the-csv-folder"],
)
def test_paths_relative_to_the_labels_csv_find_their_images(tmp_path, capsys, images, rule):
    csv, _ = lab_layout(tmp_path / "lab")
    data = tmp_path / "store"
    assert ingest_cli(tmp_path / "lab" / images, csv, data, "--id", "lab") == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"matched 3 rows {rule}" in lines
    assert lines[-1] == "ingested 3 images, 0 problems"
    ds = open_dataset("lab", data)
    assert len(ds) == 3 and ds.load_image(2).shape == (6, 7)


def test_the_summary_counts_each_matching_rule(tmp_path, capsys):
    csv, folder = lab_layout(tmp_path / "lab", n=4)
    (folder / "deeper").mkdir()
    (folder / "img_003.tif").rename(folder / "deeper" / "img_003.tif")
    csv.write_text(
        "file,Ring,Halo\n./data/img_000.tif,1,0\nimg_001.tif,0,1\n"
        "./data/img_002.tif,1,1\n./elsewhere/img_003.tif,0,0\n"
    )
    assert ingest_cli(folder, csv, tmp_path / "store") == 0
    assert (
        "matched 1 row by path under the images folder, 2 by path beside the labels CSV, "
        "1 by unique file name"
    ) in capsys.readouterr().out.splitlines()


def test_paths_escaping_both_folders_stay_refused(tmp_path, capsys):
    csv, folder = lab_layout(tmp_path / "lab", n=1)
    outside = tmp_path / "secret"
    outside.mkdir()
    tifffile.imwrite(outside / "s.tif", np.ones((5, 5), np.uint16))
    (tmp_path / "lab" / "link.tif").symlink_to(outside / "s.tif")  # beside the CSV, points out
    (folder / "inner.tif").symlink_to(outside / "s.tif")  # in the images folder, points out
    csv.write_text(
        "file,Ring,Halo\n./data/img_000.tif,1,0\n../secret/s.tif,1,0\n"
        f"{outside / 's.tif'},1,0\nlink.tif,1,0\n./data/inner.tif,1,0\ninner.tif,1,0\n"
        "elsewhere/inner.tif,1,0\n"
    )
    assert ingest_cli(folder, csv, tmp_path / "store", "--id", "safe") == 0
    out = capsys.readouterr().out
    for row in (3, 4, 5, 6, 7):
        assert f"row {row}: refused: the path leads outside the images folder and the " in out
    assert "row 8: no such image file" in out  # the escaping link is no candidate by name either
    assert list(open_dataset("safe", tmp_path / "store").images["image_id"]) == ["img_000.tif"]
