"""A corrections.sqlite that is not a database (overwritten, truncated by a full disk): one banner
names it, corrections are off, and everything else of the dashboard keeps working."""

from __future__ import annotations

import json

import pytest

from callbacks import audit, common, detail, legends
from callbacks import corrections as correction_callbacks
from components import ids
from pipeline import corrections
from tests.conftest import write_synthetic_run
from tests.test_server_inputs import call, post, text_of

N = 60
GARBAGE = b"\x00\xffnot a database at all" * 200


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_synthetic_run(tmp_path / "data", n=N)
    corrections.set_label(run.data_dir, "synthetic-0", run.images["image_id"].iloc[3], "Ring",
                          1 - int(run.act[3, run.attributes.index("Ring")]), author="ana")
    corrections.db_path(run.data_dir).write_bytes(GARBAGE)
    return run


def test_the_banner_names_the_file_and_says_exploring_works(run):
    text, shown = correction_callbacks.warn_corrections_unavailable("/", 0, None)
    path = corrections.db_path(run.data_dir)
    assert shown is True
    assert text.startswith(f"Label corrections unavailable: {path} is not a corrections "
                           "database (file is not a database).")
    assert text.endswith("Exploring works; corrections are off until it is repaired or moved "
                         "aside.")
    path.unlink()  # moved aside: the banner goes at the next poll
    assert correction_callbacks.warn_corrections_unavailable("/", 1, text) == (None, False)


def test_detail_table_markers_and_audit_show_the_annotated_labels(run):
    title, table, strip = detail.describe_detail(3, 0.5, run.id)
    assert title.startswith("#3 ") and table is not None and strip
    assert len(common.corrected_rows(run)) == 0
    act, corrected, mine = common.image_labels(run, 3)
    assert (act == run.act[3]).all() and not corrected.any() and mine.empty
    assert legends.hover_card(run, 3)
    rows, summary, source = audit.show_audit(run.id, 0)
    assert rows is not None and summary.startswith("Corrections unavailable")
    assert source.startswith("Ranked on in-sample predictions")
    assert correction_callbacks.mark_detail_table(1, 3, 0.5, run.id) is not None


def test_flip_is_off_and_refused_with_a_message(run):
    options, listing, flip_off, undo_off = correction_callbacks.describe_labels(3, 0, run.id)
    assert len(options) == len(run.attributes) and flip_off and undo_off
    assert "Corrections are off" in text_of(listing)
    _, status, _ = call(correction_callbacks.write_correction, f"{ids.FLIP_LABEL}.n_clicks", 1,
                        None, 0, "", "ana", 3, run.id)
    assert "not a database" in text_of(status)
    assert corrections.db_path(run.data_dir).read_bytes() == GARBAGE  # left for repair


def test_the_server_answers_every_correction_callback_with_200(run):
    from app import create_app

    client = create_app(run.data_dir).server.test_client()
    index = {"id": ids.STORE_DETAIL_INDEX, "property": "data", "value": 3}
    picker = {"id": ids.RUN_PICKER, "property": "value", "value": run.id}
    answers = [
        post(client, [(ids.CORRECTION_ATTRIBUTE, "options"), (ids.CORRECTION_LIST, "children"),
                      (ids.FLIP_LABEL, "disabled"), (ids.UNDO_CORRECTION, "disabled")],
             [index, {"id": ids.STORE_CORRECTIONS, "property": "data", "value": 0}, picker]),
        post(client, [(ids.DETAIL_TITLE, "children"), (ids.DETAIL_TABLE, "children"),
                      (ids.NEIGHBOURS, "children")],
             [index, {"id": ids.THRESHOLD, "property": "value", "value": 0.5},
              {"id": ids.THRESHOLD_MODE, "property": "value", "value": "per"}], [picker]),
        post(client, [(ids.CORRECTIONS_ALERT, "children"), (ids.CORRECTIONS_ALERT, "is_open")],
             [{"id": ids.URL, "property": "pathname", "value": "/"},
              {"id": ids.CORRECTIONS_POLL, "property": "n_intervals", "value": 1}],
             [{"id": ids.CORRECTIONS_ALERT, "property": "children", "value": None}]),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert "not a corrections database" in json.dumps(answers[2].get_json())


@pytest.mark.browser
def test_corrupt_database_shows_one_banner_and_the_page_still_works(dash_duo, run):
    from app import create_app
    from tests.conftest import free_port, patient
    from tests.test_retrain import click, open_audit_tab

    patient(dash_duo)
    dash_duo.start_server(create_app(run.data_dir), port=free_port())
    dash_duo.wait_for_contains_text(f"#{ids.CORRECTIONS_ALERT}", "Label corrections unavailable")
    banner = dash_duo.find_element(f"#{ids.CORRECTIONS_ALERT}").text
    assert str(corrections.db_path(run.data_dir)) in banner and "Exploring works" in banner
    dash_duo.wait_for_text_to_equal("#header-fea", f"{N} images")  # the views are drawn
    open_audit_tab(dash_duo)
    dash_duo.wait_for_contains_text("#text-audit-summary", "Corrections unavailable")
    click(dash_duo, ".audit-open")  # an image opens from the audit list
    dash_duo.wait_for_contains_text("#text-detail-title", " · ")
    dash_duo.wait_for_element("#graph-detail-image .heatmaplayer")
    assert len(dash_duo.find_elements("#detail-act-prd-table tbody tr")) == len(run.attributes)
    assert len(dash_duo.find_elements(f"#{ids.CORRECTIONS_ALERT}")) == 1
    assert dash_duo.get_logs() == []
