"""openTSNE maps of ACT, FEA and PRD: deterministic, robust to repeated label sets and tiny N."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import store
from pipeline.cli import main
from pipeline.embed import embed, embed_all, gradient_method, prepare
from pipeline.errors import PipelineError


def _features(n=80, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (4, d))
    return (centres[np.arange(n) % 4] + rng.normal(size=(n, d))).astype(np.float32)


def test_same_input_and_seed_give_the_same_map_and_another_seed_another():
    fea = _features()
    first = embed(fea, space="fea", seed=1)
    assert first.shape == (80, 2) and first.dtype == np.float32
    assert np.array_equal(first, embed(fea, space="fea", seed=1))
    assert not np.allclose(first, embed(fea, space="fea", seed=2))


def test_repeated_label_sets_form_one_separate_cluster_each():
    combos = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], np.uint8)
    which = np.arange(120) % 4
    coords = embed(combos[which], space="act")
    assert np.isfinite(coords).all()
    centroids = np.stack([coords[which == k].mean(axis=0) for k in range(4)])
    nearest = np.argmin(((coords[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == which).all()


def test_act_jitter_is_tiny_and_deterministic():
    act = np.zeros((10, 17), np.uint8)
    a, b = prepare(act, "act", seed=0), prepare(act, "act", seed=0)
    assert np.array_equal(a, b)
    assert 0 < np.abs(a).max() < 0.5  # well below the distance 1 between label sets


def test_features_are_reduced_to_50_dimensions_before_tsne():
    assert prepare(_features(n=80, d=512), "fea").shape == (80, 50)
    assert prepare(_features(n=30, d=512), "fea").shape == (30, 512)  # fewer images than 50


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 12])
def test_tiny_inputs_get_a_map_with_lowered_perplexity(n):
    coords = embed(_features(n=n, d=8), space="prd", perplexity=30)
    assert coords.shape == (n, 2) and np.isfinite(coords).all()


def test_fft_gradients_are_used_from_ten_thousand_points():
    assert gradient_method(20_000) == "fft" and gradient_method(500) == "bh"
    assert gradient_method(500, "fft") == "fft"
    with pytest.raises(PipelineError, match="gradient method"):
        gradient_method(10, "exact")


def test_nan_input_and_mismatched_rows_are_refused():
    bad = _features(n=20, d=5)
    bad[3, 2] = np.nan
    with pytest.raises(PipelineError, match="FEA array holds 1 NaN"):
        embed(bad, space="fea")
    with pytest.raises(PipelineError, match="unknown space"):
        embed(_features(n=20, d=5), space="xyz")
    with pytest.raises(PipelineError, match="one row per image"):
        embed_all(np.zeros((5, 3)), np.zeros((6, 4)), np.zeros((5, 3)))


def test_embed_all_reports_progress_across_the_three_spaces():
    fea = _features(n=40, d=8)
    heard = []
    maps = embed_all((fea[:, :3] > 0).astype(np.uint8), fea, np.clip(fea[:, :3], 0, 1),
                     on_progress=lambda stage, f: heard.append(f))
    assert set(maps) == {"act", "fea", "prd"}
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)


def test_embed_command_writes_a_new_run_with_the_same_arrays_and_new_maps(synthetic_run, capsys):
    code = main(["embed", "--run", synthetic_run.id, "--data-dir", str(synthetic_run.data_dir),
                 "--seed", "3", "--run-id", "re-embedded"])
    assert code == 0 and "re-embedded" in capsys.readouterr().out
    new = store.get_run("re-embedded", synthetic_run.data_dir)
    assert new.meta["embedded_from"] == synthetic_run.id
    assert np.array_equal(new.prd, synthetic_run.prd) and np.array_equal(new.act,
                                                                         synthetic_run.act)
    assert not np.allclose(new.emb("fea"), synthetic_run.emb("fea"))
    assert new.meta["embedding"]["seed"] == 3
