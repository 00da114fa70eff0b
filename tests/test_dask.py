"""Inference sharded over a real local Dask cluster, a worker killed midway, images added to an
existing run's maps, and the reference sample of large maps, on tiny real datasets."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline import cluster, store
from pipeline.analyses import disagreement
from pipeline.cli import main
from pipeline.infer import infer, make_run
from pipeline.infer_shards import infer_on_cluster
from pipeline.reference import choose_reference, embed_maps
from pipeline.train import train
from tests.test_train_infer import TOY_ATTRIBUTES, write_toy_dataset

torch.set_num_threads(1)
SPACES = ("act", "fea", "prd")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy dataset of 120 images and a compact model trained a few steps on it."""
    root = tmp_path_factory.mktemp("dask")
    ds = write_toy_dataset(root / "data", n=120)
    checkpoint = train(ds, arch="compact", steps=4, input_size=32, batch_size=16, lr=3e-3,
                       device="cpu", checkpoint_out=root / "model.pt", progress=False,
                       val_fraction=0.0)
    return root, ds, checkpoint


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None) as cluster, Client(cluster) as c):
        yield c


def test_sharded_inference_equals_the_single_process_path(trained, client):
    _, ds, checkpoint = trained
    expected_prd, expected_fea = infer(checkpoint, ds, device="cpu", progress=False)
    prd, fea = infer_on_cluster(client, checkpoint, ds, device="cpu", progress=False,
                                shard_size=17)
    np.testing.assert_allclose(prd, expected_prd, atol=1e-5)
    np.testing.assert_allclose(fea, expected_fea, rtol=1e-4, atol=1e-4)


def test_a_worker_killed_mid_shard_still_gives_a_complete_run(trained, client, monkeypatch):
    root, ds, checkpoint = trained
    expected_prd, _ = infer(checkpoint, ds, device="cpu", progress=False)
    pids, killed = client.run(os.getpid), []
    # Shards of 8 images, 15 of them: when the first comes back both workers still hold one.
    # (With the default two shards the other could finish first, on a loaded machine.)
    monkeypatch.setattr(cluster, "shard_size", lambda n, workers: 8)

    def kill_a_busy_worker(stage, fraction):
        if stage != "infer" or killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(pids[busy[0]])

    path = make_run(root / "data", ds, checkpoint, device="cpu", progress=False,
                    scheduler=client.scheduler.address, on_progress=kill_a_busy_worker,
                    run_id="after-a-kill")
    assert killed, "no worker was busy when the first shard came back"
    run = store.get_run(path.name, root / "data")
    assert len(run) == len(ds) and run.meta["scheduler"] == client.scheduler.address
    np.testing.assert_allclose(run.prd, expected_prd, atol=1e-5)
    assert killed[0] not in client.run(os.getpid).values()  # it really died, and was replaced


def _write_images(folder, ds, rows):
    """Rows of a dataset written out as 16-bit TIFF files, as a detector would give them."""
    folder.mkdir()
    for i in rows:
        Image.fromarray(ds.load_image(i).astype(np.uint16)).save(folder / f"new{i:03d}.tif")
    act = pd.DataFrame(ds.act[rows], columns=TOY_ATTRIBUTES)
    act.insert(0, "file", [f"new{i:03d}.tif" for i in rows])
    act.to_csv(folder / "labels.csv", index=False)
    return folder


def test_add_places_new_images_and_keeps_every_old_coordinate(trained, tmp_path, capsys,
                                                              monkeypatch):
    root, ds, checkpoint = trained
    # The new run is larger than a run whose every pair is searched may be: it gets its
    # neighbourhoods all the same, extended from the old run's.
    monkeypatch.setattr(disagreement, "STORED_UP_TO", 90)
    data = tmp_path / "data"
    base_ds = write_toy_dataset(data, n=80, dataset_id="base")
    old = store.get_run(make_run(data, base_ds, checkpoint, device="cpu", progress=False,
                                 scheduler="none", run_id="base-run").name, data)
    folder = _write_images(tmp_path / "incoming", ds, range(100, 120))
    code = main(["add", "--run", "base-run", "--images", str(folder), "--labels",
                 str(folder / "labels.csv"), "--run-id", "with-new", "--scheduler", "none",
                 "--device", "cpu", "--data-dir", str(data)])
    assert code == 0
    # After inference's bar, each later stage is named as it starts.
    shown = capsys.readouterr().err
    for stage in ("place on ACT", "place on FEA", "place on PRD", "neighbourhoods",
                  "write the run"):
        assert f"add: {stage}" in shown, stage
    new = store.get_run("with-new", data)
    assert len(new) == 100 and new.meta["parent_run"] == "base-run"
    assert (new.images["split"].iloc[80:] == "added").all()
    np.testing.assert_array_equal(new.act[80:], ds.act[100:120])
    for space in SPACES:
        assert np.array_equal(new.emb(space)[:80], old.emb(space)), space  # bit for bit
        placed, spread = new.emb(space)[80:], np.ptp(old.emb(space), axis=0)
        assert np.isfinite(placed).all()
        assert (np.abs(placed - old.emb(space).mean(0)) <= spread).all(), space  # on the map
    assert len(store.list_runs(data)) == 2  # the old run is still there, unchanged
    # The neighbourhoods were extended from the old run's, in its feature basis: what a search
    # of every image in that basis finds, and the old images' FEA neighbours as the detail view
    # showed them, unless a new image came nearer.
    assert np.array_equal(new.fea_basis, old.fea_basis)
    whole = disagreement.neighbourhoods(new.act, new.fea, new.prd, basis=old.fea_basis)
    assert np.array_equal(new.neighbour_lists, whole.found)
    assert np.array_equal(new.disagreement, whole.score)
    for before, after in zip(old.neighbour_lists[1], new.neighbour_lists[1][:80], strict=True):
        kept = after[after < 80]  # the old images still among its nearest: the nearest before
        assert np.array_equal(kept, before[:len(kept)])
    stages = {"ingest_s", "infer_s", "place_s", "disagreement_s",
              *(f"{step}_{space}_s" for space in SPACES for step in ("rebuild", "transform"))}
    assert set(new.meta["timings"]) >= stages  # where an add's time went, stage by stage


def test_images_added_without_labels_take_the_models_calls(trained, tmp_path):
    root, ds, checkpoint = trained
    data = tmp_path / "data"
    base_ds = write_toy_dataset(data, n=60, dataset_id="base")
    make_run(data, base_ds, checkpoint, device="cpu", progress=False, scheduler="none",
             run_id="base-run")
    folder = _write_images(tmp_path / "incoming", ds, range(10))
    (folder / "labels.csv").unlink()
    assert main(["add", "--run", "base-run", "--images", str(folder), "--run-id", "guessed",
                 "--scheduler", "none", "--device", "cpu", "--data-dir", str(data)]) == 0
    new = store.get_run("guessed", data)
    assert new.meta["added"]["labels"] == "predicted"
    np.testing.assert_array_equal(new.act[60:], (new.prd[60:] >= 0.5).astype(np.uint8))


@pytest.mark.parametrize("bad", ["no-such-run", "no-images", "wrong-attributes", "scheduler"])
def test_bad_add_input_is_a_one_line_error_and_writes_nothing(trained, tmp_path, capsys, bad):
    root, ds, checkpoint = trained
    data = tmp_path / "data"
    base_ds = write_toy_dataset(data, n=30, dataset_id="base")
    make_run(data, base_ds, checkpoint, device="cpu", progress=False, scheduler="none",
             run_id="base-run")
    folder = _write_images(tmp_path / "incoming", ds, range(5))
    if bad == "wrong-attributes":
        pd.DataFrame({"file": ["new000.tif"], "other": [1]}).to_csv(folder / "labels.csv",
                                                                    index=False)
    args = {"no-such-run": ["--run", "nope", "--images", str(folder)],
            "no-images": ["--run", "base-run", "--images", str(tmp_path / "missing")],
            "wrong-attributes": ["--run", "base-run", "--images", str(folder), "--labels",
                                 str(folder / "labels.csv")],
            "scheduler": ["--run", "base-run", "--images", str(folder), "--scheduler", "bogus"],
            }[bad]
    assert main(["add", *args, "--device", "cpu", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert [r.id for r in store.list_runs(data)] == ["base-run"]
    assert sorted(p.name for p in (data / store.DATASETS).iterdir()) == ["base"]


def test_infer_refuses_an_unknown_scheduler(trained, capsys):
    root, ds, checkpoint = trained
    code = main(["infer", "--dataset", str(ds.path), "--checkpoint", str(checkpoint),
                 "--scheduler", "bogus", "--data-dir", str(root / "data")])
    assert code == 2
    assert "unknown scheduler 'bogus'" in capsys.readouterr().err


def test_reference_sample_keeps_every_label_combination_in_proportion():
    rng = np.random.default_rng(0)
    act = (rng.random((3000, 3)) < [0.5, 0.1, 0.02]).astype(np.uint8)
    rows = choose_reference(act, 600, seed=0)
    assert len(rows) == 600 and len(np.unique(rows)) == 600
    combos = {tuple(r) for r in act}
    assert {tuple(r) for r in act[rows]} == combos  # even the rarest combination is in
    share = lambda a, c: np.mean((a == c).all(1))  # noqa: E731
    for combo in combos:
        assert abs(share(act[rows], combo) - share(act, combo)) < 0.01


def test_large_maps_fit_a_reference_and_place_the_rest(trained):
    rng = np.random.default_rng(1)
    act = (rng.random((400, 3)) < 0.5).astype(np.uint8)
    fea = act @ rng.normal(size=(3, 8)) + rng.normal(0, 0.1, (400, 8))
    prd = np.clip(act * 0.8 + rng.random((400, 3)) * 0.2, 0, 1)
    emb, rows = embed_maps(act, fea, prd, reference_n=150)
    assert len(rows) == 150
    for space in SPACES:
        assert emb[space].shape == (400, 2) and np.isfinite(emb[space]).all()
    # placed points land near reference points of the same label set in the ACT map
    ref_centres = {tuple(c): emb["act"][rows][(act[rows] == c).all(1)].mean(0)
                   for c in np.unique(act, axis=0)}
    others = np.setdiff1d(np.arange(400), rows)
    nearest = [min(ref_centres, key=lambda c: np.linalg.norm(emb["act"][i] - ref_centres[c]))
               for i in others]
    assert np.mean([n == tuple(act[i]) for n, i in zip(nearest, others, strict=True)]) > 0.9


def test_points_placed_on_the_workers_land_where_they_land_here(client):
    from pipeline.reference import place, rebuild

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 5)) + np.repeat(np.eye(5) * 6, 40, axis=0)
    act, prd = (rng.random((200, 3)) < 0.5).astype(np.uint8), rng.random((200, 3))
    coords = embed_maps(act, x, prd)[0]["fea"]
    embedding, prepare_new = rebuild(x, coords, space="fea")
    new = prepare_new(x[:30] + rng.normal(0, 0.1, (30, 5)))
    np.testing.assert_allclose(place(embedding, new, client, chunk=7), place(embedding, new),
                               atol=1e-4)


def test_the_scheduler_setting_sends_inference_to_that_cluster(trained, client, monkeypatch):
    root, ds, checkpoint = trained
    monkeypatch.setenv("XRAE_DASK_SCHEDULER", client.scheduler.address)
    path = make_run(root / "data", ds, checkpoint, device="cpu", progress=False,
                    run_id="by-setting")  # as retraining calls it: no scheduler argument
    run = store.get_run(path.name, root / "data")
    assert run.meta["scheduler"] == client.scheduler.address
    monkeypatch.setenv("XRAE_DASK_SCHEDULER", "none")
    path = make_run(root / "data", ds, checkpoint, device="cpu", progress=False,
                    run_id="in-process")
    assert store.get_run(path.name, root / "data").meta["scheduler"] == "none"



def test_inference_is_sharded_over_workers_for_a_cpu_model_and_stays_here_on_a_gpu(client):
    """A GPU infers a beamline's images here faster than CPU workers would, each opening the GPU
    again (the workers still place a large run's map points); a CPU model is sharded."""
    from pipeline.infer import sharded

    assert sharded(client, torch.device("cpu"))
    assert not sharded(client, torch.device("cuda"))  # a device named, none opened
    assert not sharded(None, torch.device("cpu"))
