"""Training the attribute model on a dataset's "train" split: summed per-attribute BCE, D4
augmentation, AdamW with a one-cycle schedule set in optimizer steps, a checkpoint at the end of
every pass over the data so an interrupted run resumes where it stopped, and per-attribute decision
thresholds chosen on a validation share carved from the train split.

Its command, `python -m pipeline train`, is registered by pipeline/cli/model.py.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline import metrics, store
from pipeline.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.errors import PipelineError, Stopped
from pipeline.inputs import default_inputs, inputs_of
from pipeline.model import (
    ARCHS,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    build_model,
    compute_threads,
    fit_normalisation,
    pick_device,
)

__all__ = ["train", "Stopped", "as_dataset", "labels_for"]
NORMALISATION_SAMPLE = 256  # training images the intensity statistics are fitted on
VAL_FRACTION = 0.15  # of the train split, held back to choose the decision thresholds on
LOAD_BATCH = 64  # images read and prepared together for training


def as_dataset(dataset, data_dir=None) -> store.Dataset:
    """A Dataset from a Dataset, a dataset id or a dataset directory."""
    return dataset if isinstance(dataset, store.Dataset) else store.open_dataset(dataset, data_dir)


def labels_for(ds: store.Dataset, act) -> np.ndarray:
    """The labels to use (default: the dataset's own), checked against the dataset's shape."""
    act = ds.act if act is None else act
    shape = (len(ds), len(ds.attributes))
    return store.check_array("labels (act)", act, shape, binary=True).astype(np.float32)


def _check_settings(arch, steps, input_size, batch_size, lr) -> None:
    if arch not in ARCHS:
        raise PipelineError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if int(steps) < 1 or int(batch_size) < 1:
        raise PipelineError(f"steps (or epochs) and batch size must be at least 1 (got {steps}, "
                            f"{batch_size})")
    if int(input_size) < MIN_INPUT_SIZE:
        raise PipelineError(f"input size {input_size} is below the minimum {MIN_INPUT_SIZE}")
    if int(input_size) > MAX_INPUT_SIZE:  # inference would refuse the checkpoint
        raise PipelineError(f"input size {input_size} is above the maximum {MAX_INPUT_SIZE}")
    if not (math.isfinite(lr) and lr > 0):
        raise PipelineError(f"learning rate must be a positive number, got {lr}")


def split_validation(train_idx: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The train split's indices to fit on and those to choose thresholds on (seeded shuffle).

    No validation share when it would leave it empty or fewer than 2 images to fit on.
    """
    train_idx = np.asarray(train_idx)
    if not 0 <= fraction < 1:
        raise PipelineError(f"validation fraction must lie in [0, 1), got {fraction}")
    n_val = int(round(len(train_idx) * fraction))
    if n_val < 1 or len(train_idx) - n_val < 2:
        return train_idx, train_idx[:0]
    order = np.random.default_rng([seed, 1]).permutation(len(train_idx))
    return np.sort(train_idx[order[n_val:]]), np.sort(train_idx[order[:n_val]])


@dataclass(frozen=True)
class Inputs:
    """A set of prepared images: x (n × C × S × S, float16) and profiles (n × K × bins) or None."""

    x: torch.Tensor
    profile: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.x[rows], None if self.profile is None else self.profile[rows]


def load_inputs(ds: store.Dataset, indices, input_size: int, stats: dict, inputs: dict, *,
                progress=True, on_progress=None, should_stop=None) -> Inputs:
    """The images prepared as the model takes them (inputs.model_input), read once for every
    epoch, by a pool of processes for a large set; images in float16, profiles in float32."""
    from pipeline.infer import prepared_batches, preparers

    indices = np.asarray(indices, dtype=np.int64)
    info = {"input_size": input_size, "normalisation": stats, "inputs": inputs}
    batches = [indices[i : i + LOAD_BATCH].tolist() for i in range(0, len(indices), LOAD_BATCH)]
    xs, profiles, done = [], [], 0
    bar = tqdm(total=len(indices), desc="load images", unit="img", disable=not progress,
               leave=False)
    with prepared_batches(ds, batches, info, workers=preparers(ds, len(indices))) as prepared:
        for rows, (x, profile) in zip(batches, prepared, strict=True):
            if should_stop and should_stop():
                raise Stopped("stopped while loading images")
            xs.append(x.half())
            if profile is not None:
                profiles.append(profile)
            done += len(rows)
            bar.update(len(rows))
            if on_progress:
                on_progress("load", done / len(indices))
    bar.close()
    channels = len(inputs["channels"])
    x = torch.cat(xs) if xs else torch.empty((0, channels, input_size, input_size),
                                            dtype=torch.float16)
    profile = None
    if inputs.get("profile"):
        spec = inputs["profile"]
        profile = torch.cat(profiles) if profiles else torch.empty(
            (0, len(spec["stats"]), spec["bins"]))
    return Inputs(x, profile)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches; a last batch of one is left out (BatchNorm cannot train on one image)."""
    order = torch.randperm(n, generator=gen)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the square's 8 symmetries (k = 0…7) applied to the last two axes: a rotation
    by k·90° for k < 4, that rotation then mirrored about the diagonal for k ≥ 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.transpose(-2, -1) if k >= 4 else x


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image under one of the 8 flips/rotations of the square, drawn at random.

    The simulator (like a detector seen from either side) is symmetric under all of them, so each
    is an equally physical image with the same labels; intensities are never touched (no contrast
    or noise tricks that would fake attributes). Images stay in their batch order.
    """
    choice = torch.randint(0, 8, (x.shape[0],), generator=gen).to(x.device)
    out = torch.empty_like(x)
    for k in range(8):
        rows = choice == k
        if rows.any():
            out[rows] = d4(x[rows], k)
    return out


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss of Wang et al. (WACV 2017): every attribute's BCE summed, averaged over images."""
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / len(target)


def _start(ds, *, arch, input_size, seed, checkpoint_out, resume, init, steps, progress):
    """Model, normalisation, the inputs it takes (pipeline.inputs) and saved training state
    (None when starting afresh). A fine-tuned or resumed model keeps the inputs it had."""
    state = None
    if resume and Path(checkpoint_out).is_file():
        state = read_checkpoint(checkpoint_out)
        _check_resumable(checkpoint_out, state, ds, arch, input_size, steps)
        model, info = load_checkpoint(checkpoint_out, attributes=ds.attributes)
        return model, state["normalisation"], info["inputs"], state
    if resume and progress:
        tqdm.write(f"no checkpoint at {checkpoint_out} yet; starting from step 1")
    torch.manual_seed(seed)
    if init is not None:
        model, info = init
        inputs = inputs_of(info)
        if info["normalisation"].get("centre") is not None:
            return model, info["normalisation"], inputs, None
    else:
        inputs = default_inputs(arch)
        model = build_model(arch, len(ds.attributes), inputs)
    train_idx = ds.indices("train")
    sample = np.random.default_rng(seed).permutation(train_idx)[:NORMALISATION_SAMPLE]
    stats = fit_normalisation((ds.load_image(i) for i in sample), input_size, seed)
    return model, stats, inputs, state


def _check_resumable(path, state, ds, arch, input_size, steps) -> None:
    training = state.get("training") or {}
    if "epoch" not in training:
        raise PipelineError(f"checkpoint {path} holds no training state to resume from")
    saved = {"arch": state.get("arch"), "input size": state.get("input_size"),
             "steps": training.get("steps"), "attributes": state.get("attributes")}
    asked = {"arch": arch, "input size": input_size, "steps": steps,
             "attributes": list(ds.attributes)}
    differ = [f"{k} {saved[k]} (asked {asked[k]})" for k in saved if saved[k] != asked[k]]
    if differ:
        raise PipelineError(f"checkpoint {path} was started with other settings: "
                            + "; ".join(str(d)[:120] for d in differ))


def total_steps(n_fit: int, batch_size: int, *, steps: int | None, epochs: int | None) -> int:
    """Optimizer steps of a run: `steps` when given, else `epochs` passes over n_fit images."""
    if int(batch_size) < 1:
        raise PipelineError(f"batch size must be at least 1, got {batch_size}")
    if steps is not None:
        return int(steps)
    if epochs is None:
        raise PipelineError("training needs a length: give steps or epochs")
    return int(epochs) * len(_batches(n_fit, int(batch_size), torch.Generator().manual_seed(0)))


def train(dataset, *, arch: str = "compact", steps: int | None = None,
          epochs: int | None = None, input_size: int, batch_size: int, lr: float,
          device: str = "auto", seed: int = 0, checkpoint_out: Path, resume: bool = False,
          init_checkpoint: Path | None = None, act: np.ndarray | None = None,
          val_fraction: float = VAL_FRACTION, progress: bool = True,
          should_stop: Callable[[], bool] | None = None,
          on_progress: Callable[[str, float], None] | None = None) -> Path:
    """Train on the "train" split less its validation share; return the checkpoint path.

    The length is `steps` optimizer steps, or `epochs` passes over the images fitted on. With
    `init_checkpoint` the model (its arch and normalisation) starts from those weights
    (fine-tuning); with `resume` an interrupted run continues from `checkpoint_out`'s last pass.
    The checkpoint is replaced atomically after every pass; Ctrl-C or should_stop() leave the
    last complete pass's checkpoint intact and nothing half-written. The final checkpoint holds
    per-attribute thresholds chosen on the validation share (all 0.5 without one).
    """
    ds = as_dataset(dataset)
    labels = labels_for(ds, act)
    init = None
    if init_checkpoint is not None:
        init = load_checkpoint(init_checkpoint, attributes=ds.attributes)
        arch = init[1]["arch"]
    train_idx = ds.indices("train")
    if len(train_idx) < 2:
        raise PipelineError(f"dataset {ds.id} has {len(train_idx)} images in split 'train'; "
                            "training needs at least 2")
    fit_idx, val_idx = split_validation(train_idx, val_fraction, seed)
    n_steps = total_steps(len(fit_idx), batch_size, steps=steps, epochs=epochs)
    _check_settings(arch, n_steps, input_size, batch_size, lr)
    checkpoint_out = Path(checkpoint_out)
    dev = pick_device(device)
    model, stats, inputs, state = _start(ds, arch=arch, input_size=input_size, seed=seed,
                                 checkpoint_out=checkpoint_out, resume=resume, init=init,
                                 steps=n_steps, progress=progress)
    training = (state or {}).get("training") or {}
    if training.get("complete"):
        return checkpoint_out
    load = dict(progress=progress, on_progress=on_progress, should_stop=should_stop)
    x_fit = load_inputs(ds, fit_idx, input_size, stats, inputs, **load)
    x_val = load_inputs(ds, val_idx, input_size, stats, inputs, **load)
    settings = {"dataset": ds.id, "steps": n_steps, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "n_train": len(fit_idx), "n_validation": len(val_idx),
                "val_fraction": val_fraction, "device": str(dev),
                "init_checkpoint": str(init_checkpoint) if init_checkpoint else None}
    meta = {"arch": arch, "attributes": ds.attributes, "input_size": input_size,
            "normalisation": stats, "inputs": inputs}
    with compute_threads(arch, dev) as threads:
        settings["cpu_threads"] = threads if dev.type == "cpu" else None
        loop = _Loop(model, dev, x_fit, torch.from_numpy(labels[fit_idx]), batch_size=batch_size,
                     lr=lr, total_steps=n_steps, seed=seed, state=training, progress=progress,
                     should_stop=should_stop, on_progress=on_progress)
        while loop.step < n_steps:
            loop.run_epoch()
            last = loop.step >= n_steps
            extra = {"training": {**settings, **loop.state(full=not last), "complete": last}}
            if last:
                extra["thresholds"] = _thresholds(model, dev, x_val, labels[val_idx],
                                                  ds.attributes)
            save_checkpoint(checkpoint_out, model, **meta, extra=extra)
    return checkpoint_out


def _thresholds(model, dev, x_val: Inputs, y_val: np.ndarray, attributes) -> dict:
    """Per attribute, the threshold of best F1 on the validation images ({name: value})."""
    prd = probabilities(model, x_val, dev) if len(x_val) else np.zeros((0, len(attributes)))
    chosen = metrics.select_thresholds(y_val, prd)
    return {str(a): float(t) for a, t in zip(attributes, chosen, strict=True)}


def probabilities(model, inputs: Inputs, dev: torch.device, batch_size: int = 128
                  ) -> np.ndarray:
    """Sigmoid outputs (n × A) of a model for inputs already prepared."""
    model.eval()
    out = []
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                enabled=dev.type == "cuda"):
        for start in range(0, len(inputs), batch_size):
            x, profile = as_batch(*inputs.take(slice(start, start + batch_size)), dev)
            out.append(torch.sigmoid(model(x, profile).float()).cpu().numpy())
    return np.concatenate(out)


def as_batch(x: torch.Tensor, profile: torch.Tensor | None, dev: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prepared inputs on the device in float32; images channels-last, which suits tensor
    cores and measured 10 % faster on CPU too (benchmarks/RESULTS.md)."""
    x = x.to(dev, torch.float32).contiguous(memory_format=torch.channels_last)
    return x, None if profile is None else profile.to(dev, torch.float32)


class _Loop:
    """The optimizer, schedule and random streams of one training run, resumable per pass."""

    def __init__(self, model, dev, x_all: Inputs, y_all, *, batch_size, lr, total_steps, seed,
                 state, progress, should_stop, on_progress):
        self.dev, self.x_all, self.y_all = dev, x_all, y_all
        if dev.type == "cuda":  # the float16 training set fits on the GPU: no copy per batch
            profile = None if x_all.profile is None else x_all.profile.to(dev)
            self.x_all, self.y_all = Inputs(x_all.x.to(dev), profile), y_all.to(dev)
        self.batch_size, self.total_steps = batch_size, total_steps
        self.progress, self.should_stop, self.on_progress = progress, should_stop, on_progress
        self.cuda = dev.type == "cuda"
        self.model = model.to(dev).to(memory_format=torch.channels_last)  # as as_batch's images
        self.per_epoch = len(_batches(len(x_all), batch_size, torch.Generator().manual_seed(0)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
        # A quarter of the steps warm up; a very short run needs more than one warm-up step or
        # torch's schedule divides by zero.
        warm = min(0.75, max(0.25, 1.5 / total_steps))
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=total_steps, pct_start=warm)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.history = int(state.get("epoch", 0)), list(state.get("history", []))
        self.step = int(state.get("step", self.epoch * self.per_epoch))
        if state.get("optimizer"):
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.gen.set_state(state["rng"])

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_steps / self.per_epoch)

    def run_epoch(self) -> None:
        """One pass over the data, or what is left of the run's steps."""
        self.model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        batches = _batches(len(self.x_all), self.batch_size, self.gen)
        batches = batches[: self.total_steps - self.step]
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.n_epochs}", unit="batch",
                   disable=not self.progress, leave=False)
        for idx in bar:
            if self.should_stop and self.should_stop():
                raise Stopped(f"training stopped during epoch {self.epoch + 1}; the checkpoint "
                              "of the last complete epoch is kept")
            # The profile needs no augmenting: rings about the beam are the same in all 8 views.
            x, profile = self.x_all.take(idx)
            loss = self._step(augment(x, self.gen), profile, self.y_all[idx])
            total, seen, self.step = total + loss * len(idx), seen + len(idx), self.step + 1
            bar.set_postfix(loss=f"{total / seen:.3f}")
            if self.on_progress:
                self.on_progress("train", self.step / self.total_steps)
        seconds = time.perf_counter() - started
        self.epoch += 1
        self.history.append({"epoch": self.epoch, "step": self.step,
                             "loss": total / max(seen, 1), "seconds": round(seconds, 2),
                             "images_per_s": seen / seconds})
        if self.progress:
            tqdm.write(f"epoch {self.epoch}/{self.n_epochs} (step {self.step}/"
                       f"{self.total_steps}): loss {total / max(seen, 1):.3f}, "
                       f"{seen / seconds:.0f} images/s")

    def _step(self, x: torch.Tensor, profile: torch.Tensor | None, y: torch.Tensor) -> float:
        x, profile = as_batch(x, profile, self.dev)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.cuda):
            loss = bce_loss(self.model(x, profile), y.to(self.dev))
        if not torch.isfinite(loss):
            raise PipelineError("training diverged (loss is not finite); try a lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())

    def state(self, full: bool) -> dict:
        """What resuming needs; the optimizer is dropped once training is complete (smaller)."""
        state = {"epoch": self.epoch, "step": self.step, "history": self.history}
        if full:
            state |= {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                      "rng": self.gen.get_state()}
        return state


def use_all_cores() -> None:
    """Torch's CPU thread count: every core, unless the user set OMP_NUM_THREADS."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(os.cpu_count() or 1)
