"""Label-audit benchmark: simulate a dataset with annotation errors injected on purpose, train on
the noisy labels as a lab would, rank every label with the audit, score the ranking against truth.

    python benchmarks/label_audit.py [--data-dir D] [--label-noise 0.05] [--fast] [--n N]

Prints precision at K (K = number of injected errors, true_act != act) next to a random
ranking's (= the error rate); the target is ≥ 5× random. With --data-dir the simulated dataset
and the trained run are reused by later calls with the same settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where a benchmarks/pipeline.py would
# hide the pipeline package; the project root is what the imports below mean.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402

from pipeline import audit, store  # noqa: E402
from pipeline.demo import config_for  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402


def dataset_for(data_dir: Path, config, noise: float, seed: int) -> store.Dataset:
    from pipeline.simulate import simulate_dataset

    dataset_id = f"audit-bench-n{config.n}-s{config.size}-noise{noise:g}-seed{seed}"
    if not (data_dir / store.DATASETS / dataset_id / "dataset.json").is_file():
        simulate_dataset(data_dir, config.n, size=config.size, seed=seed, label_noise=noise,
                         dataset_id=dataset_id, progress=True)
    return store.open_dataset(dataset_id, data_dir)


def run_for(data_dir: Path, ds: store.Dataset, config, seed: int) -> store.Run:
    """The run trained on the dataset's noisy labels with these settings (made once)."""
    from pipeline.infer import make_run
    from pipeline.train import train, use_all_cores

    settings = {"arch": config.arch, "input_size": config.input_size, "steps": config.steps,
                "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                "seed": seed}
    for run in store.list_runs(data_dir):
        if run.meta.get("dataset") == ds.id and run.meta.get("benchmark") == settings:
            print(f"reusing run {run.id}")
            return run
    use_all_cores()
    with tempfile.TemporaryDirectory(prefix="xrae-audit-bench-") as scratch:
        checkpoint = train(ds, arch=config.arch, steps=config.steps, epochs=config.epochs,
                           input_size=config.input_size, batch_size=config.batch_size,
                           lr=config.lr, device=config.device, seed=seed,
                           checkpoint_out=Path(scratch) / "model.pt")
        path = make_run(data_dir, ds, checkpoint, device=config.device,
                        meta_extra={"benchmark": settings})
    return store.get_run(path.name, data_dir)


def score(run: store.Run, wrong: np.ndarray, k: int, weight: float) -> tuple[float, float]:
    """(precision at k, seconds the audit took) for one weighting of the two signals."""
    started = time.perf_counter()
    ranking = audit.audit_run(run, weight=weight, top=None, k=audit.DEFAULT_K)
    seconds = time.perf_counter() - started
    return audit.precision_at_k(ranking, wrong, run.attributes, k), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="reuse/keep data here (default: temp)")
    parser.add_argument("--label-noise", type=float, default=0.05)
    parser.add_argument("--fast", action="store_true", help="the demo's tiny configuration")
    parser.add_argument("--n", type=int, default=None, help="images (default: the demo's)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = config_for(args.n, args.fast, epochs=args.epochs)
    with tempfile.TemporaryDirectory(prefix="xrae-audit-data-") as tmp:
        data_dir = store.resolve_data_dir(args.data_dir or tmp)
        started = time.perf_counter()
        ds = dataset_for(data_dir, config, args.label_noise, args.seed)
        if ds.true_act is None:
            raise PipelineError(f"dataset {ds.id} has no true_act.npy to score against")
        run = run_for(data_dir, ds, config, args.seed)
        build_s = time.perf_counter() - started
        report(run, ds, build_s)
    return 0


def report(run: store.Run, ds: store.Dataset, build_s: float) -> None:
    act = np.asarray(run.act)
    wrong = np.asarray(ds.true_act) != act
    k = int(wrong.sum())
    if k == 0:
        raise PipelineError("no injected label errors: use --label-noise above 0")
    rate = float(wrong.mean())
    print(f"\nrun {run.id}: {len(run)} images × {len(run.attributes)} attributes, "
          f"test mAP {run.meta['metrics']['mAP']:.3f} (on noisy labels); built in {build_s:.0f} s")
    print(f"injected label errors K = {k} of {act.size} labels ({100 * rate:.2f} %)")
    print(f"{'ranking':34s} {'precision@K':>11s} {'× random':>9s} {'audit s':>8s}")
    print(f"{'random (= error rate)':34s} {rate:11.3f} {1.0:9.1f} {'':>8s}")
    for name, weight in (("audit: PRD + neighbour vote (0.5)", audit.DEFAULT_WEIGHT),
                         ("PRD disagreement only", 1.0), ("neighbour vote only", 0.0)):
        precision, seconds = score(run, wrong, k, weight)
        print(f"{name:34s} {precision:11.3f} {precision / rate:9.1f} {seconds:8.2f}")
    print("(the first audit includes the FEA neighbour search; later ones reuse it)")
    ranking = audit.audit_run(run, top=None)
    flagged = ranking[ranking["confident"].to_numpy()]
    hits = wrong[flagged["index"].to_numpy(),
                 flagged["attribute"].map(run.attributes.index).to_numpy()].sum()
    print(f"flagged ● confident (per-attribute thresholds): {len(flagged)} labels, "
          f"{hits / max(len(flagged), 1):.3f} of them wrong, {hits / k:.3f} of all errors")
    splits = run.images["split"].to_numpy()
    for split in ("train", "test"):
        rows = splits == split
        if wrong[rows].any():
            sub = audit.rank_labels(act[rows], run.prd[rows], run.fea[rows],
                                    run.images["image_id"][rows], run.attributes, top=None)
            kk = int(wrong[rows].sum())
            p = audit.precision_at_k(sub, wrong[rows], run.attributes, kk)
            print(f"  {split} images only: K = {kk}, precision@K {p:.3f} "
                  f"({p / wrong[rows].mean():.1f}× random)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
