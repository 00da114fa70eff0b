"""Saliency maps (Grad-CAM from the run's own model) and the detail panel's overlay: the map's
shape and range, determinism, one map per attribute, where a trained model looks, the cache, and
the refusal of every value the browser could send."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from callbacks import detail
from pipeline.attributes import ATTRIBUTES
from pipeline.checkpoints import save_checkpoint
from pipeline.errors import PipelineError
from pipeline.inputs import default_inputs
from pipeline.model import CompactNet, build_model, per_image_normalisation
from pipeline.saliency import (
    NoModel,
    last_conv_block,
    run_saliency,
    saliency_map,
    strongest_attribute,
)
from tests.conftest import write_synthetic_run
from tests.test_imageless_run import write_imageless_run


def model_and_info(arch: str = "compact", attributes=ATTRIBUTES, input_size: int = 32, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, len(attributes)).eval()
    return model, {"arch": arch, "attributes": list(attributes), "input_size": input_size,
                   "normalisation": per_image_normalisation(), "inputs": default_inputs(arch)}


def give_model(run, seed: int = 0) -> None:
    """Keep a (freshly initialised) compact model in the run, as make_run keeps its model."""
    model, info = model_and_info(seed=seed)
    save_checkpoint(run.path / "model.pt", model, arch="compact", attributes=ATTRIBUTES,
                    input_size=32, normalisation=info["normalisation"])


def scattering_image(shape=(40, 56), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape)
    r2 = (y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2
    return rng.poisson(400 / (1 + r2 / 60) + 2).astype(np.float32)


@pytest.fixture
def model_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_synthetic_run(tmp_path / "data", n=20)
    give_model(run)
    return run


# ---------------------------------------------------------------- the map


def test_the_map_covers_the_detector_image_from_0_to_1():
    model, info = model_and_info()
    image = scattering_image((40, 56))  # not square: the model saw it padded to 56 × 56
    found = saliency_map(model, info, image, 3)
    assert found.shape == (40, 56) and found.dtype == np.float32
    assert found.min() >= 0 and found.max() == pytest.approx(1.0)


def test_the_same_image_and_attribute_give_the_same_map():
    model, info = model_and_info()
    image = scattering_image()
    assert np.array_equal(saliency_map(model, info, image, 5), saliency_map(model, info, image, 5))


def test_two_attributes_give_different_maps():
    model, info = model_and_info()
    image = scattering_image()
    first, second = saliency_map(model, info, image, 0), saliency_map(model, info, image, 1)
    assert np.abs(first - second).mean() > 0.01


@pytest.mark.parametrize(("arch", "where"), [("compact", "body.6"), ("resnet18", "layer4.1"),
                                             ("resnet50", "layer4.2")])
def test_the_map_comes_from_the_last_convolutional_block(arch, where):
    model, _ = model_and_info(arch)
    assert last_conv_block(model) is model.get_submodule(where)


def draw_blocked(rng, side: int = 48):
    """A scattering image, half the time with a 10 × 10 shadow (no counts) somewhere, half the
    time with a bright 3 × 3 spot somewhere; labels (shadow, spot) and the shadow's corner."""
    image = scattering_image((side, side), int(rng.integers(1 << 30)))
    labels = rng.random(2) < 0.5
    corner = None
    if labels[0]:
        corner = rng.integers(2, side - 12, 2)
        image[corner[0] : corner[0] + 10, corner[1] : corner[1] + 10] = 0
    if labels[1]:
        y, x = rng.integers(2, side - 5, 2)
        image[y : y + 3, x : x + 3] += 3000
    return image, labels.astype(np.float32), corner


@pytest.mark.slow
def test_a_trained_model_looks_at_the_shadow_when_asked_about_the_shadow():
    from pipeline.inputs import model_input

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    info = {"input_size": 48, "normalisation": per_image_normalisation(),
            "attributes": ["shadow", "spot"]}
    data = [draw_blocked(rng) for _ in range(400)]
    x, _ = model_input([d[0] for d in data], info)  # one mean channel, no profile
    y = torch.from_numpy(np.stack([d[1] for d in data]))
    model = CompactNet(2)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(150):
        rows = torch.from_numpy(rng.integers(0, len(data), 32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[rows]), y[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    ratios = []
    for image, _, corner in (draw_blocked(rng) for _ in range(60)):
        if corner is not None:
            found = saliency_map(model, info, image, 0)
            inside = found[corner[0] : corner[0] + 10, corner[1] : corner[1] + 10]
            ratios.append(inside.mean() / found.mean())  # 1: no more weight than anywhere else
    # The shadow covers 4 % of the image; measured median about 3.7 (150 steps, seed 0)
    assert np.median(ratios) > 2


# ---------------------------------------------------------------- a run's maps


def test_a_runs_map_is_computed_once_then_read_from_the_cache(model_run):
    cache = {}
    first = run_saliency(model_run, 4, ATTRIBUTES[2], cache)
    assert list(cache) == [f"{model_run.id}/4/2"]
    assert first.shape == model_run.load_image(4).shape
    assert np.array_equal(run_saliency(model_run, 4, ATTRIBUTES[2], cache), first)
    assert len(cache) == 1
    assert not torch.cuda.is_initialized()  # the web process must never start CUDA


@pytest.mark.parametrize("attribute", ["no such attribute", None, 3, ["Beamstop"]])
def test_an_attribute_that_is_not_the_runs_is_refused_by_name(model_run, attribute):
    with pytest.raises(PipelineError, match="is not one of run"):
        run_saliency(model_run, 0, attribute)


@pytest.mark.parametrize("index", [-1, 20, True, 2.5, "3", None])
def test_an_image_number_outside_the_run_is_refused(model_run, index):
    with pytest.raises(PipelineError, match="is not in run"):
        run_saliency(model_run, index, ATTRIBUTES[0])


def test_a_run_of_imported_vectors_has_no_model_to_ask(tmp_path):
    run = write_imageless_run(tmp_path / "data")
    with pytest.raises(NoModel, match="keeps no model"):
        run_saliency(run, 0, ATTRIBUTES[0])


# ---------------------------------------------------------------- the detail panel


def test_opening_an_image_picks_its_strongest_prediction(model_run):
    options, value, disabled, note = detail.offer_saliency(7, model_run.id)
    assert value == ATTRIBUTES[int(np.argmax(model_run.prd[7]))] == strongest_attribute(
        model_run, 7)
    assert [o["value"] for o in options] == list(ATTRIBUTES) and not disabled and note == ""


def test_the_detail_image_carries_the_saliency_with_a_colour_bar(model_run):
    figure = detail.draw_detail_image(7, "Inferno", model_run.id, ATTRIBUTES[4], 0.4)
    image, layer = figure["data"]
    assert layer["opacity"] == 0.4 and layer["name"] == f"saliency · {ATTRIBUTES[4]}"
    assert ATTRIBUTES[4] in layer["colorbar"]["title"]["text"]
    assert (layer["dx"], layer["x0"]) == (image["dx"], image["x0"])  # the same pixel grid
    plain = detail.draw_detail_image(7, "Inferno", model_run.id, None, 0.4)
    assert len(plain["data"]) == 1


@pytest.mark.parametrize(("attribute", "opacity", "named"), [
    ("no such attribute", 0.5, "is not one of run"), (ATTRIBUTES[0], 1.5, "opacity"),
    (ATTRIBUTES[0], -0.1, "opacity"), (ATTRIBUTES[0], "0.5", "opacity"),
    (ATTRIBUTES[0], True, "opacity"), (ATTRIBUTES[0], None, "opacity"),
    ({"name": ATTRIBUTES[0]}, 0.5, "is not one of run"),
])
def test_a_crafted_attribute_or_opacity_shows_the_image_and_names_the_refusal(
        model_run, attribute, opacity, named):
    figure = detail.draw_detail_image(3, "Inferno", model_run.id, attribute, opacity)
    assert len(figure["data"]) == 1  # the image, without a layer
    note = figure["layout"]["annotations"][0]["text"]
    assert note.startswith("No saliency shown") and named in note


def test_a_run_without_a_model_says_so_instead_of_a_picker(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_imageless_run(tmp_path / "data")
    options, value, disabled, note = detail.offer_saliency(2, run.id)
    assert (options, value, disabled) == ([], None, True)
    assert "keeps no model" in note and "imported" in note


# ---------------------------------------------------------------- the command line


def test_the_command_writes_the_image_under_its_strongest_attributes_map(model_run, tmp_path,
                                                                         capsys):
    from PIL import Image

    from pipeline.cli import main

    def picture(name: str, *more: str) -> np.ndarray:
        out = tmp_path / name
        assert main(["saliency", "--run", model_run.id, "--image", "6", "--out", str(out),
                     "--data-dir", str(model_run.data_dir), *more]) == 0
        return np.asarray(Image.open(out))

    assert picture("strongest.png").shape == (*model_run.load_image(6).shape, 3)
    assert strongest_attribute(model_run, 6) in capsys.readouterr().out
    # Without the map (opacity 0) the picture differs where the model looked.
    shown = picture("shown.png", "--attribute", ATTRIBUTES[0])
    assert (picture("plain.png", "--attribute", ATTRIBUTES[0], "--opacity", "0") != shown).any()


def test_the_command_refuses_an_attribute_the_run_lacks(model_run, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["saliency", "--run", model_run.id, "--image", "1", "--attribute", "Haze",
                 "--out", str(tmp_path / "s.png"), "--data-dir", str(model_run.data_dir)]) == 2
    assert "'Haze' is not one of run" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_an_attribute_nothing_in_the_image_speaks_for_is_said_not_drawn(model_run):
    empty = next(a for a in ATTRIBUTES if not run_saliency(model_run, 7, a).any())
    figure = detail.draw_detail_image(7, "Inferno", model_run.id, empty, 0.6)
    assert len(figure["data"]) == 1
    assert figure["layout"]["annotations"][0]["text"] == (
        f"Nothing in this image raised the model's score for {empty}.")
