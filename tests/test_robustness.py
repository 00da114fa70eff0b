"""The robustness probe: each perturbation does what it says, the table has every level and
attribute with full agreement on the clean images, the command line names bad input, the server
checks what the browser sends, and in a real browser a probe shows progress and then its plot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dash import no_update

from callbacks import robustness as robustness_callbacks
from pipeline import jobs, metrics, robustness
from pipeline.attributes import ATTRIBUTES
from pipeline.cli import main
from pipeline.errors import PipelineError, Stopped
from pipeline.store import RUNS, get_run
from tests.conftest import write_synthetic_run

REPO = Path(__file__).resolve().parents[1]
SMALL_RUN = "small"


def speckle(seed: int = 0, side: int = 96) -> np.ndarray:
    """Counts with detail at every scale: a ring, sharp peaks and Poisson background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] - side / 2
    ring = 200 * np.exp(-((np.hypot(x, y) - side / 4) ** 2) / 2)
    image = rng.poisson(20 + ring).astype(np.float32)
    image[rng.integers(0, side, 30), rng.integers(0, side, 30)] += 500
    return image


def high_frequency_share(image: np.ndarray) -> float:
    """The share of the image's spectral power (mean removed) above half the Nyquist frequency."""
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]),
                         indexing="ij")
    return float(power[np.hypot(fx, fy) > 0.25].sum() / power.sum())


def at(image, kind, level, seed=0, **kw):
    return robustness.perturb(image, kind, level, robustness.image_rng(seed, kind, level, 0), **kw)


# ---------------------------------------------------------------- perturbations


@pytest.mark.parametrize("kind", robustness.PERTURBATIONS)
def test_level_zero_is_the_image_itself(kind):
    image = speckle()
    image[:, 40:43] = -1  # a detector gap
    image[5, 5] = np.nan
    assert np.array_equal(at(image, kind, 0), image, equal_nan=True)


@pytest.mark.parametrize("angle", [None, 0.0, 30.0])
def test_smear_lowers_high_frequency_energy_most_at_the_top_level(angle):
    image = speckle(side=256)
    shares = [high_frequency_share(at(image, "smear", lv, angle=angle)) for lv in range(5)]
    assert all(share < shares[0] / 3 for share in shares[1:])
    # A short box passes some high frequencies a shorter one stops (its side lobes), so only
    # the ends are ordered: the longest smear keeps the least.
    assert shares[4] < min(shares[1:4])


def test_smear_along_a_fixed_direction_blurs_only_that_way():
    image = np.zeros((64, 64), np.float32)
    image[32, :] = 100.0  # a horizontal line
    along = at(image, "smear", 4, angle=0.0)
    across = at(image, "smear", 4, angle=90.0)
    assert np.allclose(along[32, 10:-10], 100.0, atol=1e-3)  # smeared along itself: unchanged
    assert across[32, 32] < 30 and across[30, 32] > 5  # smeared across: spread over rows
    assert np.isclose(across[:, 32].sum(), 100.0, rtol=1e-3)  # and no photon lost


def test_lower_dose_raises_relative_noise_and_keeps_the_mean():
    flat = np.full((128, 128), 100.0, np.float32)
    noise = [float(np.std(at(flat, "poisson", lv)) / 100.0) for lv in range(5)]
    assert noise[0] == 0.0
    assert all(later > earlier for earlier, later in zip(noise, noise[1:], strict=False))
    assert noise[2] == pytest.approx(1 / np.sqrt(100 * robustness.DOSE[2]), rel=0.1)
    assert at(flat, "poisson", 4).mean() == pytest.approx(100.0, rel=0.05)


def test_gaussian_noise_grows_with_level_in_units_of_the_mean_count():
    image = speckle()
    spread = [float(np.std(at(image, "gaussian", lv) - image)) for lv in range(5)]
    assert spread[1] == pytest.approx(robustness.GAUSSIAN[1] * image.mean(), rel=0.05)
    assert all(later > earlier for earlier, later in zip(spread, spread[1:], strict=False))


def test_lower_resolution_bins_pixels_into_blocks_and_keeps_the_photons():
    image = speckle(side=64)
    coarse = at(image, "resolution", 2)  # 4× larger pixels
    blocks = coarse.reshape(16, 4, 16, 4)
    assert np.allclose(blocks, blocks[:, :1, :, :1])  # constant within each 4 × 4 block
    assert coarse.sum() == pytest.approx(image.sum(), rel=1e-5)
    assert coarse.shape == image.shape


def test_gaps_stay_gaps_under_every_perturbation():
    image = speckle()
    image[:, 40:43] = -1
    for kind in robustness.PERTURBATIONS:
        assert np.all(at(image, kind, 3)[:, 40:43] == -1), kind


def test_perturbations_are_the_same_for_the_same_seed_and_differ_for_another():
    image = speckle()
    for kind in ("smear", "gaussian", "poisson"):
        assert np.array_equal(at(image, kind, 2, seed=5), at(image, kind, 2, seed=5))
        assert not np.array_equal(at(image, kind, 2, seed=5), at(image, kind, 2, seed=6))


def test_an_unknown_perturbation_or_level_is_named():
    with pytest.raises(PipelineError, match="unknown perturbation 'blur'"):
        at(speckle(), "blur", 1)
    with pytest.raises(PipelineError, match="level of smear must be a whole number from 0 to 4"):
        at(speckle(), "smear", 5)


# ---------------------------------------------------------------- the probe on a real model


def build_small_run(data_dir) -> None:
    """40 images of 48 pixels and a compact net trained a few steps; attribute 0 is bright."""
    import torch

    from pipeline.infer import make_run
    from pipeline.store import DatasetWriter
    from pipeline.train import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with DatasetWriter(data_dir, "small-data", ATTRIBUTES, meta={"source": "test"}) as ds:
        for i in range(40):
            act = (rng.random(len(ATTRIBUTES)) < 0.4).astype(np.uint8)
            ds.add(rng.poisson(2 + 40 * act[0], (48, 48)), act, image_id=f"img{i:03d}",
                   split="test" if i % 4 == 0 else "train", source="test")
    checkpoint = Path(data_dir) / "first.pt"
    train(ds.final, arch="compact", steps=4, input_size=32, batch_size=8, lr=3e-3,
          device="cpu", checkpoint_out=checkpoint, progress=False)
    make_run(data_dir, "small-data", checkpoint, device="cpu", run_id=SMALL_RUN, progress=False)
    checkpoint.unlink()


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """Built in a child process: torch never runs in the test process, whose dashboard forks
    background jobs."""
    data_dir = tmp_path_factory.mktemp("small") / "data"
    code = f"from tests.test_robustness import build_small_run; build_small_run({str(data_dir)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=600)
    return data_dir


def run_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "robustness", *map(str, argv)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_table_has_every_level_and_attribute_and_full_agreement_on_clean_images(small_data):
    code = run_cli("--run", SMALL_RUN, "--data-dir", small_data, "--n", 12, "--json-progress")
    assert code.returncode == 0, code.stderr
    events = [json.loads(line) for line in code.stdout.splitlines()]
    assert [e["fraction"] for e in events if "stage" in e][-1] == 1.0
    import pandas as pd

    table = pd.DataFrame(events[-1]["table"])
    assert len(table) == 4 * 5 * (len(ATTRIBUTES) + 1)
    assert set(table["perturbation"]) == set(robustness.PERTURBATIONS)
    assert (table[table["level"] == 0]["agreement"] == 1.0).all()
    assert (table[table["level"] > 0]["agreement"] < 1.0).any()
    run = get_run(SMALL_RUN, small_data)
    rows = robustness.sample_rows(len(run), 12, 0)
    clean = metrics.average_precision(run.act[rows], run.prd[rows])  # the run's own inference
    smear0 = table[(table["perturbation"] == "smear") & (table["level"] == 0)]
    assert np.allclose(smear0["AP"].to_numpy()[:-1], clean, atol=1e-3, equal_nan=True)


@pytest.mark.slow
def test_the_command_prints_one_block_per_perturbation(small_data, tmp_path):
    rows = tmp_path / "rows.txt"
    rows.write_text("0, 3 5\n7 # the bright ones\n")
    code = run_cli("--run", SMALL_RUN, "--data-dir", small_data, "--rows", rows, "--seed", 2)
    assert code.returncode == 0, code.stderr
    for title in robustness.TITLES.values():
        assert title in code.stdout
    assert "4 images" in code.stdout and "dose × 0.1" in code.stdout
    assert code.stdout.count("\nmean ") == 4


@pytest.mark.slow
def test_a_probe_counts_against_the_job_limit_and_stops_on_its_flag(small_data, tmp_path):
    run = get_run(SMALL_RUN, small_data)
    with jobs.run_lock(small_data, "other-job"), pytest.raises(PipelineError, match="full"):
        robustness.probe_as_job(small_data, run, "robustness-a", 1, n=4, device="cpu")
    jobs.request_cancel(small_data, "robustness-b")
    with pytest.raises(Stopped):
        robustness.probe_as_job(small_data, run, "robustness-b", None, n=4, device="cpu")
    assert sorted(p.name for p in (small_data / RUNS).glob(".*")) == []  # no lock, no flag


def test_command_line_errors_are_one_line_with_status_2(tmp_path, capsys):
    run = write_synthetic_run(tmp_path / "data", n=20)  # vectors only: no model
    data = str(tmp_path / "data")
    bad_rows = tmp_path / "rows.txt"
    bad_rows.write_text("1 2 x3")
    far_rows = tmp_path / "far.txt"
    far_rows.write_text("1 99")
    cases = [
        (["--run", "nope"], "no run 'nope'"),
        (["--run", run.id], f"run {run.id} has no model"),
        (["--run", run.id, "--rows", str(bad_rows)], "holds 'x3', not a row number"),
        (["--run", run.id, "--rows", str(tmp_path / "absent.txt")], "unreadable"),
    ]
    for argv, message in cases:
        assert main(["robustness", *argv, "--data-dir", data]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    with pytest.raises(PipelineError, match="from 0 to 19"):
        robustness.check_rows(run, robustness.read_rows(far_rows))
    for argv in (["--n", "0"], ["--n", "5", "--rows", str(bad_rows)], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(["robustness", "--run", run.id, *argv, "--data-dir", data])
        assert exit_.value.code == 2


# ---------------------------------------------------------------- the server's checks


def test_the_server_refuses_a_probe_it_cannot_or_should_not_run(tmp_path, monkeypatch,
                                                                small_data):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    bare = write_synthetic_run(tmp_path / "data", n=20)
    request, status = robustness_callbacks.request_probe(1, bare.id, "sample", 10, [], [])
    assert request is no_update and "has no model" in json.dumps(status.to_plotly_json())
    figure, _ = robustness_callbacks.draw_robustness(None, "AP", bare.id)
    assert "has no model" in json.dumps(figure)

    monkeypatch.setenv("XRAE_DATA_DIR", str(small_data))
    for crafted in (0, 10_000, 2.5, "7", True, None):
        request, status = robustness_callbacks.request_probe(1, SMALL_RUN, "sample", crafted,
                                                             [], [])
        assert request is no_update, crafted
        assert "number of images must be a whole number" in json.dumps(status.to_plotly_json())
    monkeypatch.setenv("XRAE_READ_ONLY", "1")
    request, status = robustness_callbacks.request_probe(1, SMALL_RUN, "sample", 10, [], [])
    assert request is no_update and "read-only" in json.dumps(status.to_plotly_json())
    for crafted in ({"ticket": "../../etc"}, {"ticket": 7}, "x", None):
        assert robustness_callbacks.cancel_probe(1, crafted) is no_update
    forged = {"run": SMALL_RUN, "n": 3, "scope": "x", "table": [{"perturbation": "rm -rf"}]}
    figure, _ = robustness_callbacks.draw_robustness(forged, "AP", SMALL_RUN)
    assert "press Start probe" in json.dumps(figure)
    assert sorted(p.name for p in (small_data / RUNS).glob(".ticket-*")) == []


def test_a_request_names_its_rows_on_the_server_and_gives_the_browser_a_ticket(
        tmp_path, monkeypatch, small_data):
    monkeypatch.setenv("XRAE_DATA_DIR", str(small_data))
    groups = [{"run": SMALL_RUN, "name": "bright", "indices": [0, 1, 2, 99]}]
    request, status = robustness_callbacks.request_probe(1, SMALL_RUN, "0", 500, [], groups)
    assert set(request) == {"ticket"} and status == ""
    held = jobs.redeem_ticket(small_data, request["ticket"])
    assert held["rows"] == [0, 1, 2] and held["scope"] == "bright"  # row 99 is not the run's
    assert np.asarray(held["labels"]).shape == (3, len(ATTRIBUTES))
    name, rows = robustness_callbacks.probe_rows(get_run(SMALL_RUN, small_data), "sample", 7,
                                                 [], [])
    assert name == "Random sample" and len(rows) == 7
    status = robustness_callbacks.cancel_probe(1, request)  # its job is not running (yet)
    assert "Cancelled" in json.dumps(status.to_plotly_json())
    assert sorted(p.name for p in (small_data / RUNS).glob(".*")) == []  # the flag is cleared


# ---------------------------------------------------------------- in a real browser


@pytest.mark.browser
@pytest.mark.slow
def test_starting_a_probe_shows_progress_then_the_small_multiples(dash_duo, small_data,
                                                                   tmp_path, monkeypatch):
    import shutil

    from app import create_app
    from tests.conftest import free_port, patient
    from tests.test_retrain import click

    data_dir = tmp_path / "data"
    shutil.copytree(small_data, data_dir)
    monkeypatch.delenv("REDIS_URL", raising=False)  # the diskcache manager
    monkeypatch.setenv("XRAE_DATA_DIR", str(data_dir))
    patient(dash_duo)
    dash_duo.start_server(create_app(data_dir), port=free_port())
    dash_duo.wait_for_element("#tabs-selection")
    dash_duo.driver.find_element("link text", "Robustness").click()
    dash_duo.wait_for_contains_text("#graph-robustness", "press Start probe")
    size = dash_duo.find_element("#input-robustness-size")
    size.clear()
    size.send_keys("30")
    click(dash_duo, "#button-robustness-start")
    dash_duo.wait_for_contains_text("#progress-robustness", "%", timeout=120)
    dash_duo.wait_for_contains_text("#text-robustness-status", "Done: Random sample",
                                    timeout=240)
    dash_duo.wait_for_contains_text("#graph-robustness", "Lower dose (Poisson)")
    legend = dash_duo.find_elements("#graph-robustness .legend .traces")
    assert len(legend) == len(ATTRIBUTES) + 1  # every attribute and the mean
    assert "dose × 0.01" in dash_duo.find_element("#text-robustness-note").text
    assert dash_duo.find_element("#button-robustness-start").is_enabled()
    assert sorted(p.name for p in (data_dir / RUNS).glob(".*")) == []
    assert dash_duo.get_logs() == []
