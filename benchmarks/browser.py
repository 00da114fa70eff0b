"""What a user waits for in a real browser: `python app.py` on synthetic runs of 10k, 100k and
1M images, driven by headless Chromium (Selenium), each gesture timed from the action to its
result drawn in all three views; then the JS heap, the floor of a point-based design (a bare
plotly.js page drawing one scattergl trace of the same size) and that of any page load drawing
its views with plotly.js (a bare page loading plotly.js and showing three pictures).

Each gesture is timed twice in one go: by the page's own clock (from the release, click or
scripted change to the first frame painted with the result, judged on every animation frame)
and by WebDriver polling the page from outside. The poll waits for the page to be free, so
while the page works on something after the result (the detail panel after a selection) it
sees the result late; the page's clock is what the user sees. The first draw's page clock runs
from the navigation's start (a watcher the browser adds to the page before its first script);
it also stamps the first frame with the three views' pictures on screen, which for a large run
come with the page as plain images before plotly.js has loaded and drawn the views.

    python benchmarks/browser.py [--sizes 10000 100000 1000000] [--raster-above N]
                                 [--runs-dir DIR]

Targets: 1M first draw ≤ 10 s, every gesture ≤ 2 s, heap ≤ 1 GB; 100k every gesture ≤ 1 s.
Runs are written as benchmarks/dashboard.py writes them (no images: hover thumbnails are grey).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402

from benchmarks.dashboard import synthetic_run  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-smooth-scrolling",
                  # as the browser tests run it (root in a container): no sandbox, no /dev/shm
                  "--no-sandbox", "--disable-dev-shm-usage",
                  "--window-size=1600,1200", "--enable-precise-memory-info"]
VIEWS = ("view-act", "view-fea", "view-prd")
TIMEOUT_S = 600

# The state of a view as JavaScript: what tells a gesture's result is on screen in it.
VIEW_STATE = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullLayout || !gd._fullData || !gd._fullData.length) return null;
// A whole string's length and hash: a change anywhere in it shows (its tail alone can stay the
// same when a threshold moves no outcome among the last points).
const digest = s => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    return s.length + ':' + h; };
const img = (gd._fullLayout.images || [])[0];
const pts = gd.data[0];
return {picture: img ? digest(img.source) : null,
        length: gd._fullData[0]._length,
        selected: pts && pts.selectedpoints ? pts.selectedpoints.length : 0,
        colour: pts && pts.marker && pts.marker.color && pts.marker.color.bdata
            ? digest(pts.marker.color.bdata) : null,
        opacity: pts && pts.marker && pts.marker.opacity && pts.marker.opacity.bdata
            ? digest(pts.marker.opacity.bdata) : null,
        // A small run's flowers are layout shapes (components/figures.py): their paths' total
        // length (a large run's are in its picture).
        flowers: (gd.layout.shapes || []).reduce(
            (n, s) => n + (s.visible && s.path ? s.path.length : 0), 0)};
"""
PAINTED = """const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => done(true)));"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    driver.set_script_timeout(TIMEOUT_S)
    return driver


def wait(condition, timeout: float = TIMEOUT_S, step: float = 0.05):
    """Poll until condition() is truthy; returns it (a benchmark has no other way to see)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("the browser did not show the result in time")


def states(driver) -> dict:
    return {v: driver.execute_script(VIEW_STATE, v) for v in VIEWS}


REQUESTS = """return performance.getEntriesByType('resource')
    .filter(e => e.name.includes('_dash-update-component') && e.startTime >= arguments[0])
    .map(e => e.duration / 1000);"""


def timed(driver, action, done, in_page: dict | None = None,
          requests_since: float | None = None) -> float:
    """Seconds from the action to `done(before, now)` holding for the views, then painted, as
    WebDriver's polling sees it. With `in_page` (a spec made by in_page, judged by WATCH), the
    page's own clock times the same gesture too, into IN_PAGE. Also notes the callbacks'
    requests it waited on (how many, the longest: those from the action on, or from
    `requests_since` on the page's clock, e.g. 0 for a page the action loads) and the CPU
    seconds the browser and the server spent meanwhile: on a shared machine the wall time grows
    with everyone's load, the CPU seconds much less."""
    before = states(driver)
    mark = driver.execute_script(
        "performance.setResourceTimingBufferSize(100000); return performance.now()")
    if in_page is not None:
        driver.execute_script(WATCH, in_page)
    cpu = cpu_seconds()
    start = time.perf_counter()
    action()
    wait(lambda: done(before, states(driver)))
    driver.execute_async_script(PAINTED)
    took = time.perf_counter() - start
    browser_cpu, server_cpu = (b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
    requests = driver.execute_script(REQUESTS, mark if requests_since is None else requests_since)
    REQUEST_NOTES.append(f"{len(requests)} requests, longest {max(requests, default=0):.2f} s; "
                         f"CPU browser {browser_cpu:.1f} s, server {server_cpu:.1f} s")
    if in_page is not None:
        IN_PAGE.append(wait(lambda: driver.execute_script(WATCHED)))
    return took


# The same "done" as the polled conditions, judged by the page itself on every animation frame,
# so a page busy with later work (the detail panel after a selection) does not delay the
# observation as it delays WebDriver's next poll. The gesture starts at the pointer's release
# or click (or, for a script-made change, when the script makes it); it is done after the
# first frame painted with the result: the frame whose requestAnimationFrame saw it, stamped
# by a message posted from there, which runs once that frame is drawn.
WATCH = """
const spec = arguments[0];
const state = id => {
    const gd = document.querySelector('#' + id + ' .js-plotly-plot');
    if (!gd || !gd._fullLayout || !gd._fullData || !gd._fullData.length) return null;
    const img = (gd._fullLayout.images || [])[0], pts = gd.data[0], m = (pts && pts.marker) || {};
    return {picture: img ? img.source : null,
            selected: pts && pts.selectedpoints ? pts.selectedpoints.length : 0,
            colour: m.color && m.color.bdata ? m.color.bdata : null,
            opacity: m.opacity && m.opacity.bdata ? m.opacity.bdata : null,
            flowers: (gd.layout.shapes || []).reduce(
                (n, s) => n + (s.visible && s.path ? s.path.length : 0), 0)}; };
const text = id => { const e = document.getElementById(id); return e ? e.textContent : ''; };
const before = Object.fromEntries(spec.views.map(v => [v, state(v)]));
const bench = window.__bench = {start: null, took: null};
const begin = () => { if (bench.start === null) bench.start = performance.now(); };
document.addEventListener('pointerup', begin, {capture: true, once: true});
document.addEventListener('click', begin, {capture: true, once: true});
const said = () => { if (!spec.text) return true; const [id, wanted, first] = spec.text;
    return first ? text(id).startsWith(wanted) : text(id).includes(wanted); };
const holds = () => said() &&
    spec.views.every(v => { const now = state(v);
        return now && before[v] && spec.keys.some(k => now[k] !== before[v][k]); });
const frame = () => {
    if (bench.start === null || !holds()) { requestAnimationFrame(frame); return; }
    const channel = new MessageChannel();
    channel.port1.onmessage = () => { bench.took = (performance.now() - bench.start) / 1000; };
    channel.port2.postMessage(null); };
requestAnimationFrame(frame);
"""
WATCHED = "return window.__bench && window.__bench.took;"

# The first draw by the page's clock: from the navigation's start (performance.now()'s zero) to
# the first frame painted with the FEA header counting images and every view drawn in full (its
# picture, or all n points), judged on every animation frame from before the page's own scripts.
FIRST_DRAW = """
const n = %d;
const bench = window.__bench = {start: 0, took: null};
const drawn = id => {
    const gd = document.querySelector('#' + id + ' .js-plotly-plot');
    if (!gd || !gd._fullLayout || !gd._fullData || !gd._fullData.length) return false;
    return Boolean((gd._fullLayout.images || [])[0]) || gd._fullData[0]._length === n; };
const header = () => { const e = document.getElementById('header-fea');
    return e !== null && e.textContent.includes('images'); };
// A large run's views first come as the plain pictures sent with the page (.view-preview),
// before plotly.js has loaded: the first frame with all three on screen, or the views drawn.
const pictured = () => { const shown = [...document.querySelectorAll('.view-preview')].filter(
    p => p.complete && p.naturalWidth > 0 && getComputedStyle(p).display !== 'none'
         && p.getBoundingClientRect().height > 0);
    return shown.length === 3; };
const stamp = key => { const channel = new MessageChannel();
    channel.port1.onmessage = () => {
        if (bench[key] === null) bench[key] = performance.now() / 1000; };
    channel.port2.postMessage(null); };
bench.pictured = null;
const frame = () => {
    const done = header() && %s.every(drawn);
    if (bench.pictured === null && (done || pictured())) stamp('pictured');
    if (!done) { requestAnimationFrame(frame); return; }
    stamp('took'); };
requestAnimationFrame(frame);
"""
PICTURED = "return window.__bench && window.__bench.pictured;"
FIRST_PICTURES = "first pictures on screen (page clock)"


def first_draw(driver, port: int, n: int) -> float:
    """Seconds to the first draw of the page, polled; its page clock goes into IN_PAGE."""
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                    {"source": FIRST_DRAW % (n, list(VIEWS))})
    try:
        took = timed(driver, lambda: driver.get(f"http://127.0.0.1:{port}"),
                     with_text("header-fea", lambda t: "images" in t, drawn(n)),
                     requests_since=0)  # the loaded page's, from its navigation on
        IN_PAGE.append(wait(lambda: driver.execute_script(WATCHED)))
        PICTURED_AT.append(wait(lambda: driver.execute_script(PICTURED)))
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": script["identifier"]})
    return took
STARTED = "if (window.__bench && window.__bench.start === null) " \
    "window.__bench.start = performance.now();\n"
IN_PAGE: list[float] = []
PICTURED_AT: list[float] = []  # the first draw's first pictures on screen, by the page's clock


REQUEST_NOTES: list[str] = []
PROCESSES: dict[str, object] = {}  # "browser": chromedriver's process, "server": app.py's


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) so far of the browser (every Chromium process) and of the
    server; while polling, the benchmark's own script calls count for the browser."""
    import psutil

    def tree(pid) -> float:
        if pid is None:
            return 0.0
        try:
            root = psutil.Process(pid)
            total = 0.0
            for p in [root, *root.children(recursive=True)]:
                try:
                    times = p.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    continue
            return total
        except psutil.NoSuchProcess:
            return 0.0
    return tree(PROCESSES.get("browser")), tree(PROCESSES.get("server"))


def text(driver, element_id: str) -> str:
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
        element_id)


def drawn(n: int):
    def done(_before, now):
        return all(s and (s["picture"] or s["length"] == n) for s in now.values())
    return done


def changed(keys, views=VIEWS):
    """Done when, in each of `views`, one of `keys` of its state differs from before."""
    def done(before, now):
        return all(now[v] and any(now[v][k] != before[v][k] for k in keys) for v in views)
    return done


def with_text(element_id: str, wanted, inner):
    def done(before, now):
        return wanted(text(DRIVER[0], element_id)) and inner(before, now)
    return done


DRIVER: list = []


def set_prop(driver, component_id: str, value) -> None:
    """Set a control's value as the user's click or drag would (Dash runs the same callbacks)."""
    driver.execute_script(
        STARTED + "window.dash_clientside.set_props(arguments[0], {value: arguments[1]})",
        component_id, value)


def click_radio(driver, component_id: str, value: str) -> None:
    driver.find_element("css selector", f"#{component_id} input[value='{value}']").click()


def box_drag(driver, graph_id: str) -> ActionChains:
    """Press and drag a box over the middle fifth of a view with the mouse; returns the
    release, still to perform. A box select is asked for when the button is released, so that
    is where its timing starts (Selenium spends 250 ms on each move of the drag itself)."""
    x0, y0, x1, y1 = driver.execute_script("""
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        const b = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [b.left + 0.4 * b.width, b.top + 0.4 * b.height,
                b.left + 0.6 * b.width, b.top + 0.6 * b.height];""", graph_id)
    actions = ActionChains(driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(round(x0), round(y0))
    pointer.pointer_down()
    for t in (0.33, 0.66, 1.0):
        pointer.move_to_location(round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0)))
    actions.perform()
    release = ActionChains(driver, duration=0)
    release.w3c_actions.pointer_action.pointer_up()
    return release


def zoom(driver, graph_id: str) -> None:
    """Zoom the view onto its middle third, as a scroll or drag zoom reports it."""
    driver.execute_script(STARTED + """
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        const xr = gd._fullLayout.xaxis.range, yr = gd._fullLayout.yaxis.range;
        const third = (r) => [r[0] + (r[1] - r[0]) / 3, r[1] - (r[1] - r[0]) / 3];
        Plotly.relayout(gd, {'xaxis.range': third(xr), 'yaxis.range': third(yr)});""", graph_id)


def in_page(keys, views=VIEWS, text=None) -> dict:
    """A `done` for WATCH: one of `keys` changed in each of `views`, and, when given,
    text = (element id, wanted, True to start with it / False to hold it anywhere)."""
    return {"keys": list(keys), "views": list(views), "text": list(text) if text else None}


def gestures(driver, n: int) -> dict[str, float]:
    """Each gesture's wall time in seconds, in the order a user might make them."""
    picture = ["picture"]
    lit = ("view-act", "view-prd")
    out = {}
    release = box_drag(driver, "view-fea")
    out["box select in FEA → ACT, PRD lit"] = timed(
        driver, release.perform,
        with_text("text-selection-title", lambda t: t.startswith("Selection:"),
                  changed(picture + ["selected"], lit)),
        in_page(picture + ["selected"], lit, ("text-selection-title", "Selection:", True)))
    out["switch to joint flowers"] = timed(
        driver, lambda: click_radio(driver, "radio-point-mode", "joint"),
        # A small run's flowers are layout shapes; a large run's are drawn into its pictures.
        with_text("header-prd", lambda t: t.startswith("flowers"),
                  changed(["flowers", "picture"])),
        in_page(["flowers", "picture"], text=("header-prd", "flowers", True)))
    out["zoom FEA (flowers, picture)"] = timed(
        driver, lambda: zoom(driver, "view-fea"),
        with_text("header-fea", lambda t: "flowers" in t,
                  changed(["flowers", "picture"], ("view-fea",))),
        in_page(["flowers", "picture"], ("view-fea",), ("header-fea", "flowers", False)))
    out["filter (2 attributes, ACT)"] = timed(
        driver, lambda: set_prop(driver, "dropdown-filter-attributes", [2, 5]),
        with_text("text-filter-count", lambda t: "match" in t,
                  changed(picture + ["opacity"])),
        in_page(picture + ["opacity"], text=("text-filter-count", "match", False)))
    click_radio(driver, "radio-colour-by", "outcome")
    wait(lambda: "Outcome" in text(driver, "colour-legend"))
    wait(lambda: all(s and (s["picture"] or s["colour"]) for s in states(driver).values()))
    time.sleep(2 if n < 500_000 else 8)  # the recolour's own callbacks settle (not timed)
    out["threshold 0.5 → 0.3 (outcome colours)"] = timed(
        driver, lambda: set_prop(driver, "slider-threshold", 0.3),
        changed(picture + ["colour"]), in_page(picture + ["colour"]))
    return out


def heap_mb(driver) -> float:
    return driver.execute_script("return performance.memory.usedJSHeapSize") / 2**20


def bare_plotly_s(driver, n: int) -> float:
    """Seconds a bare plotly.js page takes to draw one scattergl trace of n points."""
    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as page:
        page.write(f"<html><body><div id='g' style='width:450px;height:410px'></div>"
                   f"<script src='file://{bundle}'></script></body></html>")
    driver.get(f"file://{page.name}")
    wait(lambda: driver.execute_script("return typeof Plotly !== 'undefined'"))
    took = driver.execute_async_script("""
        const done = arguments[arguments.length - 1], n = arguments[0];
        const x = new Float32Array(n), y = new Float32Array(n), c = new Float32Array(n);
        for (let i = 0; i < n; i++) {
            x[i] = Math.random(); y[i] = Math.random(); c[i] = Math.random(); }
        const start = performance.now();
        Plotly.newPlot('g', [{type: 'scattergl', mode: 'markers', x: x, y: y,
                              marker: {color: c, size: 3}}], {dragmode: 'select'})
            .then(() => requestAnimationFrame(() => requestAnimationFrame(
                () => done((performance.now() - start) / 1000))));""", n)
    os.unlink(page.name)
    return took


def bare_page_load_s() -> float:
    """Seconds from navigation to three plotly.js views each showing a picture (440 × 406
    scattered dots, as a large run's view is drawn), painted: the floor of a page load for a
    design that draws its views with plotly.js, whatever the server sends. In a browser of its
    own, so that nothing is compiled or cached yet, as at the dashboard's first draw."""
    import base64
    import io

    import numpy as np
    import plotly
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = np.zeros((406, 440, 4), np.uint8)
    dots = rng.integers(0, (406, 440), (20_000, 2))
    pixels[dots[:, 0], dots[:, 1]] = (31, 119, 180, 230)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    source = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    views = "".join(f"<div id='v{i}' style='width:500px;height:460px;display:inline-block'></div>"
                    for i in range(3))
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as page:
        page.write(f"""<html><body>{views}<script src='file://{bundle}'></script><script>
window.__took = null;
const layout = {{xaxis: {{range: [0, 1]}}, yaxis: {{range: [0, 1]}}, images: [{{
    source: '{source}', xref: 'x', yref: 'y', x: 0, y: 1, sizex: 1, sizey: 1,
    sizing: 'stretch', layer: 'below'}}]}};
Promise.all([0, 1, 2].map(i => Plotly.newPlot('v' + i, [{{type: 'scatter', x: [], y: []}}],
                                               layout)))
    .then(() => requestAnimationFrame(() => {{
        const channel = new MessageChannel();
        channel.port1.onmessage = () => {{ window.__took = performance.now() / 1000; }};
        channel.port2.postMessage(null); }}));
</script></body></html>""")
    driver = browser()
    try:
        driver.get(f"file://{page.name}")
        return wait(lambda: driver.execute_script("return window.__took"))
    finally:
        driver.quit()
        os.unlink(page.name)


def measure(n: int, raster_above: int | None, runs_dir: Path | None = None) -> dict:
    data_dir = made_run(n, runs_dir)
    port = free_port()
    env = {**os.environ, "XRAE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    if raster_above is not None:
        env["XRAE_RASTER_ABOVE"] = str(raster_above)
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    driver = None
    try:
        driver = browser()
        DRIVER[:] = [driver]
        PROCESSES.update(browser=driver.service.process.pid, server=server.pid)
        wait(lambda: _serving(port), timeout=120)
        # The server compiles its picture code in the background as it starts (tens of seconds
        # on a loaded machine); a user opening the page later does not wait for it.
        time.sleep(40 if n > 50_000 else 0)
        result = {"first draw": first_draw(driver, port, n)}
        result[FIRST_PICTURES] = PICTURED_AT.pop()
        time.sleep(2)
        result.update(gestures(driver, n))
        result["JS heap (MB)"] = heap_mb(driver)
        result["bare plotly.js scattergl draw"] = bare_plotly_s(driver, n)
        result["bare plotly.js page load, 3 pictures"] = bare_page_load_s()
        return result
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)


def made_run(n: int, runs_dir: Path | None) -> Path:
    """A data directory holding a synthetic run of n images: made in a new temporary folder, or
    under runs_dir/n, where a finished one from an earlier benchmark is used again (a run is
    written whole or not at all, so a folder with its run is a finished one)."""
    if runs_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"raster-bench-{n}-"))
    else:
        data_dir = runs_dir / str(n)
        if (data_dir / "runs" / f"bench-{n}" / "run.json").is_file():
            return data_dir
    synthetic_run(data_dir, n)
    return data_dir


def _serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--raster-above", type=int, default=None,
                        help="XRAE_RASTER_ABOVE for the app (default: the app's own)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="keep the synthetic runs in RUNS_DIR/N and use them again next time "
                             "(default: new ones in temporary folders)")
    args = parser.parse_args(argv)
    for n in args.sizes:
        load = Path("/proc/loadavg").read_text().split()[:3]
        result = measure(n, args.raster_above, args.runs_dir)
        print(f"\n{n:,} images (load average before: {' '.join(load)}); each gesture: the page's "
              f"own clock, then WebDriver's polling", flush=True)
        notes, clocked = iter(REQUEST_NOTES), iter(IN_PAGE)
        for name, value in result.items():
            if name == FIRST_PICTURES:  # a page clock with no WebDriver time beside it
                print(f"  {name:42s} {value:8.2f} s  (a large run's pictures, sent with the "
                      f"page, before plotly.js has drawn)", flush=True)
                continue
            unit = " MB" if "MB" in name else " s"
            gesture = unit == " s" and "plotly.js" not in name
            note = next(notes, "") if gesture else ""
            page = next(clocked, None) if gesture else None
            shown = f"{page:8.2f} s" if page is not None else " " * 10
            print(f"  {name:42s} {shown} {value:8.2f}{unit}  {note}", flush=True)
        REQUEST_NOTES.clear()
        IN_PAGE.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
