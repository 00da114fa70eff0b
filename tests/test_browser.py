"""Real-browser tests of the dashboard: headless Chromium through dash.testing on a real run
written to tmp_path. Each waits for conditions (never sleeps) and ends with no browser errors.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.action_chains import ActionChains

from app import create_app
from components.figures import FIRST_FLOWER, SELECTED
from pipeline.metrics import group_summary
from tests.conftest import WAIT_S, N, free_port, patient

pytestmark = pytest.mark.browser


# Petals per flower shape of a view (FP, TP, FN or one style, one shape per attribute): its
# path's subpaths with more than two vertices (an FN petal's hatch strokes have two).
PETALS = f"""gd._fullLayout.shapes.slice({FIRST_FLOWER}).map(s => !s.visible ? 0
    : s.path.split('M').slice(1).filter(p => p.split('L').length > 2).length)"""


def figure_data(dash_duo, graph_id: str, expression: str):
    """Evaluate a JavaScript expression on the plotly graph div `gd` inside #graph_id."""
    return dash_duo.driver.execute_script(
        f"const gd = document.querySelector('#{graph_id} .js-plotly-plot'); return {expression};")


def to_pixels(dash_duo, graph_id: str, points) -> list[list[float]]:
    """Window pixel positions of data points (x, y) in a view."""
    return figure_data(dash_duo, graph_id, f"""(() => {{
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {[list(map(float, p)) for p in points]}.map(
            ([x, y]) => [box.left + xa.d2p(x), box.top + ya.d2p(y)]);
    }})()""")


def drag(dash_duo, path, steps: int = 3) -> None:
    """Press the mouse at path[0], move through every later pixel point, release there."""
    actions = ActionChains(dash_duo.driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(round(path[0][0]), round(path[0][1]))
    pointer.pointer_down()
    for (ax, ay), (bx, by) in itertools.pairwise(path):
        for t in np.linspace(0, 1, steps + 1)[1:]:
            pointer.move_to_location(round(ax + t * (bx - ax)), round(ay + t * (by - ay)))
    pointer.pointer_up()
    actions.perform()


def box_select(dash_duo, graph_id: str, x0, x1, y0, y1) -> None:
    """Drag a selection box from data point (x0, y0) to (x1, y1), as a user would."""
    drag(dash_duo, to_pixels(dash_duo, graph_id, [(x0, y0), (x1, y1)]))


def lasso_select(dash_duo, graph_id: str, x0, x1, y0, y1) -> None:
    """Pick the lasso in the view's mode bar and draw round the box, corner by corner."""
    button = dash_duo.find_element(f"#{graph_id} .modebar-btn[data-val='lasso']")
    dash_duo.driver.execute_script("arguments[0].click()", button)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    drag(dash_duo, to_pixels(dash_duo, graph_id, corners), steps=6)


def gap_box(xy, lo: float, hi: float):
    """A box whose edges sit halfway between points, so pixel rounding cannot change what it
    holds; covers roughly the lo..hi quantiles of both coordinates."""
    edges = []
    for k in (0, 1):
        v = np.sort(xy[:, k])
        for q in (lo, hi):
            near = np.arange(int(q * len(v)) - 4, int(q * len(v)) + 4)
            i = near[np.argmax(v[near] - v[near - 1])]  # the widest gap near the quantile
            edges.append((v[i - 1] + v[i]) / 2)
    inside = ((xy[:, 0] > edges[0]) & (xy[:, 0] < edges[1]) & (xy[:, 1] > edges[2])
              & (xy[:, 1] < edges[3]))
    return edges, np.flatnonzero(inside)


def test_page_loads_with_three_views_holding_every_image(dashboard):
    dash_duo, run = dashboard
    for view in ("view-act", "view-fea", "view-prd"):
        assert figure_data(dash_duo, view, "gd._fullData[0]._length") == N
        assert figure_data(dash_duo, view, "gd._fullData[0].type") == "scattergl"
    dash_duo.wait_for_contains_text("#colour-legend", "error distance")
    dash_duo.wait_for_text_to_equal("#text-filter-count", f"All {N} images shown")
    assert dash_duo.get_logs() == []


@pytest.mark.parametrize(("tool", "space"), [("box", "fea"), ("lasso", "prd")])
def test_box_or_lasso_in_one_view_highlights_all_three_and_counts_outcomes(dashboard, tool, space):
    dash_duo, run = dashboard
    (x0, x1, y0, y1), expected = gap_box(np.asarray(run.emb(space)), 0.2, 0.8)
    assert 3 < len(expected) < N
    select = box_select if tool == "box" else lasso_select
    select(dash_duo, f"view-{space}", x0, x1, y0, y1)
    dash_duo.wait_for_text_to_equal("#text-selection-title",
                                    f"Selection: {len(expected)} images")
    assert figure_data(dash_duo, f"view-{space}", "gd._fullLayout.dragmode") == (
        "select" if tool == "box" else "lasso")
    for view in ("view-act", "view-fea", "view-prd"):
        dash_duo.wait_for_element(f"#{view}")
        assert sorted(figure_data(dash_duo, view, "gd.data[0].selectedpoints")) == list(expected)
    want = group_summary(run.act[expected], run.prd[expected], 0.5)["overall"]
    tiles = {el.find_element("css selector", ".tile-label").text:
             el.find_element("css selector", ".tile-value").text
             for el in dash_duo.find_elements("#selection-summary .tile")}
    assert {k: int(tiles[k].replace(",", "")) for k in ("TP", "FP", "FN", "TN")} == {
        k: want[k] for k in ("TP", "FP", "FN", "TN")}
    assert dash_duo.get_logs() == []


def test_joint_flowers_draw_petals_per_outcome_and_a_key(dashboard):
    dash_duo, run = dashboard
    dash_duo.find_element("#radio-point-mode input[value='joint']").click()
    dash_duo.wait_for_text_to_equal("#header-fea", f"flowers: {N} of {N} in view")
    said = np.asarray(run.prd) >= 0.5
    act = np.asarray(run.act).astype(bool)
    a = len(run.attributes)
    # Joint flower shapes: FP, TP, FN, one per attribute.
    petals = figure_data(dash_duo, "view-fea", PETALS)
    assert len(petals) == 3 * a
    assert petals[:a] == (~act & said).sum(axis=0).tolist()  # FP
    assert petals[a:2 * a] == (act & said).sum(axis=0).tolist()  # TP
    assert petals[2 * a:] == (act & ~said).sum(axis=0).tolist()  # FN
    # One SVG path per style and attribute that has petals, not one per petal.
    drawn = figure_data(dash_duo, "view-fea", "gd.querySelectorAll('.shapelayer path').length")
    assert drawn == sum(1 for p in petals if p) < sum(petals)
    first_fp = f"gd._fullLayout.shapes[{FIRST_FLOWER}]"
    assert figure_data(dash_duo, "view-fea", f"{first_fp}.line.color") == "#111111"
    dash_duo.wait_for_contains_text("#graph-flower-legend", "FN: labelled but missed")
    dash_duo.wait_for_contains_text("#graph-flower-legend", "FP: predicted, not labelled")
    assert dash_duo.get_logs() == []


def test_clicking_a_thumbnail_opens_the_large_image_and_its_act_prd_table(dashboard):
    dash_duo, run = dashboard
    tools = dash_duo.find_element("#detail-image-tools")
    assert not tools.is_displayed()  # no colour map or saliency picker before an image is open
    (x0, x1, y0, y1), expected = gap_box(np.asarray(run.emb("act")), 0.1, 0.9)
    box_select(dash_duo, "view-act", x0, x1, y0, y1)
    dash_duo.wait_for_element(f"#detail-thumbnails .thumb:nth-of-type({min(3, len(expected))})")
    until(tools.is_displayed, timeout=WAIT_S)
    second = int(expected[1])
    dash_duo.find_elements("#detail-thumbnails .thumb")[1].click()
    image_id = run.images["image_id"].iloc[second]
    dash_duo.wait_for_text_to_equal("#text-detail-title",
                                    f"#{second} · {image_id} · {run.images['split'].iloc[second]}")
    rows = dash_duo.find_elements("#detail-act-prd-table tbody tr")
    assert len(rows) == len(run.attributes)
    first = rows[0].find_elements("css selector", "td")
    assert first[1].text == str(int(run.act[second, 0]))
    assert first[2].text == f"{run.prd[second, 0]:.2f}"
    dash_duo.wait_for_element("#graph-detail-image .heatmaplayer")
    assert len(dash_duo.find_elements("#detail-neighbours .thumb")) == 8
    assert dash_duo.get_logs() == []


def write_demo_like_run(data_dir, n: int = 240, size: int = 128, seed: int = 7):
    """Simulated scattering images with their true tags, a model's probabilities that are right
    most of the time (harder attributes noisier), image features, and t-SNE maps of the three
    spaces: the demo run in miniature, quick enough for a test."""
    from openTSNE import TSNE

    from pipeline.imaging import downsample, log_intensity
    from pipeline.metrics import evaluate
    from pipeline.simulate import simulate_dataset
    from pipeline.store import get_run, open_dataset, write_run

    ds = open_dataset(simulate_dataset(data_dir, n, size=size, seed=seed, label_noise=0.03,
                                       dataset_id="demo-like", progress=False))
    rng = np.random.default_rng(seed)
    a = len(ds.attributes)
    difficulty = rng.uniform(0.4, 1.6, a)
    logit = np.where(ds.true_act.astype(bool), 2.4, -2.6) + rng.normal(0, 1.5, (n, a)) * difficulty
    prd = (1 / (1 + np.exp(-logit))).astype(np.float32)
    looks = np.stack([downsample(log_intensity(ds.load_image(i)), 16).ravel() for i in range(n)])
    fea = np.concatenate([looks, 3 * prd], axis=1).astype(np.float32)
    tsne = TSNE(n_jobs=1, n_iter=300, early_exaggeration_iter=100, perplexity=20,
                negative_gradient_method="bh", random_state=0)
    emb = {s: np.asarray(tsne.fit(x + rng.normal(0, 0.03, x.shape)), np.float32)
           for s, x in (("act", ds.act.astype(float)), ("fea", fea), ("prd", prd))}
    write_run(data_dir, attributes=ds.attributes, images=ds.images[["image_id", "path", "split",
                                                                    "source"]],
              act=ds.act, prd=prd, fea=fea, emb=emb, run_id="demo-like",
              meta={"dataset": "demo-like (simulated)", "model": {"arch": "simulated model"},
                    "metrics": evaluate(ds.act, prd)})
    return get_run("demo-like", data_dir)


def test_screenshot_of_the_whole_dashboard(dash_duo, tmp_path, monkeypatch):
    """Drives the dashboard into a typical analysis state and takes a picture of the whole page:
    joint flowers, a cluster selected in FEA and highlighted in ACT and PRD, its metrics and
    images. With XRAE_SCREENSHOT_DATA_DIR (a data directory holding a trained demo run) the
    picture replaces the README's docs/screenshot.png; without, it goes to tmp_path."""
    import os
    from pathlib import Path

    from pipeline.store import list_runs

    data_dir = os.environ.get("XRAE_SCREENSHOT_DATA_DIR")
    if data_dir:
        run = list_runs(data_dir)[-1]
    else:
        data_dir = tmp_path / "data"
        run = write_demo_like_run(data_dir)
    monkeypatch.setenv("XRAE_DATA_DIR", str(data_dir))
    patient(dash_duo)
    dash_duo.start_server(create_app(data_dir), port=free_port())
    dash_duo.driver.set_window_size(1600, 1000)
    n = len(run)
    dash_duo.wait_for_text_to_equal("#header-fea", f"{n:,} images")
    dash_duo.find_element("#radio-point-mode input[value='joint']").click()
    dash_duo.wait_for_contains_text("#header-fea", "flowers:")
    xy = np.asarray(run.emb("fea"))
    centre = xy[np.argmin(np.abs(xy - np.median(xy, axis=0)).sum(axis=1))]
    span = (xy.max(axis=0) - xy.min(axis=0)) * 0.13
    box_select(dash_duo, "view-fea", centre[0] - span[0], centre[0] + span[0],
               centre[1] - span[1], centre[1] + span[1])
    dash_duo.wait_for_contains_text("#text-selection-title", "Selection:")
    dash_duo.wait_for_element("#detail-thumbnails .thumb")
    dash_duo.wait_for_element("#graph-detail-image .heatmaplayer")
    dash_duo.wait_for_element("#detail-neighbours .thumb")
    # Zoom FEA onto the selection, as an analyst would, so its flowers open up.
    zoom = [centre[0] - 0.6 * span[0], centre[0] + 0.6 * span[0], centre[1] - 0.6 * span[1],
            centre[1] + 0.6 * span[1]]
    figure_data(dash_duo, "view-fea", "Plotly.relayout(gd, {{'xaxis.range': [{}, {}], "
                "'yaxis.range': [{}, {}]}})".format(*(float(v) for v in zoom)))
    inside = int(((xy[:, 0] >= zoom[0]) & (xy[:, 0] <= zoom[1]) & (xy[:, 1] >= zoom[2])
                  & (xy[:, 1] <= zoom[3])).sum())
    dash_duo.wait_for_text_to_equal("#header-fea", f"flowers: {inside} of {inside} in view")
    dash_duo.wait_for_element("#detail-neighbours .thumb")
    height = dash_duo.driver.execute_script("return document.documentElement.scrollHeight")
    dash_duo.driver.set_window_size(1600, height + 140)  # the whole page in one picture
    dash_duo.wait_for_element("#graph-flower-legend .annotation-text")
    docs = Path(__file__).resolve().parents[1] / "docs"
    out = docs / "screenshot.png" if os.environ.get("XRAE_SCREENSHOT_DATA_DIR") else \
        tmp_path / "screenshot.png"
    assert dash_duo.driver.save_screenshot(str(out))
    assert dash_duo.get_logs() == []


def redrawn(dash_duo, mark: str):
    """True once all three views have been drawn afresh since `mark_views(…, mark)`, plotly's
    drawing finished (and with it any event the drawing sets off)."""
    return all(figure_data(dash_duo, v, f"gd['{mark}'] === 'drawn'")
               for v in ("view-act", "view-fea", "view-prd"))


def mark_views(dash_duo, mark: str) -> None:
    """Remember each view's current points trace, so that the end of a full redraw (a new
    trace, then plotly's afterplot) can be seen."""
    for view in ("view-act", "view-fea", "view-prd"):
        figure_data(dash_duo, view, f"""(() => {{
            const before = gd.data[0];
            gd['{mark}'] = 'waiting';
            gd.on('plotly_afterplot', () => {{
                if (gd.data[0] !== before) gd['{mark}'] = 'drawn';
            }});
            return true;
        }})()""")


def settled(dash_duo) -> None:
    """Wait until no callback is on its way (what a redraw set off has come back)."""
    until(lambda: dash_duo.redux_state_rqs == [], timeout=WAIT_S, poll=0.2)


def set_cap(dash_duo, value: int) -> None:
    from selenium.webdriver.common.keys import Keys

    box = dash_duo.find_element("#input-flower-cap")
    dash_duo.clear_input(box)
    box.send_keys(str(value), Keys.ENTER)


REDRAWING_CONTROLS = {
    "point mode": lambda d: d.find_element("#radio-point-mode input[value='joint']").click(),
    "petals": lambda d: d.find_element("#checklist-flower-attributes input[value='0']").click(),
    "colour-by": lambda d: d.find_element("#radio-colour-by input[value='outcome']").click(),
    "flower cap": lambda d: set_cap(d, 20),
    "error distance": lambda d: d.find_element(
        "#radio-error-distance input[value='euclidean']").click(),
}


@pytest.mark.parametrize("control", list(REDRAWING_CONTROLS))
def test_a_full_redraw_of_the_views_keeps_the_selection(dashboard, control):
    dash_duo, run = dashboard
    (x0, x1, y0, y1), expected = gap_box(np.asarray(run.emb("fea")), 0.2, 0.8)
    box_select(dash_duo, "view-fea", x0, x1, y0, y1)
    title = f"Selection: {len(expected)} images"
    dash_duo.wait_for_text_to_equal("#text-selection-title", title)
    settled(dash_duo)
    mark_views(dash_duo, "beforeRedraw")
    REDRAWING_CONTROLS[control](dash_duo)
    until(lambda: redrawn(dash_duo, "beforeRedraw"), timeout=WAIT_S)
    settled(dash_duo)
    assert dash_duo.find_element("#text-selection-title").text == title
    flowers = not dash_duo.find_element("#radio-point-mode input[value='dots']").is_selected()
    for view in ("view-act", "view-fea", "view-prd"):
        assert sorted(figure_data(dash_duo, view, "gd.data[0].selectedpoints")) == list(expected)
        if flowers:  # among flowers the selected centres are ringed too
            assert figure_data(dash_duo, view, f"gd._fullData[{SELECTED}]._length") == len(
                expected)
    assert dash_duo.get_logs() == []


def double_click(dash_duo, graph_id: str, point) -> None:
    [(x, y)] = to_pixels(dash_duo, graph_id, [point])
    actions = ActionChains(dash_duo.driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(round(x), round(y))
    for _ in range(2):
        pointer.click()
    actions.perform()


def test_after_a_redraw_the_user_can_still_clear_the_selection(dashboard):
    dash_duo, run = dashboard
    (x0, x1, y0, y1), expected = gap_box(np.asarray(run.emb("fea")), 0.2, 0.8)
    for clear in ("double-click", "button"):
        box_select(dash_duo, "view-fea", x0, x1, y0, y1)
        dash_duo.wait_for_text_to_equal("#text-selection-title",
                                        f"Selection: {len(expected)} images")
        settled(dash_duo)
        mark_views(dash_duo, clear)
        dash_duo.find_element("#radio-point-mode input[value='joint']").click()
        until(lambda mark=clear: redrawn(dash_duo, mark), timeout=WAIT_S)
        settled(dash_duo)
        dash_duo.wait_for_text_to_equal("#text-selection-title",
                                        f"Selection: {len(expected)} images")
        if clear == "button":
            dash_duo.find_element("#button-clear-selection").click()
        else:
            double_click(dash_duo, "view-fea", ((x0 + x1) / 2, (y0 + y1) / 2))
        dash_duo.wait_for_contains_text("#text-selection-title", "No selection")
        for view in ("view-act", "view-fea", "view-prd"):
            until(lambda v=view: figure_data(dash_duo, v, f"gd._fullData[{SELECTED}]._length")
                  == 0, timeout=WAIT_S)
        dash_duo.find_element("#radio-point-mode input[value='dots']").click()
        dash_duo.wait_for_text_to_equal("#header-fea", f"{N} images")
        settled(dash_duo)
    assert dash_duo.get_logs() == []


def hover(dash_duo, graph_id: str, point) -> None:
    """Move the mouse onto a data point of a view, as a user would."""
    [(x, y)] = to_pixels(dash_duo, graph_id, [point])
    actions = ActionChains(dash_duo.driver)
    # plotly hovers on mouse moves within the plot: come from just beside the point.
    actions.w3c_actions.pointer_action.move_to_location(round(x) - 20, round(y))
    actions.w3c_actions.pointer_action.move_to_location(round(x), round(y))
    actions.perform()


SHOWN_WHOLE = """
    // Where the card is, and whether anything covers or clips it: at points across the card,
    // the topmost element must be the card (hit-testing made possible for a moment, since a
    // tooltip lets the mouse through).
    const card = document.querySelector(arguments[0]);
    const box = card.getBoundingClientRect();
    const probe = document.createElement('style');
    probe.textContent = '.dcc-tooltip-bounding-box, .dcc-tooltip-bounding-box * '
        + '{pointer-events: auto !important}';
    document.head.appendChild(probe);
    const hidden = [];
    for (const fx of [0.02, 0.25, 0.5, 0.75, 0.98]) {
        for (const fy of [0.05, 0.5, 0.95]) {
            const x = box.left + fx * box.width, y = box.top + fy * box.height;
            const top = document.elementFromPoint(x, y);
            if (!top || !card.contains(top)) {
                const what = top && (top.className.baseVal ?? top.className);
                hidden.push([Math.round(x), Math.round(y), String(what)]);
            }
        }
    }
    probe.remove();
    return {left: box.left, right: box.right, width: window.innerWidth, hidden: hidden};
"""


def test_the_hover_card_of_a_point_at_a_views_right_edge_shows_whole(dashboard):
    dash_duo, run = dashboard
    for space in ("act", "fea", "prd"):
        xy = np.asarray(run.emb(space))
        row = int(np.argmax(xy[:, 0]))  # the right-most image of this view
        hover(dash_duo, f"view-{space}", xy[row])
        card = f"#tooltip-{space}"  # the tooltip's content box carries its id
        label = f"#{row} · {run.images['image_id'].iloc[row]}"
        # textContent, not Selenium's visible text: a clipped card has none of the latter.
        until(lambda card=card, label=label: label in dash_duo.driver.execute_script(
            "return document.querySelector(arguments[0]).textContent", card), timeout=WAIT_S)
        dash_duo.wait_for_element(f"{card} .hover-thumb")
        seen = dash_duo.driver.execute_script(SHOWN_WHOLE, card)
        assert 0 <= seen["left"] and seen["right"] <= seen["width"], (space, seen)
        assert seen["hidden"] == [], (space, seen)
    assert dash_duo.get_logs() == []
