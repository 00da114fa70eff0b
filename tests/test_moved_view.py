"""Colour-by "moved since parent run": each view coloured by how far its images moved from the
parent run's map, a key that says so, the most-moved images under the retraining table, and a
clear note (not an error) for a run without a parent; called directly and in a real browser."""

from __future__ import annotations

import numpy as np
import pytest
from dash import no_update

from callbacks import control, legends, retrain, views
from components.encoding import MOVED_FAR, NOT_IN_PARENT
from pipeline.before_after import moved_since, neighbour_scale
from pipeline.store import get_run, write_run
from tests.conftest import free_port, patient, write_synthetic_run
from tests.test_callbacks import call, decode, texts

MOVED_ROWS = {"act": [0, 1], "fea": [2, 3, 4], "prd": [5]}


def write_child(data_dir, parent, run_id: str = "run-synthetic-0-retrained"):
    """A run with the parent's images whose maps equal the parent's but for MOVED_ROWS, which
    moved four of the parent map's neighbour spacings to the right. (Its id sorts after the
    parent's, so the run picker lists it first even when both were written in one second.)"""
    emb = {}
    for space, rows in MOVED_ROWS.items():
        xy = np.array(parent.emb(space))
        xy[rows, 0] += 4 * neighbour_scale(xy)
        emb[space] = xy
    images = parent.images.drop(columns=["index"], errors="ignore")
    path = write_run(data_dir, attributes=parent.attributes, images=images, act=parent.act,
                     prd=parent.prd, fea=parent.fea, emb=emb, run_id=run_id,
                     meta={"dataset": parent.meta["dataset"], "parent_run": parent.id,
                           "embedding": {"placed": f"initialised from parent {parent.id}"}})
    return get_run(path.name, data_dir)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    parent = write_synthetic_run(tmp_path / "data", n=60)
    return parent, write_child(tmp_path / "data", parent)


def draw(run, colour_by="moved"):
    return call(views.draw_views, "radio-colour-by.value", run.id, "dots", [], colour_by, 0,
                "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None)[:3]


def test_each_view_is_coloured_by_how_far_its_images_moved_since_the_parent(runs):
    parent, child = runs
    figures = draw(child)
    for space, figure in zip(("act", "fea", "prd"), figures, strict=True):
        colour = decode(figure["data"][0]["marker"]["color"])
        moved = np.flatnonzero(colour > 0)
        assert moved.tolist() == MOVED_ROWS[space]  # each view its own images
        np.testing.assert_allclose(colour[moved], 4.0, rtol=1e-5)
        assert figure["data"][0]["marker"]["cmax"] == MOVED_FAR
    legend = " ".join(texts(call(legends.draw_colour_legend, "radio-colour-by.value", "moved", 0,
                                 child.id)))
    assert f"Moved since parent run {parent.id}" in legend and "not in the parent" in legend
    note = call(control.describe_moved, "radio-colour-by.value", "moved", child.id)
    assert f"parent run {parent.id}" in note and "median ACT 0.0, FEA 0.0, PRD 0.0" in note
    assert "initialised from parent" in note
    assert call(views.recolour_on_threshold, "slider-threshold.value", 0.3, child.id, "moved",
                0, "cosine") == [no_update] * 3


def test_a_run_without_a_parent_says_so_and_is_drawn_grey(runs):
    parent, _ = runs
    for figure in draw(parent):
        assert (decode(figure["data"][0]["marker"]["color"]) == NOT_IN_PARENT).all()
    note = call(control.describe_moved, "radio-colour-by.value", "moved", parent.id)
    assert f"Run {parent.id} has no parent run" in note
    legend = " ".join(texts(call(legends.draw_colour_legend, "radio-colour-by.value", "moved", 0,
                                 parent.id)))
    assert "this run has no parent run" in legend
    assert call(control.describe_moved, "radio-colour-by.value", "error", parent.id) == ""


def test_the_retraining_panel_lists_the_images_that_moved_most(runs):
    parent, child = runs
    listing = retrain.most_moved(child)
    ids_ = child.images["image_id"].astype(str).tolist()
    assert all(f"{ids_[r]} (4.0)" in listing.children for r in MOVED_ROWS["fea"])
    assert retrain.most_moved(parent) is None
    assert moved_since(child, parent)["fea"][MOVED_ROWS["fea"]] == pytest.approx(4.0)


@pytest.mark.browser
def test_choosing_moved_since_parent_colours_a_child_run_and_explains_a_parentless_one(
        dash_duo, tmp_path, monkeypatch):
    from dash.testing.wait import until

    from app import create_app
    from tests.test_browser import figure_data

    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    parent = write_synthetic_run(tmp_path / "data", n=60)
    child = write_child(tmp_path / "data", parent)
    patient(dash_duo)
    dash_duo.start_server(create_app(tmp_path / "data"), port=free_port())
    dash_duo.wait_for_text_to_equal("#header-fea", "60 images")  # the newest run: the child
    dash_duo.find_element("#radio-colour-by input[value='moved']").click()
    dash_duo.wait_for_contains_text("#colour-legend", f"Moved since parent run {parent.id}")
    moved = moved_since(child, parent)
    for space in ("act", "fea", "prd"):
        until(lambda s=space: np.allclose(figure_data(
            dash_duo, f"view-{s}", "Array.from(gd._fullData[0].marker.color)"), moved[s],
            atol=1e-5), 40)
    dash_duo.wait_for_contains_text("#text-moved-status", "in typical neighbour spacings")

    dash_duo.select_dcc_dropdown("#run-picker", index=1)  # the parent, which has none
    dash_duo.wait_for_contains_text("#text-moved-status", f"Run {parent.id} has no parent run")
    dash_duo.wait_for_contains_text("#colour-legend", "this run has no parent run")
    until(lambda: set(figure_data(dash_duo, "view-fea",
                                  "Array.from(gd._fullData[0].marker.color)")) == {-1}, 40)
    dash_duo.driver.save_screenshot(str(tmp_path / "moved-since-parent.png"))
    assert dash_duo.get_logs() == []
