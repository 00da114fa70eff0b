"""`python -m pipeline import-vectors`: a run from arrays computed elsewhere, matched by id, with
every inconsistency a clear error that names the file and leaves nothing written.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.cli import main
from pipeline.metrics import evaluate
from pipeline.store import DatasetWriter, get_run, list_runs, open_dataset
from pipeline.vectors import check_probabilities, read_table

NAMES = ["Ring", "Halo, isotropic", "Linear beamstop", "Ice ring (hexagonal)"]
N, D = 24, 10
# Runs that are really written use 4 images: the maps are then PCA layouts (pipeline.embed), so
# these tests stay fast; t-SNE itself is the embedding's own tests' business.
SMALL = 4
ROOT = Path(__file__).resolve().parents[1]


def arrays(seed=0, n=N):
    rng = np.random.default_rng(seed)
    ids = [f"scan_{i:03d}" for i in range(n)]
    act = (rng.random((n, len(NAMES))) < 0.4).astype(int)
    prd = np.clip(0.15 + 0.7 * act + rng.normal(0, 0.2, act.shape), 0, 1).round(4)
    fea = rng.normal(size=(n, D)).astype(np.float32) + act[:, :1]
    return ids, act, prd, fea


def write_csv(path: Path, ids, values, names=NAMES, id_name="image_id") -> Path:
    lines = [",".join([id_name, *(f'"{n}"' if "," in n else n for n in names)])]
    lines += [",".join([i, *map(str, row)]) for i, row in zip(ids, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def inputs(tmp_path, seed=0, n=N):
    """act.csv in one order, prd.csv and fea.npy in another (the predictions file's order)."""
    ids, act, prd, fea = arrays(seed, n)
    order = np.random.default_rng(seed + 2).permutation(n)
    write_csv(tmp_path / "act.csv", ids, act)
    write_csv(tmp_path / "prd.csv", [ids[i] for i in order], prd[order])
    np.save(tmp_path / "fea.npy", fea[order])
    return ids, act, prd, fea, order


def cli(tmp_path, *extra, labels="act.csv", predictions="prd.csv", features="fea.npy"):
    return main(
        [
            "import-vectors",
            "--labels",
            str(tmp_path / labels),
            "--predictions",
            str(tmp_path / predictions),
            "--features",
            str(tmp_path / features),
            "--data-dir",
            str(tmp_path / "data"),
            *map(str, extra),
        ]
    )


def nothing_written(tmp_path) -> bool:
    data = tmp_path / "data"
    return not any(
        p for sub in ("runs", "datasets") if (data / sub).exists() for p in (data / sub).iterdir()
    )


def test_vectors_become_a_run_matched_by_id_with_metrics_and_maps(tmp_path, capsys):
    ids, act, prd, fea, order = inputs(tmp_path, n=SMALL)
    assert list(order) != sorted(order)  # the files really disagree on the order
    assert cli(tmp_path, "--id", "external") == 0
    assert "run external written" in capsys.readouterr().out
    run = get_run("external", tmp_path / "data")
    assert run.attributes == NAMES
    assert list(run.images["image_id"]) == [ids[i] for i in order]
    np.testing.assert_array_equal(run.act, act[order])  # labels reordered to the predictions
    np.testing.assert_allclose(run.prd, prd[order], atol=1e-6)
    np.testing.assert_allclose(run.fea, fea[order], atol=1e-6)
    for space in ("act", "fea", "prd"):
        assert run.emb(space).shape == (SMALL, 2) and np.isfinite(run.emb(space)).all()
    assert run.meta["metrics"]["mAP"] == pytest.approx(evaluate(act, prd)["mAP"])
    assert set(run.images["path"]) == {""}  # no images: the dashboard shows a message instead
    assert run.meta["dataset"] == "" and run.meta["model"]["arch"] == "external"


def test_images_folder_attaches_each_ids_image_as_a_dataset(tmp_path):
    ids, act, prd, fea, order = inputs(tmp_path, n=SMALL)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for k, key in enumerate(ids):  # found by stem, in any subfolder
        where = folder / "sub" if k % 2 else folder
        tifffile.imwrite(where / f"{key}.tif", np.full((8 + k, 9), k, np.uint16))
    fea_npz = tmp_path / "fea.npz"  # features matched by id too, in yet another order
    np.savez(fea_npz, ids=np.array(ids), fea=fea)
    assert cli(tmp_path, "--images", folder, "--id", "with-images", features="fea.npz") == 0
    run = get_run("with-images", tmp_path / "data")
    np.testing.assert_allclose(run.fea, fea[order], atol=1e-6)
    for row, k in enumerate(order):
        image = run.load_image(row)
        assert image.shape == (8 + k, 9) and (image == k).all()
    ds = open_dataset(run.meta["dataset"], tmp_path / "data")
    np.testing.assert_array_equal(ds.act, act[order])


def test_logits_are_refused_as_probabilities_and_accepted_with_the_flag(tmp_path, capsys):
    ids, act, prd, fea, order = inputs(tmp_path)
    logits = np.array([[-3.0, 0.0, 2.5, -0.1]] * N)
    write_csv(tmp_path / "logits.csv", [ids[i] for i in order], logits)
    assert cli(tmp_path, predictions="logits.csv") == 2
    assert "pass --logits if they are logits" in capsys.readouterr().err
    _, names, values = read_table(tmp_path / "logits.csv", "predictions")
    prd = check_probabilities("logits.csv", ids, names, values, logits=True)
    np.testing.assert_allclose(prd[0], 1 / (1 + np.exp([3.0, 0.0, -2.5, 0.1])), rtol=1e-6)
    assert nothing_written(tmp_path)


# ---------------------------------------------------------------- errors, nothing written


def broken(tmp_path, what):
    """Write the normal inputs, then break one thing; return the message expected."""
    ids, act, prd, fea, order = inputs(tmp_path)
    pids = [ids[i] for i in order]
    prd_csv, act_csv = tmp_path / "prd.csv", tmp_path / "act.csv"
    if what == "missing-id":
        write_csv(act_csv, ids[:-2], act[:-2])
        return f"2 ids of {prd_csv} are not in {act_csv}: '{ids[-2]}', '{ids[-1]}'"
    if what == "extra-id":
        write_csv(act_csv, [*ids, "stray"], np.vstack([act, act[:1]]))
        return f"1 ids of {act_csv} are not in {prd_csv}: 'stray'"
    if what == "duplicate-id":
        write_csv(prd_csv, [*pids[:-1], pids[0]], prd[order])
        return f"{prd_csv}: ids appear more than once: '{pids[0]}'"
    if what == "renamed-attribute":
        write_csv(prd_csv, pids, prd[order], names=[*NAMES[:-1], "Ice"])
        return f"attribute columns differ: only in {act_csv}: ['Ice ring (hexagonal)']"
    if what == "reordered-attributes":
        write_csv(prd_csv, pids, prd[order][:, ::-1], names=NAMES[::-1])
        return "are in a different order"
    if what == "nan":
        bad = prd[order].astype(object)
        bad[3, 1] = "nan"
        write_csv(prd_csv, pids, bad)
        return f"{prd_csv}: line 5, column 'Halo, isotropic' holds nan"
    if what == "not-a-number":
        bad = prd[order].astype(object)
        bad[0, 0] = "high"
        write_csv(prd_csv, pids, bad)
        return f"{prd_csv}: line 2, column 'Ring': 'high' is not a number"
    if what == "probability-out-of-range":
        bad = prd[order].copy()
        bad[2, 2] = 1.7
        write_csv(prd_csv, pids, bad)
        return (
            f"{prd_csv}: predictions must be probabilities in [0, 1]; image '{pids[2]}', "
            "column 'Linear beamstop' holds 1.7"
        )
    if what == "label-not-binary":
        bad = act.copy()
        bad[5, 0] = 2
        write_csv(act_csv, ids, bad)
        return f"{act_csv}: labels must be 0 or 1; image '{ids[5]}', column 'Ring' holds 2"
    if what == "features-short":
        np.save(tmp_path / "fea.npy", fea[:-1])
        return f"features file {tmp_path / 'fea.npy'} has {N - 1} rows but {prd_csv} has {N}"
    if what == "features-1d":
        np.save(tmp_path / "fea.npy", fea[:, 0])
        return f"features file {tmp_path / 'fea.npy'} has shape ({N},), expected N × D"
    if what == "features-nan":
        bad = fea[order].copy()
        bad[4, 2] = np.nan
        np.save(tmp_path / "fea.npy", bad)
        return f"holds 1 NaN or infinite values (images '{pids[4]}')"
    if what == "features-corrupt":
        (tmp_path / "fea.npy").write_bytes(b"\x93NUMPY garbage")
        return f"features file {tmp_path / 'fea.npy'} cannot be read"
    if what == "empty-labels":
        act_csv.write_text("")
        return f"labels file {act_csv} is empty"
    raise AssertionError(what)


CASES = [
    "missing-id",
    "extra-id",
    "duplicate-id",
    "renamed-attribute",
    "reordered-attributes",
    "nan",
    "not-a-number",
    "probability-out-of-range",
    "label-not-binary",
    "features-short",
    "features-1d",
    "features-nan",
    "features-corrupt",
    "empty-labels",
]


@pytest.mark.parametrize("what", CASES)
def test_inconsistent_inputs_are_errors_that_name_the_file_and_write_nothing(
    tmp_path, capsys, what
):
    expected = broken(tmp_path, what)
    assert cli(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert nothing_written(tmp_path)


def test_an_id_without_an_image_is_an_error_and_no_dataset_is_left(tmp_path, capsys):
    ids, *_ = inputs(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key in ids[1:]:
        tifffile.imwrite(folder / f"{key}.tif", np.ones((8, 8), np.uint8))
    assert cli(tmp_path, "--images", folder) == 2
    assert f"1 ids have no usable image in {folder}: '{ids[0]}'" in capsys.readouterr().err
    assert nothing_written(tmp_path)


def test_a_corrupt_image_is_an_error_naming_it_and_no_dataset_is_left(tmp_path, capsys):
    ids, *_ = inputs(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key in ids:
        tifffile.imwrite(folder / f"{key}.tif", np.ones((8, 8), np.uint8))
    (folder / f"{ids[7]}.tif").write_bytes(b"II*\x00 not really a tiff")
    assert cli(tmp_path, "--images", folder) == 2
    err = capsys.readouterr().err
    assert f"error: {folder / ids[7]}.tif: TIFF holds no image" in err
    assert nothing_written(tmp_path) and list_runs(tmp_path / "data") == []


# ---------------------------------------------------------------- silently wrong features


def features_npz(tmp_path, what) -> str:
    """fea.npz with ids (in the labels' order) and features, broken as `what` says; the message."""
    ids, _, _, fea, _ = inputs(tmp_path)
    path = tmp_path / "fea.npz"
    if what == "duplicate-id":
        ids = [*ids[:-2], ids[3], ids[5]]  # the last two rows claim ids already given
        np.savez(path, ids=np.array(ids), fea=fea)
        return f"features file {path}: ids appear more than once: '{ids[3]}', '{ids[5]}'"
    if what == "ids-rows-differ":
        np.savez(path, ids=np.array(ids), fea=fea[:-3])
        return f"features file {path} holds {N} ids but {N - 3} rows of features"
    if what == "complex":
        np.savez(path, ids=np.array(ids), fea=fea + 1j)
        return f"features file {path} holds complex numbers (complex128); expected real features"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["duplicate-id", "ids-rows-differ", "complex"])
def test_features_that_would_be_silently_wrong_are_refused_naming_the_file(tmp_path, capsys, what):
    expected = features_npz(tmp_path, what)
    assert cli(tmp_path, features="fea.npz") == 2
    err = capsys.readouterr().err
    assert err == f"error: {expected}\n"
    assert nothing_written(tmp_path)


def test_complex_features_in_a_npy_are_refused(tmp_path, capsys):
    *_, fea, order = inputs(tmp_path)
    np.save(tmp_path / "fea.npy", fea[order].astype(np.complex64))
    assert cli(tmp_path) == 2
    assert "holds complex numbers (complex64)" in capsys.readouterr().err
    assert nothing_written(tmp_path)


# ---------------------------------------------------------------- images: limits, paths, retries


def test_max_pixels_applies_to_the_images_of_import_vectors(tmp_path, capsys):
    ids, *_ = inputs(tmp_path, n=SMALL)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key in ids:
        tifffile.imwrite(folder / f"{key}.tif", np.ones((8, 9), np.uint16))
    assert cli(tmp_path, "--images", folder, "--max-pixels", 50) == 2
    err = capsys.readouterr().err
    assert "image is 8×9 = 72 pixels, over the limit of 50 (raise it with --max-pixels)" in err
    assert nothing_written(tmp_path)
    assert cli(tmp_path, "--images", folder, "--max-pixels", 72, "--id", "fits") == 0


def test_ids_that_are_paths_beside_the_labels_csv_find_their_images(tmp_path, capsys):
    ids, act, prd, fea = arrays(n=SMALL)
    (tmp_path / "scans").mkdir()
    for k, key in enumerate(ids):
        tifffile.imwrite(tmp_path / "scans" / f"{key}.tif", np.full((6, 7), k, np.uint16))
    paths = [f"./scans/{key}.tif" for key in ids]
    write_csv(tmp_path / "act.csv", paths, act)
    write_csv(tmp_path / "prd.csv", paths, prd)
    np.save(tmp_path / "fea.npy", fea)
    assert cli(tmp_path, "--images", tmp_path / "scans", "--id", "lab") == 0
    assert f"matched {SMALL} rows by path beside the labels CSV" in capsys.readouterr().out
    run = get_run("lab", tmp_path / "data")
    assert [int(run.load_image(i)[0, 0]) for i in range(SMALL)] == list(range(SMALL))


KILLED_AFTER_THE_DATASET = """
import os, sys
from pipeline import vectors
from pipeline.cli import main
vectors._embed_and_write = lambda *args, **kwargs: os._exit(137)  # no except or finally runs
sys.exit(main(sys.argv[1:]))
"""


def test_a_retry_after_a_kill_between_dataset_and_run_reuses_the_dataset(tmp_path, capsys):
    ids, *_ = inputs(tmp_path, n=SMALL)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, key in enumerate(ids):
        tifffile.imwrite(folder / f"{key}.tif", np.full((8, 8), k, np.uint16))
    args = ["import-vectors", "--labels", tmp_path / "act.csv", "--predictions",
            tmp_path / "prd.csv", "--features", tmp_path / "fea.npy", "--images", folder,
            "--data-dir", tmp_path / "data", "--id", "again"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_DATASET, *map(str, args)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 137, killed.stderr
    assert (tmp_path / "data" / "datasets" / "again" / "dataset.json").is_file()
    assert list_runs(tmp_path / "data") == []  # the state a kill leaves behind

    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert "reusing dataset again, written by an earlier import of these images" in out
    run = get_run("again", tmp_path / "data")
    assert run.meta["dataset"] == "again" and len(run) == SMALL
    assert sorted(int(run.load_image(i)[0, 0]) for i in range(SMALL)) == list(range(SMALL))


def test_a_dataset_of_that_id_holding_other_images_is_refused(tmp_path, capsys):
    ids, *_ = inputs(tmp_path, n=SMALL)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key in ids:
        tifffile.imwrite(folder / f"{key}.tif", np.ones((8, 8), np.uint16))
    with DatasetWriter(tmp_path / "data", "taken", NAMES, {"source": "ingest"}) as ds:
        ds.add(np.ones((4, 4)), np.zeros(len(NAMES)), image_id="other.tif")
    assert cli(tmp_path, "--images", folder, "--id", "taken") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset taken already exists in ")
    assert "holds other images; choose another --id" in err
    assert list_runs(tmp_path / "data") == []
    assert list(open_dataset("taken", tmp_path / "data").images["image_id"]) == ["other.tif"]


def test_a_full_disk_while_writing_the_run_is_one_line_and_nothing_is_left(
    tmp_path, capsys, monkeypatch
):
    inputs(tmp_path, n=SMALL)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    assert cli(tmp_path, "--id", "full") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write run full in {tmp_path / 'data' / 'runs'}: the disk")
    assert "Traceback" not in err and nothing_written(tmp_path)
