"""Who may change labels and start jobs, through the real Flask server: sign-in (basic auth or a
trusted proxy header), viewer and editor roles, read-only mode, the retraining job limit."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time

import pytest

from app import create_app, main
from components import ids
from pipeline import access, corrections, jobs
from pipeline.cli import main as pipeline_main
from pipeline.store import RUNS
from tests.conftest import write_synthetic_run
from tests.test_server_inputs import post

N = 30
FLIP = [(ids.STORE_CORRECTIONS, "data"), (ids.CORRECTION_STATUS, "children"),
        (ids.CORRECTION_NOTE, "value")]
RETRAIN = [(ids.STORE_RETRAIN_REQUEST, "data"), (ids.RETRAIN_STATUS, "children")]


@pytest.fixture
def run(tmp_path, monkeypatch):
    for name in (access.AUTH_FILE_ENV, access.USER_HEADER_ENV, access.READ_ONLY_ENV,
                 access.MAX_JOBS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    return write_synthetic_run(tmp_path / "data", n=N)


@pytest.fixture
def users(tmp_path) -> str:
    path = tmp_path / "users.json"
    access.add_user(path, "ana", "ana-pw", access.EDITOR)
    access.add_user(path, "vic", "vic-pw", access.VIEWER)
    return str(path)


def basic(name: str, password: str) -> dict:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def flip(client, run, author="mallory", headers=None, index=3, column=0):
    """Press Flip label on image `index`, attribute `column`, with `author` typed in the form."""
    return post(client, FLIP, [{"id": ids.FLIP_LABEL, "property": "n_clicks", "value": 1},
                               {"id": ids.UNDO_CORRECTION, "property": "n_clicks", "value": 0}],
                [{"id": ids.CORRECTION_ATTRIBUTE, "property": "value", "value": column},
                 {"id": ids.CORRECTION_NOTE, "property": "value", "value": "checked"},
                 {"id": ids.CORRECTION_AUTHOR, "property": "value", "value": author},
                 {"id": ids.STORE_DETAIL_INDEX, "property": "data", "value": index},
                 {"id": ids.RUN_PICKER, "property": "value", "value": run.id}],
                headers=headers)


def ask_retraining(client, run, headers=None):
    return post(client, RETRAIN, [{"id": ids.RETRAIN, "property": "n_clicks", "value": 1}],
                [{"id": ids.RUN_PICKER, "property": "value", "value": run.id},
                 {"id": ids.RETRAIN_EPOCHS, "property": "value", "value": 3}], headers=headers)


def status(response, output=ids.CORRECTION_STATUS) -> str:
    assert response.status_code == 200
    return json.dumps(response.get_json()["response"][output])


def test_without_credentials_every_page_and_callback_is_401(run, users):
    client = create_app(run.data_dir, auth_file=users).server.test_client()
    for response in (client.get("/"), client.get("/_dash-layout"), flip(client, run),
                     client.get("/", headers=basic("ana", "wrong")),
                     client.get("/", headers={"Authorization": "Basic !!not-base64"})):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert not corrections.db_path(run.data_dir).exists()
    assert client.get("/", headers=basic("vic", "vic-pw")).status_code == 200


def test_an_editors_correction_is_recorded_under_their_sign_in_not_the_typed_name(run, users):
    client = create_app(run.data_dir, auth_file=users).server.test_client()
    assert "(saved)" in status(flip(client, run, author="mallory",
                                    headers=basic("ana", "ana-pw")))
    assert corrections.history(run.data_dir)["author"].tolist() == ["ana"]
    page = client.get("/_dash-layout", headers=basic("ana", "ana-pw")).get_json()
    field = _find(page, ids.CORRECTION_AUTHOR)["props"]
    assert field["value"] == "ana" and field["disabled"] is True


def test_a_viewer_is_refused_and_nothing_is_written(run, users):
    client = create_app(run.data_dir, auth_file=users).server.test_client()
    as_vic = basic("vic", "vic-pw")
    assert "vic is a viewer: only editors can correct labels" in status(flip(client, run,
                                                                             headers=as_vic))
    assert "only editors can start or cancel retraining" in status(
        ask_retraining(client, run, as_vic), ids.RETRAIN_STATUS)
    assert not corrections.db_path(run.data_dir).exists()
    assert not list((run.data_dir / RUNS).glob(".ticket-*"))


def test_behind_a_proxy_the_header_names_the_author(run):
    client = create_app(run.data_dir,
                        trust_user_header="X-Forwarded-User").server.test_client()
    assert client.get("/").status_code == 401  # not through the proxy
    assert "(saved)" in status(flip(client, run, author="mallory",
                                    headers={"X-Forwarded-User": "carol"}))
    assert corrections.history(run.data_dir)["author"].tolist() == ["carol"]


def test_behind_a_proxy_the_users_file_gives_the_roles(run, users):
    client = create_app(run.data_dir, auth_file=users,
                        trust_user_header="X-Forwarded-User").server.test_client()
    assert "only editors" in status(flip(client, run, headers={"X-Forwarded-User": "dave"}))
    assert "(saved)" in status(flip(client, run, headers={"X-Forwarded-User": "ana"}))
    assert corrections.history(run.data_dir)["author"].tolist() == ["ana"]


def test_read_only_refuses_every_change_and_says_why_on_the_buttons(run, monkeypatch):
    monkeypatch.setenv(access.READ_ONLY_ENV, "1")  # as gunicorn workers would get it
    app = create_app(run.data_dir)
    client = app.server.test_client()
    assert "This dashboard is read-only: nobody can correct labels here." in status(
        flip(client, run))
    assert "read-only" in status(ask_retraining(client, run), ids.RETRAIN_STATUS)
    assert not corrections.db_path(run.data_dir).exists()
    page = client.get("/_dash-layout").get_json()
    why = _find(page, ids.CORRECTION_WHY)
    assert why["props"]["title"].startswith("This dashboard is read-only")
    assert all(b["props"]["disabled"] for b in why["props"]["children"])
    assert _find(page, ids.RETRAIN)["props"]["disabled"] is True


def _find(tree, component_id):
    """The component with `component_id` in a callback's JSON answer."""
    if isinstance(tree, dict):
        if tree.get("props", {}).get("id") == component_id:
            return tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, component_id)
            if found:
                return found
    return None


def _live_lock(data_dir, run_id: str) -> None:
    """A running job's lock, as jobs.run_lock writes it (this process stands in for it)."""
    path = jobs.lock_path(data_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "token": "x", "started": time.strftime("%H:%M:%S")}))


def test_a_full_job_queue_is_said_and_no_job_is_asked_for(run, monkeypatch):
    _live_lock(run.data_dir, "another-run")
    client = create_app(run.data_dir).server.test_client()  # default: one job at a time
    message = status(ask_retraining(client, run), ids.RETRAIN_STATUS)
    assert "the retraining queue is full: 1 running, at most 1 at once on this server" in message
    assert not list((run.data_dir / RUNS).glob(".ticket-*"))
    monkeypatch.setenv(access.MAX_JOBS_ENV, "2")
    client = create_app(run.data_dir).server.test_client()
    answer = ask_retraining(client, run).get_json()["response"]
    assert set(answer[ids.STORE_RETRAIN_REQUEST]["data"]) == {"ticket"}


def test_a_job_that_finds_the_queue_full_once_it_holds_its_lock_does_not_start(run):
    _live_lock(run.data_dir, "another-run")
    with jobs.run_lock(run.data_dir, run.id):  # two jobs took their locks at once
        with pytest.raises(access.PipelineError, match="queue is full: 1 running, at most 1"):
            jobs.check_job_room(run.data_dir, 1, holding=True)
        jobs.check_job_room(run.data_dir, 2, holding=True)
    assert jobs.running_jobs(run.data_dir) == ["another-run"]


def test_users_command_stores_a_hash_and_the_role(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert pipeline_main(["users", "add", "bea", "--role", "editor", "--file", str(path)]) == 0
    stored = json.loads(path.read_text())["users"]["bea"]
    assert stored["role"] == "editor" and "s3cret" not in path.read_text()
    assert access.identify(access.Settings(auth_file=path), "bea", "s3cret pass") == \
        access.User("bea", "editor")
    assert access.identify(access.Settings(auth_file=path), "bea", "s3cret") is None
    assert pipeline_main(["users", "add", "a:b", "--file", str(path)]) == 2
    assert "invalid user name" in capsys.readouterr().err


def test_app_refuses_a_missing_users_file_or_no_job_slots(tmp_path, capsys):
    for args, message in ((["--auth", str(tmp_path / "nope.json")], "nope.json"),
                          (["--max-jobs", "0"], "must be 1 or more")):
        with pytest.raises(SystemExit) as stopped:
            main(["--data-dir", str(tmp_path), *args])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
