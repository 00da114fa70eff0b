"""The analyses as panels: the co-occurrence matrix, the cross-space disagreement and the
intervals on group metrics, called as Dash would call them on a real run on disk, and in a real
browser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dash import no_update

from callbacks import analyses, legends, selection, views
from pipeline import corrections
from pipeline.analyses.cooccurrence import cell_rows, conditional_errors
from pipeline.analyses.disagreement import run_disagreement
from pipeline.analyses.uncertainty import bootstrap_intervals, differ
from tests.markup import tree
from tests.test_callbacks import call, texts
from tests.test_callbacks import run as run  # noqa: F401,PLC0414  (the fixture)

NO_FILTER = ([], "any", "act", [])


def matrix(run, kind="fn", group="all", threshold=0.5, filters=NO_FILTER, selection_rows=(),
           groups=(), which="with", trigger="radio-cooccurrence-kind.value"):
    return call(analyses.draw_cooccurrence, trigger, kind, group, threshold, *filters,
                list(selection_rows), list(groups), run.id, which, 0)


def click(run, i, j, kind="fn", group="all", threshold=0.5, filters=NO_FILTER,
          selection_rows=(), groups=(), which="with", curve=0):
    data = {"points": [{"curveNumber": curve, "x": j, "y": i}]}
    return call(analyses.select_cell, "cooccurrence-matrix.clickData", data, kind, group,
                threshold, *filters, list(selection_rows), list(groups), run.id, which)


def shown_change(figure) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in figure["data"][0]["z"]])


def test_the_matrix_shows_how_each_attribute_changes_the_missed_labels_of_another(run):
    figure, note = matrix(run)
    want = conditional_errors(run.act, run.prd, 0.5, "fn")
    np.testing.assert_allclose(shown_change(figure), want["change"], atol=1e-4)
    assert figure["data"][1]["text"] == [f"{100 * v:.0f}" for v in want["own"]]
    assert note == "All images: 60 images counted at threshold 0.50."
    i, j = np.argwhere(want["n_with"] > 0)[1]
    hover = figure["data"][0]["text"][i][j]
    assert f"({want['errors_with'][i, j]} of {want['n_with'][i, j]})" in hover
    assert f"({want['errors_without'][i, j]} of {want['n_without'][i, j]})" in hover


def test_the_matrix_follows_kind_threshold_filter_and_group(run):
    act = np.asarray(run.act)
    passing = np.flatnonzero(act[:, 2] == 1)  # the filter: attribute 2 labelled
    groups = [{"run": run.id, "name": "first half", "colour": "#000", "indices": list(range(30))}]
    figure, note = matrix(run, "fp", "0", 0.3, ([2], "any", "act", []), groups=groups)
    rows = passing[passing < 30]
    want = conditional_errors(act, run.prd, 0.3, "fp", rows)
    np.testing.assert_allclose(shown_change(figure), want["change"], atol=1e-4)
    assert note == f"first half: {len(rows)} images counted at threshold 0.30."
    assert "FP rate" in figure["data"][1]["name"]


def test_the_current_selection_as_group_and_all_images_while_none_is_selected(run):
    rows = [3, 8, 9, 14, 20, 21, 33, 40, 47, 52]
    figure, note = matrix(run, group="selection", selection_rows=rows)
    want = conditional_errors(run.act, run.prd, 0.5, "fn", rows)
    np.testing.assert_allclose(shown_change(figure), want["change"], atol=1e-4)
    assert note.startswith("Current selection: 10 images")
    assert matrix(run, group="selection")[1].startswith("All images: 60 images")
    # A new selection redraws the matrix only when the matrix counts the selection.
    assert matrix(run, selection_rows=rows, trigger="store-selection.data") == (no_update,
                                                                                no_update)


def test_the_matrix_is_scored_on_the_labels_used(run, tmp_path):
    j = 4
    image = int(np.flatnonzero(np.asarray(run.act)[:, j] == 1)[0])
    corrections.set_label(tmp_path / "data", run.meta["dataset"], run.images["image_id"][image],
                          run.attributes[j], 0, author="ana")
    with_corrections = matrix(run)[0]["data"][1]["text"]
    annotated = matrix(run, which="annotated")[0]["data"][1]["text"]
    act = np.asarray(run.act).copy()
    assert annotated[j] == f"{100 * conditional_errors(act, run.prd)['own'][j]:.0f}"
    act[image, j] = 0
    assert with_corrections[j] == f"{100 * conditional_errors(act, run.prd)['own'][j]:.0f}"


def test_clicking_a_cell_selects_the_images_behind_it_in_every_view(run):
    table = conditional_errors(run.act, run.prd, 0.5, "fn")
    i, j = np.unravel_index(np.argmax(np.where(np.eye(17, dtype=bool), 0,
                                               table["errors_with"])), table["errors_with"].shape)
    rows, source = click(run, int(i), int(j))
    assert rows == cell_rows(run.act, run.prd, 0.5, int(i), int(j), "fn").tolist()
    assert len(rows) == table["errors_with"][i, j] > 0
    assert source is None  # no view drew it: every view drops its old box
    diagonal, _ = click(run, int(j), int(j), curve=1)
    assert diagonal == np.flatnonzero((np.asarray(run.act)[:, j] == 1)
                                      & (np.asarray(run.prd)[:, j] < 0.5)).tolist()


def test_a_click_counts_only_the_images_that_pass_the_filter(run):
    act = np.asarray(run.act)
    picked, _ = click(run, 0, 0, "fp", filters=([1], "any", "TN", []))
    passing = np.flatnonzero((act[:, 1] == 0) & (np.asarray(run.prd)[:, 1] < 0.5))
    want = cell_rows(act, run.prd, 0.5, 0, 0, "fp", passing).tolist()
    assert picked == want and len(want) < len(cell_rows(act, run.prd, 0.5, 0, 0, "fp"))


@pytest.mark.parametrize("data", [None, {}, {"points": []}, {"points": [{"x": 99, "y": 0}]},
                                  {"points": [{"x": "BCC", "y": 0}]},
                                  {"points": [{"x": 1.5, "y": 0}]},
                                  {"points": [{"x": True, "y": 0}]}])
def test_a_crafted_click_selects_nothing(run, data):
    got = call(analyses.select_cell, "cooccurrence-matrix.clickData", data, "fn", "all", 0.5,
               *NO_FILTER, [], [], run.id, "with")
    assert got == (no_update, no_update)


def test_a_crafted_kind_or_threshold_is_named_not_drawn(run):
    figure, note = matrix(run, kind="both")
    assert "error kind" in note and "'both'" in note and figure["data"] == []
    assert "threshold" in matrix(run, threshold=7)[1]
    assert click(run, 0, 1, kind="both") == (no_update, no_update)
    # A saved group that is not the run's, or a number past the list, counts all images.
    others = [{"run": "another-run", "name": "theirs", "colour": "#000", "indices": [1]}]
    assert matrix(run, group="0", groups=others)[1].startswith("All images: 60")
    assert matrix(run, group="../x")[1].startswith("All images: 60")


def test_the_group_choices_are_the_runs_saved_groups(run):
    groups = [{"run": run.id, "name": "rings", "indices": [1]},
              {"run": "another-run", "name": "theirs", "indices": [2]}, "junk"]
    options = call(analyses.list_cooccurrence_groups, "store-groups.data", groups, run.id)
    assert [o["label"] for o in options] == ["All images", "Current selection", "rings"]
    assert options[-1]["value"] == "0"


# ---------------------------------------------------------------- in a real browser


def clicked(dash_duo, selector: str) -> bool:
    """Click the first element matching selector; False when the page replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        dash_duo.find_elements(selector)[0].click()
    except (StaleElementReferenceException, IndexError):
        return False
    return True


def open_tab(dash_duo, label: str) -> None:
    link = next(a for a in dash_duo.find_elements("#tabs-selection .nav-link") if a.text == label)
    link.click()


@pytest.mark.browser
def test_a_comparison_left_hidden_is_up_to_date_when_its_tab_opens(dashboard):
    dash_duo, run = dashboard
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('store-selection', {data: [0, 1, 2, 3, 4, 5, 6]})")
    dash_duo.wait_for_text_to_equal("#text-selection-title", "Selection: 7 images")
    assert "Current selection" not in dash_duo.find_element("#compare-table").get_attribute(
        "textContent")  # nothing was made while the tab was hidden
    open_tab(dash_duo, "Compare")
    dash_duo.wait_for_contains_text("#compare-table", "Current selection (7)")
    dash_duo.wait_for_contains_text("#compare-table", f"All images ({len(run)})")
    assert len(dash_duo.find_elements("#compare-table tbody tr")) == 1 + len(run.attributes)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_clicking_a_cooccurrence_cell_selects_its_images_in_all_three_views(dashboard,
                                                                         tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import WAIT_S
    from tests.test_browser import figure_data

    dash_duo, run = dashboard
    dash_duo.driver.set_window_size(1600, 1900)  # the whole matrix on screen, nothing to scroll
    open_tab(dash_duo, "Co-occurrence")
    dash_duo.wait_for_contains_text("#text-cooccurrence-note", "60 images counted")
    table = conditional_errors(run.act, run.prd, 0.5, "fn")
    errors = np.where(np.eye(17, dtype=bool), 0, table["errors_with"])
    i, j = (int(v) for v in np.unravel_index(np.argmax(errors), errors.shape))
    want = cell_rows(run.act, run.prd, 0.5, i, j, "fn").tolist()
    # the matrix in the middle of the window, whatever the panels above it have grown to
    dash_duo.driver.execute_script(
        "document.getElementById('cooccurrence-matrix').scrollIntoView({block: 'center'})")
    # A graph first drawn in a hidden tab is laid out again at its real width when shown:
    # aim only once its layout has the width it is shown at.
    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda _: figure_data(
        dash_duo, "cooccurrence-matrix",
        "Math.abs(gd._fullLayout.width - gd.getBoundingClientRect().width) < 2"))
    x, y = figure_data(dash_duo, "cooccurrence-matrix", f"""(() => {{
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [box.left + xa.d2p({j}), box.top + ya.d2p({i})]; }})()""")
    actions = ActionChains(dash_duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(round(x), round(y)).click()
    actions.perform()
    dash_duo.wait_for_text_to_equal("#text-selection-title", f"Selection: {len(want)} images")
    for view in ("view-act", "view-fea", "view-prd"):
        assert sorted(figure_data(dash_duo, view, "gd.data[0].selectedpoints")) == want
    dash_duo.driver.save_screenshot(str(tmp_path / "analyses.png"))
    open_tab(dash_duo, "Metrics")
    dash_duo.wait_for_text_to_equal("#selection-summary .tile-images .tile-value", str(len(want)))
    assert dash_duo.get_logs() == []


# ---------------------------------------------------------------- intervals on group metrics


def by_class(component, name: str) -> list:
    """Every component in a tree whose className holds `name`, depth first."""
    found = []
    if isinstance(component, (list, tuple)):
        for c in component:
            found += by_class(c, name)
        return found
    component = tree(component)
    if name in (getattr(component, "className", None) or "").split():
        found.append(component)
    children = getattr(component, "children", None)
    return found + (by_class(children, name) if children is not None else [])


def shown_interval(low, high) -> str:
    low, high = ("–" if math.isnan(v) else f"{v:.2f}" for v in (low, high))
    return f"[{low}, {high}]"


def test_the_score_tiles_show_the_95_percent_interval_of_the_selection(run):
    rows = [0, 2, 5, 9, 11, 17, 23, 30, 31, 44, 50, 58]
    _, block = call(selection.summarise_selection, "store-selection.data", rows, 0.5, run.id)
    want = bootstrap_intervals(run.act[rows], run.prd[rows], 0.5)["overall"]
    boxes = by_class(block, "tile-box")
    assert [texts(b) for b in boxes] == [
        [f"{group_summary_score(run, rows, key):.2f}", short, shown_interval(*want[key])]
        for key, short in (("accuracy", "Acc"), ("precision", "Prec"), ("recall", "Rec"),
                           ("f1", "F1"))]
    low, high = want["f1"]
    assert low < group_summary_score(run, rows, "f1") < high


def group_summary_score(run, rows, key):
    from pipeline.metrics import group_summary

    return group_summary(run.act[rows], run.prd[rows], 0.5)["overall"][key]


def test_the_comparison_marks_exactly_the_scores_whose_intervals_do_not_overlap(run):
    act, prd = np.asarray(run.act), np.asarray(run.prd)
    right = ((prd >= 0.5) == (act == 1)).mean(axis=1)
    order = np.argsort(right)
    good, poor = sorted(order[-25:].tolist()), sorted(order[:25].tolist())
    groups = [{"run": run.id, "name": "good", "colour": "#000", "indices": good},
              {"run": run.id, "name": "poor", "colour": "#111", "indices": poor}]
    table = call(selection.compare_groups, "dropdown-compare-a.value", "0", "1", groups, [], 0.5,
                 run.id)
    a = bootstrap_intervals(act[good], prd[good], 0.5)
    b = bootstrap_intervals(act[poor], prd[poor], 0.5)
    body = by_class(table, "compare-intervals")[0].children[1].children
    marked = [["≠" in texts(cell) for cell in row.children[1:7]] for row in body]
    want = []
    for j in [None, *range(17)]:
        pick = (lambda s, m: s["overall"][m]) if j is None else (
            lambda s, m, j=j: s["per_attribute"][m][j])
        found = [differ(pick(a, m), pick(b, m)) for m in ("precision", "recall", "f1")]
        want.append(found + found)
    assert marked == want
    assert marked[0] == [True] * 6  # the good images beat the poor ones beyond doubt overall
    overall_f1 = texts(body[0].children[3])
    assert overall_f1[-1] == shown_interval(*a["overall"]["f1"])
    assert any("do not overlap" in t for t in texts(table))


def test_hidden_tabs_compute_nothing_and_the_audit_ranks_once_per_labels(run, monkeypatch):
    from callbacks import audit as audit_callbacks
    from pipeline import audit

    tab = "tabs-selection.active_tab"
    groups = [{"run": run.id, "name": "g", "colour": "#000", "indices": [1, 2, 3]}]
    assert call(selection.compare_groups, tab, "0", "all", groups, [], 0.5, run.id, "with", 0,
                "one", "metrics") is no_update
    assert call(selection.list_groups, tab, groups, 0.5, run.id, "with", 0, "one",
                "metrics") == (no_update,) * 3
    assert call(analyses.draw_cooccurrence, tab, "fn", "all", 0.5, [], "any", "act", [], [],
                [], run.id, "with", 0, "one", "metrics") == (no_update, no_update)
    ranked = []
    real = audit.audit_run
    monkeypatch.setattr(audit, "audit_run", lambda *a, **k: ranked.append(1) or real(*a, **k))
    assert audit_callbacks.show_audit(run.id, 0, "metrics") == (None, no_update, no_update)
    assert ranked == []
    first = audit_callbacks.show_audit(run.id, 0, "audit")
    again = audit_callbacks.show_audit(run.id, 0, "audit")  # the tab opened a second time
    assert ranked == [1] and texts(first[0]) == texts(again[0])
    opened = call(selection.compare_groups, tab, "0", "all", groups, [], 0.5, run.id, "with", 0,
                  "one", "compare")
    assert "g (3)" in texts(opened)


# ---------------------------------------------------------------- cross-space disagreement


def test_nothing_computes_the_disagreement_until_the_analyst_asks(run):
    from pipeline.analyses.disagreement import _run_disagreement

    _run_disagreement.cache_clear()
    shown, status = call(analyses.list_disagreeing, "tabs-selection.active_tab", "metrics",
                         "error", [], run.id)
    assert shown == [] and "Open this tab" in status
    assert _run_disagreement.cache_info().currsize == 0
    shown, status = call(analyses.list_disagreeing, "tabs-selection.active_tab", "disagreement",
                         "error", [], run.id)
    score = run_disagreement(run)["score"]
    rows = [b.id["index"] for b in shown[1:]]
    assert rows == np.argsort(-score, kind="stable")[:10].tolist() and status == ""
    assert shown[1].title.endswith(f"{score[rows[0]]:.2f}")
    assert f"median is {np.median(score):.2f}" in shown[0].children


def test_a_click_on_a_disagreeing_image_opens_it_and_a_crafted_one_does_nothing(run):
    trigger = '{"index":7,"type":"disagreeing"}.n_clicks'
    assert call(analyses.open_disagreeing, trigger, [1], run.id, value=1) == 7
    assert call(analyses.open_disagreeing, trigger, [0], run.id, value=0) is no_update
    crafted = '{"index":600,"type":"disagreeing"}.n_clicks'
    assert call(analyses.open_disagreeing, crafted, [1], run.id, value=1) is no_update


def test_colour_by_disagreement_paints_each_image_by_its_score(run):
    from tests.test_callbacks import decode

    figures = call(views.draw_views, "radio-colour-by.value", run.id, "dots", [], "disagreement",
                   0, "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None)[:3]
    score = run_disagreement(run)["score"]
    for figure in figures:
        np.testing.assert_allclose(decode(figure["data"][0]["marker"]["color"]), score)
    legend = texts(call(legends.draw_colour_legend, "radio-colour-by.value", "disagreement", 0,
                        run.id))
    assert "Disagreement of the ACT, FEA and PRD neighbourhoods:" in legend


def test_the_filter_keeps_the_most_disagreeing_five_percent(run):
    *_, count = call(views.fade_filtered, "checklist-filter-disagreeing.value", [], "any", "act",
                     0.5, run.id, "with", 0, ["top"])
    score = run_disagreement(run)["score"]
    kept = int((score >= np.sort(score)[-3]).sum())  # 5 % of 60 images: 3, more on a tie
    assert count == f"{kept} of 60 images match · {60 - kept} faded"
    _, note = matrix(run, filters=([], "any", "act", ["top"]))
    assert note == f"All images: {kept} images counted at threshold 0.50."


@pytest.mark.browser
def test_colour_by_disagreement_draws_and_the_tab_lists_the_most_disagreeing(dashboard,
                                                                           tmp_path):
    from dash.testing.wait import until

    from tests.test_browser import figure_data

    dash_duo, run = dashboard
    dash_duo.find_element("#radio-colour-by input[value='disagreement']").click()
    dash_duo.wait_for_contains_text("#colour-legend", "Disagreement of the ACT, FEA and PRD")
    score = run_disagreement(run)["score"]
    for view in ("view-act", "view-fea", "view-prd"):
        until(lambda v=view: np.allclose(figure_data(
            dash_duo, v, "Array.from(gd._fullData[0].marker.color)"), score, atol=1e-6), 40)
    open_tab(dash_duo, "Disagreement")
    until(lambda: len(dash_duo.find_elements("#disagreement-list .thumb")) == 10, 40)
    # Opening the tab lists the images again (the colour-by listed them already): a thumbnail
    # found before that list arrives is gone by the click; find it again.
    until(lambda: clicked(dash_duo, "#disagreement-list .thumb"), 40)
    top = int(np.argsort(-score, kind="stable")[0])
    dash_duo.wait_for_contains_text("#text-detail-title", f"#{top} ")
    dash_duo.driver.save_screenshot(str(tmp_path / "analyses-disagreement.png"))
    assert dash_duo.get_logs() == []


def test_a_hostile_group_name_shows_as_text_in_the_comparison_table(run):
    from components.selection import compare_table
    from pipeline.metrics import group_summary

    summary = group_summary(run.act[:10], run.prd[:10], 0.5)
    hostile = '<img src=x onerror="alert(1)">'
    table = compare_table(summary, summary, (hostile, "All images"), run.attributes, run.colours)
    markup = table.children[1].children  # the note, then the table's one component
    assert "<img" not in markup
    assert '&lt;img src=x onerror="alert(1)"&gt;' in markup
    assert f"{hostile} (10)" in texts(table)  # read back, the name is exactly what was typed
