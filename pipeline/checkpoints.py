"""Checkpoints: a model's weights with all inference needs (architecture, attributes, input
size and channels, normalisation, thresholds), written atomically and checked before anything is
built from them. Plain torchvision ResNet state dicts load too, their stem made one-channel.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import uuid
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.model import (
    ARCHS,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    RESNETS,
    build_model,
    per_image_normalisation,
)

CHECKPOINT_FORMAT = "xrae-checkpoint"
MAX_PROFILE_WIDTH = 1024  # the compact net's profile branch; the default is model.PROFILE_WIDTH


def save_checkpoint(path, model: nn.Module, *, arch: str, attributes, input_size: int,
                    normalisation: dict, inputs: dict | None = None,
                    extra: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then os.replace): never half a file.

    `inputs` (pipeline.inputs) is what the model takes; None: the architecture's default."""
    from pipeline.inputs import default_inputs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT, "version": 1, "arch": arch,
        "attributes": [str(a) for a in attributes], "input_size": int(input_size),
        "normalisation": dict(normalisation), "inputs": inputs or default_inputs(arch),
        "model": state, **(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path) -> dict:
    """The raw checkpoint dictionary; a missing, corrupt or non-torch file is a PipelineError."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not a checkpoint we can read"
        raise PipelineError(_unreadable(path, err)) from err
    if not isinstance(payload, dict):
        raise PipelineError(f"checkpoint {path} holds a {type(payload).__name__}, not a state dict")
    return payload


def _unreadable(path, err: Exception) -> str:
    text = str(err).strip()
    if "weights_only" in text or "Weights only" in text:
        # torch advises loading with weights_only=False, which runs code stored in the file:
        # never repeat that advice; such a file is simply not one this tool loads.
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it stores a Python object, {found.group(1)}" if found else "it is not tensors"
        return (f"checkpoint {path} is not a checkpoint this tool wrote or a plain state dict "
                f"({what})")
    first = text.splitlines()[0][:200] if text else type(err).__name__
    return f"checkpoint {path} is not a readable PyTorch file ({first})"


def load_checkpoint(path, attributes: list[str] | None = None, arch: str | None = None
                    ) -> tuple[nn.Module, dict]:
    """A model ready for inference and its description (arch, attributes, input size, scaling).

    Takes our own checkpoints or a plain torchvision ResNet state dict (3- or 1-channel conv1);
    for the latter, `attributes` names the outputs and the architecture is read off the weights.
    """
    from pipeline.inputs import ONE_CHANNEL, inputs_of

    payload = read_checkpoint(path)
    if payload.get("format") == CHECKPOINT_FORMAT:
        check_checkpoint_meta(path, payload)
        info = {k: v for k, v in payload.items() if k not in ("model", "training")}
        info["training"] = _public_training(payload.get("training"))
        state = payload["model"]
        _check_attributes(path, info["attributes"], attributes)
    else:
        state = _plain_state_dict(path, payload)
        out = state["fc.weight"].shape[0] if "fc.weight" in state else None
        names = list(attributes) if attributes is not None else [f"attribute {i}" for i in
                                                                  range(out or 0)]
        if out is not None and out != len(names):
            raise PipelineError(f"checkpoint {path} has {out} outputs but there are "
                                f"{len(names)} attributes")
        info = {"format": "torchvision-state-dict", "arch": _infer_arch(path, state),
                "attributes": names, "input_size": 224, "normalisation": per_image_normalisation(),
                "inputs": dict(ONE_CHANNEL), "training": None}
        state = _one_channel(state)
    if arch is not None and arch != info["arch"]:
        raise PipelineError(f"checkpoint {path} holds a {info['arch']}, not a {arch}")
    info["inputs"] = inputs_of(info)  # checkpoints from before inputs were recorded: one channel
    model = build_model(info["arch"], len(info["attributes"]), info["inputs"],
                        **_profile_width(path, state))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()
        raise PipelineError(f"checkpoint {path} does not fit a {info['arch']}: "
                            f"{' '.join(detail[1:3])[:300]}") from err
    info["feature_dim"] = model.feature_dim
    return model.eval(), info


def _profile_width(path, state: dict) -> dict:
    """The compact net's profile-branch width as its weights have it (earlier checkpoints were
    32 wide), as build_model's keyword; nothing for a model without that branch. A width past
    MAX_PROFILE_WIDTH is refused before the net is built: its later layers hold width² weights."""
    first = state.get("profile.0.0.weight")
    if not isinstance(first, torch.Tensor):
        return {}
    width = int(first.shape[0]) if first.dim() == 3 else 0
    if not 1 <= width <= MAX_PROFILE_WIDTH:
        raise PipelineError(f"checkpoint {path} has a radial-profile branch {width} channels "
                            f"wide; expected 1 to {MAX_PROFILE_WIDTH}")
    return {"profile_width": width}


def check_checkpoint_meta(path, payload: dict) -> None:
    """Refuse our-format checkpoints whose description is absent or absurd, before anything is
    built from it (an input size of 10⁵ would try to allocate tens of gigabytes)."""
    if payload.get("arch") not in ARCHS:
        raise PipelineError(f"checkpoint {path} names no known architecture "
                            f"({payload.get('arch')!r}; expected one of {', '.join(ARCHS)})")
    names = payload.get("attributes")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise PipelineError(f"checkpoint {path} lacks its list of attribute names")
    size = payload.get("input_size")
    if not (type(size) is int and MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE):
        raise PipelineError(f"checkpoint {path} has input size {size!r}; expected a whole number "
                            f"from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    if not isinstance(payload.get("model"), dict):
        raise PipelineError(f"checkpoint {path} holds no model weights")
    _check_normalisation(path, payload.get("normalisation"))
    from pipeline.inputs import check_inputs

    check_inputs(path, payload.get("inputs"))
    _check_thresholds(path, payload.get("thresholds"), names)


def _check_thresholds(path, thresholds, names: list[str]) -> None:
    """Absent (older checkpoints), or one number in [0, 1] for each attribute."""
    if thresholds is None:
        return
    ok = isinstance(thresholds, dict) and sorted(thresholds) == sorted(names) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
        for v in thresholds.values())
    if not ok:
        raise PipelineError(f"checkpoint {path} has unusable thresholds; expected a number in "
                            "[0, 1] for each of its attributes")


def _check_normalisation(path, stats) -> None:
    """Present; centre and scale both absent (each image scaled by itself) or both finite."""
    if not isinstance(stats, dict):
        raise PipelineError(f"checkpoint {path} lacks its input normalisation")
    centre, scale = stats.get("centre"), stats.get("scale")
    if centre is None and scale is None:
        return
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (centre, scale))
    if not (numbers and math.isfinite(centre) and math.isfinite(scale) and scale > 0):
        raise PipelineError(f"checkpoint {path} has an unusable normalisation (centre {centre!r}, "
                            f"scale {scale!r}); both must be finite numbers, scale above 0")


def _check_attributes(path, stored: list[str], wanted: list[str] | None) -> None:
    if wanted is None or list(wanted) == list(stored):
        return
    if len(wanted) != len(stored):
        raise PipelineError(f"checkpoint {path} has {len(stored)} outputs but there are "
                            f"{len(wanted)} attributes")
    differ = [f"{a!r}≠{b!r}" for a, b in zip(stored, wanted, strict=True) if a != b][:3]
    raise PipelineError(f"checkpoint {path} was trained on other attributes ({', '.join(differ)})")


def _plain_state_dict(path, payload: dict) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):  # common wrappers around weights
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    state = {}
    for key, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise PipelineError(f"checkpoint {path} is neither ours nor a state dict "
                                f"(entry {key!r} is a {type(value).__name__})")
        state[key.removeprefix("module.")] = value
    if "conv1.weight" not in state:
        raise PipelineError(f"checkpoint {path} is not a ResNet state dict (no conv1.weight)")
    return state


def _infer_arch(path, state: dict) -> str:
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    found = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50"}
    arch = found.get((bottleneck, len(blocks)))
    if arch is None:
        raise PipelineError(f"checkpoint {path} is a ResNet we do not support "
                            f"({len(blocks)} blocks in layer3); use one of {', '.join(RESNETS)}")
    return arch


def _one_channel(state: dict) -> dict:
    """A 3-channel stem becomes a 1-channel one that gives the same output on a grey image
    (convolving three equal channels equals convolving one with the summed kernels)."""
    weight = state["conv1.weight"]
    if weight.shape[1] == 3:
        state = {**state, "conv1.weight": weight.sum(dim=1, keepdim=True)}
    return state


def _public_training(training: dict | None) -> dict | None:
    """What a run records about training: settings and history, not optimizer tensors."""
    if not training:
        return None
    return {k: v for k, v in training.items() if k not in ("optimizer", "scheduler", "rng")}


def file_digest(path, length: int = 16) -> str:
    """A short sha256 of a file, so a run names the exact weights it came from."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
