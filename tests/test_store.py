"""The run store: all-or-nothing runs and datasets, clear errors for bad arrays, `runs`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import store
from pipeline.cli import main
from pipeline.errors import PipelineError

N, A = 6, 3
NAMES = ["ring", "halo", "beamstop"]


def _images(n=N):
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "path": [""] * n,
                         "split": ["train"] * n, "source": ["test"] * n})


def _arrays(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return {"act": (rng.random((n, A)) < 0.5).astype(np.uint8),
            "prd": rng.random((n, A)).astype(np.float32),
            "fea": rng.normal(size=(n, 8)).astype(np.float32),
            "emb": {s: rng.normal(size=(n, 2)) for s in ("act", "fea", "prd")}}


def _write(data_dir, run_id="r1", meta=None, **changes):
    arrays = {**_arrays(), **changes}
    return store.write_run(data_dir, attributes=NAMES, images=changes.pop("images", _images()),
                           act=arrays["act"], prd=arrays["prd"], fea=arrays["fea"],
                           emb=arrays["emb"], meta=meta or {"dataset": "d"}, run_id=run_id,
                           extra_files=arrays.get("extra_files"))


def _visible(data_dir) -> list[str]:
    runs = Path(data_dir) / "runs"
    return sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) \
        if runs.is_dir() else []


def test_a_written_run_reads_back_memory_mapped(tmp_path):
    _write(tmp_path, run_id="r1")
    run = store.get_run("r1", tmp_path)
    assert isinstance(run.act, np.memmap) and run.act.dtype == np.uint8
    assert run.prd.shape == (N, A) and run.emb("fea").dtype == np.float32
    assert run.attributes == NAMES and len(run.colours) == A
    assert run.images["index"].tolist() == list(range(N))


def test_an_exception_midway_leaves_no_run_and_no_temporary_directory(tmp_path):
    def crash(path):
        path.write_bytes(b"half a checkpoint")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _write(tmp_path, extra_files={"model.pt": crash})
    assert list((tmp_path / "runs").iterdir()) == []
    assert store.list_runs(tmp_path) == []


KILLED_WRITER = """
import sys, time
import numpy as np, pandas as pd
from pipeline import store
data_dir, marker = sys.argv[1], sys.argv[2]
n = 4
images = pd.DataFrame({"image_id": list("abcd"), "path": [""] * n, "split": ["train"] * n,
                       "source": [""] * n})
def stall(path):
    path.write_bytes(b"partial")
    open(marker, "w").close()
    time.sleep(120)
store.write_run(data_dir, attributes=["x"], images=images, act=np.ones((n, 1)),
                prd=np.full((n, 1), 0.5), fea=np.zeros((n, 2)),
                emb={s: np.zeros((n, 2)) for s in ("act", "fea", "prd")}, meta={},
                extra_files={"model.pt": stall}, run_id="killed")
"""


def kill_when_marked(script: str, data_dir: Path, marker: Path, timeout: float) -> None:
    """Run a writer `script` (argv: data_dir, marker) in a child process and SIGKILL it as soon
    as it creates `marker`, i.e. midway through what it writes."""
    repo = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(data_dir),
                               str(marker)], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert writer.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never got midway"
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()


def test_a_writer_killed_midway_leaves_no_visible_run_and_its_leftovers_are_swept(tmp_path):
    kill_when_marked(KILLED_WRITER, tmp_path / "data", tmp_path / "writing", timeout=60)
    runs = tmp_path / "data" / "runs"
    assert _visible(tmp_path / "data") == []
    assert store.list_runs(tmp_path / "data") == []
    with pytest.raises(PipelineError, match="no run 'killed'"):
        store.get_run("killed", tmp_path / "data")
    leftovers = list(runs.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(store.TMP_PREFIX)
    assert store.sweep_stale(runs) == leftovers
    assert list(runs.iterdir()) == []


def test_a_dataset_interrupted_midway_does_not_appear(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with store.DatasetWriter(tmp_path, "half", NAMES) as ds:
            ds.add(np.ones((8, 8)), [1, 0, 0])
            raise KeyboardInterrupt
    assert list((tmp_path / "datasets").iterdir()) == []
    with pytest.raises(PipelineError, match="no dataset 'half'"):
        store.open_dataset("half", tmp_path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"prd": np.full((N, A), np.nan)}, "prd holds 18 NaN or infinite values"),
    ({"fea": np.zeros((N + 1, 8))}, "fea has shape (7, 8), expected 6×?"),
    ({"act": np.full((N, A), 2)}, "act must hold only 0 and 1"),
    ({"prd": np.full((N, A), 1.5)}, "prd must be probabilities in [0, 1]"),
    ({"emb": {"act": np.zeros((N, 2)), "fea": np.zeros((N, 3)), "prd": np.zeros((N, 2))}},
     "emb_fea has shape (6, 3), expected 6×2"),
    ({"act": np.array([["a"] * A] * N)}, "act is not numeric"),
    ({"images": _images().assign(image_id="same")}, "image id 'same' appears more than once"),
])
def test_bad_arrays_are_clear_errors_and_write_nothing(tmp_path, changes, message):
    with pytest.raises(PipelineError) as err:
        _write(tmp_path, **changes)
    assert message in str(err.value)
    assert _visible(tmp_path) == []


@pytest.mark.parametrize("hostile", ["../escape", "/etc", "a/../../b", ".hidden", "x" * 200])
def test_hostile_run_ids_are_refused(tmp_path, hostile):
    with pytest.raises(PipelineError, match="invalid run id"):
        _write(tmp_path, run_id=hostile)
    with pytest.raises(PipelineError, match="invalid run id"):
        store.get_run(hostile, tmp_path)


def test_a_run_id_that_exists_is_not_overwritten(tmp_path):
    _write(tmp_path, run_id="same")
    with pytest.raises(PipelineError, match="already exists"):
        _write(tmp_path, run_id="same")


def test_runs_command_lists_runs_with_their_map(tmp_path, capsys):
    assert main(["runs", "--data-dir", str(tmp_path)]) == 0
    assert "no runs in" in capsys.readouterr().out
    _write(tmp_path, run_id="scored", meta={"dataset": "sim", "metrics": {"mAP": 0.7342}})
    _write(tmp_path, run_id="unscored", meta={"dataset": "sim"})
    assert main(["runs", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    scored = next(line for line in lines if line.startswith("scored"))
    unscored = next(line for line in lines if line.startswith("unscored"))
    assert "0.734" in scored and "sim" in scored
    assert scored.split()[1] == str(N) and unscored.split()[2] == "-"


def test_non_finite_values_are_counted_across_blocks_of_rows():
    values = np.zeros((10, 3), np.float32)
    values[[0, 4, 9], [0, 2, 1]] = [np.nan, np.inf, -np.inf]
    assert store.nonfinite_count(values, rows=3) == 3
    assert store.nonfinite_count(np.arange(6)) == 0
    assert store.nonfinite_count(np.float64("nan")) == 1
