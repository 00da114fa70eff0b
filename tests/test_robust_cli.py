"""Counts that cannot be zero are refused by the command line before any work."""

from __future__ import annotations

import pytest

from pipeline.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--run", "r", "--k", "0"],
        ["audit", "--run", "r", "--top", "-1"],
    ],
)
def test_a_zero_or_negative_size_is_one_error_line_with_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "must be 1 or more" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "--images", "i", "--labels", "l.csv", "--seed", "-1"],
        ["import-vectors", "--labels", "a", "--predictions", "p", "--features", "f",
         "--seed", "-1"],
    ],
)
def test_a_negative_seed_is_one_error_line_with_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "must be 0 or more" in err and "Traceback" not in err
