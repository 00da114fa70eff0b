"""Where a job runs and who may start one: at most one retraining job per run (a lock file its
holder keeps touching, taken over once it goes silent), at most N per data directory, a cancel
flag any process can raise, and the checked requests the dashboard hands to its jobs (tickets).

All of it lives in files under <data_dir>/runs/, so every web worker, Celery worker and command
line on any machine that shares the data directory agrees.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline import store
from pipeline.errors import PipelineError

TICKET_TTL_S = 60 * 60  # a retraining request not started within this is dropped
LOCK_STALE_S = 15 * 60  # a lock untouched this long is abandoned (the job touches it as it goes)
HEARTBEAT_S = 5.0


# ---------------------------------------------------------------- one job per run


def lock_path(data_dir, run_id: str) -> Path:
    return store.resolve_data_dir(data_dir) / store.RUNS / f".lock-{store.check_id(run_id)}"


def read_lock(path: Path) -> dict | None:
    """Who holds a lock: {pid, host, started, token}; None when there is no lock."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}  # a holder killed between creating and filling the file


def lock_is_stale(path: Path, holder: dict, stale_after: float = LOCK_STALE_S) -> bool:
    """A lock is abandoned when its process is gone (same host) or it went silent too long."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return True
    if age > stale_after:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not store.pid_running(holder["pid"])
    return not holder and age > 5.0  # empty file: its writer died before filling it


@contextlib.contextmanager
def run_lock(data_dir, run_id: str, stale_after: float = LOCK_STALE_S,
             job: str = "retrained") -> Iterator[Path]:
    """Hold `<data_dir>/runs/.lock-<run_id>` for the block (O_EXCL create, pid inside); `job`
    (what the holder does to the run) is written in it for the refusals of others.

    A lock left by a dead process is taken over; a live one is a PipelineError naming its holder.
    """
    path = lock_path(data_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = read_lock(path)
            if holder is None:
                continue  # released between our two looks
            if not lock_is_stale(path, holder, stale_after):
                doing = holder.get("job", "retrained")
                raise PipelineError(
                    f"run {run_id} is already being {doing} (pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('started')}); wait for it, or "
                    f"delete {path} if that job is gone") from None
            _remove_if_unchanged(path, holder)
    else:
        raise PipelineError(f"could not take the lock {path}; try again")
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": token, "job": job,
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}, fh)
    try:
        yield path
    finally:
        _remove_if_unchanged(path, {"token": token}, key="token")


def running_jobs(data_dir) -> list[str]:
    """Runs being retrained now on this data directory: live lock files (stale ones skipped).

    Counted on disk, not in memory, so every web worker and the command line agree."""
    root = store.resolve_data_dir(data_dir) / store.RUNS
    running = []
    for path in sorted(root.glob(".lock-*")):
        holder = read_lock(path)
        if holder is not None and not lock_is_stale(path, holder):
            running.append(path.name.removeprefix(".lock-"))
    return running


def check_job_room(data_dir, max_jobs: int | None, holding: bool = False) -> None:
    """A PipelineError when `max_jobs` retraining jobs already run (counting ours if `holding`).

    Checked again after a job takes its lock: two jobs starting at once then both see two
    locks, and at most `max_jobs` go on."""
    if max_jobs is None:
        return
    others = len(running_jobs(data_dir)) - int(holding)
    if others >= max_jobs:
        raise PipelineError(
            f"the retraining queue is full: {others} running, at most {max_jobs} at once on "
            "this server; try again when one finishes")


def _remove_if_unchanged(path: Path, holder: dict, key: str | None = None) -> None:
    """Delete the lock only if it still belongs to `holder` (never someone else's fresh lock)."""
    now = read_lock(path)
    if now is None:
        return
    same = now.get(key) == holder.get(key) if key else now == holder
    if same:
        path.unlink(missing_ok=True)


def touch(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


# ---------------------------------------------------------------- cancelling from anywhere


def cancel_path(data_dir, run_id: str) -> Path:
    return store.resolve_data_dir(data_dir) / store.RUNS / f".cancel-{store.check_id(run_id)}"


def request_cancel(data_dir, run_id: str) -> None:
    """Ask a running retraining of `run_id` to stop, wherever it runs (it polls this file).

    Dash's own cancel kills a diskcache job outright, but a Celery worker running the solo pool
    cannot be killed remotely; a flag on the shared data directory reaches both.
    """
    path = cancel_path(data_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time()}\n")


def cancel_requested(data_dir, run_id: str, since: float) -> bool:
    """True once someone asked, after `since` (epoch seconds), for the job to stop."""
    try:
        return cancel_path(data_dir, run_id).stat().st_mtime >= since - 1.0
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- requests from the dashboard


def _ticket_path(data_dir, ticket) -> Path:
    if not isinstance(ticket, str) or not re.fullmatch(r"[0-9a-f]{32}", ticket):
        raise PipelineError(f"{ticket!r:.40} is not a retraining request this server made")
    return store.resolve_data_dir(data_dir) / store.RUNS / f".ticket-{ticket}.json"


def issue_ticket(data_dir, request: dict) -> str:
    """Keep a checked job request on the data directory (shared with Celery workers) and return
    its ticket: the browser holds only the ticket, so it cannot change what the job does."""
    root = store.resolve_data_dir(data_dir) / store.RUNS
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(".ticket-*.json"):  # requests whose page went away before the job
        with contextlib.suppress(FileNotFoundError):
            if time.time() - old.stat().st_mtime > TICKET_TTL_S:
                old.unlink()
    ticket = uuid.uuid4().hex
    path = _ticket_path(data_dir, ticket)
    tmp = path.with_name(f"{path.name}.part")
    tmp.write_text(json.dumps(request))
    os.replace(tmp, path)
    return ticket


def redeem_ticket(data_dir, ticket) -> dict:
    """The request a ticket stands for, once: a ticket replayed or made up is a PipelineError."""
    path = _ticket_path(data_dir, ticket)
    try:
        request = json.loads(path.read_text())
        path.unlink()  # of two redeemers that both read it, only one can delete it
    except FileNotFoundError:
        raise PipelineError("this retraining request was already started or has expired; "
                            "press Retrain again") from None
    return request


def wait_until_stopped(data_dir, run_id: str, timeout: float = 30.0,
                       poll: float = 0.2) -> bool:
    """After a cancel: wait until no job holds the run's lock, then clear what a killed job left
    (its stale lock, temporary directories of dead processes, the cancel flag). True if stopped.
    """
    path = lock_path(data_dir, run_id)
    deadline = time.monotonic() + timeout
    while True:
        holder = read_lock(path)
        if holder is None:
            break
        if lock_is_stale(path, holder):
            _remove_if_unchanged(path, holder)
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    store.sweep_stale(store.resolve_data_dir(data_dir) / store.RUNS)
    cancel_path(data_dir, run_id).unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------- a job in a child process

EXIT_CANCELLED = 3  # the command line's exit status for a cancelled job


def print_event(stage: str | None = None, fraction: float | None = None, **fields) -> None:
    """One line of JSON on standard output for the parent of a job's command (run_child):
    progress ({"stage", "fraction"}) or the job's result (any other fields)."""
    if stage is not None:
        fields |= {"stage": stage, "fraction": round(float(fraction), 4)}
    print(json.dumps(fields), flush=True)


def run_child(cmd: list[str], on_progress=None) -> tuple[int, dict, str]:
    """Run a job's command line in a child process (no torch or CUDA in the web process):
    relay its progress events to on_progress(stage, fraction) as they come, and return its
    exit status, its last other event (its result; {} when none) and the last line it wrote to
    standard error (its message). The child is killed if the parent is interrupted."""
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: it can never fill up
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        result: dict = {}
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a stray print of a library
                if not isinstance(event, dict):
                    continue
                if "stage" in event:
                    if on_progress:
                        on_progress(event["stage"], event["fraction"])
                else:
                    result = event
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        lines = [x.strip() for x in errors.read().splitlines() if x.strip()]
    return code, result, lines[-1] if lines else ""
