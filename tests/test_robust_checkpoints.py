"""Checkpoints that are not what they claim: an absurd input size or a missing normalisation is
refused before anything is built, and a pickle with Python objects is refused without repeating
torch's advice to load it unsafely."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import torch

from pipeline.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.model import build_model, per_image_normalisation
from pipeline.store import DatasetWriter

NAMES = ["ring", "halo", "beamstop"]
STATS = {"method": "log1p-robust", "centre": 1.0, "scale": 2.0}


def _checkpoint(path, **changes):
    """Our checkpoint with some of its description replaced (None: that entry removed)."""
    save_checkpoint(path, build_model("resnet18", len(NAMES)), arch="resnet18", attributes=NAMES,
                    input_size=32, normalisation=STATS)
    payload = read_checkpoint(path)
    for key, value in changes.items():
        payload.pop(key) if value is None else payload.__setitem__(key, value)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"input_size": 100_000}, "input size 100000; expected a whole number from 32 to 1024"),
    ({"input_size": 8}, "input size 8;"),
    ({"input_size": "224"}, "input size '224';"),
    ({"normalisation": None}, "lacks its input normalisation"),
    ({"normalisation": {**STATS, "centre": math.nan}}, "unusable normalisation"),
    ({"normalisation": {**STATS, "scale": 0.0}}, "unusable normalisation"),
    ({"normalisation": {**STATS, "scale": None}}, "unusable normalisation"),
    ({"attributes": None}, "lacks its list of attribute names"),
    ({"arch": "vgg16"}, "names no known architecture ('vgg16'"),
])
def test_a_checkpoint_with_a_bad_description_is_refused_naming_the_file(tmp_path, changes,
                                                                        message):
    path = _checkpoint(tmp_path / "odd.pt", **changes)
    with pytest.raises(PipelineError, match="odd.pt") as err:
        load_checkpoint(path)
    assert message in str(err.value)


def test_a_checkpoint_scaling_each_image_by_itself_still_loads(tmp_path):
    path = _checkpoint(tmp_path / "own.pt", normalisation=per_image_normalisation())
    _, info = load_checkpoint(path)
    assert info["normalisation"]["centre"] is None and info["input_size"] == 32


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "data", "small", NAMES) as ds:
        for i in range(4):
            ds.add(rng.poisson(3.0, (16, 16)), [1, 0, i % 2], split="test")
    return ds.final


@pytest.mark.parametrize(("changes", "message"), [
    ({"input_size": 100_000}, "input size 100000"),
    ({"normalisation": None}, "lacks its input normalisation"),
])
def test_infer_refuses_a_bad_checkpoint_with_exit_2_and_writes_no_run(dataset, tmp_path, capsys,
                                                                      changes, message):
    path = _checkpoint(tmp_path / "odd.pt", **changes)
    data = tmp_path / "data"
    argv = ["infer", "--dataset", "small", "--checkpoint", str(path), "--device", "cpu",
            "--data-dir", str(data)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {path} ") and message in err
    assert len(err.splitlines()) == 1 and not (data / "runs").exists()


def _pickled_date(path):
    torch.save({"model": {}, "saved": dt.datetime(2024, 1, 1)}, path)  # not weights alone


@pytest.mark.parametrize(("write", "detail"), [
    (_pickled_date, "it stores a Python object, datetime.datetime"),
    (lambda path: path.write_bytes(b"\x00garbage"), "it is not tensors"),
])
def test_a_file_torch_cannot_load_safely_is_refused_without_advice_to_load_it_unsafely(
        dataset, tmp_path, capsys, write, detail):
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(PipelineError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert text == (f"checkpoint {path} is not a checkpoint this tool wrote or a plain state dict "
                    f"({detail})")
    assert main(["infer", "--dataset", "small", "--checkpoint", str(path),
                 "--data-dir", str(tmp_path / "data")]) == 2
    said = capsys.readouterr().err
    assert said == f"error: {text}\n"
    for advice in ("weights_only", "trust", "arbitrary code", "safe_globals"):
        assert advice not in said
