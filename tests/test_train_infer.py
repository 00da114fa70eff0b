"""Training, inference and the run builder on tiny real datasets, and their command lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import store
from pipeline.checkpoints import load_checkpoint, read_checkpoint
from pipeline.cli import main
from pipeline.errors import PipelineError, Stopped
from pipeline.infer import infer, make_run
from pipeline.train import train

torch.set_num_threads(1)
TOY_ATTRIBUTES = ["disc", "ring", "streak"]


def write_toy_dataset(data_dir, n: int = 24, size: int = 32, seed: int = 0, dataset_id="toy"):
    """Images with a bright disc, a ring and/or a streak, labelled by what was drawn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    shapes = [500.0 * (r < size / 8), 200.0 * (np.abs(r - size / 3) < 1.5),
              300.0 * (np.abs(yy) < 1.5)]
    with store.DatasetWriter(data_dir, dataset_id, TOY_ATTRIBUTES, meta={"source": "toy"}) as ds:
        for i in range(n):
            act = (rng.random(3) < 0.5).astype(np.uint8)
            expected = 5.0 + sum((s for s, on in zip(shapes, act, strict=True) if on), 0 * r)
            ds.add(rng.poisson(expected).astype(np.float32), act,
                   split="test" if i % 4 == 0 else "train", source="toy")
    return store.open_dataset(ds.final)


def _train(ds, out, **kw):
    settings = dict(arch="resnet18", epochs=1, input_size=32, batch_size=8, lr=3e-3,
                    device="cpu", checkpoint_out=out, progress=False)
    return train(ds, **{**settings, **kw})


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "data")


@pytest.fixture
def trained(toy, tmp_path):
    return toy, _train(toy, tmp_path / "model.pt")


def test_train_infer_embed_writes_a_run_the_dashboard_can_open(trained, tmp_path):
    ds, checkpoint = trained
    seen = []
    path = make_run(tmp_path / "data", ds, checkpoint, device="cpu", progress=False,
                    on_progress=lambda stage, f: seen.append(stage))
    run = store.get_run(path.name, tmp_path / "data")
    assert run.prd.shape == (24, 3) and run.fea.shape == (24, 512)
    assert all(run.emb(s).shape == (24, 2) for s in ("act", "fea", "prd"))
    assert np.array_equal(run.act, ds.act)
    assert run.meta["metrics"]["split"] == "test" and run.meta["metrics"]["n_images"] == 6
    assert run.meta["metrics_all"]["n_images"] == 24
    assert 0 <= run.meta["metrics"]["mAP"] <= 1
    assert run.meta["model"]["arch"] == "resnet18" and run.meta["model"]["input_size"] == 32
    assert {"infer", "embed"} <= set(seen)
    model, info = load_checkpoint(run.checkpoint, attributes=TOY_ATTRIBUTES)
    assert "optimizer" not in read_checkpoint(run.checkpoint)["training"]
    assert run.load_image(0).shape == (32, 32)


def _hidden(data_dir):
    runs = data_dir / store.RUNS
    return sorted(p for p in runs.iterdir() if p.name.startswith(store.TMP_PREFIX)) \
        if runs.exists() else []


def test_inference_writes_the_runs_arrays_to_disk_as_it_goes_and_the_run_keeps_them(
        trained, tmp_path):
    ds, checkpoint = trained
    data_dir = tmp_path / "data"
    drafts = []

    def heard(stage, fraction):
        if stage == "infer" and fraction == 1:  # inference done, nothing embedded yet
            (draft,) = _hidden(data_dir)
            prd = np.load(draft / "prd.npy", mmap_mode="r")
            drafts.append((draft.name, np.array(prd), np.load(draft / "fea.npy").shape))

    path = make_run(data_dir, ds, checkpoint, device="cpu", progress=False, on_progress=heard)
    (name, prd_on_disk, fea_shape), = drafts
    assert path.name in name and fea_shape == (24, 512)
    run = store.get_run(path.name, data_dir)
    assert np.array_equal(run.prd, prd_on_disk)  # what inference wrote is what the run holds
    assert np.array_equal(run.prd, infer(checkpoint, ds, device="cpu", progress=False)[0])
    assert _hidden(data_dir) == []


def test_a_run_stopped_after_inference_leaves_no_run_and_no_draft(trained, tmp_path):
    ds, checkpoint = trained
    data_dir = tmp_path / "data"
    inferred = []

    with pytest.raises(Stopped, match="embedding stopped"):
        make_run(data_dir, ds, checkpoint, device="cpu", progress=False,
                 on_progress=lambda stage, f: inferred.append(stage == "infer" and f == 1),
                 should_stop=lambda: any(inferred))
    assert any(inferred)  # inference had finished: its arrays were on disk
    assert store.list_runs(data_dir) == [] and _hidden(data_dir) == []


def test_a_run_draft_left_unwritten_or_given_other_arrays_becomes_no_run(tmp_path):
    with pytest.raises(PipelineError, match="left unfinished"), \
            store.run_draft(tmp_path, "half") as draft:
        draft.array("fea", (4, 3), np.float32)[:] = 1
    with pytest.raises(PipelineError, match="made in the run's draft"), \
            store.run_draft(tmp_path, "other") as draft:
        draft.array("prd", (4, 2), np.float32)[:] = 0.5
        images = pd.DataFrame({"image_id": list("abcd"), "path": "", "split": "test",
                               "source": "t"})
        draft.write(attributes=["x", "y"], images=images, act=np.zeros((4, 2)),
                    prd=np.full((4, 2), 0.5, np.float32), fea=np.ones((4, 3)),
                    emb={s: np.zeros((4, 2)) for s in store.SPACES}, meta={})
    assert store.list_runs(tmp_path) == [] and _hidden(tmp_path) == []


def test_training_learns_drawn_shapes_and_the_checkpoint_records_it(toy, tmp_path):
    checkpoint = _train(toy, tmp_path / "model.pt", epochs=3)
    saved = read_checkpoint(checkpoint)
    history = saved["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert saved["training"]["complete"] and "optimizer" not in saved["training"]
    assert saved["normalisation"]["centre"] is not None


def test_infer_returns_probabilities_and_features_and_multiscale_averages_15_views(trained):
    ds, checkpoint = trained
    prd, fea = infer(checkpoint, ds, device="cpu", progress=False)
    assert prd.shape == (24, 3) and fea.shape == (24, 512) and prd.dtype == np.float32
    assert (prd >= 0).all() and (prd <= 1).all()
    prd_ms, fea_ms = infer(checkpoint, ds, device="cpu", multiscale=True, progress=False,
                           batch_size=30)
    assert prd_ms.shape == prd.shape and fea_ms.shape == fea.shape
    assert not np.allclose(prd_ms, prd)


def test_interrupted_training_resumes_from_the_saved_epoch_and_ends_where_it_would_have(
        toy, tmp_path):
    straight = _train(toy, tmp_path / "straight.pt", epochs=2)
    done = {"train": 0.0}

    out = tmp_path / "resumed.pt"
    with pytest.raises(Stopped, match="epoch 2"):  # 18 images, batches of 8: 3 steps an epoch
        _train(toy, out, epochs=2, should_stop=lambda: done["train"] > 0.6,
               on_progress=done.__setitem__)
    saved = read_checkpoint(out)["training"]
    assert saved["epoch"] == 1 and not saved["complete"] and "optimizer" in saved
    _train(toy, out, epochs=2, resume=True)
    resumed = read_checkpoint(out)
    assert [h["epoch"] for h in resumed["training"]["history"]] == [1, 2]
    reference = read_checkpoint(straight)["model"]
    for key, value in resumed["model"].items():
        assert torch.allclose(value.float(), reference[key].float(), atol=1e-5), key


def test_ctrl_c_mid_epoch_leaves_the_last_whole_checkpoint_and_no_temporary_file(toy, tmp_path):
    out = tmp_path / "ckpt" / "model.pt"
    done = {"train": 0.0}

    def interrupt():  # Ctrl-C arrives in the second of three epochs
        if done["train"] > 0.4:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        _train(toy, out, epochs=3, should_stop=interrupt, on_progress=done.__setitem__)
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]
    assert read_checkpoint(out)["training"]["epoch"] == 1
    load_checkpoint(out)  # still a whole, loadable checkpoint


def test_fine_tuning_starts_from_a_checkpoint_and_keeps_its_normalisation(trained, tmp_path):
    ds, checkpoint = trained
    corrected = ds.act.copy()
    corrected[:, 0] = 1 - corrected[:, 0]
    tuned = _train(ds, tmp_path / "tuned.pt", init_checkpoint=checkpoint, act=corrected)
    before, after = read_checkpoint(checkpoint), read_checkpoint(tuned)
    assert after["normalisation"] == before["normalisation"]
    assert after["training"]["init_checkpoint"] == str(checkpoint)


def test_labels_of_the_wrong_shape_or_with_nan_are_refused(toy, tmp_path):
    with pytest.raises(PipelineError, match=r"labels \(act\) has shape"):
        _train(toy, tmp_path / "m.pt", act=np.zeros((24, 5)))
    bad = toy.act.astype(float)
    bad[3, 1] = np.nan
    with pytest.raises(PipelineError, match="NaN"):
        _train(toy, tmp_path / "m.pt", act=bad)


def test_a_dataset_without_training_images_is_refused(tmp_path):
    with store.DatasetWriter(tmp_path / "data", "only-test", ["a"]) as ds:
        for _ in range(3):
            ds.add(np.ones((32, 32)), [1], split="test")
    with pytest.raises(PipelineError, match="0 images in split 'train'"):
        _train(store.open_dataset(ds.final), tmp_path / "m.pt")


# ---------------------------------------------------------------- command line


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_infer_on_the_command_line_prints_the_ap_table_and_the_run(toy, tmp_path,
                                                                              capsys):
    data = tmp_path / "data"
    ckpt = tmp_path / "cli.pt"
    code, out, _ = _cli(capsys, "train", "--dataset", "toy", "--data-dir", data, "--epochs", 1,
                        "--input-size", 32, "--batch-size", 8, "--device", "cpu", "--out", ckpt)
    assert code == 0 and "checkpoint written" in out
    code, out, _ = _cli(capsys, "infer", "--dataset", "toy", "--checkpoint", ckpt, "--data-dir",
                        data, "--device", "cpu", "--run-id", "toy-run")
    assert code == 0 and "mAP" in out and "disc" in out and "toy-run" in out
    code, out, _ = _cli(capsys, "metrics", "--run", "toy-run", "--data-dir", data, "--split",
                        "all", "--threshold", 0.3)
    assert code == 0 and "24 images, threshold 0.3" in out
    code, out, _ = _cli(capsys, "metrics", "--run", "toy-run", "--data-dir", data)
    assert code == 0 and "each attribute's own threshold" in out and "threshold\n" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--dataset", "missing", "--out", "{tmp}/m.pt"], "no dataset 'missing'"),
    (["train", "--dataset", "toy", "--arch", "resnet99", "--out", "{tmp}/m.pt"],
     "unknown architecture 'resnet99'"),
    (["train", "--dataset", "toy", "--input-size", "8", "--out", "{tmp}/m.pt"],
     "below the minimum 32"),
    (["train", "--dataset", "toy", "--input-size", "100000", "--out", "{tmp}/m.pt"],
     "input size 100000 is above the maximum 1024"),
    (["train", "--dataset", "toy", "--lr", "nan", "--out", "{tmp}/m.pt"], "learning rate"),
    (["train", "--dataset", "toy", "--batch-size", "0", "--out", "{tmp}/m.pt"],
     "batch size must be at least 1, got 0"),
    (["train", "--dataset", "toy", "--steps", "0", "--out", "{tmp}/m.pt"],
     "steps (or epochs) and batch size must be at least 1"),
    (["train", "--dataset", "../../etc", "--out", "{tmp}/m.pt"], "invalid dataset id"),
    (["infer", "--dataset", "toy", "--checkpoint", "{tmp}/absent.pt"], "absent.pt does not exist"),
    (["infer", "--dataset", "toy", "--checkpoint", "{tmp}/junk.pt"],
     "junk.pt is not a checkpoint this tool wrote"),
    (["infer", "--dataset", "toy", "--checkpoint", "{tmp}/wide.pt"],
     "17 outputs but there are 3 attributes"),
    (["metrics", "--run", "no-such-run"], "no run 'no-such-run'"),
    (["embed", "--run", "../escape"], "invalid run id"),
])
def test_bad_input_to_model_commands_exits_2_and_names_the_problem(toy, tmp_path, capsys, argv,
                                                                   message):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    from pipeline.checkpoints import save_checkpoint
    from pipeline.model import build_model

    save_checkpoint(tmp_path / "wide.pt", build_model("resnet18", 17), arch="resnet18",
                    attributes=[f"a{i}" for i in range(17)], input_size=32, normalisation={})
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = _cli(capsys, *argv, "--data-dir", tmp_path / "data")
    assert code == 2
    assert err.startswith("error: ") and message in err


def test_nan_labels_on_disk_and_absent_cuda_exit_2(toy, tmp_path, capsys):
    act = np.load(toy.path / "act.npy").astype(float)
    act[0, 0] = np.nan
    np.save(toy.path / "act.npy", act)
    code, _, err = _cli(capsys, "train", "--dataset", "toy", "--data-dir", tmp_path / "data",
                        "--out", tmp_path / "m.pt")
    assert code == 2 and "NaN" in err
    if not torch.cuda.is_available():
        code, _, err = _cli(capsys, "infer", "--dataset", "toy", "--checkpoint", tmp_path / "m.pt",
                            "--device", "cuda", "--data-dir", tmp_path / "data")
        assert code == 2


def test_metrics_command_refuses_a_bad_threshold_and_an_empty_split(synthetic_run, capsys):
    data = synthetic_run.data_dir
    code, _, err = _cli(capsys, "metrics", "--run", synthetic_run.id, "--data-dir", data,
                        "--threshold", 2)
    assert code == 2 and "threshold" in err
    code, _, err = _cli(capsys, "metrics", "--run", synthetic_run.id, "--data-dir", data,
                        "--split", "validation")
    assert code == 2 and "no images in split 'validation'" in err


def test_a_pool_of_processes_prepares_the_same_inputs_as_this_process(tmp_path, monkeypatch):
    """On a GPU, inference's images are read and prepared by a pool of processes, and training
    loads a large set the same way: the inputs are the same to the last bit as those prepared
    one image at a time here, profiles and beam window included, in the rows' order."""
    import pipeline.infer
    from pipeline.inputs import default_inputs, prepare
    from pipeline.model import fit_normalisation
    from pipeline.train import load_inputs

    ds = write_toy_dataset(tmp_path / "data", n=70, size=64)
    inputs = default_inputs("compact")
    stats = fit_normalisation((ds.load_image(i) for i in range(8)), 32)
    info = {"arch": "compact", "input_size": 32, "normalisation": stats, "inputs": inputs}
    rows = np.random.default_rng(0).permutation(len(ds))[:50]  # not in order, as training's

    one_by_one = [prepare(ds.load_image(int(i)), 32, stats, inputs) for i in rows]
    batches = [rows[:20].tolist(), rows[20:21].tolist(), rows[21:].tolist()]
    with pipeline.infer.prepared_batches(ds, batches, info, workers=2) as pooled:
        pooled = list(pooled)
    assert [len(x) for x, _ in pooled] == [20, 1, 29]
    np.testing.assert_array_equal(torch.cat([x for x, _ in pooled]).numpy(),
                                  np.stack([p.views[0] for p in one_by_one]))
    np.testing.assert_array_equal(torch.cat([p for _, p in pooled]).numpy(),
                                  np.stack([p.profile for p in one_by_one]))

    here = load_inputs(ds, rows, 32, stats, inputs, progress=False)
    monkeypatch.setattr(pipeline.infer, "preparers", lambda ds, n_images: 2)
    by_pool = load_inputs(ds, rows, 32, stats, inputs, progress=False)
    assert here.x.dtype == by_pool.x.dtype == torch.float16
    assert torch.equal(here.x, by_pool.x) and torch.equal(here.profile, by_pool.profile)
    assert torch.equal(here.x, torch.from_numpy(np.stack([p.views[0] for p in one_by_one])).half())
