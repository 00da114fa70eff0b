"""The app as a program: importing it builds nothing, `create_app` serves every panel and
callback, `python app.py` honours its flags, and `gunicorn -w 2 app:server` serves the runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from app import create_app
from components import ids
from components.raster import DEFAULT_SIZE
from pipeline import corrections
from tests.conftest import free_port, write_synthetic_run
from tests.test_raster_browser import png_pixels

ROOT = Path(__file__).resolve().parents[1]
PANEL_IDS = (ids.CONTROL_PANEL, ids.ATTRIBUTE_FILTERS, ids.VIEW_ACT, ids.VIEW_FEA, ids.VIEW_PRD,
             ids.SELECTION_MANAGER, ids.DETAIL_VIEW, ids.DETAIL_SCIENCE, ids.AUDIT_PANEL,
             ids.RUN_PICKER, ids.THRESHOLD, ids.STORE_SELECTION, ids.STORE_DETAIL_INDEX)


def get(url: str, timeout: float = 30.0) -> bytes:
    """GET url, retrying until the server answers or the timeout passes."""
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)  # polling a starting server; not a wait for a browser condition


def python(code: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=60)


def test_importing_the_app_module_touches_no_data_directory(tmp_path):
    data = tmp_path / "nowhere"
    done = python("import app; print('imported')", tmp_path, {"XRAE_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    assert not data.exists() and not (tmp_path / "data").exists()


def test_every_panel_and_callback_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    write_synthetic_run(tmp_path / "data", n=20)
    for _ in range(2):  # a second app in the same process gets the callbacks too
        client = create_app(tmp_path / "data").server.test_client()
        layout = client.get("/_dash-layout").get_data(as_text=True)
        for panel in PANEL_IDS:
            assert f'"{panel}"' in layout
        callbacks = json.loads(client.get("/_dash-dependencies").get_data(as_text=True))
        outputs = " ".join(c["output"] for c in callbacks)
        for wanted in (f"{ids.VIEW_FEA}.figure", f"{ids.STORE_SELECTION}.data",
                       f"{ids.SELECTION_SUMMARY}.children", f"{ids.DETAIL_TABLE}.children"):
            assert wanted in outputs


def find(node, component_id: str):
    """The props of the component with this id in a layout's JSON, or None."""
    if isinstance(node, list):
        return next((f for f in (find(n, component_id) for n in node) if f is not None), None)
    if not isinstance(node, dict):
        return None
    props = node.get("props", {})
    if props.get("id") == component_id:
        return props
    return next((f for f in (find(v, component_id) for v in props.values()) if f is not None),
                None)


def test_the_page_comes_with_the_newest_run_chosen_and_its_attributes(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    client = create_app(tmp_path / "data").server.test_client()
    empty = client.get("/_dash-layout").get_json()
    assert find(empty, ids.RUN_PICKER)["value"] is None
    assert find(empty, ids.EMPTY_STATE)["is_open"] is True  # "no run to show yet", at once
    write_synthetic_run(tmp_path / "data", n=20, seed=1)
    newest = write_synthetic_run(tmp_path / "data", n=20, seed=2)
    layout = client.get("/_dash-layout").get_json()  # read again on every load
    assert find(layout, ids.RUN_PICKER)["value"] == newest.id
    assert len(find(layout, ids.RUN_PICKER)["options"]) == 2
    assert find(layout, ids.EMPTY_STATE)["is_open"] is False
    petals = find(layout, ids.FLOWER_ATTRIBUTES)
    assert petals["value"] == list(range(len(newest.attributes))) == \
        [o["value"] for o in petals["options"]]
    assert len(find(layout, ids.FILTER_ATTRIBUTES)["options"]) == len(newest.attributes)


def previews(layout) -> dict[str, np.ndarray | None]:
    """Each view's first picture in a layout, as RGBA pixels (None when it has none)."""
    found = {s: find(layout, ids.VIEW_PREVIEWS[s]).get("src") for s in ids.VIEWS}
    return {s: None if uri is None else png_pixels(uri) for s, uri in found.items()}


def test_a_large_run_comes_with_its_pictures_and_the_next_page_shows_a_correction(
        tmp_path, monkeypatch):
    """The page shows a large run's three views as plain pictures before plotly.js has loaded;
    they are the views as first drawn, so a label corrected since the last page load shows."""
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    run = write_synthetic_run(tmp_path / "data", n=60)
    client = create_app(tmp_path / "data").server.test_client()
    first = previews(client.get("/_dash-layout").get_json())
    for space, rgba in first.items():
        assert rgba.shape == (DEFAULT_SIZE[1], DEFAULT_SIZE[0], 4), space
        assert (rgba[..., :3] < 200).any(axis=-1).sum() > 60, f"{space}: no points drawn"
    assert not np.array_equal(first["act"], first["fea"])  # each view its own map

    # Colour by error distance (the default): flipping a label moves that image's colour.
    j = int(np.argmax(np.abs(np.asarray(run.act[7], float) - np.asarray(run.prd[7]))))
    corrections.set_label(tmp_path / "data", run.meta["dataset"], run.images["image_id"][7],
                          run.attributes[j], 1 - int(run.act[7, j]), author="ana")
    after = previews(client.get("/_dash-layout").get_json())
    assert all(not np.array_equal(first[s], after[s]) for s in ids.VIEWS)

    monkeypatch.setenv("XRAE_RASTER_ABOVE", "100")  # a run drawn as points has none
    assert previews(client.get("/_dash-layout").get_json()) == dict.fromkeys(ids.VIEWS)


def test_a_run_whose_map_cannot_be_read_still_gets_its_page(tmp_path, monkeypatch):
    """The first pictures are extra: a run whose map file is damaged gets the page without
    them (its views then say what is wrong), not a broken page."""
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    run = write_synthetic_run(tmp_path / "data", n=60)
    (run.path / "emb_fea.npy").write_bytes(b"not a numpy file")
    response = create_app(tmp_path / "data").server.test_client().get("/_dash-layout")
    assert response.status_code == 200
    assert find(response.get_json(), ids.RUN_PICKER)["value"] == run.id  # chosen, still
    assert previews(response.get_json()) == dict.fromkeys(ids.VIEWS)


def layout_ids(node) -> set[str]:
    """Every string id in a layout's JSON."""
    if isinstance(node, list):
        return set().union(*(layout_ids(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["props"]["id"]} if isinstance(node.get("props", {}).get("id"), str) else set()
    return found.union(*(layout_ids(v) for v in node.get("props", {}).values()))


def test_every_callbacks_ids_are_in_the_page_from_the_start(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    app = create_app(tmp_path / "data")
    assert app.config.suppress_callback_exceptions is False  # Dash checks every id
    client = app.server.test_client()
    present = layout_ids(client.get("/_dash-layout").get_json())
    for callback in client.get("/_dash-dependencies").get_json():
        for part in (*callback["inputs"], *callback["state"]):
            if not part["id"].startswith("{"):  # pattern-matching ids are made with their rows
                assert part["id"] in present, part
        for output in callback["output"].strip(".").split("..."):
            name = output.rsplit(".", 1)[0]
            if not name.startswith("{"):
                assert name in present, output


def test_python_app_py_serves_the_runs_in_data_dir_on_the_given_port(tmp_path):
    write_synthetic_run(tmp_path / "data", n=20)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--data-dir", str(tmp_path / "data"),
         "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = get(f"http://127.0.0.1:{port}/").decode()
        assert "X-ray Attribute Explorer" in page
        assert ids.VIEW_FEA in get(f"http://127.0.0.1:{port}/_dash-layout").decode()
        assert not (tmp_path / "data" / "runs" / "demo").exists()  # runs existed: no demo built
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None, reason="gunicorn missing")
def test_gunicorn_with_two_workers_serves_the_dashboard(tmp_path):
    write_synthetic_run(tmp_path / "data", n=20)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "app:server"],
        cwd=ROOT, env={**os.environ, "XRAE_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(4):  # requests land on either worker
            assert ids.SELECTION_MANAGER in get(f"http://127.0.0.1:{port}/_dash-layout").decode()
        deps = json.loads(get(f"http://127.0.0.1:{port}/_dash-dependencies"))
        assert any(ids.VIEW_PRD in c["output"] for c in deps)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_python_app_py_builds_the_demo_with_progress_when_there_is_no_run(tmp_path):
    """Only the start is watched: the build itself is the demo's own test."""
    import signal

    if importlib.util.find_spec("pipeline.demo") is None:
        pytest.skip("pipeline.demo not present")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--data-dir", str(tmp_path / "empty"),
         "--port", str(free_port())], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = server.stdout.readline()
        assert "building the demo run" in first
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started, nothing else
        server.wait(timeout=30)


def test_python_app_py_help_prints_its_whole_first_sentence(tmp_path):
    import app
    from pipeline.cli import first_paragraph

    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "60"})
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())  # argparse wraps the sentence to the terminal's width
    assert first_paragraph(app.__doc__) in said
    assert "`gunicorn -w 2 app:server` serves the runs." in said
