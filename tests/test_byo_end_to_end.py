"""Bring your own data and model, end to end: detector files and a labels CSV are ingested,
a checkpoint the test saves (ours, or a plain torchvision state dict) runs inference, and the
run opens in the dashboard's callbacks with its beam centre, I(q) and polar views.
"""

from __future__ import annotations

from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest
import tifffile
import torch
import torchvision
from PIL import Image

from callbacks import detail, science
from callbacks.common import disk_cache
from components.science import centre_summary, polar_figure, profile_figure
from pipeline.checkpoints import save_checkpoint
from pipeline.cli import main
from pipeline.infer import make_run
from pipeline.model import build_model, per_image_normalisation
from pipeline.store import get_run

REAL_IMAGE = Path(__file__).parent / "data" / "protein_diffraction_263060g10.png"
REAL_CENTRE = (205.0, 254.5)  # the beamstop disc's middle, read off the PNG
ATTRS = ["Linear beamstop", "Diffuse (low q)", "Ice ring?"]


@pytest.fixture(autouse=True)
def one_thread_and_a_data_dir(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))  # what the dashboard reads


def rings(h, w, cx, cy, seed):
    """Counts of a halo and two rings about (cx, cy) with a disc beamstop on an arm."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(x - cx, y - cy)
    mean = 2000 / (1 + (r / 10) ** 2) + 5 + 150 * np.exp(-((r - 30) ** 2) / 4)
    mean += 80 * np.exp(-((r - 55) ** 2) / 4)
    image = np.random.default_rng(seed).poisson(mean).astype(np.float32)
    image[(r < 6) | ((np.abs(y - cy) < 2) & (x > cx))] = 0
    return image


def labels_csv(path: Path, names) -> Path:
    rows = ["file name," + ",".join(f'"{a}"' if "," in a else a for a in ATTRS)]
    rows += [f"{n},{i % 2},{(i + 1) % 2},{int(i == 0)}" for i, n in enumerate(names)]
    path.write_text("\n".join(rows) + "\n")
    return path


def texts(component) -> list[str]:
    if component is None:
        return []
    if isinstance(component, str):
        return [component]
    if isinstance(component, (list, tuple)):
        return [t for c in component for t in texts(c)]
    return texts(getattr(component, "children", None))


def graphs(component) -> list[dict]:
    """The figures of every dcc.Graph in a component tree."""
    if isinstance(component, (list, tuple)):
        return [g for c in component for g in graphs(c)]
    found = [component.figure] if getattr(component, "figure", None) is not None else []
    children = getattr(component, "children", None)  # a component's truth is its length
    return found + (graphs(children) if children is not None else [])


def science_of(run_id: str, index: int):
    children = science.show_science(index, run_id)
    return " ".join(texts(children)), graphs(children)


def test_real_inverted_pngs_through_a_torchvision_state_dict_open_in_the_dashboard(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / REAL_IMAGE.name).write_bytes(REAL_IMAGE.read_bytes())
    for k, (cx, cy) in enumerate([(60.0, 70.0), (90.5, 40.5), (50.0, 50.0)]):
        counts = rings(128, 140, cx, cy, seed=k)
        exported = 255 - np.clip(counts / counts.max() * 255 * 4, 0, 255)  # dark = intense
        Image.fromarray(exported.astype(np.uint8)).save(folder / f"export_{k}.png")
    names = [REAL_IMAGE.name, *(f"export_{k}.png" for k in range(3))]
    csv = labels_csv(tmp_path / "labels.csv", names)
    data = tmp_path / "data"
    assert (
        main(
            [
                "ingest",
                "--images",
                str(folder),
                "--labels",
                str(csv),
                "--data-dir",
                str(data),
                "--inverted",
                "--id",
                "pngs",
            ]
        )
        == 0
    )

    plain = tmp_path / "resnet18_plain.pt"  # what torchvision users save: weights only
    torch.save(
        torchvision.models.resnet18(weights=None, num_classes=len(ATTRS)).state_dict(), plain
    )
    make_run(data, "pngs", plain, device="cpu", run_id="real", progress=False)
    run = get_run("real")
    assert run.attributes == ATTRS and run.prd.shape == (4, 3) and run.fea.shape == (4, 512)
    real = int(np.flatnonzero(run.images["image_id"] == REAL_IMAGE.name)[0])

    text, figures = science_of("real", real)
    found = science.geometry(run, real)["centre"]
    assert np.hypot(found["x"] - REAL_CENTRE[0], found["y"] - REAL_CENTRE[1]) < 3
    assert centre_summary(found) in text and "disc beamstop" in text
    assert [f["layout"]["title"]["text"] for f in figures] == [
        "Detector, beam centre",
        "Radial profile I(q)",
        "Polar view",
    ]
    assert figures[1]["layout"]["yaxis"]["type"] == "log"

    image = detail.draw_detail_image(real, "Viridis", "real")
    assert image["data"][0]["type"] == "heatmap"
    title, table, _ = detail.describe_detail(real, 0.5, "real")
    assert REAL_IMAGE.name in title and table is not None


def test_tiff_edf_cbf_hdf5_through_our_checkpoint_get_centres_within_two_pixels(tmp_path):
    folder = tmp_path / "beamline"
    folder.mkdir()
    truth = {
        "a.tif": (101.3, 60.7, (120, 160)),
        "b.edf": (40.0, 88.5, (130, 110)),
        "c.cbf": (70.6, 70.2, (140, 140)),
        "d.h5": (85.0, 45.0, (100, 150)),
    }
    for k, (name, (cx, cy, shape)) in enumerate(truth.items()):
        counts = rings(*shape, cx, cy, seed=10 + k)
        if name.endswith(".tif"):
            tifffile.imwrite(folder / name, counts.astype(np.uint16))
        elif name.endswith(".edf"):
            fabio.edfimage.EdfImage(data=counts).write(str(folder / name))
        elif name.endswith(".cbf"):
            flagged = counts.astype(np.int32)
            flagged[:, 20:24] = -1  # a module gap, as Pilatus flags it
            fabio.cbfimage.CbfImage(data=flagged).write(str(folder / name))
        else:
            with h5py.File(folder / name, "w") as f:
                f.create_dataset("/entry/data/data", data=counts[None])
    csv = labels_csv(tmp_path / "labels.csv", truth)
    data = tmp_path / "data"
    assert (
        main(
            [
                "ingest",
                "--images",
                str(folder),
                "--labels",
                str(csv),
                "--data-dir",
                str(data),
                "--id",
                "beamline",
            ]
        )
        == 0
    )

    ours = tmp_path / "model.pt"
    save_checkpoint(
        ours,
        build_model("resnet18", len(ATTRS)),
        arch="resnet18",
        attributes=ATTRS,
        input_size=64,
        normalisation=per_image_normalisation(),
    )
    make_run(data, "beamline", ours, device="cpu", run_id="beamline-run", progress=False)
    run = get_run("beamline-run")
    assert run.meta["model"]["arch"] == "resnet18"
    for i, name in enumerate(run.images["image_id"]):
        cx, cy, shape = truth[name]
        text, figures = science_of("beamline-run", i)
        found = science.geometry(run, i)["centre"]
        assert np.hypot(found["x"] - cx, found["y"] - cy) <= 2, (name, found)
        assert f"x {found['x']:.1f}, y {found['y']:.1f} px" in text
        heat = figures[0]["data"][0]
        assert heat["type"] == "heatmap" and len(figures) == 3
        assert run.load_image(i).shape == shape

    cached = disk_cache(run, "science")
    assert len(cached) == 4  # memoised per run and row: the next visit reads it back
    assert science.geometry(run, 0)["centre"] == science.geometry(run, 0)["centre"]


def test_a_run_without_image_files_shows_a_message_in_the_science_slot(tmp_path):
    ids = ["a", "b", "c", "d"]
    (tmp_path / "act.csv").write_text(
        "id,Ring,Halo\n" + "\n".join(f"{k},{i % 2},{(i + 1) % 2}" for i, k in enumerate(ids)) + "\n"
    )
    (tmp_path / "prd.csv").write_text(
        "id,Ring,Halo\n" + "\n".join(f"{k},0.{i + 2},0.{7 - i}" for i, k in enumerate(ids)) + "\n"
    )
    np.save(tmp_path / "fea.npy", np.random.default_rng(0).normal(size=(4, 6)))
    assert (
        main(
            [
                "import-vectors",
                "--labels",
                str(tmp_path / "act.csv"),
                "--predictions",
                str(tmp_path / "prd.csv"),
                "--features",
                str(tmp_path / "fea.npy"),
                "--data-dir",
                str(tmp_path / "data"),
                "--id",
                "vectors-only",
            ]
        )
        == 0
    )
    text, figures = science_of("vectors-only", 2)
    assert "carries no image files" in text and figures == []
    assert science_of("vectors-only", None)[0] == science.NO_IMAGE
    assert "not in run" in science_of("vectors-only", 9)[0]
    assert "no run 'gone'" in science_of("gone", 0)[0]


def test_profile_and_polar_figures_keep_gaps_out_of_the_log_axis():
    radius = np.arange(5) + 0.5
    figure = profile_figure(radius, np.array([np.nan, 0.0, 10.0, 5.0, 2.0]), rings=[2.5])
    line, marks = figure["data"]
    assert line["x"]["dtype"] == "f4"
    assert len(np.frombuffer(__import__("base64").b64decode(line["x"]["bdata"]), "f4")) == 3
    assert marks["x"] == [2.5] and marks["y"] == [10.0]
    polar = polar_figure(
        np.arange(3.0), np.array([0.0, 90, 180, 270]), np.array([[1.0, np.nan, 3, 4]] * 3)
    )
    assert polar["data"][0]["x0"] == 0 and polar["data"][0]["dx"] == 90
