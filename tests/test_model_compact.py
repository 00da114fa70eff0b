"""The compact CPU model, D4 augmentation, step-set training and per-attribute thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import metrics, store
from pipeline.attributes import ATTRIBUTES
from pipeline.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.errors import PipelineError
from pipeline.infer import infer, make_run
from pipeline.inputs import ONE_CHANNEL, default_inputs
from pipeline.model import build_model
from pipeline.train import augment, d4, split_validation, train
from tests.test_train_infer import TOY_ATTRIBUTES, write_toy_dataset

torch.set_num_threads(1)
A = len(ATTRIBUTES)


def _compact_inputs(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    spec = default_inputs("compact")
    x = torch.randn(n, len(spec["channels"]), size, size)
    return x, torch.randn(n, len(spec["profile"]["stats"]), spec["profile"]["bins"])


def test_compact_net_keeps_full_resolution_first_and_joins_image_and_profile_features():
    model = build_model("compact", A).eval()
    # average and max pooling of the 128-wide last conv block, the 32-wide beam-window branch
    # and the 192-wide profile branch
    assert model.feature_dim == 2 * 128 + 2 * 32 + 2 * 192
    assert sum(p.numel() for p in model.parameters()) < 1e6  # small enough for a CPU
    x, profile = _compact_inputs(3, 64)
    with torch.no_grad():
        features, logits = model.features(x, profile), model(x, profile)
        whole = x[:, :2]  # the mean and darkest-pixel channels; the third is the beam window
        first = model.body[0](whole)
        last_block = model.body[-1](model.body[:-1](whole))
    assert first.shape[-2:] == (64, 64)  # no stride-2 stem, no max-pool
    assert model.window[0][0].in_channels == 1  # the beam window has convolutions of its own
    assert last_block.shape == (3, 128, 8, 8)  # a conv block still ends the image path
    assert features.shape == (3, 704) and logits.shape == (3, A)
    assert torch.allclose(model.fc(features), logits, atol=1e-5)
    with pytest.raises(PipelineError, match="radial profile"):
        model(x)


def test_compact_checkpoint_records_its_inputs_and_rebuilds_with_the_same_outputs(tmp_path):
    model = build_model("compact", 3).eval()
    path = tmp_path / "compact.pt"
    save_checkpoint(path, model, arch="compact", attributes=["a", "b", "c"], input_size=48,
                    normalisation={"centre": 1.0, "scale": 2.0},
                    extra={"thresholds": {"a": 0.3, "b": 0.5, "c": 0.7}})
    loaded, info = load_checkpoint(path)
    assert info["arch"] == "compact" and info["feature_dim"] == 704
    assert info["inputs"] == default_inputs("compact")
    assert info["thresholds"] == {"a": 0.3, "b": 0.5, "c": 0.7}
    x, profile = _compact_inputs(2, 48)
    with torch.no_grad():
        assert torch.equal(model(x, profile), loaded(x, profile))


def test_a_compact_checkpoint_from_before_inputs_were_recorded_loads_as_one_channel(tmp_path):
    old = build_model("compact", 2, ONE_CHANNEL).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, old, arch="compact", attributes=["a", "b"], input_size=32,
                    normalisation={"centre": 1.0, "scale": 2.0}, inputs=ONE_CHANNEL)
    payload = torch.load(path, weights_only=True)
    del payload["inputs"]  # as the checkpoints of earlier versions were written
    torch.save(payload, path)
    loaded, info = load_checkpoint(path)
    assert info["inputs"] == ONE_CHANNEL and info["feature_dim"] == 256
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(old(x), loaded(x))


def test_a_compact_checkpoint_from_before_the_spot_and_arc_rows_infers_as_it_was_trained(
        tmp_path):
    # written before the profile gained its spot and arc rows and its branch was widened:
    # four rows, 32 channels; it loads as that net and infers with its own four rows
    before = {**default_inputs("compact"),
              "profile": {**default_inputs("compact")["profile"],
                          "stats": ["mean", "sd", "max", "cover"]}}
    assert default_inputs("compact")["profile"]["stats"][-2:] == ["spot", "arc"]
    ds = write_toy_dataset(tmp_path, n=8, size=32)
    path = tmp_path / "four.pt"
    model = build_model("compact", len(ds.attributes), before, profile_width=32).eval()
    save_checkpoint(path, model, arch="compact", attributes=ds.attributes, input_size=32,
                    normalisation={"centre": 1.0, "scale": 2.0}, inputs=before)
    loaded, info = load_checkpoint(path)
    assert loaded.profile[0][0].in_channels == 4 and loaded.profile[0][0].out_channels == 32
    assert info["feature_dim"] == 448
    x, profile = torch.randn(2, 3, 32, 32), torch.randn(2, 4, before["profile"]["bins"])
    with torch.no_grad():
        assert torch.equal(model(x, profile), loaded(x, profile))
    prd, fea = infer(path, ds, device="cpu", progress=False)
    assert prd.shape == (8, len(ds.attributes)) and np.isfinite(prd).all()
    assert fea.shape == (8, 448)


def test_a_checkpoint_claiming_an_absurd_profile_branch_is_refused_before_it_is_built(
        tmp_path):
    model = build_model("compact", 2, profile_width=8).eval()
    path = tmp_path / "wide.pt"
    save_checkpoint(path, model, arch="compact", attributes=["a", "b"], input_size=32,
                    normalisation={"centre": 1.0, "scale": 2.0})
    payload = torch.load(path, weights_only=True)
    # 10⁵ channels: the branch's later layers would ask for tens of terabytes
    payload["model"]["profile.0.0.weight"] = torch.zeros(100_000, 1, 1)
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=r"wide\.pt.*100000 channels wide"):
        load_checkpoint(path)


def test_checkpoint_with_unknown_input_channels_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "odd-inputs.pt"
    save_checkpoint(path, build_model("compact", 2), arch="compact", attributes=["a", "b"],
                    input_size=32, normalisation={},
                    inputs={"channels": ["mean", "sepia"], "profile": None})
    with pytest.raises(PipelineError, match=r"odd-inputs.pt has unusable input channels"):
        load_checkpoint(path)


def test_checkpoint_with_thresholds_outside_0_1_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "odd.pt"
    save_checkpoint(path, build_model("compact", 2), arch="compact", attributes=["a", "b"],
                    input_size=32, normalisation={}, extra={"thresholds": {"a": 0.5, "b": 7}})
    with pytest.raises(Exception, match=r"odd.pt has unusable thresholds"):
        load_checkpoint(path)


def test_d4_gives_the_eight_distinct_symmetries_of_the_square():
    image = torch.arange(9.0).reshape(1, 1, 3, 3)  # no symmetry of its own
    views = [d4(image, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], image)
    assert torch.equal(views[1], torch.rot90(image, 1, dims=(-2, -1)))
    assert torch.equal(views[4], image.transpose(-2, -1))  # mirrored about the diagonal
    for v in views:  # pixels are moved, never changed
        assert sorted(v.flatten().tolist()) == list(range(9))


def test_augmentation_draws_all_eight_views_and_keeps_each_image_in_its_row():
    n = 200
    base = torch.arange(16.0).reshape(1, 1, 4, 4)
    # each row is the asymmetric image plus its row number, so a row's source is readable
    x = base + 100 * torch.arange(n, dtype=torch.float32)[:, None, None, None]
    out = augment(x, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(n):
        k = [j for j in range(8) if torch.equal(out[i], d4(x[i], j))]
        assert len(k) == 1, f"row {i} is not one of its own 8 views"
        seen.add(k[0])
    assert seen == set(range(8))


def test_threshold_of_best_f1_keeps_a_margin_prefers_0_5_on_ties_and_0_5_without_positives():
    act = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    prd = np.array([[0.10, 0.20, 0.60, 0.1],
                    [0.30, 0.40, 0.70, 0.2],
                    [0.60, 0.70, 0.80, 0.3],
                    [0.80, 0.90, 0.90, 0.4]])
    chosen = metrics.select_thresholds(act, prd)
    # attribute 0: F1 = 1 only between 0.1 and 0.3 → the midpoint; at 0.5 F1 would be 0.8
    # attribute 1: F1 = 1 anywhere in (0.4, 0.7], which holds 0.5 → 0.5 stays
    # attributes 2 and 3: no positive example → 0.5
    assert chosen == pytest.approx([0.2, 0.5, 0.5, 0.5])
    shy = metrics.select_thresholds(np.array([[0], [0], [1], [1]]),
                                    np.array([[0.60], [0.70], [0.80], [0.90]]))
    assert shy == pytest.approx([0.75])  # every probability above 0.5: the gap is at 0.75


def test_validation_share_is_seeded_disjoint_and_absent_when_too_small():
    train_idx = np.arange(100, 200)
    fit, val = split_validation(train_idx, 0.15, seed=3)
    assert len(val) == 15 and len(fit) == 85
    assert set(fit) | set(val) == set(train_idx) and not set(fit) & set(val)
    again, _ = split_validation(train_idx, 0.15, seed=3)
    assert np.array_equal(fit, again)
    assert not np.array_equal(split_validation(train_idx, 0.15, seed=4)[1], val)
    fit, val = split_validation(np.arange(3), 0.15, seed=0)
    assert len(val) == 0 and len(fit) == 3


def test_a_short_compact_run_learns_the_drawn_shapes_and_writes_thresholds_into_the_run(
        tmp_path):
    ds = write_toy_dataset(tmp_path / "data", n=96, seed=1)
    checkpoint = train(ds, arch="compact", steps=40, input_size=32, batch_size=16, lr=5e-3,
                       device="cpu", checkpoint_out=tmp_path / "m.pt", progress=False)
    saved = read_checkpoint(checkpoint)
    history = saved["training"]["history"]
    assert history[-1]["step"] == 40 and history[-1]["loss"] < history[0]["loss"]
    assert saved["training"]["n_validation"] == 11  # 15 % of the 72 training images
    run = store.get_run(make_run(tmp_path / "data", ds, checkpoint, device="cpu",
                                 progress=False).name, tmp_path / "data")
    assert set(run.meta["thresholds"]) == set(TOY_ATTRIBUTES) and run.meta["threshold"] == 0.5
    assert run.fea.shape == (96, 704)
    held_out = run.meta["metrics"]  # the 24 test images were never trained on
    prevalence = run.act[run.images["split"] == "test"].mean(axis=0)
    assert all(ap > p + 0.2 for ap, p in zip(held_out["per_attribute"]["AP"], prevalence,
                                             strict=True))
    tuned = run.meta["metrics_at_thresholds"]
    assert tuned["threshold"] == [run.meta["thresholds"][a] for a in TOY_ATTRIBUTES]


def test_on_simulated_detector_images_a_short_run_ranks_attributes_well_above_chance(tmp_path):
    from pipeline.simulate import simulate_dataset

    ds = store.open_dataset(simulate_dataset(tmp_path / "data", 160, size=64, seed=2,
                                             progress=False))
    checkpoint = train(ds, steps=60, input_size=32, batch_size=32, lr=5e-3, device="cpu",
                       checkpoint_out=tmp_path / "m.pt", progress=False)
    prd, _ = infer(checkpoint, ds, device="cpu", progress=False)
    test = ds.images["split"].to_numpy() == "test"
    ap = metrics.average_precision(ds.act[test], prd[test])
    chance = ds.act[test].mean(axis=0)  # the expected AP of a random ranking
    defined = np.isfinite(ap)
    assert np.mean(ap[defined]) > np.mean(chance[defined]) + 0.15
    assert (ap[defined] > chance[defined]).mean() >= 0.7


def test_a_compact_net_without_the_beam_window_has_no_window_branch_and_records_that(
        tmp_path):
    inputs = {**default_inputs("compact"), "channels": ["mean", "min"]}
    model = build_model("compact", 2, inputs).eval()
    assert model.body[0][0].in_channels == 2 and model.window_channel is None
    assert model.feature_dim == 2 * 128 + 2 * 192  # no 32-wide window branch
    save_checkpoint(tmp_path / "w.pt", model, arch="compact", attributes=["a", "b"],
                    input_size=32, normalisation={}, inputs=inputs)
    loaded, info = load_checkpoint(tmp_path / "w.pt")
    assert info["inputs"]["channels"] == ["mean", "min"]
    x, profile = torch.randn(2, 2, 32, 32), _compact_inputs(2, 32)[1]
    with torch.no_grad():
        assert torch.equal(model(x, profile), loaded(x, profile))


def test_the_compact_net_uses_every_allowed_core_only_on_an_idle_machine_and_records_it(
        tmp_path, monkeypatch):
    from pipeline import model as model_module

    assert model_module.compact_threads(2, busy=0.05) == 2
    assert model_module.compact_threads(16, busy=0.2) == 16
    assert model_module.compact_threads(2, busy=0.6) == 1  # others busy: one thread never stalls
    assert model_module.compact_threads(1, busy=0.0) == 1  # a Dask worker's one thread stays one

    # training runs under the chosen count and the run says which it was (a user's
    # OMP_NUM_THREADS would win; a Dask cluster started by an earlier test may have set it)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []
    monkeypatch.setattr(model_module, "compact_threads", lambda allowed: seen.append(allowed) or 2)
    ds = write_toy_dataset(tmp_path, n=24)
    before = torch.get_num_threads()
    path = train(ds, arch="compact", steps=2, input_size=32, batch_size=8, lr=1e-3,
                 checkpoint_out=tmp_path / "m.pt", progress=False)
    assert seen == [before] and torch.get_num_threads() == before  # restored afterwards
    assert read_checkpoint(path)["training"]["cpu_threads"] == 2
    run = store.get_run(make_run(tmp_path, ds, path, progress=False).name, tmp_path)
    assert run.meta["model"]["training"]["cpu_threads"] == 2
