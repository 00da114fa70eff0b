"""Label corrections: durable across restarts, safe for concurrent analysts, undoable, exported."""

from __future__ import annotations

import io
import multiprocessing as mp
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import corrections
from pipeline.cli import main
from pipeline.errors import PipelineError


def test_correction_survives_a_restart_of_the_dashboard_process(tmp_path):
    code = (
        "from pipeline import corrections; "
        f"corrections.set_label({str(tmp_path)!r}, 'demo', 'img000088', 'High background', 1, "
        "author='ana', note='noisy background, unlabelled (case 1 of Huang et al.)')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

    now = corrections.active(tmp_path, "demo")
    assert now[["image_id", "attribute", "value", "author"]].values.tolist() == [
        ["img000088", "High background", 1, "ana"]
    ]
    assert "noisy background" in now["note"].iloc[0]
    assert now["created"].iloc[0].startswith("20")
    with sqlite3.connect(corrections.db_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _write_many(data_dir, writer: int, n: int, start) -> None:
    start.wait()  # every writer starts at once, so their transactions really contend
    for i in range(n):
        corrections.set_label(data_dir, "demo", f"img{writer}-{i}", "Ring", i % 2,
                              author=f"analyst-{writer}")
        corrections.set_label(data_dir, "demo", "shared", "Halo", (writer + i) % 2,
                              author=f"analyst-{writer}")


def test_two_analysts_correcting_at_the_same_time_lose_nothing(tmp_path):
    n_writers, n_each = 3, 40
    ctx = mp.get_context("spawn")  # fresh interpreters: no shared connection or module state
    start = ctx.Barrier(n_writers)
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w, n_each, start))
             for w in range(n_writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n_writers

    events = corrections.history(tmp_path, "demo")
    assert len(events) == n_writers * n_each * 2
    assert events["event"].is_unique
    own = events[events["image_id"] != "shared"]
    expected = {(f"img{w}-{i}", i % 2) for w in range(n_writers) for i in range(n_each)}
    assert set(zip(own["image_id"], own["value"], strict=True)) == expected
    # The shared label ends at the value of whichever write came last, and all writes are kept.
    shared = events[events["image_id"] == "shared"]
    assert len(shared) == n_writers * n_each
    now = corrections.active(tmp_path, "demo")
    assert now.set_index("image_id").loc["shared", "value"] == shared["value"].iloc[-1]


def _undo_many(data_dir, n: int, start, failures) -> None:
    start.wait()
    for _ in range(n):
        try:
            corrections.undo(data_dir, "demo", "img1", "Ring", author="b")
        except PipelineError:
            failures.value += 1


def test_simultaneous_undos_each_cancel_a_different_correction(tmp_path):
    for i in range(30):
        corrections.set_label(tmp_path, "demo", "img1", "Ring", i % 2, author="a")
    ctx = mp.get_context("spawn")
    start, failures = ctx.Barrier(2), ctx.Value("i", 0)
    procs = [ctx.Process(target=_undo_many, args=(str(tmp_path), 15, start, failures))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert failures.value == 0
    events = corrections.history(tmp_path, "demo")
    undone = events["undoes"].dropna().astype(int)
    assert undone.is_unique and len(undone) == 30
    assert corrections.active(tmp_path, "demo").empty


def test_undo_restores_the_previous_correction_and_keeps_history(tmp_path):
    corrections.set_label(tmp_path, "demo", "img83", "Circ. Beamstop", 1, author="ana")
    corrections.set_label(tmp_path, "demo", "img83", "Circ. Beamstop", 0, author="bo")
    corrections.undo(tmp_path, "demo", "img83", "Circ. Beamstop", author="bo", note="misclick")

    now = corrections.active(tmp_path, "demo")
    assert now[["value", "author"]].values.tolist() == [[1, "ana"]]
    corrections.set_label(tmp_path, "demo", "img84", "Circ. Beamstop", 1, author="ana")
    assert corrections.active(tmp_path, "demo", image_id="img83")["value"].tolist() == [1]
    corrections.undo(tmp_path, "demo", "img83", "Circ. Beamstop", author="ana")
    assert corrections.active(tmp_path, "demo", image_id="img83").empty
    assert corrections.history(tmp_path, "demo", "img83")["action"].tolist() == [
        "set", "set", "undo", "undo"]
    with pytest.raises(PipelineError, match="no correction of 'Circ. Beamstop'.*to undo"):
        corrections.undo(tmp_path, "demo", "img83", "Circ. Beamstop")


def test_corrections_change_only_their_own_labels_of_their_own_dataset(tmp_path):
    act = np.zeros((3, 2), dtype=np.uint8)
    corrections.set_label(tmp_path, "demo", "b", "Ring", 1)
    corrections.set_label(tmp_path, "demo", "c", "Halo", 0)
    corrections.set_label(tmp_path, "demo", "not-in-run", "Ring", 1)
    corrections.set_label(tmp_path, "other", "a", "Ring", 1)

    fixed, mask = corrections.corrected_labels(tmp_path, "demo", act, ["a", "b", "c"],
                                               ["Ring", "Halo"])
    assert fixed.tolist() == [[0, 0], [1, 0], [0, 0]]
    assert mask.tolist() == [[False, False], [True, False], [False, True]]
    assert act.sum() == 0  # the caller's array is not touched
    one = corrections.active(tmp_path, "demo", image_id="b")
    assert one[["image_id", "attribute", "value"]].values.tolist() == [["b", "Ring", 1]]


def test_export_csv_holds_the_whole_history_with_time_and_author(tmp_path):
    corrections.set_label(tmp_path, "demo", "img1", "Ring", 1, author="ana", note="a, b")
    corrections.undo(tmp_path, "demo", "img1", "Ring", author="bo")
    buffer = io.StringIO()
    assert corrections.export_csv(tmp_path, buffer) == 2
    table = pd.read_csv(io.StringIO(buffer.getvalue()))
    assert table["action"].tolist() == ["set", "undo"]
    assert table["author"].tolist() == ["ana", "bo"]
    assert table["note"].iloc[0] == "a, b"
    assert table["undoes"].iloc[1] == table["event"].iloc[0]
    assert table["created"].notna().all()


def test_command_line_exports_corrections(tmp_path, capsys):
    corrections.set_label(tmp_path, "demo", "img1", "Ring", 1, author="ana")
    out = tmp_path / "corrections.csv"
    assert main(["corrections", "--data-dir", str(tmp_path), "--csv", str(out)]) == 0
    assert pd.read_csv(out)["image_id"].tolist() == ["img1"]
    assert main(["corrections", "--data-dir", str(tmp_path)]) == 0
    assert "demo: 1 labels corrected" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "img1", "Ring", 2), "must be 0 or 1"),
        (("demo", "", "Ring", 1), "needs an image id"),
        (("", "img1", "Ring", 1), "needs a dataset id"),
    ],
)
def test_bad_correction_is_refused_with_a_clear_message(tmp_path, args, message):
    with pytest.raises(PipelineError, match=message):
        corrections.set_label(tmp_path, *args)
    assert corrections.history(tmp_path).empty


def test_corrupt_database_is_a_clear_error_naming_the_file(tmp_path, capsys):
    corrections.db_path(tmp_path).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PipelineError, match="corrections.sqlite"):
        corrections.set_label(tmp_path, "demo", "img1", "Ring", 1)
    assert main(["corrections", "--data-dir", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------- in the dashboard


def test_export_callback_sends_the_history_of_the_runs_dataset(synthetic_run, monkeypatch):
    from callbacks.audit import export_corrections

    monkeypatch.setenv("XRAE_DATA_DIR", str(synthetic_run.data_dir))
    corrections.set_label(synthetic_run.data_dir, "synthetic-0", "img000001", "Ring", 1)
    corrections.set_label(synthetic_run.data_dir, "elsewhere", "img000001", "Ring", 1)
    sent = export_corrections(1, synthetic_run.id)
    assert sent["filename"] == "corrections-synthetic-0.csv"
    table = pd.read_csv(io.StringIO(sent["content"]))
    assert table[["dataset", "image_id", "attribute", "value"]].values.tolist() == [
        ["synthetic-0", "img000001", "Ring", 1]]


@pytest.mark.browser
def test_analyst_flips_and_undoes_a_label_in_the_detail_view(dash_duo, tmp_path, monkeypatch):
    from selenium.webdriver.support.wait import WebDriverWait

    from app import create_app
    from tests.conftest import write_synthetic_run
    from tests.test_retrain import choose, click, open_audit_tab

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    data_dir = tmp_path / "data"
    run = write_synthetic_run(data_dir, n=60)
    dash_duo.start_server(create_app(data_dir))
    open_audit_tab(dash_duo)
    click(dash_duo, ".audit-open")  # opens the most suspicious image
    dash_duo.wait_for_contains_text("#correction-list", "No label of this image is corrected")
    index = int(dash_duo.find_element("#text-detail-title").text.split()[0].lstrip("#"))
    image_id = run.images["image_id"].iloc[index]
    ring = run.attributes.index("Ring")
    old = int(run.act[index, ring])

    choose(dash_duo, "#dropdown-correction-attribute", ring)
    dash_duo.find_element("#input-correction-note").send_keys("faint ring, see image 81")
    author = dash_duo.find_element("#input-correction-author")
    author.send_keys("ana\n")
    click(dash_duo, "#button-flip-label")
    dash_duo.wait_for_contains_text("#text-correction-status", f"Ring of {image_id}: {old} → "
                                    f"{1 - old} (saved)")
    dash_duo.wait_for_contains_text("#correction-list", f"✎ Ring = {1 - old} by ana")
    dash_duo.wait_for_contains_text("#text-audit-summary", "✎ 1 label corrected")
    dash_duo.wait_for_contains_text("#detail-act-prd-table", f"{1 - old} ✎")  # in force, marked
    now = corrections.active(data_dir, "synthetic-0")
    assert now[["image_id", "attribute", "value", "author", "note"]].values.tolist() == [
        [image_id, "Ring", 1 - old, "ana", "faint ring, see image 81"]]

    click(dash_duo, "#button-undo-correction")
    dash_duo.wait_for_contains_text("#correction-list", "No label of this image is corrected")
    WebDriverWait(dash_duo.driver, 10).until(
        lambda d: "✎" not in d.find_element("id", "detail-act-prd-table").text)
    assert corrections.active(data_dir, "synthetic-0").empty
    click(dash_duo, "#button-flip-label")
    dash_duo.wait_for_contains_text("#text-audit-summary", "✎ 1 label corrected")

    dash_duo.driver.refresh()  # a restart of the page: the name and the correction remain
    open_audit_tab(dash_duo)
    dash_duo.wait_for_contains_text("#text-audit-summary",
                                    "1 label corrected on dataset synthetic-0 (3 edits")
    dash_duo.wait_for_element("#input-correction-author")
    assert dash_duo.find_element("#input-correction-author").get_attribute("value") == "ana"
    assert corrections.history(data_dir)["action"].tolist() == ["set", "undo", "set"]
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_another_analysts_correction_appears_in_the_views_without_a_reload(dash_duo, tmp_path,
                                                                          monkeypatch):
    from selenium.webdriver.support.wait import WebDriverWait

    from app import create_app
    from components.figures import CORRECTED
    from tests.conftest import write_synthetic_run
    from tests.test_browser import figure_data

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    data_dir = tmp_path / "data"
    run = write_synthetic_run(data_dir, n=60)
    dash_duo.start_server(create_app(data_dir))
    dash_duo.wait_for_contains_text("#header-fea", "60 images")
    assert figure_data(dash_duo, "view-fea", f"gd._fullData[{CORRECTED}].x.length") == 0
    assert dash_duo.find_element("#text-correction-key").text == ""

    image_id = run.images["image_id"].iloc[42]
    code = ("from pipeline import corrections; "
            f"corrections.set_label({str(data_dir)!r}, {run.meta['dataset']!r}, {image_id!r}, "
            "'Halo', 1, author='ben')")
    subprocess.run([sys.executable, "-c", code], check=True)  # another analyst, another process

    dash_duo.wait_for_text_to_equal("#text-correction-key", "1 image has a corrected label (✎)",
                                    timeout=20)
    diamonds = f"gd._fullData[{CORRECTED}]"
    for view in ("view-act", "view-fea", "view-prd"):
        WebDriverWait(dash_duo.driver, 10).until(
            lambda _, v=view: figure_data(dash_duo, v, f"{diamonds}.x.length") == 1)
        x, y = figure_data(dash_duo, view, f"[{diamonds}.x[0], {diamonds}.y[0]]")
        space = view.removeprefix("view-")
        np.testing.assert_allclose([x, y], np.asarray(run.emb(space))[42], rtol=1e-5)
    assert dash_duo.get_logs() == []


# ---------------------------------------------------------------- safe exports


HOSTILE = ("=HYPERLINK(\"http://evil.example\",\"click\")", "+1+2", "-2+3", "@SUM(A1)")


@pytest.mark.parametrize("typed", HOSTILE)
def test_a_typed_formula_is_exported_as_text_not_run(tmp_path, typed):
    corrections.set_label(tmp_path, "demo", "img1", "Ring", 1, author=typed, note=typed)
    out = tmp_path / "corrections.csv"
    assert main(["corrections", "--data-dir", str(tmp_path), "--csv", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["note"].iloc[0] == "'" + typed
    assert table["author"].iloc[0] == "'" + typed
    assert table["value"].iloc[0] == 1  # numbers stay numbers


def test_corrections_csv_into_a_missing_folder_names_it_and_exits_2(tmp_path, capsys):
    corrections.set_label(tmp_path, "demo", "img1", "Ring", 1, author="ana")
    out = tmp_path / "no such folder" / "corrections.csv"
    assert main(["corrections", "--data-dir", str(tmp_path), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"the folder {out.parent} does not exist" in err
    assert not out.parent.exists()


def test_corrections_csv_onto_a_folder_is_refused_and_leaves_nothing(tmp_path, capsys):
    corrections.set_label(tmp_path, "demo", "img1", "Ring", 1, author="ana")
    assert main(["corrections", "--data-dir", str(tmp_path), "--csv", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".tmp")) == []
