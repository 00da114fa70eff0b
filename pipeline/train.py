"""Training the attribute model on a dataset's "train" split: summed per-attribute BCE, AdamW with a
one-cycle schedule, a checkpoint at every epoch end so an interrupted run resumes where it stopped.

Its command, `python -m pipeline train`, is registered by pipeline/demo.py, which imports no torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline import store
from pipeline.errors import PipelineError, Stopped
from pipeline.model import (
    ARCHS,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    build_model,
    fit_normalisation,
    load_checkpoint,
    normalise,
    pick_device,
    read_checkpoint,
    save_checkpoint,
)

__all__ = ["train", "Stopped", "as_dataset", "labels_for"]
NORMALISATION_SAMPLE = 256  # training images the intensity statistics are fitted on


def as_dataset(dataset, data_dir=None) -> store.Dataset:
    """A Dataset from a Dataset, a dataset id or a dataset directory."""
    return dataset if isinstance(dataset, store.Dataset) else store.open_dataset(dataset, data_dir)


def labels_for(ds: store.Dataset, act) -> np.ndarray:
    """The labels to use (default: the dataset's own), checked against the dataset's shape."""
    act = ds.act if act is None else act
    shape = (len(ds), len(ds.attributes))
    return store.check_array("labels (act)", act, shape, binary=True).astype(np.float32)


def _check_settings(arch, epochs, input_size, batch_size, lr) -> None:
    if arch not in ARCHS:
        raise PipelineError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise PipelineError(f"epochs and batch size must be at least 1 (got {epochs}, "
                            f"{batch_size})")
    if int(input_size) < MIN_INPUT_SIZE:
        raise PipelineError(f"input size {input_size} is below the ResNet minimum "
                            f"{MIN_INPUT_SIZE}")
    if int(input_size) > MAX_INPUT_SIZE:  # inference would refuse the checkpoint
        raise PipelineError(f"input size {input_size} is above the maximum {MAX_INPUT_SIZE}")
    if not (math.isfinite(lr) and lr > 0):
        raise PipelineError(f"learning rate must be a positive number, got {lr}")


def load_inputs(ds: store.Dataset, indices, input_size: int, stats: dict, *, progress=True,
                on_progress=None, should_stop=None) -> torch.Tensor:
    """Normalised images as one float16 tensor (n × 1 × S × S), read once for every epoch."""
    out = torch.empty((len(indices), 1, input_size, input_size), dtype=torch.float16)
    for k, i in enumerate(tqdm(indices, desc="load images", unit="img", disable=not progress,
                               leave=False)):
        if should_stop and should_stop():
            raise Stopped("stopped while loading images")
        out[k, 0] = torch.from_numpy(normalise(ds.load_image(i), input_size, stats))
        if on_progress and k % 32 == 0:
            on_progress("load", k / len(indices))
    return out


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches; a last batch of one is left out (BatchNorm cannot train on one image)."""
    order = torch.randperm(n, generator=gen)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per image: a flipped pattern is equally physical,
    and flips never change intensities (no contrast or noise tricks that would fake attributes)."""
    n = x.shape[0]
    flip_h = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    flip_v = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Seed 001's loss: the BCE of every attribute summed, averaged over the images of a batch."""
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / len(target)


def _start(ds, *, arch, input_size, seed, checkpoint_out, resume, init, epochs, progress):
    """Model, normalisation and saved training state (None when starting afresh)."""
    state = None
    if resume and Path(checkpoint_out).is_file():
        state = read_checkpoint(checkpoint_out)
        _check_resumable(checkpoint_out, state, ds, arch, input_size, epochs)
        model, _ = load_checkpoint(checkpoint_out, attributes=ds.attributes)
        return model, state["normalisation"], state
    if resume and progress:
        tqdm.write(f"no checkpoint at {checkpoint_out} yet; starting from epoch 1")
    torch.manual_seed(seed)
    if init is not None:
        model, info = init
        if info["normalisation"].get("centre") is not None:
            return model, info["normalisation"], None
    else:
        model = build_model(arch, len(ds.attributes))
    train_idx = ds.indices("train")
    sample = np.random.default_rng(seed).permutation(train_idx)[:NORMALISATION_SAMPLE]
    stats = fit_normalisation((ds.load_image(i) for i in sample), input_size, seed)
    return model, stats, state


def _check_resumable(path, state, ds, arch, input_size, epochs) -> None:
    training = state.get("training") or {}
    if "epoch" not in training:
        raise PipelineError(f"checkpoint {path} holds no training state to resume from")
    saved = {"arch": state.get("arch"), "input size": state.get("input_size"),
             "epochs": training.get("epochs"), "attributes": state.get("attributes")}
    asked = {"arch": arch, "input size": input_size, "epochs": epochs,
             "attributes": list(ds.attributes)}
    differ = [f"{k} {saved[k]} (asked {asked[k]})" for k in saved if saved[k] != asked[k]]
    if differ:
        raise PipelineError(f"checkpoint {path} was started with other settings: "
                            + "; ".join(str(d)[:120] for d in differ))


def train(dataset, *, arch: str = "resnet18", epochs: int, input_size: int, batch_size: int,
          lr: float, device: str = "auto", seed: int = 0, checkpoint_out: Path,
          resume: bool = False, init_checkpoint: Path | None = None, act: np.ndarray | None = None,
          progress: bool = True, should_stop: Callable[[], bool] | None = None,
          on_progress: Callable[[str, float], None] | None = None) -> Path:
    """Train on the "train" split and return the checkpoint path.

    With `init_checkpoint` the model (its arch and normalisation) starts from those weights
    (fine-tuning); with `resume` an interrupted run continues from `checkpoint_out`'s last epoch.
    The checkpoint is replaced atomically after every epoch; Ctrl-C or should_stop() leave the
    last complete epoch's checkpoint intact and nothing half-written.
    """
    ds = as_dataset(dataset)
    labels = labels_for(ds, act)
    init = None
    if init_checkpoint is not None:
        init = load_checkpoint(init_checkpoint, attributes=ds.attributes)
        arch = init[1]["arch"]
    _check_settings(arch, epochs, input_size, batch_size, lr)
    train_idx = ds.indices("train")
    if len(train_idx) < 2:
        raise PipelineError(f"dataset {ds.id} has {len(train_idx)} images in split 'train'; "
                            "training needs at least 2")
    checkpoint_out = Path(checkpoint_out)
    dev = pick_device(device)
    model, stats, state = _start(ds, arch=arch, input_size=input_size, seed=seed,
                                 checkpoint_out=checkpoint_out, resume=resume, init=init,
                                 epochs=epochs, progress=progress)
    training = (state or {}).get("training") or {}
    if training.get("complete"):
        return checkpoint_out
    x_all = load_inputs(ds, train_idx, input_size, stats, progress=progress,
                        on_progress=on_progress, should_stop=should_stop)
    y_all = torch.from_numpy(labels[train_idx])
    loop = _Loop(model, dev, x_all, y_all, batch_size=batch_size, lr=lr, epochs=epochs, seed=seed,
                 state=training, progress=progress, should_stop=should_stop,
                 on_progress=on_progress)
    meta = {"arch": arch, "attributes": ds.attributes, "input_size": input_size,
            "normalisation": stats}
    settings = {"dataset": ds.id, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "seed": seed, "n_train": len(train_idx), "device": str(dev),
                "init_checkpoint": str(init_checkpoint) if init_checkpoint else None}
    for epoch in range(loop.epoch, epochs):
        loop.run_epoch(epoch)
        last = epoch + 1 == epochs
        save_checkpoint(checkpoint_out, model, **meta,
                        extra={"training": {**settings, **loop.state(full=not last),
                                            "complete": last}})
    return checkpoint_out


class _Loop:
    """The optimizer, schedule and random streams of one training run, resumable per epoch."""

    def __init__(self, model, dev, x_all, y_all, *, batch_size, lr, epochs, seed, state, progress,
                 should_stop, on_progress):
        self.dev, self.x_all, self.y_all = dev, x_all, y_all
        if dev.type == "cuda":  # the float16 training set fits on the GPU: no copy per batch
            self.x_all, self.y_all = x_all.to(dev), y_all.to(dev)
        self.batch_size, self.epochs = batch_size, epochs
        self.progress, self.should_stop, self.on_progress = progress, should_stop, on_progress
        self.cuda = dev.type == "cuda"
        # NHWC suits tensor cores and measured 10 % faster on CPU too (benchmarks/RESULTS.md)
        self.model = model.to(dev).to(memory_format=torch.channels_last)
        self.steps = len(_batches(len(x_all), batch_size, torch.Generator().manual_seed(0)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=epochs * self.steps, pct_start=0.25)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.history = int(state.get("epoch", 0)), list(state.get("history", []))
        if state.get("optimizer"):
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.gen.set_state(state["rng"])

    def run_epoch(self, epoch: int) -> None:
        self.model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = _batches(len(self.x_all), self.batch_size, self.gen)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch",
                   disable=not self.progress, leave=False)
        for step, idx in enumerate(bar):
            if self.should_stop and self.should_stop():
                raise Stopped(f"training stopped during epoch {epoch + 1}; the checkpoint of "
                              "the last complete epoch is kept")
            loss = self._step(augment(self.x_all[idx], self.gen), self.y_all[idx])
            total, seen = total + loss * len(idx), seen + len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
            if self.on_progress:
                self.on_progress("train", (epoch * self.steps + step + 1) / (self.epochs *
                                                                              self.steps))
        seconds = time.perf_counter() - started
        self.history.append({"epoch": epoch + 1, "loss": total / max(seen, 1),
                             "seconds": round(seconds, 2), "images_per_s": seen / seconds})
        self.epoch = epoch + 1
        if self.progress:
            tqdm.write(f"epoch {epoch + 1}/{self.epochs}: loss {total / max(seen, 1):.3f}, "
                       f"{seen / seconds:.0f} images/s")

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.to(self.dev, torch.float32).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.cuda):
            loss = bce_loss(self.model(x), y.to(self.dev))
        if not torch.isfinite(loss):
            raise PipelineError("training diverged (loss is not finite); try a lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())

    def state(self, full: bool) -> dict:
        """What resuming needs; the optimizer is dropped once training is complete (smaller)."""
        state = {"epoch": self.epoch, "history": self.history}
        if full:
            state |= {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                      "rng": self.gen.get_state()}
        return state


def use_all_cores() -> None:
    """Torch's CPU thread count: every core, unless the user set OMP_NUM_THREADS."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(os.cpu_count() or 1)
