"""Throughput of the pipeline stages: simulation at 256² on one core, model training and inference
(the compact net and ResNets; CPU, and CUDA when present), and openTSNE against scikit-learn's
TSNE on the same FEA-like data.

    python benchmarks/pipeline.py [--n 20000] [--skip-sklearn] [--sections sim model tsne]

Model throughput uses random tensors of the demo's and Wang et al.'s shapes, so it measures the
network, not image loading. The t-SNE data are 512-d synthetic features in 20 clusters reduced
by PCA to 50 dimensions, as embed.py does for FEA; both libraries run 750 iterations.
Results and the machine load at the time are printed; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} on {os.cpu_count()} cores"


def bench_simulation(n_images: int) -> None:
    import numpy as np
    import torch

    from pipeline.simulate import simulate_image

    torch.set_num_threads(1)
    simulate_image(np.random.default_rng([0, 0]), 256)  # warm caches
    started = time.perf_counter()
    for i in range(n_images):
        simulate_image(np.random.default_rng([1, i]), 256)
    seconds = time.perf_counter() - started
    print(f"simulate 256²: {n_images / seconds:6.1f} images/s on one core ({n_images} images)")


def _throughput(step, batch: int, seconds: float = 8.0) -> float:
    step()  # warm-up (allocations, kernel selection)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - started)


def bench_model(device_name: str, arch: str, size: int, batch: int, channels_last: bool,
                threads: int | None = None) -> None:
    import torch

    from pipeline.inputs import default_inputs
    from pipeline.model import build_model, pick_device
    from pipeline.train import bce_loss

    dev = pick_device(device_name)
    cuda = dev.type == "cuda"
    torch.set_num_threads(threads or os.cpu_count() or 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, 17).to(dev).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = default_inputs(arch)  # the channels and radial profile the model takes
    x = torch.randn(batch, len(inputs["channels"]), size, size, device=dev)
    x = x.contiguous(memory_format=fmt)
    spec = inputs["profile"]
    profile = torch.randn(batch, len(spec["stats"]), spec["bins"], device=dev) if spec else None
    y = (torch.rand(batch, 17, device=dev) < 0.3).float()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def train_step():
        model.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = bce_loss(model(x, profile), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    def infer_step():
        model.eval()
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            model.fc(model.features(x, profile))
        sync()

    layout = "channels_last" if channels_last else "contiguous"
    print(f"{arch} {size}² batch {batch} on {dev.type} ({layout}, "
          f"{torch.get_num_threads()} threads): train {_throughput(train_step, batch):7.1f} "
          f"images/s, infer {_throughput(infer_step, batch):7.1f} images/s   [{load()}]",
          flush=True)


def bench_models(device: str) -> None:
    """The compact net with one thread and with all (why training it uses one), then ResNets;
    on CPU unless the device is cuda, on CUDA unless it is cpu."""
    import torch

    if device != "cuda":
        for threads in sorted({1, os.cpu_count() or 1}):
            bench_model("cpu", "compact", 64, 64, True, threads)
            bench_model("cpu", "compact", 64, 64, False, threads)
        for size in (96, 128):
            for channels_last in (False, True):
                bench_model("cpu", "resnet18", size, 32, channels_last)
    if device != "cpu" and torch.cuda.is_available():
        bench_model("cuda", "compact", 64, 256, True)
        bench_model("cuda", "resnet18", 96, 256, True)
        bench_model("cuda", "resnet50", 224, 128, True)
    else:
        print("CUDA: not available here; run this script on a GPU machine for those figures")


def fea_like(n: int, seed: int = 0):
    """PCA-50 of 512-d synthetic features in 20 clusters (non-negative, like pooled ReLU maps)."""
    import numpy as np
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (20, 512))
    x = np.maximum(centres[rng.integers(0, 20, n)] + rng.normal(0, 0.6, (n, 512)), 0)
    return PCA(n_components=50, random_state=seed).fit_transform(x)


def bench_tsne(n: int, skip_sklearn: bool) -> None:
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    x = fea_like(n)
    jobs = os.cpu_count() or 1
    timings = {}
    for method in ("fft", "bh"):
        started = time.perf_counter()
        OpenTSNE(n_components=2, perplexity=30, negative_gradient_method=method, random_state=0,
                 n_jobs=jobs, early_exaggeration_iter=250, n_iter=500).fit(x)
        timings[f"openTSNE {method}"] = time.perf_counter() - started
        print(f"openTSNE ({method}, {jobs} threads), {n} points: "
              f"{timings[f'openTSNE {method}']:7.1f} s   [{load()}]", flush=True)
    if skip_sklearn:
        return
    started = time.perf_counter()
    SkTSNE(n_components=2, perplexity=30, init="pca", random_state=0, max_iter=750,
           n_jobs=jobs).fit_transform(x)
    timings["sklearn"] = time.perf_counter() - started
    print(f"scikit-learn TSNE (barnes_hut, {jobs} threads), {n} points: "
          f"{timings['sklearn']:7.1f} s   [{load()}]")
    best = min(timings["openTSNE fft"], timings["openTSNE bh"])
    print(f"scikit-learn / openTSNE fft = {timings['sklearn'] / timings['openTSNE fft']:.1f}×; "
          f"/ best openTSNE = {timings['sklearn'] / best:.1f}×")


def bench_small_tsne() -> None:
    """Why embed.py uses Barnes–Hut and one thread below 10,000 points."""
    from openTSNE import TSNE as OpenTSNE

    x = fea_like(1500, seed=1)
    for method in ("fft", "bh"):
        for jobs in sorted({1, os.cpu_count() or 1}):
            started = time.perf_counter()
            OpenTSNE(negative_gradient_method=method, n_jobs=jobs, random_state=0).fit(x)
            print(f"openTSNE ({method}, {jobs} threads), 1500 points: "
                  f"{time.perf_counter() - started:6.1f} s   [{load()}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="t-SNE points (default 20000)")
    parser.add_argument("--sim-images", type=int, default=100)
    parser.add_argument("--device", default="auto",
                        help="auto: CPU figures, and CUDA's too when present; cpu; cuda: "
                             "CUDA's only")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--sections", nargs="+", default=["sim", "model", "tsne", "small-tsne"],
                        choices=["sim", "model", "tsne", "small-tsne"])
    args = parser.parse_args()
    print(f"[{load()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}]")
    if "sim" in args.sections:
        bench_simulation(args.sim_images)
    if "model" in args.sections:
        bench_models(args.device)
    if "small-tsne" in args.sections:
        bench_small_tsne()
    if "tsne" in args.sections:
        bench_tsne(args.n, args.skip_sklearn)
    print(f"[{load()}]")


if __name__ == "__main__":
    main()
