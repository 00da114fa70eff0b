"""The server trusts nothing the browser sends: crafted values reach the callbacks (directly, and
through the real Flask server) and get a message or no change, never a 500 or a wrong image."""

from __future__ import annotations

import json
from contextvars import copy_context

import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.exceptions import PreventUpdate

from callbacks import audit, detail, retrain, selection
from callbacks import corrections as correction_callbacks
from components import ids
from pipeline import corrections
from pipeline.store import RUNS
from tests.conftest import write_synthetic_run

N = 60


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    return write_synthetic_run(tmp_path / "data", n=N)


def call(callback, trigger, *args, value=1):
    """Call a callback as Dash would, with `trigger` (an id and property) as what fired."""
    def inside():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": value}]))
        return callback(*args)
    return copy_context().run(inside)


def text_of(component) -> str:
    return json.dumps(component.to_plotly_json() if hasattr(component, "to_plotly_json")
                      else component, default=lambda c: c.to_plotly_json())


def tickets(run) -> list[str]:
    return sorted(p.name for p in (run.data_dir / RUNS).glob(".ticket-*"))


def test_retraining_refuses_a_billion_epochs_with_a_message(run):
    request, status = retrain.request_retraining(1, run.id, 1_000_000_000)
    assert request is no_update
    assert "epochs must be a whole number from 1 to 200" in text_of(status)
    for crafted in (0, -3, 2.5, "7", True, float("nan"), [3]):
        request, _ = retrain.request_retraining(1, run.id, crafted)
        assert request is no_update, crafted
    assert tickets(run) == []


def test_a_job_request_is_a_ticket_the_browser_cannot_forge(run):
    request, _ = retrain.request_retraining(1, run.id, 200)
    assert set(request) == {"ticket"}  # the epochs and labels stay on the server
    crafted = {"run": run.id, "epochs": 1_000_000_000, "corrections": [],
               "ticket": "0" * 32}
    result, status = retrain.run_retraining(lambda _: None, crafted)
    assert result is no_update
    assert "already started or has expired" in text_of(status)
    result, status = retrain.run_retraining(lambda _: None, {"ticket": "../../etc/passwd"})
    assert result is no_update and "is not a retraining request this server made" in \
        text_of(status)
    assert tickets(run) == [f".ticket-{request['ticket']}.json"]  # the real one, untouched


@pytest.mark.parametrize("index", [-1, N, 10**9, "3", 2.5, [1], True])
def test_an_image_number_outside_the_run_is_named_not_wrapped_or_crashed(run, index):
    title, table, neighbours = detail.describe_detail(index, 0.5, run.id)
    assert title.startswith("Cannot open that image: the image number in run")
    assert f"from 0 to {N - 1}" in title and table is None and neighbours is None
    figure = detail.draw_detail_image(index, "Inferno", run.id)
    assert "Cannot show that image" in json.dumps(figure)


def test_the_last_image_opens_only_by_its_own_number(run):
    title, _, _ = detail.describe_detail(N - 1, 0.5, run.id)
    assert title.startswith(f"#{N - 1} ")
    title, _, _ = detail.describe_detail(-1, 0.5, run.id)
    assert not title.startswith(f"#{N - 1}")


def test_a_crafted_selection_is_checked_and_deduplicated(run):
    strip = detail.show_thumbnails([3, 3, 5], run.id)
    assert strip[0].children == "2 selected"
    note = detail.show_thumbnails([3, -1], run.id)
    assert "Cannot show the selection" in note.children
    assert "Cannot show the selection" in detail.show_thumbnails("0,1", run.id).children
    with pytest.raises(PreventUpdate):  # nothing opens, the image shown stays
        call(detail.open_detail, f"{ids.STORE_SELECTION}.data",
             None, None, None, [], [], [N + 5], run.id, None)
    with pytest.raises(PreventUpdate):
        call(detail.open_detail, json.dumps({"index": -1, "type": ids.THUMB}) + ".n_clicks",
             None, None, None, [1], [], [], run.id, None)


def test_a_correction_of_an_attribute_or_image_that_does_not_exist_writes_nothing(run):
    flip = f"{ids.FLIP_LABEL}.n_clicks"
    for column, index in ((999, 3), (-1, 3), ("2", 3), (0, -1), (0, N)):
        _, status, _ = call(correction_callbacks.write_correction, flip, 1, None, column, "",
                            "ana", index, run.id)
        assert "text-danger" in text_of(status), (column, index)
    _, status, _ = call(correction_callbacks.write_correction, flip, 1, None, 0, {"x": 1},
                        "ana", 3, run.id)
    assert "the note must be text" in text_of(status)
    assert corrections.history(run.data_dir).empty


def test_a_hostile_run_id_changes_nothing(run):
    for run_id in ("../../etc", ["x"], 12):
        assert retrain.request_retraining(1, run_id, 3) == (no_update, no_update)
        assert retrain.cancel_retraining(1, run_id) is no_update
        assert retrain.show_new_run(1, {"after": run_id}) is no_update
        assert audit.export_corrections(1, run_id) is no_update


def test_crafted_audit_rows_and_groups_open_and_export_nothing(run):
    for index in ("-1/0", f"{N}/0", "3/99", "x", 7):
        opened = call(audit.open_audit_row, json.dumps({"index": index, "type": ids.AUDIT_ROW})
                      + ".n_clicks", [1], run.id)
        assert opened == (no_update, no_update), index
    opened = call(audit.open_audit_row, json.dumps({"index": "4/2", "type": ids.AUDIT_ROW})
                  + ".n_clicks", [1], run.id)
    assert opened == (4, [4])
    groups = [{"run": run.id, "name": "g", "colour": "#000", "indices": [1, 2]}]
    for k in (1, -1, "0"):
        trigger = json.dumps({"index": k, "type": ids.GROUP_EXPORT}) + ".n_clicks"
        assert call(selection.export_csv, trigger, None, [1], [], groups, 0.5,
                    run.id) is no_update, k
    bad = [{"run": run.id, "name": "g", "colour": "#000", "indices": [1, 10**6]}]
    trigger = json.dumps({"index": 0, "type": ids.GROUP_EXPORT}) + ".n_clicks"
    assert call(selection.export_csv, trigger, None, [1], [], bad, 0.5, run.id) is no_update


# ---------------------------------------------------------------- through the real server


def post(client, outputs: list[tuple[str, str]], inputs: list[dict], state=(),
         headers=None) -> object:
    """POST one callback request as the page would, with whatever values we like."""
    body = {
        "output": f"..{'...'.join(f'{i}.{p}' for i, p in outputs)}.."
        if len(outputs) > 1 else f"{outputs[0][0]}.{outputs[0][1]}",
        "outputs": [{"id": i, "property": p} for i, p in outputs]
        if len(outputs) > 1 else {"id": outputs[0][0], "property": outputs[0][1]},
        "inputs": inputs, "state": list(state),
        "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"],
    }
    return client.post("/_dash-update-component", json=body, headers=headers or {})


@pytest.fixture
def client(run):
    from app import create_app

    return create_app(run.data_dir).server.test_client()


def test_the_server_answers_a_crafted_image_number_with_a_message_not_a_500(client, run):
    response = post(
        client,
        [(ids.DETAIL_TITLE, "children"), (ids.DETAIL_TABLE, "children"),
         (ids.NEIGHBOURS, "children")],
        [{"id": ids.STORE_DETAIL_INDEX, "property": "data", "value": -1},
         {"id": ids.THRESHOLD, "property": "value", "value": 0.5},
         {"id": ids.THRESHOLD_MODE, "property": "value", "value": "per"}],
        [{"id": ids.RUN_PICKER, "property": "value", "value": run.id}])
    assert response.status_code == 200
    title = response.get_json()["response"][ids.DETAIL_TITLE]["children"]
    assert title.startswith("Cannot open that image") and f"from 0 to {N - 1}" in title


def test_the_server_refuses_a_crafted_billion_epochs_with_a_message(client, run):
    response = post(
        client,
        [(ids.STORE_RETRAIN_REQUEST, "data"), (ids.RETRAIN_STATUS, "children")],
        [{"id": ids.RETRAIN, "property": "n_clicks", "value": 1}],
        [{"id": ids.RUN_PICKER, "property": "value", "value": run.id},
         {"id": ids.RETRAIN_EPOCHS, "property": "value", "value": 1_000_000_000}])
    assert response.status_code == 200
    answer = response.get_json()["response"]
    assert ids.STORE_RETRAIN_REQUEST not in answer  # no job was asked for
    assert "from 1 to 200" in json.dumps(answer[ids.RETRAIN_STATUS])
    assert tickets(run) == []
