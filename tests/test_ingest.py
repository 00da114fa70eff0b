"""`python -m pipeline ingest`: every supported format read back pixel for pixel, and every bad
input reported by file and reason, with nothing half-written left behind.
"""

from __future__ import annotations

from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline import ingest as ingest_module
from pipeline import readers
from pipeline.cli import main
from pipeline.store import open_dataset

REAL_IMAGE = Path(__file__).parent / "data" / "protein_diffraction_263060g10.png"
ATTRS = ["Ring", "Halo (q > 0.1 nm⁻¹)", "odd, name; with 'quotes'"]
LUMA = np.array([0.299, 0.587, 0.114])


def make_images(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """One small image per format and flavour, of different sizes; returns the counts each
    should become once ingested."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nested").mkdir(exist_ok=True)
    expect = {}

    def tif(name, array, **kw):
        tifffile.imwrite(folder / name, array, **kw)
        expect[name] = array

    tif("u8.tif", rng.integers(0, 256, (20, 24), dtype=np.uint8))
    tif("u16.tiff", rng.integers(0, 65536, (21, 25), dtype=np.uint16))
    tif("i32.tif", rng.integers(0, 2**31 - 1, (22, 26), dtype=np.int32))
    tif("f32.tif", rng.random((23, 27), dtype=np.float32) * 1e4)
    stack = rng.random((3, 16, 18)).astype(np.float32)
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    expect["stack.tif"] = stack[0]
    rgb = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    tifffile.imwrite(folder / "rgb.tif", rgb, photometric="rgb")
    expect["rgb.tif"] = rgb @ LUMA

    edf = rng.random((30, 31)).astype(np.float32) * 100
    fabio.edfimage.EdfImage(data=edf).write(str(folder / "frame.edf"))
    expect["frame.edf"] = edf
    cbf = rng.integers(0, 1000, (32, 33)).astype(np.int32)
    cbf[:, 10:13] = -1  # detector gap flags become 0 counts
    fabio.cbfimage.CbfImage(data=cbf).write(str(folder / "pilatus.cbf"))
    expect["pilatus.cbf"] = np.clip(cbf, 0, None)

    nexus = rng.random((2, 17, 19))
    with h5py.File(folder / "scan.nxs", "w") as f:
        f.create_dataset("/entry/data/data", data=nexus)
    expect["scan.nxs"] = nexus[0]
    flat = rng.integers(0, 100, (15, 16)).astype(np.uint16)
    with h5py.File(folder / "flat.h5", "w") as f:
        f.create_dataset("/entry/data/data", data=flat)
    expect["flat.h5"] = flat

    grey = rng.integers(0, 256, (18, 20), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "nested" / "grey.png")
    expect["nested/grey.png"] = grey
    deep = rng.integers(0, 65536, (19, 21), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    expect["deep16.png"] = deep
    colour = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / "colour.png")
    expect["colour.png"] = colour @ LUMA
    photo = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (16, 1))
    Image.fromarray(photo).save(folder / "photo.jpg", quality=100)
    expect["photo.jpg"] = photo  # JPEG is lossy: compared with a tolerance
    return expect


def write_labels(path: Path, rows, header=("file", *ATTRS)) -> Path:
    def cell(value):
        text = str(value)
        return f'"{text}"' if any(c in text for c in ',"') else text

    lines = [",".join(cell(h.replace('"', '""')) for h in header)]
    lines += [",".join(cell(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def labels_for(names, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 2, len(ATTRS)) for name in names}


def run_cli(*args) -> int:
    return main(["ingest", *map(str, args)])


def leftovers(data_dir: Path) -> list[str]:
    root = data_dir / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def output_lines(capsys) -> tuple[list[str], str]:
    captured = capsys.readouterr()
    return captured.out.strip().splitlines(), captured.err


# ---------------------------------------------------------------- every format


def test_every_format_is_ingested_pixel_for_pixel_with_its_labels(tmp_path, capsys):
    expect = make_images(tmp_path / "imgs")
    labels = labels_for(expect)
    csv = write_labels(tmp_path / "labels.csv", [(n, *labels[n]) for n in expect])
    data = tmp_path / "data"

    assert (
        run_cli(
            "--images",
            tmp_path / "imgs",
            "--labels",
            csv,
            "--data-dir",
            data,
            "--id",
            "every-format",
        )
        == 0
    )
    lines, _ = output_lines(capsys)
    assert lines[-1] == f"ingested {len(expect)} images, 0 problems"

    ds = open_dataset("every-format", data)
    assert ds.attributes == ATTRS
    assert sorted(ds.images["image_id"]) == sorted(expect)
    for i, name in enumerate(ds.images["image_id"]):
        stored = ds.load_image(i)
        assert stored.dtype == np.float32 and stored.shape == expect[name].shape, name
        tolerance = 3.0 if name.endswith(".jpg") else 1e-3 * max(1.0, np.abs(expect[name]).max())
        np.testing.assert_allclose(stored, expect[name], atol=tolerance, err_msg=name)
        np.testing.assert_array_equal(ds.act[i], labels[name])
    assert set(ds.images["format"]) == {"tiff", "edf", "cbf", "hdf5", "png", "jpeg"}
    cbf_row = ds.images.set_index("image_id").loc["pilatus.cbf"]
    assert cbf_row["flagged_pixels"] == 32 * 3
    assert leftovers(data) == ["every-format"]


def test_test_fraction_puts_that_share_of_images_in_the_test_split(tmp_path):
    expect = make_images(tmp_path / "imgs")
    csv = write_labels(tmp_path / "l.csv", [(n, 0, 1, 0) for n in expect])
    result = ingest_module.ingest(
        tmp_path / "imgs", csv, tmp_path / "data", test_fraction=0.25, progress=False
    )
    splits = open_dataset(result.path).images["split"]
    assert (splits == "test").sum() == round(len(expect) * 0.25)
    assert set(splits) == {"train", "test"}


def test_inverted_real_png_becomes_counts_with_the_beamstop_dark(tmp_path, capsys):
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / REAL_IMAGE.name).write_bytes(REAL_IMAGE.read_bytes())
    csv = write_labels(
        tmp_path / "labels.csv",
        [(REAL_IMAGE.name, 0, 1, 0)],
        header=("image", "Linear beamstop", "Diffuse", "Ice ring"),
    )
    assert (
        run_cli("--images", folder, "--labels", csv, "--data-dir", tmp_path / "data", "--inverted")
        == 0
    )
    ds = open_dataset("real", tmp_path / "data")
    counts = ds.load_image(0)
    png = np.asarray(Image.open(REAL_IMAGE), dtype=np.float32)
    np.testing.assert_array_equal(counts, 255 - png)
    assert counts[250:258, 201:209].max() <= 5  # the beamstop disc: no counts
    assert counts[270:300, 220:260].mean() > 150  # the dark (intense) halo: many counts
    assert counts[480:510, 480:510].mean() < 20  # the pale corner: few
    assert ds.meta["inverted"] is True


def test_name_only_entries_find_files_in_subfolders(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "a" / "b").mkdir(parents=True)
    tifffile.imwrite(folder / "a" / "b" / "deep.tif", np.ones((8, 8), np.uint16))
    tifffile.imwrite(folder / "top.tif", np.ones((8, 9), np.uint16))
    csv = write_labels(
        tmp_path / "l.csv", [("deep.tif", 1, 0, 0), ("top", 0, 1, 0)], header=("Path", *ATTRS)
    )
    result = ingest_module.ingest(folder, csv, tmp_path / "data", progress=False)
    assert result.problems == []
    assert list(open_dataset(result.path).images["image_id"]) == ["a/b/deep.tif", "top.tif"]


def test_labels_csv_may_use_semicolons_and_a_byte_order_mark(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "x.tif", np.ones((8, 8), np.uint8))
    csv = tmp_path / "excel.csv"
    csv.write_text("\ufeffimage;Ring;Halo\nx.tif;1;0\n", encoding="utf-8")
    result = ingest_module.ingest(folder, csv, tmp_path / "data", progress=False)
    ds = open_dataset(result.path)
    assert ds.attributes == ["Ring", "Halo"] and ds.act.tolist() == [[1, 0]]


def test_hdf5_path_option_reads_another_dataset(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    with h5py.File(folder / "raw.h5", "w") as f:
        f.create_dataset("/detector/frames", data=np.arange(2 * 10 * 12).reshape(2, 10, 12))
    csv = write_labels(tmp_path / "l.csv", [("raw.h5", 1, 1, 0)])
    result = ingest_module.ingest(
        folder, csv, tmp_path / "data", h5_path="/detector/frames", progress=False
    )
    np.testing.assert_array_equal(
        open_dataset(result.path).load_image(0), np.arange(120).reshape(10, 12)
    )


# ---------------------------------------------------------------- problems, reported not fatal


def bad_folder(tmp_path: Path) -> Path:
    """Good images plus one of every per-row and per-file problem."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("good1.tif", "good2.tif", "dup.tif", "clash.tif", "odd.tif", "orphan.tif"):
        tifffile.imwrite(folder / name, np.ones((10, 10), np.uint16))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    whole = (folder / "good1.tif").read_bytes()
    tifffile.imwrite(folder / "cut.tif", np.ones((64, 64), np.uint16))
    (folder / "cut.tif").write_bytes((folder / "cut.tif").read_bytes()[:300])
    with h5py.File(folder / "nodefault.h5", "w") as f:
        f.create_dataset("/somewhere/else", data=np.ones((5, 5)))
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "secret.tif").write_bytes(whole)  # exists, outside the images and labels folders
    (tmp_path / "meta").mkdir()
    write_labels(
        tmp_path / "meta" / "labels.csv",
        [
            ("good1.tif", 1, 0, 1),
            ("good2.tif", 0, 1, 0),
            ("missing.tif", 1, 0, 0),
            ("", 1, 1, 1),
            ("dup.tif", 1, 0, 0),
            ("dup.tif", 1, 0, 0),
            ("clash.tif", 1, 0, 0),
            ("clash.tif", 0, 1, 0),
            ("odd.tif", 1, "yes", 0.5),
            ("corrupt.png", 1, 0, 0),
            ("cut.tif", 0, 0, 1),
            ("nodefault.h5", 0, 0, 1),
            ("../secret.tif", 1, 0, 0),
            ("../../../../etc/passwd", 1, 0, 0),
            (str(tmp_path / "secret.tif"), 1, 0, 0),
            ("notes.txt", 1, 0, 0),
        ],
    )
    return folder


EXPECTED_PROBLEMS = {
    "missing.tif": "row 4: no such image file",
    "labels.csv": "row 5: no image file named",
    "dup.tif": "row 7: duplicate of row 6; ignored",
    "clash.tif": "rows 8, 9 give different labels",
    "odd.tif": "row 10: values other than 0/1: 'Halo (q > 0.1 nm⁻¹)'='yes'",
    "corrupt.png": "cannot read the image",
    "cut.tif": "cannot read the image",
    "nodefault.h5": "no dataset /entry/data/data; name the dataset with --h5-path "
    "(image-like datasets here: /somewhere/else)",
    "../secret.tif": "row 14: refused: the path leads outside the images folder",
    "../../../../etc/passwd": "row 15: refused: the path leads outside the images folder",
    "secret.tif": "row 16: refused: the path leads outside the images folder",
    "notes.txt": "row 17: unsupported format '.txt'",
    "orphan.tif": "no row in labels.csv; not ingested",
}


def test_every_bad_row_and_file_is_reported_by_name_and_the_rest_is_ingested(tmp_path, capsys):
    folder = bad_folder(tmp_path)
    data = tmp_path / "data"
    assert (
        run_cli(
            "--images",
            folder,
            "--labels",
            tmp_path / "meta" / "labels.csv",
            "--data-dir",
            data,
            "--id",
            "partly",
        )
        == 0
    )
    lines, _ = output_lines(capsys)
    assert lines[-1] == f"ingested 3 images, {len(EXPECTED_PROBLEMS)} problems"
    problems = [line.strip() for line in lines if line.startswith("  ")]
    assert len(problems) == len(EXPECTED_PROBLEMS)
    for file, reason in EXPECTED_PROBLEMS.items():
        hits = [p for p in problems if p.split(": ", 1)[0].endswith(file) and reason in p]
        assert len(hits) == 1, (file, reason, problems)
    ds = open_dataset("partly", data)
    assert sorted(ds.images["image_id"]) == ["dup.tif", "good1.tif", "good2.tif"]
    assert len(ds.meta["problems"]) == len(EXPECTED_PROBLEMS)


def test_strict_stops_on_the_first_problems_and_writes_nothing(tmp_path, capsys):
    folder = bad_folder(tmp_path)
    data = tmp_path / "data"
    assert (
        run_cli(
            "--images",
            folder,
            "--labels",
            tmp_path / "meta" / "labels.csv",
            "--data-dir",
            data,
            "--strict",
        )
        == 2
    )
    lines, err = output_lines(capsys)
    assert "--strict" in err and "nothing written" in err
    assert lines[-1].startswith("ingested 0 images,")
    assert any("clash.tif" in line for line in lines)
    assert leftovers(data) == []


def test_strict_also_fails_on_an_unreadable_image_found_while_reading(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "fine.tif", np.ones((8, 8), np.uint8))
    (folder / "broken.edf").write_bytes(b"{\nDim_1 = 100 ;\n}\n" + b"x" * 10)
    csv = write_labels(tmp_path / "l.csv", [("fine.tif", 1, 0, 0), ("broken.edf", 0, 1, 0)])
    assert (
        run_cli("--images", folder, "--labels", csv, "--data-dir", tmp_path / "data", "--strict")
        == 2
    )
    lines, _ = output_lines(capsys)
    assert any(line.strip().startswith("broken.edf: cannot read") for line in lines)
    assert leftovers(tmp_path / "data") == []


def test_a_truncated_edf_is_a_problem_not_zeros(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    fabio.edfimage.EdfImage(data=np.ones((100, 100), np.float32)).write(str(folder / "t.edf"))
    whole = (folder / "t.edf").read_bytes()
    (folder / "t.edf").write_bytes(whole[: len(whole) // 2])
    tifffile.imwrite(folder / "ok.tif", np.ones((8, 8), np.uint8))
    csv = write_labels(tmp_path / "l.csv", [("t.edf", 1, 0, 0), ("ok.tif", 1, 0, 0)])
    result = ingest_module.ingest(folder, csv, tmp_path / "data", progress=False)
    assert [str(p) for p in result.problems] == [
        "t.edf: file is truncated (data shorter than its header says)"
    ]


def test_no_good_image_is_an_error_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad.tif").write_bytes(b"II*\x00 garbage")
    csv = write_labels(tmp_path / "l.csv", [("bad.tif", 1, 0, 0), ("gone.tif", 0, 1, 0)])
    assert run_cli("--images", folder, "--labels", csv, "--data-dir", tmp_path / "data") == 2
    lines, err = output_lines(capsys)
    assert "no image could be read" in err and "nothing written" in err
    assert lines[-1] == "ingested 0 images, 2 problems"
    assert leftovers(tmp_path / "data") == []


def test_a_crash_midway_leaves_no_dataset_and_no_temporary_files(tmp_path, monkeypatch):
    expect = make_images(tmp_path / "imgs")
    csv = write_labels(tmp_path / "l.csv", [(n, 1, 0, 0) for n in expect])
    read_png = readers.READERS["png"]

    def crash_on_png(path, h5_path, max_pixels, frame):  # interrupted reading the 3rd format
        read_png(path, h5_path, max_pixels, frame)
        raise KeyboardInterrupt

    monkeypatch.setitem(readers.READERS, "png", crash_on_png)
    with pytest.raises(KeyboardInterrupt):
        ingest_module.ingest(tmp_path / "imgs", csv, tmp_path / "data", progress=False)
    assert leftovers(tmp_path / "data") == []


def test_an_existing_dataset_id_is_refused_before_any_image_is_read(tmp_path, capsys):
    make_images(tmp_path / "imgs")
    csv = write_labels(tmp_path / "l.csv", [("u8.tif", 1, 0, 0)])
    args = (
        "--images",
        tmp_path / "imgs",
        "--labels",
        csv,
        "--data-dir",
        tmp_path / "data",
        "--id",
        "same",
    )
    assert run_cli(*args) == 0
    assert run_cli(*args) == 2
    assert "already exists" in capsys.readouterr().err
    assert leftovers(tmp_path / "data") == ["same"]


# ---------------------------------------------------------------- malformed labels files


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n", "is empty"),
        (b"file\n a.tif\n", "has no attribute columns"),
        (b"file,Ring,Halo\n", "has a header but no rows"),
        (b"file,Ring,Ring\na.tif,1,0\n", "column names repeat: ['Ring']"),
        (b"file,,Halo\na.tif,1,0\n", "column 2 of the header has no name"),
        (b"a.tif,1,0\nb.tif,0,1\n", "the first row looks like data, not a header"),
        (b"img_001.tif,0,0,1\nimg_002.tif,1,0,0\n", "the first row looks like data, not a"),
        (b"./data/img_001.tif,0.0,0.0\n", "the first row looks like data, not a header"),
        (b"0,0,1,0\n1,0,0,1\n", "the first row looks like data, not a header"),
        (b"file,Ring\n\xff\xfe\x00garbage\x81\n", "is not UTF-8 text"),
    ],
    ids=[
        "empty",
        "blank",
        "no-attributes",
        "header-only",
        "repeated",
        "unnamed",
        "headerless",
        "headerless-repeating-zeros",
        "headerless-relative-path",
        "headerless-all-numbers",
        "binary",
    ],
)
def test_malformed_labels_file_is_an_error_naming_it(tmp_path, capsys, content, message):
    make_images(tmp_path / "imgs")
    csv = tmp_path / "bad-labels.csv"
    csv.write_bytes(content)
    assert (
        run_cli("--images", tmp_path / "imgs", "--labels", csv, "--data-dir", tmp_path / "data")
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(csv) in err and message in err
    assert leftovers(tmp_path / "data") == []


def test_missing_labels_file_and_missing_images_folder_are_errors(tmp_path, capsys):
    make_images(tmp_path / "imgs")
    assert (
        run_cli(
            "--images",
            tmp_path / "imgs",
            "--labels",
            tmp_path / "nope.csv",
            "--data-dir",
            tmp_path / "data",
        )
        == 2
    )
    assert f"labels file {tmp_path / 'nope.csv'} not found" in capsys.readouterr().err
    csv = write_labels(tmp_path / "l.csv", [("u8.tif", 1, 0, 0)])
    assert (
        run_cli("--images", tmp_path / "nowhere", "--labels", csv, "--data-dir", tmp_path / "data")
        == 2
    )
    assert f"images folder {tmp_path / 'nowhere'} not found" in capsys.readouterr().err
    assert leftovers(tmp_path / "data") == []


def test_read_image_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "scan.cbf"
    bad.write_bytes(b"###CBF: VERSION 1.5\n garbage")
    with pytest.raises(readers.PipelineError, match=r"scan\.cbf: cannot read the image"):
        readers.read_image(bad)
    with pytest.raises(readers.PipelineError, match=r"x\.bmp: unsupported format '\.bmp'"):
        readers.read_image(tmp_path / "x.bmp")
