"""Real-browser tests of what the page does as it starts: a large run's views are drawn once, at
the size they are shown, and the hidden tabs of panel F wait until they are opened, then show
what they hold."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from app import create_app
from components import ids
from components.figures import VIEW_MARGIN
from components.raster import warm_up
from tests.conftest import WAIT_S, N, free_port, patient, write_synthetic_run
from tests.test_analyses_panels import open_tab
from tests.test_raster_browser import picture_of, picture_size, plot_size, png_pixels

pytestmark = pytest.mark.browser
VIEWS = ("view-act", "view-fea", "view-prd")

# Added to the page before its own scripts: every callback request's outputs, in order, and
# every picture of a view the page receives (a full figure's, or a Patch's).
RECORDER = """
window.__asked = [];
window.__pictures = {};
window.__inflight = 0;
const seen = (view, source) => {
    (window.__pictures[view] = window.__pictures[view] || []).push(source); };
const original = window.fetch;
window.fetch = function (url, options) {
    if (!String(url).includes('_dash-update-component')) return original.apply(this, arguments);
    window.__asked.push(JSON.parse(options.body).output);
    window.__inflight += 1;
    return original.apply(this, arguments).then(reply => {
        window.__inflight -= 1;
        if (reply.status === 200) reply.clone().json().then(body => {
            for (const [id, props] of Object.entries(body.response || {})) {
                const figure = props.figure;
                if (!figure) continue;
                if (figure.layout && figure.layout.images && figure.layout.images.length) {
                    seen(id, figure.layout.images[0].source); }
                for (const op of figure.operations || []) {
                    if (op.location.join('.') === 'layout.images') {
                        seen(id, op.params.value[0].source); } } } });
        return reply; }); };
"""


@pytest.fixture
def recorded(dash_duo, tmp_path, monkeypatch):
    """The dashboard on a 60-image run drawn as pictures, opened by a page that records its
    requests and pictures (RECORDER); yields (dash_duo, run) once the views are drawn."""
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    run = write_synthetic_run(tmp_path / "data", n=N)
    warm_up()
    patient(dash_duo)
    dash_duo.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                    {"source": RECORDER})
    dash_duo.start_server(create_app(tmp_path / "data"), port=free_port())
    dash_duo.wait_for_text_to_equal("#header-fea", f"{N} images")
    for view in VIEWS:
        until(lambda v=view: picture_of(dash_duo, v), timeout=WAIT_S)
    yield dash_duo, run


def asked(dash_duo) -> list[str]:
    return dash_duo.driver.execute_script("return window.__asked")


def settle(dash_duo, quiet_polls: int = 20) -> None:
    """Wait until the page has had no callback request in flight and asked nothing new for
    `quiet_polls` polls in a row (two seconds): what it does as it starts is done."""
    last = {"count": -1, "quiet": 0}

    def quiet() -> bool:
        count, inflight = dash_duo.driver.execute_script(
            "return [window.__asked.length, window.__inflight]")
        still = inflight == 0 and count == last["count"]
        last.update(count=count, quiet=last["quiet"] + 1 if still else 0)
        return last["quiet"] >= quiet_polls
    until(quiet, timeout=WAIT_S, poll=0.1)


def test_a_large_runs_views_are_drawn_once_at_the_size_they_are_shown(recorded):
    dash_duo, _ = recorded
    settle(dash_duo)
    pictures = dash_duo.driver.execute_script("return window.__pictures")
    for view in VIEWS:
        # One picture per view as the page starts (not one at a guessed size, then another),
        # with a pixel for each pixel of the plot area it fills.
        assert len(pictures[view]) == 1, view
        height, width = png_pixels(pictures[view][0]).shape[:2]
        assert [width, height] == plot_size(dash_duo, view)
        assert picture_of(dash_duo, view) == pictures[view][0]
    # The page's own first pictures, shown until plotly drew, are gone from the screen.
    assert previews_shown(dash_duo) == []
    assert dash_duo.get_logs() == []


PREVIEWS_SHOWN = """
return [...document.querySelectorAll('.view-preview')].filter(
    p => getComputedStyle(p).display !== 'none' && p.complete && p.naturalWidth > 0).map(p => {
        const box = p.getBoundingClientRect(), stage = p.parentElement.getBoundingClientRect();
        return {id: p.id, box: [box.left - stage.left, box.top - stage.top, box.width, box.height],
                stage: [stage.width, stage.height]}; });
"""


def previews_shown(dash_duo) -> list[dict]:
    """The first pictures on screen: each one's id, its box within its view's stage and the
    stage's size."""
    return dash_duo.driver.execute_script(PREVIEWS_SHOWN)


def test_a_large_runs_pictures_are_on_screen_before_plotly_has_loaded(dash_duo, tmp_path,
                                                                     monkeypatch):
    """plotly.js (4.8 MB) takes a second or two to load: the page shows a large run's three
    views as plain pictures before then, each over its view's plot area. Here plotly.js never
    comes (blocked), and the pictures still show."""
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    write_synthetic_run(tmp_path / "data", n=N)
    patient(dash_duo)
    dash_duo.driver.execute_cdp_cmd("Network.enable", {})
    dash_duo.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*plotly.min.js*"]})
    try:
        dash_duo.start_server(create_app(tmp_path / "data"), port=free_port())
        shown = until(lambda: len(previews_shown(dash_duo)) == 3 and previews_shown(dash_duo),
                      timeout=WAIT_S)
        assert dash_duo.driver.execute_script("return window.Plotly === undefined")
    finally:
        dash_duo.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    assert sorted(p["id"] for p in shown) == sorted(ids.VIEW_PREVIEWS.values())
    for p in shown:
        left, top, width, height = p["box"]
        stage_width, stage_height = p["stage"]
        assert stage_height > 300  # the view keeps its height before its graph is drawn
        # The plot area as plotly draws it: VIEW_MARGIN inside each edge.
        assert [round(left), round(top)] == [VIEW_MARGIN, VIEW_MARGIN]
        assert abs(width - (stage_width - 2 * VIEW_MARGIN)) < 1
        assert abs(height - (stage_height - 2 * VIEW_MARGIN)) < 1


def test_a_window_resize_redraws_the_pictures_at_the_new_size_every_time(recorded):
    dash_duo, _ = recorded
    settle(dash_duo)
    driver = dash_duo.driver
    wide = driver.get_window_size()
    first = {view: picture_size(dash_duo, view) for view in VIEWS}

    def drawn_at_size(view: str, unlike: list[int] | None = None) -> bool:
        shown = picture_size(dash_duo, view)
        return shown == plot_size(dash_duo, view) and shown != unlike

    # Narrower, then back: the second resize reports to Dash what the first did
    # ({autosize: true}), which Dash does not pass on again; the pictures follow both.
    driver.set_window_size(wide["width"] - 400, wide["height"])
    for view in VIEWS:
        until(lambda v=view: drawn_at_size(v, unlike=first[v]), timeout=WAIT_S)
    driver.set_window_size(wide["width"], wide["height"])
    for view in VIEWS:
        until(lambda v=view: drawn_at_size(v) and picture_size(dash_duo, v) == first[v],
              timeout=WAIT_S)
    assert dash_duo.get_logs() == []


HIDDEN_TABS = {  # tab label: (an output it fills, what it shows once opened)
    "Groups": ("group-list", "No saved groups yet"),
    "Compare": ("compare-table", f"All images ({N})"),
    "Co-occurrence": ("text-cooccurrence-note", f"{N} images counted"),
    "Robustness": ("graph-robustness", "has no model"),
    "Label audit": ("text-audit-summary", "corrected on dataset"),
}


def test_hidden_tabs_ask_the_server_nothing_until_opened_then_show_their_content(recorded):
    dash_duo, _ = recorded
    settle(dash_duo)
    at_start = asked(dash_duo)
    for output, _ in HIDDEN_TABS.values():
        assert not any(output in request for request in at_start), output
    assert not any("disagreement-list" in request for request in at_start)
    for label, (output, shown) in HIDDEN_TABS.items():
        open_tab(dash_duo, label)
        dash_duo.wait_for_contains_text(f"#{output}", shown)
    open_tab(dash_duo, "Disagreement")
    until(lambda: len(dash_duo.find_elements("#disagreement-list .thumb")) == 10, WAIT_S)
    assert dash_duo.get_logs() == []
