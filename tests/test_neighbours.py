"""One definition of "nearest in FEA space", shared by the detail view and the label audit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.audit import audit_run
from pipeline.errors import PipelineError
from pipeline.neighbours import nearest_images, neighbour_graph, run_neighbour_graph


def test_a_brighter_copy_of_an_image_is_its_nearest_neighbour():
    rng = np.random.default_rng(0)
    fea = rng.normal(size=(50, 8)).astype(np.float32)
    fea[7] = fea[3] * 5  # the same direction, 5× stronger activations
    fea[49] = -fea[:49].sum(axis=0)  # features centred: the direction is about the mean
    graph = neighbour_graph(fea, 3)
    assert graph.shape == (50, 3)
    assert graph[3, 0] == 7 and graph[7, 0] == 3
    assert all(i not in row for i, row in enumerate(graph))  # never its own neighbour


def test_the_detail_view_and_the_audit_share_one_neighbour_index(synthetic_run):
    graph = run_neighbour_graph(synthetic_run, 8)
    for row in (0, 17, 59):
        assert nearest_images(synthetic_run, row, 8) == graph[row].tolist()
    # The audit's neighbour vote (when mixed in) is built on the same graph.
    ranking = audit_run(synthetic_run, k=8, top=None, weight=0.5)
    act = np.asarray(synthetic_run.act, dtype=float)
    first = ranking.iloc[0]
    column = synthetic_run.attributes.index(first["attribute"])
    assert first["vote"] == pytest.approx(act[graph[first["index"]], column].mean())


def test_one_image_has_no_neighbours_to_show():
    with pytest.raises(PipelineError, match="at least 2 images"):
        neighbour_graph(np.ones((1, 4)), 3)
