"""Retraining beyond one machine: with REDIS_URL set, the background callback runs on a Celery
worker; here a real redis-server and a real `celery -A app:celery_app worker` started by the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import corrections
from pipeline.store import list_runs
from tests.test_retrain import (
    REPO,
    TINY_RUN,
    build_in_child,
    click,
    fingerprint,
    leftovers,
    open_audit_tab,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = [
    pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not Path(REDIS_SERVER).exists(),
                       reason="redis-server is not installed (apt-get install redis-server)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A throw-away redis-server on a free port, with no persistence."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, 20, "redis-server start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def celery_data(tmp_path_factory) -> Path:
    """The data directory the worker serves: a tiny dataset and a run with its model."""
    return build_in_child(tmp_path_factory.mktemp("celery") / "data")


@pytest.fixture(scope="module")
def worker(redis_url, celery_data, tmp_path_factory):
    """`celery -A app:celery_app worker --pool=solo`, as docs/retraining.md tells a lab to run."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, "REDIS_URL": redis_url, "XRAE_DATA_DIR": str(celery_data)}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "app:celery_app", "worker", "--pool=solo",
             "--loglevel=INFO", "--without-gossip", "--without-mingle",
             "-n", f"xrae-test-{os.getpid()}@%h"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready." in log.read_text() or proc.poll() is not None, 120,
                   "celery worker start")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield log
    finally:
        stop(proc)


@pytest.fixture
def dashboard(dash_duo, worker, redis_url, celery_data, monkeypatch):
    """The dashboard with the Celery manager: its background callbacks go to the worker."""
    from app import create_app

    monkeypatch.setenv("REDIS_URL", redis_url)
    app = create_app(celery_data)
    assert type(app._background_manager).__name__ == "CeleryManager"
    dash_duo.start_server(app)
    open_audit_tab(dash_duo)
    return dash_duo


def set_epochs(dash_duo, epochs: int) -> None:
    field = dash_duo.find_element("#input-retrain-epochs")
    field.clear()
    field.send_keys(str(epochs))


def test_retraining_runs_on_a_celery_worker_and_writes_a_new_run(dashboard, worker, celery_data):
    dash_duo = dashboard
    before = {r.id for r in list_runs(celery_data)}
    corrections.set_label(celery_data, "tiny-data", "img002", "Ring", 1, author="bo")
    set_epochs(dash_duo, 1)
    click(dash_duo, "#button-retrain")
    dash_duo.wait_for_contains_text("#text-retrain-status", "Done: new run", timeout=300)

    new = [r for r in list_runs(celery_data) if r.id not in before]
    assert len(new) == 1 and new[0].meta["parent_run"] == TINY_RUN
    assert new[0].act[2, new[0].attributes.index("Ring")] == 1
    assert new[0].meta["retrained"]["corrections"] == "snapshot"  # no SQLite on the worker
    dash_duo.wait_for_contains_text("#retrain-compare-table", "AP")
    assert "succeeded" in worker.read_text()  # the job ran on the worker, not in the web app
    assert leftovers(celery_data) == []
    assert dash_duo.get_logs() == []


def test_cancel_reaches_a_job_on_a_celery_worker(dashboard, celery_data):
    dash_duo = dashboard
    before = fingerprint(celery_data)
    set_epochs(dash_duo, 200)
    click(dash_duo, "#button-retrain")
    dash_duo.wait_for_contains_text("#progress-retrain", "fine-tuning", timeout=180)
    click(dash_duo, "#button-cancel-retrain")
    dash_duo.wait_for_contains_text("#text-retrain-status", "Cancelled", timeout=90)

    assert fingerprint(celery_data) == before
    assert leftovers(celery_data) == []
    assert dash_duo.get_logs() == []
