"""The saliency overlay in a real browser: an opened image shows where the run's model looked for
its strongest attribute, another attribute can be picked, and a run of imported vectors says
that it has no model to ask."""

from __future__ import annotations

import numpy as np
import pytest
from dash.testing.wait import until

from app import create_app
from pipeline.saliency import run_saliency, strongest_attribute
from tests.conftest import WAIT_S, free_port, patient
from tests.test_browser import box_select, figure_data, gap_box
from tests.test_imageless_run import write_imageless_run
from tests.test_retrain import choose, wait_for_prop
from tests.test_saliency import give_model

pytestmark = pytest.mark.browser


def layers(dash_duo) -> list[str]:
    """The names of the detail image's traces (the image's is empty)."""
    return figure_data(dash_duo, "graph-detail-image",
                       "gd && gd.data ? gd.data.map(t => t.name || '') : []")


def open_first_of_a_box(dash_duo, run) -> int:
    """Select most of the ACT view: the first image of the selection opens large."""
    (x0, x1, y0, y1), inside = gap_box(np.asarray(run.emb("act")), 0.1, 0.9)
    box_select(dash_duo, "view-act", x0, x1, y0, y1)
    first = int(inside[0])
    dash_duo.wait_for_contains_text("#text-detail-title", f"#{first} ·")
    return first


def test_an_opened_image_shows_where_the_model_looked_and_another_attribute_can_be_picked(
        dashboard, tmp_path):
    dash_duo, run = dashboard
    give_model(run)
    first = open_first_of_a_box(dash_duo, run)
    strongest = strongest_attribute(run, first)
    wait_for_prop(dash_duo, "dropdown-saliency-attribute", "value", strongest, WAIT_S)
    # Another attribute, one the (untrained) model found evidence for in this image.
    other = next(j for j, a in enumerate(run.attributes)
                 if a != strongest and run_saliency(run, first, a).any())
    choose(dash_duo, "#dropdown-saliency-attribute", other)
    until(lambda: layers(dash_duo) == ["", f"saliency · {run.attributes[other]}"], WAIT_S)
    title = figure_data(dash_duo, "graph-detail-image", "gd._fullData[1].colorbar.title.text")
    assert title.startswith(f"where the model looked for<br>{run.attributes[other]}")
    assert figure_data(dash_duo, "graph-detail-image", "gd.data[1].opacity") == 0.6
    dash_duo.driver.save_screenshot(str(tmp_path / "saliency.png"))
    assert dash_duo.get_logs() == []


def test_a_run_of_imported_vectors_says_it_has_no_model_to_ask(dash_duo, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("XRAE_DATA_DIR", str(data_dir))
    run = write_imageless_run(data_dir, n=60)
    patient(dash_duo)
    dash_duo.start_server(create_app(data_dir), port=free_port())
    dash_duo.wait_for_text_to_equal("#header-fea", f"{len(run)} images")
    open_first_of_a_box(dash_duo, run)
    dash_duo.wait_for_contains_text("#text-saliency-note", "keeps no model")
    assert "imported" in dash_duo.find_element("#text-saliency-note").text
    assert layers(dash_duo) == []  # no image, no layer: the figure names the missing image
    assert dash_duo.get_logs() == []
