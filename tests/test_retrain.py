"""Retraining on corrected labels: a new valid run; cancel and failure leave every run as it was;
one job per run; and the same through the dashboard's background callback in a real browser.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import corrections, jobs, retrain
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.store import RUNS, get_run, list_runs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TINY_RUN = "tiny"


def build_tiny_run(data_dir) -> None:
    """A 24-image dataset of 32-pixel images and a one-epoch resnet18 run made from it.

    Attribute 0 ("BCC") is a bright image, so even one epoch learns something about it.
    """
    import torch

    from pipeline.attributes import ATTRIBUTES
    from pipeline.infer import make_run
    from pipeline.store import DatasetWriter
    from pipeline.train import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with DatasetWriter(data_dir, "tiny-data", ATTRIBUTES, meta={"source": "test"}) as ds:
        for i in range(24):
            act = (rng.random(len(ATTRIBUTES)) < 0.3).astype(np.uint8)
            ds.add(rng.poisson(2 + 30 * act[0], (32, 32)), act, image_id=f"img{i:03d}",
                   split="test" if i % 4 == 0 else "train", source="test")
    checkpoint = Path(data_dir) / "first.pt"
    train(ds.final, arch="resnet18", epochs=1, input_size=32, batch_size=8, lr=1e-3,
          device="cpu", checkpoint_out=checkpoint, progress=False)
    make_run(data_dir, "tiny-data", checkpoint, device="cpu", run_id=TINY_RUN, progress=False)
    checkpoint.unlink()


def build_in_child(data_dir: Path) -> Path:
    """build_tiny_run in a child process: torch never runs multithreaded in the test process, so
    the dashboard's forked background jobs cannot inherit a busy OpenMP pool."""
    code = f"from tests.test_retrain import build_tiny_run; build_tiny_run({str(data_dir)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=600)
    return data_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny data directory, built once per test session."""
    return build_in_child(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture
def tiny(tiny_data, tmp_path) -> Path:
    """A private copy of the tiny data directory (dataset + one run with model.pt)."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    return data_dir


def fingerprint(data_dir: Path) -> dict[str, str]:
    """Every file under runs/ with its content hash: equal fingerprints mean untouched runs."""
    root = data_dir / RUNS
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(data_dir: Path) -> list[str]:
    """Temporary directories, locks or cancel flags left in runs/."""
    return sorted(p.name for p in (data_dir / RUNS).iterdir() if p.name.startswith("."))


def one_thread():
    import torch

    torch.set_num_threads(1)


def test_retraining_writes_a_new_valid_run_with_the_corrected_labels(tiny):
    one_thread()
    before = fingerprint(tiny)
    corrections.set_label(tiny, "tiny-data", "img005", "Ring", 1, author="ana")
    corrections.set_label(tiny, "tiny-data", "img006", "BCC", 0, author="ana")
    old_act = np.array(get_run(TINY_RUN, tiny).act)
    heard: list[tuple[str, float]] = []

    path = retrain.retrain_run(tiny, TINY_RUN, epochs=1, device="cpu", progress=False,
                               on_progress=lambda stage, f: heard.append((stage, f)))

    new = get_run(path.name, tiny)
    assert [r.id for r in list_runs(tiny)] == [TINY_RUN, new.id]
    assert new.meta["parent_run"] == TINY_RUN
    assert new.meta["embedding"]["placed"] == f"initialised from parent {TINY_RUN}"
    assert new.meta["retrained"]["corrected_labels"] == 2
    ring, bcc = new.attributes.index("Ring"), new.attributes.index("BCC")
    assert new.act[5, ring] == 1 and new.act[6, bcc] == 0
    expected = old_act.copy()
    expected[5, ring], expected[6, bcc] = 1, 0
    assert (np.asarray(new.act) == expected).all()  # the corrections and nothing else
    assert new.prd.shape == (24, 17) and np.isfinite(new.prd).all()
    assert new.emb("fea").shape == (24, 2)
    assert new.checkpoint is not None
    assert new.meta["model"]["weights_sha256"] != get_run(TINY_RUN, tiny).meta["model"][
        "weights_sha256"]
    fractions = [f for _, f in heard]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"fine-tuning", "re-inferring", "re-embedding", "done"} <= {s for s, _ in heard}
    after = fingerprint(tiny)
    assert {k: after[k] for k in before} == before  # the old run is untouched
    assert leftovers(tiny) == []

    table = retrain.compare_runs(get_run(TINY_RUN, tiny), new)
    assert list(table.columns) == ["attribute", "AP before", "P before", "R before", "F1 before",
                                   "AP after", "P after", "R after", "F1 after"]
    assert table["attribute"].tolist() == [*new.attributes, "mean"]


def test_cancel_midway_leaves_no_run_behind(tiny):
    one_thread()
    before = fingerprint(tiny)
    stages = []

    def cancel_once_training(stage, fraction):
        stages.append(stage)
        if stage == "fine-tuning":  # as the Cancel button does, from anywhere
            jobs.request_cancel(tiny, TINY_RUN)

    with pytest.raises(retrain.Cancelled, match="cancelled; no run was written"):
        retrain.retrain_run(tiny, TINY_RUN, epochs=5, device="cpu", progress=False,
                            on_progress=cancel_once_training)
    assert "re-inferring" not in stages
    assert fingerprint(tiny) == before
    assert jobs.wait_until_stopped(tiny, TINY_RUN, timeout=5)
    assert leftovers(tiny) == []


def test_a_job_that_fails_leaves_existing_runs_intact(tiny):
    one_thread()
    before = fingerprint(tiny)

    def fail_while_inferring(stage, fraction):
        if stage == "re-inferring":
            raise RuntimeError("worker lost its disk")

    with pytest.raises(RuntimeError, match="worker lost its disk"):
        retrain.retrain_run(tiny, TINY_RUN, epochs=1, device="cpu", progress=False,
                            on_progress=fail_while_inferring)
    assert fingerprint(tiny) == before
    assert leftovers(tiny) == []  # no lock, no temporary checkpoint, no half run


def test_only_one_retraining_per_run_at_a_time(tiny):
    with jobs.run_lock(tiny, TINY_RUN):
        with pytest.raises(PipelineError, match=f"run {TINY_RUN} is already being retrained"):
            retrain.retrain_run(tiny, TINY_RUN, epochs=1, device="cpu", progress=False)
    assert leftovers(tiny) == []


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = jobs.lock_path(tmp_path, "some-run")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "token": "x"}))
    with jobs.run_lock(tmp_path, "some-run") as held:
        assert jobs.read_lock(held)["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_of_a_live_job_on_another_machine_is_respected_until_it_goes_silent(tmp_path):
    lock = jobs.lock_path(tmp_path, "some-run")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "token": "x"}))
    with pytest.raises(PipelineError, match="pid 1 on gpu-node-7"):
        with jobs.run_lock(tmp_path, "some-run"):
            pass
    old = lock.stat().st_mtime - jobs.LOCK_STALE_S - 60
    os.utime(lock, (old, old))  # no heartbeat for longer than the stale limit
    with jobs.run_lock(tmp_path, "some-run") as held:  # taken over: the lock is now ours
        holder = jobs.read_lock(held)
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())


def test_retraining_a_run_without_a_model_is_a_clear_error(synthetic_run, capsys):
    data_dir = str(synthetic_run.data_dir)
    assert main(["retrain", "--run", synthetic_run.id, "--data-dir", data_dir]) == 2
    assert "has no model.pt" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="has no model.pt"):
        retrain.retrain_in_subprocess(data_dir, synthetic_run.id)


# ---------------------------------------------------------------- through the dashboard


def open_audit_tab(dash_duo):
    dash_duo.wait_for_element("#tabs-selection")
    dash_duo.driver.find_element("link text", "Label audit").click()
    centre(dash_duo, "#button-retrain")


def component_props(dash_duo, component_id: str) -> dict:
    """A component's current props, read from the Dash renderer's own state."""
    return dash_duo.driver.execute_script(
        """const s = window.store.getState();
        let node = s.layout;
        for (const key of s.paths.strs[arguments[0]]) node = node[key];
        return node.props;""", component_id)


def centre(dash_duo, selector: str):
    """Scroll an element to the middle of the window (the detail view sits below the fold)."""
    element = dash_duo.wait_for_element(selector)
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    return element


def click(dash_duo, selector: str) -> None:
    """Scroll to an element and click it, again while the page is still settling around it."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.support.wait import WebDriverWait

    def clicked(_) -> bool:
        try:
            centre(dash_duo, selector).click()
            return True
        except ElementClickInterceptedException:
            return False

    WebDriverWait(dash_duo.driver, 10).until(clicked)


def choose(dash_duo, selector: str, index: int) -> None:
    """Pick the index-th option of a dcc.Dropdown as a user does."""
    click(dash_duo, selector)
    options = dash_duo.wait_for_element(".dash-dropdown-options").find_elements(
        "css selector", ".dash-dropdown-option")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                   options[index])
    options[index].click()


def wait_for_prop(dash_duo, component_id: str, prop: str, value, timeout: float = 10) -> bool:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(dash_duo.driver, timeout).until(
        lambda _: component_props(dash_duo, component_id).get(prop) == value)
    return True


@pytest.fixture
def dashboard(dash_duo, tiny, monkeypatch):
    from app import create_app

    monkeypatch.delenv("REDIS_URL", raising=False)  # the diskcache manager
    monkeypatch.setenv("XRAE_DATA_DIR", str(tiny))
    dash_duo.start_server(create_app(tiny))
    open_audit_tab(dash_duo)
    return dash_duo


@pytest.mark.browser
def test_retrain_button_runs_a_background_job_and_offers_the_new_run(dashboard, tiny):
    dash_duo = dashboard
    corrections.set_label(tiny, "tiny-data", "img001", "Halo", 1, author="ana")
    epochs = dash_duo.find_element("#input-retrain-epochs")
    epochs.clear()
    epochs.send_keys("1")
    click(dash_duo, "#button-retrain")
    dash_duo.wait_for_contains_text("#text-retrain-status", "Done: new run", timeout=240)

    new = [r for r in list_runs(tiny) if r.id != TINY_RUN]
    assert len(new) == 1 and new[0].meta["retrained"]["corrected_labels"] == 1
    assert new[0].meta["retrained"]["corrections"] == "snapshot"  # read by the web process
    dash_duo.wait_for_contains_text("#retrain-compare-table", "AP")
    assert dash_duo.find_element("#button-retrain").is_enabled()
    offered = [o["value"] for o in component_props(dash_duo, "run-picker")["options"]]
    assert sorted(offered) == sorted([TINY_RUN, new[0].id])  # refreshed without a reload
    click(dash_duo, "#button-show-new-run")
    dash_duo.wait_for_contains_text("#retrain-compare-table", "AP")
    assert wait_for_prop(dash_duo, "run-picker", "value", new[0].id)
    assert leftovers(tiny) == []
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_cancel_button_stops_the_job_and_keeps_every_run(dashboard, tiny):
    dash_duo = dashboard
    before = fingerprint(tiny)
    epochs = dash_duo.find_element("#input-retrain-epochs")
    epochs.clear()
    epochs.send_keys("200")  # long enough to be cancelled midway
    click(dash_duo, "#button-retrain")
    dash_duo.wait_for_contains_text("#progress-retrain", "fine-tuning", timeout=120)
    click(dash_duo, "#button-cancel-retrain")
    dash_duo.wait_for_contains_text("#text-retrain-status", "Cancelled", timeout=60)

    assert [r.id for r in list_runs(tiny)] == [TINY_RUN]
    assert fingerprint(tiny) == before
    assert leftovers(tiny) == []
    assert dash_duo.get_logs() == []


def test_a_job_uses_the_corrections_snapshot_it_is_handed(tiny, tmp_path):
    corrections.set_label(tiny, "tiny-data", "img003", "Ring", 1)  # in the database only
    run = get_run(TINY_RUN, tiny)
    records = retrain.snapshot_records(tiny, "tiny-data")
    assert records == [{"image_id": "img003", "attribute": "Ring", "value": 1}]
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps([{"image_id": "img004", "attribute": "Halo", "value": 1}]))

    ds, act, n = retrain.corrected_dataset_labels(tiny, run, retrain.read_snapshot(snapshot))
    halo, ring = ds.attributes.index("Halo"), ds.attributes.index("Ring")
    assert act[4, halo] == 1 and act[3, ring] == ds.act[3, ring]
    assert n == 1
    snapshot.write_text('[{"image_id": "img004", "attribute": "Halo", "value": 7}]')
    with pytest.raises(PipelineError, match="snapshot.json holds labels other than 0 and 1"):
        retrain.read_snapshot(snapshot)
    snapshot.write_text("{not json")
    with pytest.raises(PipelineError, match="snapshot.json is unreadable"):
        retrain.read_snapshot(snapshot)


@pytest.mark.browser
def test_a_failing_job_shows_its_error_and_keeps_every_run(dashboard, tiny):
    dash_duo = dashboard
    before = fingerprint(tiny)
    [shard] = (tiny / "datasets" / "tiny-data" / "images.zarr" / "full").rglob("c/0/0/0")
    shard.unlink()  # a lost file of the dataset's images
    click(dash_duo, "#button-retrain")
    dash_duo.wait_for_contains_text("#text-retrain-status", "Retraining failed: image data file",
                                    timeout=120)
    dash_duo.wait_for_contains_text("#text-retrain-status", "c/0/0/0 is missing")
    assert [r.id for r in list_runs(tiny)] == [TINY_RUN]
    assert fingerprint(tiny) == before
    assert leftovers(tiny) == []
    assert dash_duo.find_element("#button-retrain").is_enabled()
    assert dash_duo.get_logs() == []
