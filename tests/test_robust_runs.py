"""Bad runs and bad command lines: one broken run never hides the others, a file given as the
data directory or a negative seed is one `error:` line with exit status 2, and a killed demo's
scratch checkpoint is swept at the next start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import store
from pipeline.cli import main
from pipeline.errors import PipelineError

NAMES = ["ring", "halo", "beamstop"]


def write_run(data_dir, run_id: str, n: int = 6, created: str = "2024-01-01T00:00:00") -> Path:
    rng = np.random.default_rng(0)
    images = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "path": [""] * n,
                           "split": ["test"] * n, "source": ["test"] * n})
    act = (rng.random((n, len(NAMES))) < 0.5).astype(np.uint8)
    return store.write_run(data_dir, attributes=NAMES, images=images, act=act,
                           prd=rng.random(act.shape), fea=rng.normal(size=(n, 4)),
                           emb={s: rng.normal(size=(n, 2)) for s in store.SPACES},
                           meta={"dataset": f"ds-{run_id}", "metrics": {"mAP": 0.5},
                                 "created": created},
                           run_id=run_id)


def _rewrite_run_json(run: Path, change) -> None:
    meta = json.loads((run / "run.json").read_text())
    change(meta)
    (run / "run.json").write_text(json.dumps(meta))


def _truncate_run_json(run: Path) -> None:
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 2])


BREAKAGES = {
    "truncated run.json": (_truncate_run_json, "run.json is not readable JSON"),
    "run.json without id": (lambda run: _rewrite_run_json(run, lambda m: m.pop("id")),
                            "run.json names the run None"),
    "run.json without n_images": (
        lambda run: _rewrite_run_json(run, lambda m: m.pop("n_images")),
        "run.json lacks a whole number n_images"),
    "run.json a list": (lambda run: (run / "run.json").write_text("[1, 2]"),
                        "run.json holds a JSON list"),
    "missing attributes.json": (lambda run: (run / "attributes.json").unlink(),
                                "attributes.json is missing"),
    "unreadable images.parquet": (
        lambda run: (run / "images.parquet").write_bytes(b"PAR1 not really"),
        "images.parquet is unreadable"),
    "missing prd.npy": (lambda run: (run / "prd.npy").unlink(), "prd.npy is missing"),
    "act.npy of another run": (lambda run: np.save(run / "act.npy", np.zeros((2, 3), np.uint8)),
                               "act.npy has shape (2, 3), expected 6×3"),
}


@pytest.fixture(params=sorted(BREAKAGES))
def one_broken(request, tmp_path):
    """A data directory with two good runs and one broken as the parameter says; the reason."""
    data = tmp_path / "data"
    write_run(data, "good-old", created="2024-01-01T00:00:00")
    write_run(data, "good-new", created="2024-06-01T00:00:00")
    breakage, reason = BREAKAGES[request.param]
    breakage(write_run(data, "bad"))
    store.open_run.cache_clear()
    return data, reason


def test_runs_command_lists_the_good_runs_and_names_the_broken_one(one_broken, capsys):
    data, reason = one_broken
    assert main(["runs", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "good-old" in out and "good-new" in out
    broken = [line for line in out.splitlines() if line.startswith("broken run bad: ")]
    assert len(broken) == 1 and reason in broken[0]


def test_every_good_run_still_opens_and_the_broken_one_is_an_error_naming_its_file(one_broken):
    data, reason = one_broken
    runs, broken = store.scan_runs(data)
    assert [r.id for r in runs] == ["good-old", "good-new"]
    assert [(p.name, reason in why) for p, why in broken] == [("bad", True)]
    assert store.get_run("good-new", data).prd.shape == (6, 3)
    with pytest.raises(PipelineError, match=re.escape(reason)):
        store.get_run("bad", data)


def test_run_picker_offers_the_good_runs_and_shows_the_broken_one_disabled(one_broken,
                                                                           monkeypatch):
    from callbacks.control import list_run_options

    data, reason = one_broken
    monkeypatch.setenv(store.DATA_DIR_ENV, str(data))
    options, value, message, is_open = list_run_options("bad")  # a forged choice
    assert value == "good-new" and not is_open
    chosen = [o["value"] for o in options if not o.get("disabled")]
    assert chosen == ["good-new", "good-old"]
    bad = [o for o in options if o.get("disabled")]
    assert len(bad) == 1 and "bad" in bad[0]["label"] and reason in bad[0]["title"]


def test_run_picker_with_only_broken_runs_says_none_can_be_opened(tmp_path, monkeypatch):
    from callbacks.control import list_run_options

    (write_run(tmp_path, "bad") / "attributes.json").unlink()
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path))
    options, value, message, is_open = list_run_options()
    assert value is None and is_open
    assert [o["disabled"] for o in options] == [True]
    assert "No run can be opened" in str(message) and "1 broken run" in str(message)


def test_app_start_names_a_broken_run_and_builds_no_demo_over_it(tmp_path, capsys):
    import app

    (write_run(tmp_path, "bad") / "run.json").write_text("{")
    app.ensure_demo(tmp_path)
    assert "warning: broken run bad: " in capsys.readouterr().err
    assert not (tmp_path / store.DATASETS).exists()


# ---------------------------------------------------------------- a file as data directory

COMMANDS = {
    "runs": [], "demo": ["--fast"], "simulate": ["--n", "10"],
    "train": ["--dataset", "d", "--out", "m.pt"], "infer": ["--dataset", "d", "--checkpoint", "m"],
    "metrics": ["--run", "r"], "embed": ["--run", "r"], "montage": ["--dataset", "d"],
    "ingest": ["--images", "i", "--labels", "l.csv"],
    "import-vectors": ["--labels", "a", "--predictions", "p", "--features", "f"],
    "audit": ["--run", "r"], "corrections": [], "retrain": ["--run", "r"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_as_data_dir_is_one_error_line_for_every_command(command, tmp_path, capsys):
    not_a_dir = tmp_path / "data.txt"
    not_a_dir.write_text("notes")
    argv = [command, *COMMANDS[command], "--data-dir", str(not_a_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: --data-dir {not_a_dir} is a file, not a directory\n"
    assert not_a_dir.read_text() == "notes" and sorted(tmp_path.iterdir()) == [not_a_dir]


def test_a_file_in_the_environment_variable_is_named_as_such(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data.txt"))
    (tmp_path / "data.txt").write_text("")
    assert main(["runs"]) == 2
    assert f"${store.DATA_DIR_ENV} {tmp_path / 'data.txt'} is a file" in capsys.readouterr().err


def test_python_app_py_with_a_file_as_data_dir_exits_2_with_one_line(tmp_path, monkeypatch,
                                                                     capsys):
    import app

    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path))  # restored after app.main sets it
    not_a_dir = tmp_path / "data.txt"
    not_a_dir.write_text("")
    assert app.main(["--data-dir", str(not_a_dir)]) == 2
    assert capsys.readouterr().err == (f"error: --data-dir {not_a_dir} is a file, "
                                       "not a directory\n")


# ---------------------------------------------------------------- negative seeds and counts

NEGATIVE = [
    ["simulate", "--n", "10", "--seed", "-1"],
    ["demo", "--fast", "--seed", "-1"],
    ["demo", "--n", "-5"],
    ["train", "--dataset", "d", "--out", "m.pt", "--seed", "-1"],
    ["train", "--dataset", "d", "--out", "m.pt", "--epochs", "-2"],
    ["embed", "--run", "r", "--seed", "-3"],
]


@pytest.mark.parametrize("argv", NEGATIVE, ids=lambda argv: " ".join(argv))
def test_a_negative_seed_or_count_is_refused_with_exit_2_before_any_work(argv, tmp_path,
                                                                         capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--data-dir", str(tmp_path / "data")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    flag, value = argv[-2], argv[-1]
    assert err.endswith(f"error: argument {flag}: must be 0 or more, got {value}")
    assert not (tmp_path / "data").exists()


def test_a_seed_that_is_no_number_says_so():
    import argparse

    from pipeline.cli import non_negative_int

    assert non_negative_int("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number, got '1.5'"):
        non_negative_int("1.5")


# ---------------------------------------------------------------- the demo's scratch checkpoint


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_a_killed_demos_scratch_folder_is_swept_at_the_next_start_and_a_live_ones_kept(
        tmp_path, monkeypatch):
    import pipeline.demo
    import pipeline.train

    runs = tmp_path / "data" / store.RUNS
    stale = runs / f"{store.TMP_PREFIX}{_dead_pid()}-demo-0123abcd"
    live = runs / f"{store.TMP_PREFIX}{os.getpid()}-demo-4567ef01"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"\0" * 1024)
    seen = {}

    def train_that_stops(ds, *, checkpoint_out, **_):
        seen["checkpoint"], seen["stale_gone"] = Path(checkpoint_out), not stale.exists()
        checkpoint_out.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # as a Ctrl-C during training would

    monkeypatch.setattr(pipeline.demo, "_dataset", lambda *args: object())
    monkeypatch.setattr(pipeline.train, "train", train_that_stops)
    monkeypatch.setattr(pipeline.train, "use_all_cores", lambda: None)
    with pytest.raises(KeyboardInterrupt):
        pipeline.demo.run_demo(tmp_path / "data", fast=True, progress=False)
    scratch = seen["checkpoint"].parent
    assert scratch.parent == runs and scratch.name.startswith(f"{store.TMP_PREFIX}{os.getpid()}-")
    assert seen["stale_gone"] and live.is_dir()
    assert not scratch.exists()  # its own scratch goes too when it stops
