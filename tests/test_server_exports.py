"""Every CSV the dashboard sends (a selection, a saved group, the corrections) is safe to open
in a spreadsheet: text that would start a formula is escaped, numbers stay numbers."""

from __future__ import annotations

import io
import json
from contextvars import copy_context

import pandas as pd
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict

from callbacks import audit, selection
from components import ids
from pipeline import corrections
from pipeline.spreadsheet import formula_safe
from tests.conftest import write_synthetic_run


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    return write_synthetic_run(tmp_path / "data", n=20)


def call(callback, trigger, *args):
    def inside():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": 1}]))
        return callback(*args)
    return copy_context().run(inside)


def sent_table(sent: dict) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(sent["content"]), keep_default_na=False)


def test_formula_safe_escapes_text_only():
    frame = pd.DataFrame({"image_id": ["=cmd|' /C calc'!A0", "plain", "-x", "@me"],
                          "prd": [-0.5, 0.25, 1.0, 0.0], "act": [1, 0, 1, 0],
                          "+column": ["+1", "\t2", "\r3", "ok-"]})
    safe = formula_safe(frame)
    assert safe["image_id"].tolist() == ["'=cmd|' /C calc'!A0", "plain", "'-x", "'@me"]
    assert safe["'+column"].tolist() == ["'+1", "'\t2", "'\r3", "ok-"]
    assert list(safe.columns) == ["image_id", "prd", "act", "'+column"]
    assert safe["prd"].tolist() == [-0.5, 0.25, 1.0, 0.0]  # numbers are not text
    assert frame["image_id"].iloc[0].startswith("=")  # the caller's frame is untouched


def test_dashboard_corrections_export_escapes_a_typed_formula(run):
    corrections.set_label(run.data_dir, "synthetic-0", "img000001", "Ring", 1,
                          author="@evil", note='=HYPERLINK("http://evil.example","x")')
    table = sent_table(audit.export_corrections(1, run.id))
    assert table["author"].tolist() == ["'@evil"]
    assert table["note"].tolist() == ['\'=HYPERLINK("http://evil.example","x")']
    assert table["value"].tolist() == [1]


def test_selection_and_group_exports_escape_image_ids_that_look_like_formulas(run):
    images = run.images.copy()
    images.loc[0, "image_id"], images.loc[1, "image_id"] = "=1+1", "-7"
    run.__dict__["images"] = images  # as an ingested dataset with such file names would give
    sent = call(selection.export_csv, f"{ids.EXPORT_SELECTION}.n_clicks", 1, [], [0, 1, 2],
                [], 0.5, run.id)
    table = sent_table(sent)
    assert table["image_id"].tolist()[:2] == ["'=1+1", "'-7"]
    assert table["row"].tolist() == [0, 1, 2]
    assert pd.api.types.is_float_dtype(table[f"PRD {run.attributes[0]}"])
    groups = [{"run": run.id, "name": "=bad", "colour": "#000", "indices": [0, 5]}]
    trigger = json.dumps({"index": 0, "type": ids.GROUP_EXPORT}) + ".n_clicks"
    table = sent_table(call(selection.export_csv, trigger, None, [1], [], groups, 0.5, run.id))
    assert table["image_id"].tolist()[0] == "'=1+1"
