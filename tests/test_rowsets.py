"""Large selections and saved groups stay on the server: the browser holds a short token, every
panel that reads the selection finds the same rows through it, and a token the server did not
make (or made for another run) selects nothing."""

from __future__ import annotations

import numpy as np
import pytest

from callbacks import detail, rowsets, selection, views
from callbacks import raster as raster_callbacks
from callbacks.common import Refused, row_list, selection_rows
from pipeline.store import get_run
from tests.conftest import write_synthetic_run
from tests.test_callbacks import call, texts
from tests.test_callbacks import run as run  # noqa: F401  (fixture)
from tests.test_raster import pictures as pictures  # noqa: F401  (fixture)

BOX = {"points": [], "range": {"x": [-100.0, 100.0], "y": [-100.0, 100.0]}}  # every image


@pytest.fixture
def few_inline(monkeypatch):
    monkeypatch.setattr(rowsets, "INLINE_ROWS", 5)


def test_a_large_selection_reaches_the_browser_as_a_token_every_panel_reads(run, pictures,
                                                                             few_inline):
    held, source = call(views.select, "view-fea.selectedData", None, BOX, None, None, [],
                        run.id, [])
    assert isinstance(held, str) and len(held) < 64 and source == "fea"
    assert selection_rows(run, held).tolist() == list(range(len(run)))
    title, _ = call(selection.summarise_selection, "store-selection.data", held, 0.5, run.id)
    assert title == f"Selection: {len(run):,} images"
    strip = call(detail.show_thumbnails, "store-selection.data", held, run.id)
    assert f"showing {detail.MAX_THUMBS} of {len(run):,} selected" in texts(strip) \
        or f"{len(run):,} selected" in texts(strip)


def test_a_small_selection_stays_a_list_of_rows(run, pictures):
    event = {"points": [], "range": {"x": [-0.5, 1.0], "y": [-1.0, 0.5]}}
    held, _ = call(views.select, "view-fea.selectedData", None, event, None, None, [], run.id, [])
    assert isinstance(held, list) and len(held) <= rowsets.INLINE_ROWS


def test_a_token_is_read_again_after_a_restart_from_the_disk_cache(run, few_inline):
    token = rowsets.keep_rows(run, np.arange(2, 40))
    rowsets._MEMORY.clear()  # a fresh server process, or another worker
    assert selection_rows(get_run(run.id), token).tolist() == list(range(2, 40))


def test_a_token_the_server_did_not_make_or_of_another_run_selects_nothing(run, tmp_path,
                                                                          few_inline):
    other = write_synthetic_run(tmp_path / "data", n=30, seed=1)
    token = rowsets.keep_rows(other, np.arange(10))
    assert selection_rows(run, token).tolist() == []
    assert selection_rows(run, "rows:" + "0" * 32).tolist() == []
    title, _ = call(selection.summarise_selection, "store-selection.data", "rows:" + "f" * 32,
                    0.5, run.id)
    assert title.startswith("No selection")
    with pytest.raises(Refused):
        row_list(run, "../../etc/passwd")


def test_a_saved_group_of_a_large_selection_is_kept_by_token_and_outlined(run, pictures,
                                                                         few_inline):
    held, _ = call(views.select, "view-fea.selectedData", None, BOX, None, None, [], run.id, [])
    groups, _ = call(selection.edit_groups, "button-save-group.n_clicks", 1, [], "all", held,
                     [], run.id)
    assert isinstance(groups[0]["indices"], str)
    again, _ = call(views.select, '{"index":0,"type":"group-select"}.n_clicks', None,
                    None, None, None, [1], run.id, groups)
    assert selection_rows(run, again).tolist() == list(range(len(run)))
    xy = np.asarray(run.emb("act"))
    ringed = raster_callbacks.overlay_groups(run, groups, [-100, 100, -100, 100], xy)
    assert ringed[0]["indices"].tolist() == list(range(len(run)))
