"""Per-attribute decision thresholds: pipeline functions judge each attribute at its own, the
dashboard's one definition (callbacks.common.thresholds_in_force) checks what the browser sends,
and the control panel offers the run's validated thresholds or one for all."""

from __future__ import annotations

import io
import json
from contextvars import copy_context

import numpy as np
import pandas as pd
import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict

from callbacks import analyses, control, detail, selection
from callbacks.common import Refused, threshold_words, thresholds_in_force
from components import ids
from components.detail import act_prd_table
from components.encoding import colour_values
from components.figures import petal_lengths
from pipeline.analyses.cooccurrence import conditional_errors
from pipeline.analyses.uncertainty import bootstrap_intervals
from pipeline.errors import PipelineError
from pipeline.filters import filter_mask
from pipeline.metrics import (
    OUTCOMES,
    counts,
    evaluate,
    group_summary,
    outcomes,
    run_thresholds,
)
from pipeline.retrain import compare_runs
from tests.conftest import N, write_synthetic_run
from tests.markup import tree

# Two attributes with the same probabilities: only their thresholds tell them apart.
ACT = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=np.uint8)
PRD = np.array([[0.6, 0.6], [0.4, 0.4], [0.6, 0.6], [0.4, 0.4]], dtype=np.float32)
OWN = np.array([0.3, 0.7], dtype=np.float32)  # attribute 0 says yes to all, 1 to none


def names(codes) -> list[list[str]]:
    return [[OUTCOMES[c] for c in row] for row in np.asarray(codes)]


def test_each_attribute_is_judged_at_its_own_threshold():
    assert names(outcomes(ACT, PRD, OWN)) == [["TP", "FN"], ["TP", "FN"], ["FP", "TN"],
                                             ["FP", "TN"]]
    assert names(outcomes(ACT, PRD, 0.5)) == [["TP", "TP"], ["FN", "FN"], ["FP", "FP"],
                                              ["TN", "TN"]]
    tally = counts(ACT, PRD, OWN)
    assert {k: v.tolist() for k, v in tally.items()} == {
        "TP": [2, 0], "FP": [2, 0], "FN": [0, 2], "TN": [0, 2]}
    overall = group_summary(ACT, PRD, OWN)["overall"]
    assert (overall["TP"], overall["FP"], overall["FN"], overall["TN"]) == (2, 2, 2, 2)


def test_a_filter_on_one_attribute_uses_that_attributes_threshold():
    # Attribute 1 alone: its own 0.7 keeps no image predicted, where attribute 0's 0.3 keeps all.
    assert filter_mask(ACT, PRD, OWN, [1], on="prd").tolist() == [False] * 4
    assert filter_mask(ACT, PRD, OWN, [0], on="prd").tolist() == [True] * 4
    assert filter_mask(ACT, PRD, OWN, [1], on="FN").tolist() == [True, True, False, False]
    assert filter_mask(ACT, PRD, OWN, [0, 1], match="all", on="TP").tolist() == [False] * 4


def test_outcome_colours_detail_table_and_petals_follow_the_attributes_own_threshold():
    codes, _, _ = colour_values("outcome", ACT, PRD, OWN, 1, "#123456")
    assert [OUTCOMES[int(c)] for c in codes] == ["FN", "FN", "TN", "TN"]
    table = tree(act_prd_table(["a", "b"], ["#111111", "#222222"], ACT[0], PRD[0], OWN))
    rows = table.children[0].children[1].children  # table, then its body's rows
    assert [r.className for r in rows] == ["outcome-TP", "outcome-FN"]
    badges = [r.children[3].children[0] for r in rows]
    assert [b.title for b in badges] == ["threshold 0.30", "threshold 0.70"]
    assert petal_lengths("TP", ACT, PRD, OWN)[:, 1].tolist() == [0, 0, 0, 0]
    assert petal_lengths("FN", ACT, PRD, OWN)[:, 1].tolist() == [0.5, 0.5, 0, 0]


def test_cooccurrence_and_intervals_count_each_attribute_at_its_own_threshold():
    table = conditional_errors(ACT, PRD, OWN, "fn")
    assert table["own"].tolist() == [0.0, 1.0]  # 0 misses nothing at 0.3; 1 misses all at 0.7
    both = conditional_errors(ACT, PRD, 0.5, "fn")
    assert both["own"].tolist() == [0.5, 0.5]
    recall = bootstrap_intervals(ACT, PRD, OWN)["per_attribute"]["recall"]
    assert recall[0].tolist() == [1.0, 1.0] and recall[1].tolist() == [0.0, 0.0]


def test_run_thresholds_come_in_attribute_order_and_broken_ones_are_named():
    names_ = ["a", "b"]
    assert run_thresholds({"id": "r"}, names_) is None
    assert run_thresholds({"thresholds": {"b": 0.7, "a": 0.3}}, names_).tolist() == [0.3, 0.7]
    for bad in ({"a": 0.3}, {"a": 0.3, "b": 7}, {"a": 0.3, "b": "0.5"}, {"a": 0.3, "b": None},
                [0.3, 0.7]):
        with pytest.raises(PipelineError, match="run r: its thresholds"):
            run_thresholds({"id": "r", "thresholds": bad}, names_)


def test_the_metrics_command_scores_at_the_runs_own_thresholds_and_names_broken_ones(
        tmp_path, capsys):
    from pipeline.attributes import ATTRIBUTES
    from pipeline.cli import main

    data = tmp_path / "data"
    own = own_thresholds(ATTRIBUTES)
    run = write_synthetic_run(data, n=N, meta={"thresholds": own})
    assert main(["metrics", "--run", run.id, "--data-dir", str(data), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "each attribute's own threshold" in out and "0.650" in out
    broken = write_synthetic_run(data, n=N, seed=2, meta={"thresholds": {**own, "other": 0.5}})
    assert main(["metrics", "--run", broken.id, "--data-dir", str(data)]) == 2
    assert f"run {broken.id}: its thresholds do not name each" in capsys.readouterr().err


# ---------------------------------------------------------------- the dashboard's definition


def own_thresholds(attributes) -> dict:
    """0.35 and 0.65 in turn: far enough from 0.5 that the counts move."""
    return {a: (0.35 if j % 2 == 0 else 0.65) for j, a in enumerate(attributes)}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """(a run without thresholds, a run with them) in one data directory."""
    from pipeline.attributes import ATTRIBUTES

    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    plain = write_synthetic_run(tmp_path / "data", n=N)
    tuned = write_synthetic_run(tmp_path / "data", n=N, seed=1,
                                meta={"thresholds": own_thresholds(ATTRIBUTES)})
    return plain, tuned


def expected(run) -> np.ndarray:
    return np.array([run.meta["thresholds"][a] for a in run.attributes], dtype=np.float32)


def test_thresholds_in_force_are_the_runs_own_or_the_slider(runs):
    plain, tuned = runs
    np.testing.assert_array_equal(thresholds_in_force(tuned, "per", 0.5), expected(tuned))
    np.testing.assert_array_equal(thresholds_in_force(tuned, "one", 0.2), np.full(17, 0.2,
                                                                                  np.float32))
    np.testing.assert_array_equal(thresholds_in_force(plain, "per", 0.4), np.full(17, 0.4,
                                                                                  np.float32))
    assert threshold_words(tuned, "per", 0.5) == "the validated per-attribute thresholds"
    assert threshold_words(tuned, "one", 0.25) == threshold_words(plain, "per", 0.25) == (
        "threshold 0.25")


@pytest.mark.parametrize("mode", ["both", None, "", 1, True, ["per"], {"mode": "per"}])
def test_a_crafted_threshold_choice_is_refused(runs, mode):
    with pytest.raises(Refused, match="threshold choice must be one of"):
        thresholds_in_force(runs[1], mode, 0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, 1.5, "0.5", True, [0.5]])
def test_a_crafted_threshold_value_is_refused_whatever_the_choice(runs, value):
    for mode in ("per", "one"):
        with pytest.raises(Refused, match="threshold must be a number from 0 to 1"):
            thresholds_in_force(runs[1], mode, value)


def call(callback, trigger, *args):
    def inside():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": 1}]))
        return callback(*args)
    return copy_context().run(inside)


def text_of(component) -> str:
    return json.dumps(component.to_plotly_json(), default=lambda c: c.to_plotly_json(),
                      ensure_ascii=False)


def tile_counts(component) -> dict[str, int]:
    """The first TP/FP/FN/TN tiles in a component tree (the group's own, before the whole run's)."""
    found = {}

    def walk(c):
        if isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
        elif hasattr(c, "children"):
            kind = (getattr(c, "className", "") or "").split()
            if "tile" in kind and len(kind) == 2:
                value, label = (x.children for x in c.children)
                found.setdefault(label, value)
            walk(c.children)

    walk(component)
    return {k: int(found[k].replace(",", "")) for k in ("TP", "FP", "FN", "TN")}


def test_the_whole_run_is_scored_at_the_runs_own_thresholds_until_one_for_all_is_chosen(runs):
    _, tuned = runs
    trigger = f"{ids.THRESHOLD_MODE}.value"
    _, per = call(selection.summarise_selection, trigger, [], 0.5, tuned.id, "with", 0, "per")
    _, one = call(selection.summarise_selection, trigger, [], 0.5, tuned.id, "with", 0, "one")
    want_per = group_summary(tuned.act, tuned.prd, expected(tuned))["overall"]
    want_one = group_summary(tuned.act, tuned.prd, 0.5)["overall"]
    assert want_per["TP"] != want_one["TP"] and want_per["FP"] != want_one["FP"]
    for block, want in ((per, want_per), (one, want_one)):
        assert tile_counts(block) == {k: want[k] for k in ("TP", "FP", "FN", "TN")}
    assert "at the validated per-attribute thresholds" in text_of(per)
    assert "at threshold 0.50" in text_of(one)


def test_the_detail_table_and_the_matrix_follow_the_choice(runs):
    _, tuned = runs
    trigger = f"{ids.THRESHOLD_MODE}.value"
    j = 1  # an odd attribute: its own threshold is 0.65
    index = int(np.flatnonzero((np.asarray(tuned.prd)[:, j] >= 0.5)
                               & (np.asarray(tuned.prd)[:, j] < 0.65))[0])
    _, per, _ = call(detail.describe_detail, trigger, index, 0.5, tuned.id, "per")
    _, one, _ = call(detail.describe_detail, trigger, index, 0.5, tuned.id, "one")
    def badge(table):  # the outcome shown in row j (the table's body, then the row's 4th cell)
        row = tree(table).children[0].children[1].children[j]
        return row.children[3].children[0].children[0]

    said = {"per": badge(per), "one": badge(one)}
    assert said["per"] in ("FN", "TN") and said["one"] in ("TP", "FP")
    figure, note = call(analyses.draw_cooccurrence, trigger, "fn", "all", 0.5, [], "any", "act",
                        [], [], [], tuned.id, "with", 0, "per")
    assert note == f"All images: {N} images counted at the validated per-attribute thresholds."


def test_the_exported_csv_names_the_threshold_each_outcome_was_decided_at(runs):
    _, tuned = runs
    trigger = f"{ids.EXPORT_SELECTION}.n_clicks"
    sent = call(selection.export_csv, trigger, 1, [], [0, 1, 2], [], 0.5, tuned.id, "with", "per")
    frame = pd.read_csv(io.StringIO(sent["content"]))
    for j, name in enumerate(tuned.attributes):
        own = float(expected(tuned)[j])
        assert frame[f"threshold {name}"].tolist() == pytest.approx([own] * 3, abs=1e-4)
        said = np.asarray(tuned.prd)[[0, 1, 2], j] >= own
        assert (frame[f"outcome {name}"].isin(["TP", "FP"]).to_numpy() == said).all()


def test_retraining_compares_each_run_at_its_own_thresholds(runs):
    plain, tuned = runs
    table = compare_runs(plain, tuned)
    test = np.asarray(tuned.images["split"]) == "test"
    act = np.asarray(tuned.act)[test]
    for run, side, limits in ((plain, "before", 0.5), (tuned, "after", expected(tuned))):
        scored = evaluate(act, np.asarray(run.prd)[test], limits)["per_attribute"]
        np.testing.assert_allclose(table[f"P {side}"][:-1], scored["precision"], equal_nan=True)
    at_half = evaluate(act, np.asarray(tuned.prd)[test], 0.5)["per_attribute"]
    assert not np.allclose(table["R after"][:-1], at_half["recall"], equal_nan=True)
    one = compare_runs(plain, tuned, threshold=0.5)  # one threshold for both, when asked
    np.testing.assert_allclose(one["R after"][:-1], at_half["recall"], equal_nan=True)


def test_the_panel_lists_each_attributes_threshold_or_says_why_there_is_only_the_slider(runs):
    plain, tuned = runs
    style, listing, note, slider = control.describe_thresholds(tuned.id, "per", 0.5)
    assert style == {} and slider == "threshold-idle"
    text = text_of(listing)
    for name, value in tuned.meta["thresholds"].items():
        assert f'"{name}: {value:.3f}"' in text
    assert "each attribute's threshold (0.35–0.65)" in text
    style, _, note, slider = control.describe_thresholds(tuned.id, "one", 0.7)
    assert style == {} and slider == "" and note == "One for all: 0.70."
    style, listing, note, _ = control.describe_thresholds(plain.id, "per", 0.5)
    assert style == {"display": "none"} and listing is None
    assert "no per-attribute thresholds" in note and note.endswith("One for all: 0.50.")


def test_moving_the_slider_chooses_one_for_all(runs):
    assert control.slider_means_one_for_all(0.7, "per") == "one"
    assert control.slider_means_one_for_all(0.7, "one") is no_update


# ---------------------------------------------------------------- through the real server


def post(client, outputs, inputs, state=()):
    body = {
        "output": f"..{'...'.join(f'{i}.{p}' for i, p in outputs)}..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": inputs, "state": list(state),
        "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"],
    }
    return client.post("/_dash-update-component", json=body)


def value(id_, prop, v) -> dict:
    return {"id": id_, "property": prop, "value": v}


@pytest.mark.parametrize("crafted", [("all of them", 0.5), ("one", float("nan")), ("per", 3)])
def test_the_server_answers_a_crafted_threshold_with_a_message_or_no_change(runs, crafted):
    from app import create_app

    _, tuned = runs
    mode, number = crafted
    client = create_app(tuned.data_dir).server.test_client()
    matrix = post(
        client, [(ids.COOCCURRENCE, "figure"), (ids.COOCCURRENCE_NOTE, "children")],
        [value(ids.COOCCURRENCE_KIND, "value", "fn"),
         value(ids.COOCCURRENCE_GROUP, "value", "all"), value(ids.THRESHOLD, "value", number),
         value(ids.FILTER_ATTRIBUTES, "value", []), value(ids.FILTER_MATCH, "value", "any"),
         value(ids.FILTER_ON, "value", "act"), value(ids.FILTER_DISAGREEING, "value", []),
         value(ids.STORE_SELECTION, "data", []), value(ids.STORE_GROUPS, "data", []),
         value(ids.RUN_PICKER, "value", tuned.id), value(ids.LABELS_USED, "value", "with"),
         value(ids.STORE_CORRECTIONS, "data", 0), value(ids.THRESHOLD_MODE, "value", mode),
         value(ids.SELECTION_TABS, "active_tab", "cooccurrence")])
    assert matrix.status_code == 200
    note = matrix.get_json()["response"][ids.COOCCURRENCE_NOTE]["children"]
    assert "threshold" in note and "counted" not in note
    scores = post(
        client, [(ids.SELECTION_TITLE, "children"), (ids.SELECTION_SUMMARY, "children")],
        [value(ids.STORE_SELECTION, "data", []), value(ids.THRESHOLD, "value", number),
         value(ids.RUN_PICKER, "value", tuned.id), value(ids.LABELS_USED, "value", "with"),
         value(ids.STORE_CORRECTIONS, "data", 0), value(ids.THRESHOLD_MODE, "value", mode),
         value(ids.STORE_VIEWS_DRAWN, "data", True)])
    assert scores.status_code == 204  # no change: the numbers on screen stay as they were


# ---------------------------------------------------------------- in the browser


def tiles(dash_duo) -> dict[str, int]:
    """The whole run's TP/FP/FN/TN tiles as the page shows them."""
    found = {el.find_element("css selector", ".tile-label").text:
             el.find_element("css selector", ".tile-value").text
             for el in dash_duo.find_elements("#selection-summary .tile")}
    return {k: int(found[k].replace(",", "")) for k in ("TP", "FP", "FN", "TN") if k in found}


def wait_for_tiles(dash_duo, want: dict):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    want = {k: want[k] for k in ("TP", "FP", "FN", "TN")}
    # The summary is redrawn while it is read: a vanished tile means "read again".
    WebDriverWait(dash_duo.driver, dash_duo._wait_timeout,
                  ignored_exceptions=[StaleElementReferenceException]).until(
        lambda _: tiles(dash_duo) == want, message=f"tiles never showed {want}")


@pytest.mark.browser
def test_the_panel_shows_the_runs_thresholds_scores_at_them_and_the_slider_overrides(dashboard):
    from selenium.webdriver.common.keys import Keys

    from pipeline.attributes import ATTRIBUTES

    dash_duo, plain = dashboard
    choice = f"#{ids.THRESHOLD_CHOICE}"
    dash_duo.wait_for_contains_text(f"#{ids.THRESHOLD_NOTE}", "no per-attribute thresholds")
    assert not dash_duo.find_element(choice).is_displayed()
    wait_for_tiles(dash_duo, group_summary(plain.act, plain.prd, 0.5)["overall"])

    tuned = write_synthetic_run(plain.data_dir, n=N, seed=1,
                                meta={"thresholds": own_thresholds(ATTRIBUTES)})
    dash_duo.driver.refresh()  # the run list is read on page load; the newest run opens
    dash_duo.wait_for_contains_text(f"#{ids.THRESHOLD_LIST}", "each attribute's threshold")
    assert dash_duo.find_element(choice).is_displayed()
    listing = dash_duo.find_element(f"#{ids.THRESHOLD_LIST}").get_attribute("textContent")
    for name, own in tuned.meta["thresholds"].items():
        assert f"{name}{own:.2f}" in listing
    per = group_summary(tuned.act, tuned.prd, expected(tuned))["overall"]
    at_half = group_summary(tuned.act, tuned.prd, 0.5)["overall"]
    assert per["TP"] != at_half["TP"]
    wait_for_tiles(dash_duo, per)
    dash_duo.wait_for_contains_text(f"#{ids.SELECTION_SUMMARY}",
                                    "at the validated per-attribute thresholds")

    # Two big steps up from 0.5 with the keyboard, as an analyst would nudge the slider.
    thumb = dash_duo.find_element(f"#{ids.THRESHOLD} [role='slider']")
    dash_duo.driver.execute_script("arguments[0].focus()", thumb)
    thumb.send_keys(Keys.PAGE_UP)
    thumb.send_keys(Keys.PAGE_UP)
    wait_for_tiles(dash_duo, group_summary(tuned.act, tuned.prd, np.float32(0.7))["overall"])
    dash_duo.wait_for_contains_text(f"#{ids.SELECTION_SUMMARY}", "at threshold 0.70")
    assert dash_duo.find_element(
        f"#{ids.THRESHOLD_MODE} input[value='one']").is_selected()

    dash_duo.find_element(f"#{ids.THRESHOLD_MODE} input[value='per']").click()
    wait_for_tiles(dash_duo, per)
    assert dash_duo.get_logs() == []
