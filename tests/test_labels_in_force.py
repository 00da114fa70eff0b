"""The one accessor of the labels in force: annotated labels with the corrections applied."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import corrections
from pipeline.metrics import OUTCOMES, group_summary
from tests.test_browser import PETALS, box_select, figure_data, gap_box


def test_a_correction_changes_the_labels_in_force_and_an_undo_restores_them(synthetic_run):
    run, data_dir = synthetic_run, synthetic_run.data_dir
    before = corrections.labels_in_force(run)
    assert np.array_equal(before.act, run.act) and not before.corrected.any()
    assert corrections.labels_in_force(run) is before  # memoised while nothing changes

    image_id, attribute = run.images["image_id"].iloc[7], run.attributes[2]
    flipped = 1 - int(run.act[7, 2])
    corrections.set_label(data_dir, run.meta["dataset"], image_id, attribute, flipped,
                          author="ana")
    after = corrections.labels_in_force(run)
    assert after.version > before.version
    assert after.act[7, 2] == flipped and after.corrected[7, 2]
    assert after.corrected.sum() == 1 and (after.act != run.act).sum() == 1
    assert not after.act.flags.writeable  # shared by every request: nobody may edit it

    corrections.undo(data_dir, run.meta["dataset"], image_id, attribute, author="ana")
    undone = corrections.labels_in_force(run)
    assert np.array_equal(undone.act, run.act) and not undone.corrected.any()


def test_an_unreadable_database_gives_the_annotated_labels_and_says_why(synthetic_run):
    corrections.db_path(synthetic_run.data_dir).write_bytes(b"not a database" * 100)
    labels = corrections.labels_in_force(synthetic_run)
    assert np.array_equal(labels.act, synthetic_run.act) and not labels.corrected.any()
    assert "corrections.sqlite" in labels.problem


def overall_tiles(dash_duo) -> dict[str, int]:
    """The outcome counts the selection manager shows."""
    return {el.find_element("css selector", ".tile-label").text:
            int(el.find_element("css selector", ".tile-value").text.replace(",", ""))
            for el in dash_duo.find_elements("#selection-summary .tile")
            if el.find_element("css selector", ".tile-label").text in ("TP", "FP", "FN", "TN")}


def petal_counts(dash_duo) -> list[int]:
    """Petals per joint-flower shape in FEA (FP, TP and FN shapes, one per attribute)."""
    return figure_data(dash_duo, "view-fea", PETALS)


@pytest.mark.browser
def test_after_a_correction_the_manager_the_flowers_and_the_table_agree(dashboard):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.wait import WebDriverWait

    from components import ids
    from tests.conftest import WAIT_S
    from tests.test_retrain import choose, click, component_props

    dash_duo, run = dashboard
    dash_duo.find_element("#radio-point-mode input[value='joint']").click()
    dash_duo.wait_for_contains_text("#header-fea", "flowers: 60 of 60 in view")
    (x0, x1, y0, y1), inside = gap_box(np.asarray(run.emb("act")), 0.1, 0.9)
    box_select(dash_duo, "view-act", x0, x1, y0, y1)
    dash_duo.wait_for_element("#detail-thumbnails .thumb")
    dash_duo.find_elements("#detail-thumbnails .thumb")[0].click()
    index, ring = int(inside[0]), run.attributes.index("Ring")
    dash_duo.wait_for_contains_text("#text-detail-title", f"#{index} ")
    # As an analyst does, the pointer leaves the views for the form: no hover card is left open.
    ActionChains(dash_duo.driver).move_to_element(dash_duo.find_element(".top-bar")).perform()
    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda _: not any(
        component_props(dash_duo, ids.VIEW_TOOLTIPS[s]).get("show") for s in ids.VIEWS))
    old = int(run.act[index, ring])
    choose(dash_duo, "#dropdown-correction-attribute", ring)
    click(dash_duo, "#button-clear-selection")  # the manager then scores the whole run
    click(dash_duo, "#button-flip-label")
    dash_duo.wait_for_contains_text("#detail-act-prd-table", f"{1 - old} ✎")

    fixed = np.array(run.act, dtype=np.uint8)
    fixed[index, ring] = 1 - old
    said = np.asarray(run.prd) >= 0.5
    for labels, note in ((fixed, "with corrections (1 corrected)"), (run.act, "as annotated")):
        if labels is run.act:
            dash_duo.find_element("#radio-labels-used input[value='annotated']").click()
        dash_duo.wait_for_contains_text("#selection-summary", f"Scored on the labels {note}")
        want = group_summary(labels, run.prd, 0.5)["overall"]
        WebDriverWait(dash_duo.driver, 10).until(
            lambda _, w=want: overall_tiles(dash_duo) == {k: w[k] for k in OUTCOMES})
        act = np.asarray(labels).astype(bool)
        petals = [*(~act & said).sum(0), *(act & said).sum(0), *(act & ~said).sum(0)]
        WebDriverWait(dash_duo.driver, 10).until(
            lambda _, p=[int(x) for x in petals]: petal_counts(dash_duo) == p)
    assert dash_duo.get_logs() == []
