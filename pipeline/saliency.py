"""Where the model looked: Grad-CAM (Selvaraju et al., ICCV 2017) of one image for one attribute,
from the run's own model, as a map over the detector image in 0..1.

The image is prepared exactly as inference prepares it (pipeline.inputs.model_input). The map
weights the last convolutional block's channels by the mean gradient of the attribute's logit,
keeps the positive part (evidence for the attribute), scales it so its peak is 1, and brings it
back from the model's square input to the detector's pixels. Always on the CPU: the dashboard's
web process must never initialise CUDA.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline.checkpoints import load_checkpoint
from pipeline.errors import PipelineError
from pipeline.imaging import DEFAULT_COLOUR_MAP, false_colour
from pipeline.inputs import model_input

METHOD = "Grad-CAM"
THREADS = 2  # the web process shares its cores with every other request
# One map at a time per process: two at once would only fight over the same cores.
_LOCK = threading.Lock()


class NoModel(PipelineError):
    """The run keeps no model (its vectors were imported), so it cannot say where it looked."""


def last_conv_block(model: nn.Module) -> nn.Module:
    """The block around the model's last convolution, found by walking down the module tree
    (each time into the last child that holds an nn.Conv2d) until that child is the convolution
    itself: `body[-1]` of the compact net, `layer4[-1]` of a ResNet. The block's output is then
    after its batch norm, ReLU and (in a ResNet) residual sum, as Grad-CAM wants it."""
    block = model
    while True:
        holding = [c for c in block.children()  # modules() holds the child itself
                   if any(isinstance(m, nn.Conv2d) for m in c.modules())]
        if not holding:
            raise PipelineError(f"the model ({type(model).__name__}) has no convolution to "
                                "explain")
        if isinstance(holding[-1], nn.Conv2d):
            return block
        block = holding[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, attribute: int,
             profile: torch.Tensor | None = None) -> np.ndarray:
    """The coarse map (the last block's grid, h × w, float32 in 0..1) for logit `attribute`,
    averaged over the views in x. All zeros when nothing in the image speaks for it."""
    block = last_conv_block(model)
    seen: dict[str, torch.Tensor] = {}
    handle = block.register_forward_hook(lambda _m, _i, out: seen.__setitem__("act", out))
    try:
        with torch.enable_grad():
            # as pipeline.infer.predict computes them
            logits = model.fc(model.features(*([x] if profile is None else [x, profile])))
            (grad,) = torch.autograd.grad(logits[:, attribute].sum(), seen["act"])
    finally:
        handle.remove()
    act = seen["act"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1)).mean(dim=0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else torch.zeros_like(cam)).numpy().astype(np.float32)


def to_detector(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarse map over the model's square input brought to the detector image's pixels.

    The input is the image zero-padded to a centred square (pipeline.model.log_intensity),
    so the map is resized to that square and the padding cut off again."""
    h, w = int(shape[0]), int(shape[1])
    side = max(h, w)
    t = torch.from_numpy(np.ascontiguousarray(cam, np.float32))[None, None]
    square = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    top, left = (side - h) // 2, (side - w) // 2
    out = np.clip(square[top : top + h, left : left + w].numpy(), 0.0, 1.0)
    peak = float(out.max()) if out.size else 0.0
    # Resizing lands the peak between pixels: scale again so 1 is where the model looked most.
    return out / peak if peak > 0 else out


@contextlib.contextmanager
def _few_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(min(THREADS, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def coarse_map(model: nn.Module, info: dict, image: np.ndarray, attribute: int) -> np.ndarray:
    """grad_cam of one detector image, prepared as inference prepares it (the whole image in one
    view: the model's training scale, also for runs inferred with multiscale crops)."""
    if not 0 <= attribute < len(info["attributes"]):
        raise PipelineError(f"attribute number {attribute} is not one of the model's "
                            f"{len(info['attributes'])}")
    with _LOCK, _few_threads():
        x, profile = model_input([image], info)
        return grad_cam(model.to("cpu").eval(), x, attribute, profile)


def saliency_map(model: nn.Module, info: dict, image: np.ndarray, attribute: int) -> np.ndarray:
    """Where the model looked for `attribute` in `image`: H × W (the image's shape), 0..1."""
    image = np.asarray(image)
    return to_detector(coarse_map(model, info, image, attribute), image.shape)


# ---------------------------------------------------------------- a run's maps


@lru_cache(maxsize=2)  # a ResNet-50 is 100 MB: keep the runs being looked at, not every run
def _loaded(checkpoint: str, stamp: int, attributes: tuple[str, ...]):
    del stamp  # part of the key only: a replaced file is loaded afresh
    return load_checkpoint(checkpoint, attributes=list(attributes))  # map_location="cpu"


def run_model(run) -> tuple[nn.Module, dict]:
    """The model a run keeps (model.pt), loaded on the CPU once per run and process."""
    checkpoint = run.checkpoint
    if checkpoint is None:
        raise NoModel(f"run {run.id} keeps no model (its vectors were imported), so it cannot "
                      "show where a model looked")
    return _loaded(str(checkpoint), checkpoint.stat().st_mtime_ns, tuple(run.attributes))


def attribute_number(run, attribute) -> int:
    """The column of an attribute named by the user; any other value is refused by name."""
    if not isinstance(attribute, str) or attribute not in run.attributes:
        raise PipelineError(f"attribute {attribute!r:.60} is not one of run {run.id}'s "
                            f"{len(run.attributes)} attributes")
    return run.attributes.index(attribute)


def image_number(run, index) -> int:
    """An image row of the run: a whole number in 0..N-1."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < len(run):
        raise PipelineError(f"image {index!r:.40} is not in run {run.id} (0 to {len(run) - 1})")
    return int(index)


def strongest_attribute(run, index: int) -> str:
    """The attribute the model gives the highest probability for image `index`."""
    return run.attributes[int(np.argmax(run.prd[image_number(run, index)]))]


def run_saliency(run, index, attribute, cache=None) -> np.ndarray:
    """saliency_map of image `index` of a run for the attribute named, from the run's model.

    `cache` (a mapping, e.g. a diskcache.Cache) keeps the coarse map per run, image and
    attribute; bringing it to the detector's pixels again is cheap."""
    index, column = image_number(run, index), attribute_number(run, attribute)
    model, info = run_model(run)
    image = np.asarray(run.load_image(index))
    key = f"{run.id}/{index}/{column}"
    cam = cache.get(key) if cache is not None else None
    if cam is None:
        cam = coarse_map(model, info, image, column)
        if cache is not None:
            cache[key] = cam
    return to_detector(cam, image.shape)


# ---------------------------------------------------------------- a picture of it

OVERLAY_RGB = np.array([0, 229, 255], np.float32)  # cyan, as the detail view draws it


def overlay_picture(image: np.ndarray, found: np.ndarray, opacity: float = 0.6,
                    colour_map: str = DEFAULT_COLOUR_MAP) -> Image.Image:
    """The detector image drawn as everywhere else (pipeline.imaging), the saliency over it in
    cyan: each pixel's share of cyan is opacity × its saliency."""
    if not 0 <= opacity <= 1:
        raise PipelineError(f"opacity must be from 0 to 1, got {opacity}")
    base = false_colour(image, colour_map=colour_map).astype(np.float32)
    alpha = (opacity * np.asarray(found, np.float32))[..., None]
    return Image.fromarray(((1 - alpha) * base + alpha * OVERLAY_RGB).round().astype(np.uint8))


def write_overlay(out, picture: Image.Image) -> Path:
    """Write a PNG whole (temporary file, then rename); return its path."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PipelineError(f"saliency output {out} must be a .png file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        picture.save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
