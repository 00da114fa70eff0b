"""The ResNet model, its input normalisation and its checkpoints (ours and torchvision ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from pipeline.attributes import ATTRIBUTES
from pipeline.checkpoints import file_digest, load_checkpoint, save_checkpoint
from pipeline.errors import PipelineError
from pipeline.model import (
    build_model,
    fit_normalisation,
    five_crops,
    multiscale_sizes,
    normalise,
    pick_device,
)

torch.set_num_threads(1)
A = len(ATTRIBUTES)


def _grey(n=2, size=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, size, size))).float()


@pytest.mark.parametrize(("arch", "dim"), [("resnet18", 512), ("resnet50", 2048)])
def test_model_takes_one_channel_and_gives_penultimate_features_and_one_logit_per_attribute(
        arch, dim):
    model = build_model(arch, A).eval()
    assert model.conv1.in_channels == 1
    x = _grey()
    with torch.no_grad():
        features, logits = model.features(x), model(x)
    assert features.shape == (2, dim)
    assert logits.shape == (2, A)
    assert torch.allclose(model.fc(features), logits, atol=1e-5)


def test_unknown_architecture_is_refused_by_name():
    with pytest.raises(PipelineError, match="resnet99"):
        build_model("resnet99", A)


def test_normalise_gives_a_square_float_image_and_survives_gaps_and_nan():
    image = np.full((40, 60), 100.0)
    image[:, :5] = -1  # detector gap flag
    image[0, 0] = np.nan
    out = normalise(image, 32)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_non_square_images_are_padded_so_a_ring_stays_round():
    h, w = 64, 128
    yy, xx = np.mgrid[:h, :w]
    ring = 1000.0 * (np.abs(np.hypot(yy - h / 2, xx - w / 2) - 20) < 2)
    out = normalise(ring, 64)
    # the ring (radius 20 of a 128-wide frame) must be as tall as it is wide after resizing
    rows = np.flatnonzero(out.max(axis=1) > out.min() + 1)
    cols = np.flatnonzero(out.max(axis=0) > out.min() + 1)
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1


def test_dataset_stats_keep_absolute_intensity_but_per_image_scaling_does_not():
    rng = np.random.default_rng(0)
    dim, bright = rng.poisson(2.0, (32, 32)), rng.poisson(2000.0, (32, 32))
    stats = fit_normalisation([dim, bright], 32)
    assert normalise(bright, 32, stats).mean() > normalise(dim, 32, stats).mean() + 0.5
    # without stored stats each image is centred on its own median
    assert abs(np.median(normalise(bright, 32)) - np.median(normalise(dim, 32))) < 1e-3


def test_multiscale_crops_follow_seed_001_and_scale_with_input_size():
    assert multiscale_sizes(224) == [256, 384, 512]
    assert multiscale_sizes(112) == [128, 192, 256]
    crops = five_crops(np.arange(100.0).reshape(10, 10), 4)
    assert len(crops) == 5 and all(c.shape == (4, 4) for c in crops)
    assert crops[1][0, 0] == 0 and crops[4][-1, -1] == 99  # top-left and bottom-right corners


def test_checkpoint_round_trip_gives_the_same_outputs_and_carries_what_inference_needs(tmp_path):
    model = build_model("resnet18", A).eval()
    stats = {"method": "log1p-robust", "centre": 1.5, "scale": 3.0}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, arch="resnet18", attributes=ATTRIBUTES, input_size=48,
                    normalisation=stats)
    loaded, info = load_checkpoint(path)
    x = _grey(size=48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert info["arch"] == "resnet18" and info["attributes"] == list(ATTRIBUTES)
    assert info["input_size"] == 48 and info["normalisation"]["centre"] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left
    assert len(file_digest(path)) == 16


def test_plain_three_channel_torchvision_state_dict_loads_and_sees_grey_images_the_same(tmp_path):
    reference = torchvision.models.resnet18(weights=None, num_classes=A).eval()
    path = tmp_path / "torchvision.pt"
    torch.save(reference.state_dict(), path)
    model, info = load_checkpoint(path, attributes=list(ATTRIBUTES))
    assert info["arch"] == "resnet18" and info["format"] == "torchvision-state-dict"
    x = _grey(size=64)
    with torch.no_grad():  # one grey channel = the same image copied to R, G and B
        assert torch.allclose(model(x), reference(x.repeat(1, 3, 1, 1)), atol=1e-4)


def test_plain_one_channel_state_dict_loads_with_its_architecture_inferred(tmp_path):
    source = build_model("resnet34", 5).eval()
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model, info = load_checkpoint(path, attributes=list("abcde"))
    assert info["arch"] == "resnet34"
    with torch.no_grad():
        assert torch.equal(model(_grey()), source(_grey()))


def test_output_count_that_does_not_match_the_attributes_names_both_counts(tmp_path):
    path = tmp_path / "imagenet.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(PipelineError, match=r"1000 outputs.*17 attributes"):
        load_checkpoint(path, attributes=list(ATTRIBUTES))


def test_our_checkpoint_refuses_other_attribute_names(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, build_model("resnet18", 3), arch="resnet18", attributes=["a", "b", "c"],
                    input_size=32, normalisation={})
    with pytest.raises(PipelineError, match="other attributes"):
        load_checkpoint(path, attributes=["a", "b", "x"])
    with pytest.raises(PipelineError, match="3 outputs but there are 2 attributes"):
        load_checkpoint(path, attributes=["a", "b"])
    with pytest.raises(PipelineError, match="not a resnet50"):
        load_checkpoint(path, arch="resnet50")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint_is_a_clear_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match="broken.pt"):
        load_checkpoint(path)


def test_missing_checkpoint_and_non_resnet_weights_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere.pt")
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(PipelineError, match="not a ResNet"):
        load_checkpoint(path, attributes=["a"])


def test_device_choice_refuses_unknown_devices_and_absent_cuda():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(PipelineError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="no CUDA"):
            pick_device("cuda")
