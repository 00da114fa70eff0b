"""The demo command: simulate → train → infer → metrics → embed in one go, ending in a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import store
from pipeline.cli import main
from pipeline.demo import DEFAULT, FAST, config_for, run_demo
from pipeline.errors import PipelineError

torch.set_num_threads(1)


def test_fast_demo_builds_a_complete_run_and_prints_where_it_is(tmp_path, capsys):
    path = run_demo(tmp_path / "data", fast=True, n=40, progress=False)
    out = capsys.readouterr().out
    run = store.get_run(path.name, tmp_path / "data")
    assert run.meta["model"]["arch"] == "compact"
    assert len(run) == 40 and run.fea.shape == (40, run.meta["model"]["feature_dim"])
    assert all(np.isfinite(run.emb(s)).all() for s in ("act", "fea", "prd"))
    assert run.checkpoint is not None
    assert run.meta["demo"]["fast"] and run.meta["demo"]["n"] == 40
    assert set(run.meta["timings"]) >= {"simulate_s", "train_s", "infer_s", "embed_s"}
    assert "mAP" in out and str(path) in out and "Ring" in out
    assert set(run.meta["thresholds"]) == set(run.attributes)
    assert "each attribute's threshold" in out
    # a second demo with the same settings reuses the simulated dataset
    dataset = tmp_path / "data" / "datasets" / run.meta["dataset"]
    made = (dataset / "dataset.json").stat().st_mtime_ns
    main(["demo", "--fast", "--n", "40", "--epochs", "1", "--data-dir", str(tmp_path / "data")])
    assert (dataset / "dataset.json").stat().st_mtime_ns == made
    assert len(store.list_runs(tmp_path / "data")) == 2


def test_the_table_is_printed_as_soon_as_inference_ends_before_the_maps(tmp_path, capsys,
                                                                        monkeypatch):
    """The maps of a large run take minutes: a demo stopped while they are made has already
    shown the model's held-out table, and leaves no run."""
    import pipeline.reference

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped while the maps were made")

    monkeypatch.setattr(pipeline.reference, "embed_maps", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "data", fast=True, n=40, progress=False)
    out = capsys.readouterr().out
    assert "mAP" in out and "Ring" in out and "Wedge beamstop" in out
    assert store.list_runs(tmp_path / "data") == []


def test_overrides_replace_only_what_is_given():
    config = config_for(n=20000, arch="resnet50", input_size=224, device="cuda")
    assert (config.n, config.arch, config.input_size, config.device) == (20000, "resnet50", 224,
                                                                          "cuda")
    assert config.steps == DEFAULT.steps and config.lr == DEFAULT.lr
    assert config_for(fast=True) == FAST
    by_epochs = config_for(epochs=3)  # epochs given alone replace the step count
    assert (by_epochs.epochs, by_epochs.steps) == (3, None)


@pytest.mark.parametrize(("argv", "message"), [
    (["--n", "3"], "at least 10 images"),
    (["--arch", "vgg16"], "unknown architecture 'vgg16'"),
])
def test_bad_demo_settings_exit_2_before_any_work(tmp_path, capsys, argv, message):
    code = main(["demo", "--fast", *argv, "--data-dir", str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "datasets").exists()


def test_bad_settings_are_pipeline_errors_for_callers_too():
    with pytest.raises(PipelineError, match="at least 10"):
        config_for(n=2)
