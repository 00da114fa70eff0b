"""Label-audit benchmark: simulate a dataset with annotation errors injected on purpose, train on
the noisy labels as a lab would, rank every label with the audit, score the ranking against truth.

    python benchmarks/label_audit.py [--data-dir D] [--label-noise 0.05] [--fast] [--n N]
                                     [--steps S] [--folds 5] [--fold-steps S]

Prints precision at K (K = number of injected errors, true_act != act) of every ranking next to
a random one's (= the error rate): in-sample and out-of-fold |ACT − PRD|, with the FEA-neighbour
vote, the label context (flip-aware fit) beside the same context fitted as a plain logistic
model, the image view (pipeline.image_view) alone and the audit's own (label context with the
image view), and cleanlab's multi-label rankings on the same out-of-fold probabilities
(`pip install -e '.[bench]'`; skipped without it). Targets: ≥ 0.75, and ≥ cleanlab's best +
0.05. With --data-dir the simulated dataset (named by the generator's version), the trained run
and its out-of-fold predictions (with the image view, made for them if they lack it) are reused
by later calls with the same settings.
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

from pipeline import audit, folds, store  # noqa: E402
from pipeline.demo import config_for  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.neighbours import run_neighbour_graph  # noqa: E402


def dataset_for(data_dir: Path, config, noise: float, seed: int) -> store.Dataset:
    from pipeline.sim.rules import GENERATOR_VERSION
    from pipeline.simulate import simulate_dataset

    # The generator's version in the id: a dataset drawn by older rules is never reused.
    dataset_id = (f"audit-bench-n{config.n}-s{config.size}-noise{noise:g}-seed{seed}"
                  f"-v{GENERATOR_VERSION}")
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


def folds_for(data_dir: Path, run: store.Run, k: int, steps: int | None) -> tuple:
    """The run's out-of-fold predictions with these settings (trained once, saved with it)."""
    from pipeline.train import use_all_cores

    found = folds.read_oof(run)
    want = folds.fold_settings(run, steps)["steps"]
    if found is not None and found[2]["folds"] == k and found[2]["steps"] == want:
        print(f"reusing the out-of-fold predictions of run {run.id} ({k} folds, {want} steps)")
        if folds.read_image_view(run) is None:  # saved before the folds job made it
            print("making the image view (pipeline.image_view) for them")
            folds.add_image_view(data_dir, run.id)
        return folds.read_oof(store.get_run(run.id, data_dir))
    use_all_cores()
    folds.run_folds(data_dir, run.id, k, steps=steps)
    return folds.read_oof(store.get_run(run.id, data_dir))


def precision(score: np.ndarray, wrong: np.ndarray) -> float:
    """Share of wrong labels among the K = wrong.sum() highest scores (ties: first rows first,
    as the audit's own ranking)."""
    k = int(wrong.sum())
    top = np.argsort(-score, axis=None, kind="stable")[:k]
    return float(wrong.ravel()[top].mean())


def our_rankings(run: store.Run, act, oof, fold) -> dict[str, np.ndarray]:
    """Suspicion (N × A, higher first) of each ranking of ours, on the same labels."""
    nbr = run_neighbour_graph(run, audit.DEFAULT_K)

    def scores(prd, **kw):
        return audit.audit_scores(act, prd, run.fea, nbr=nbr, **kw)["score"]

    t_pos, t_neg = audit.confident_thresholds(act, oof)
    other = np.where(act == 1, 1 - oof, oof)
    view = folds.read_image_view(run)
    return {
        "(a) in-sample |ACT-PRD|": scores(run.prd, weight=1.0, context=False),
        "(b) out-of-fold |ACT-PRD|": scores(oof, weight=1.0, context=False),
        "(c) OOF + FEA-neighbour vote (0.5)": scores(oof, weight=0.5, context=False),
        "(d) OOF - attribute's CL threshold": other - np.where(act == 1, t_neg, t_pos),
        "(d) OOF + label context, plain logistic (before)":
            np.abs(act - audit.label_context(act, oof, fold, flip=0.0)),
        "(d) OOF + label context, noise-aware": scores(oof, weight=1.0, folds=fold),
        "(d) OOF + label context + vote (0.8)": scores(oof, weight=0.8, folds=fold),
        "(e) image view alone |ACT-view|": np.abs(act - view),
        "(e) OOF + image view + label context (the audit)":
            scores(oof, weight=1.0, folds=fold, view=view),
        "(d) in-sample + label context": scores(run.prd, weight=1.0, context=True),
    }


def cleanlab_rankings(act, oof) -> dict[str, np.ndarray]:
    """cleanlab's multi-label rankings of every (image, attribute) label on the same OOF
    probabilities: per-class label quality (lowest first), and its per-class issue filter
    (flagged labels first, each group by quality)."""
    try:
        from cleanlab.multilabel_classification import filter as cl_filter
        from cleanlab.multilabel_classification import rank as cl_rank
    except ImportError:
        print("(cleanlab is not installed: pip install -e '.[bench]' to compare with it)")
        return {}
    labels = [list(np.flatnonzero(row)) for row in act]

    def quality(**kw):
        q = np.asarray(cl_rank.get_label_quality_scores_per_class(labels, oof, **kw))
        return q if q.shape == act.shape else q.T

    q = quality()
    flagged = np.asarray(cl_filter.find_multilabel_issues_per_class(labels, oof))
    flagged = flagged if flagged.shape == act.shape else flagged.T
    return {
        "cleanlab: per-class self-confidence": -q,
        "cleanlab: normalized margin, adjusted": -quality(method="normalized_margin",
                                                          adjust_pred_probs=True),
        "cleanlab: find issues per class (flagged first)": 2.0 * flagged - q,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="reuse/keep data here (default: temp)")
    parser.add_argument("--label-noise", type=float, default=0.05)
    parser.add_argument("--fast", action="store_true", help="the demo's tiny configuration")
    parser.add_argument("--n", type=int, default=None, help="images (default: the demo's)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5, help="out-of-fold models (5)")
    parser.add_argument("--fold-steps", type=int, default=None,
                        help="optimizer steps of each fold model (default: the run's)")
    args = parser.parse_args(argv)
    config = config_for(args.n, args.fast, epochs=args.epochs, steps=args.steps)
    with tempfile.TemporaryDirectory(prefix="xrae-audit-data-") as tmp:
        data_dir = store.resolve_data_dir(args.data_dir or tmp)
        started = time.perf_counter()
        ds = dataset_for(data_dir, config, args.label_noise, args.seed)
        if ds.true_act is None:
            raise PipelineError(f"dataset {ds.id} has no true_act.npy to score against")
        run = run_for(data_dir, ds, config, args.seed)
        oof, fold, note = folds_for(data_dir, run, args.folds, args.fold_steps)
        build_s = time.perf_counter() - started
        report(store.get_run(run.id, data_dir), ds, oof, fold, note, build_s)
    return 0


def report(run: store.Run, ds: store.Dataset, oof, fold, note: dict, build_s: float) -> None:
    act = np.asarray(run.act).astype(np.uint8)
    oof = np.asarray(oof, dtype=np.float64)
    wrong = np.asarray(ds.true_act) != act
    k = int(wrong.sum())
    if k == 0:
        raise PipelineError("no injected label errors: use --label-noise above 0")
    rate = float(wrong.mean())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nrun {run.id}: {len(run)} images × {len(run.attributes)} attributes, test mAP "
          f"{run.meta['metrics']['mAP']:.3f} (on noisy labels); built in {build_s:.0f} s; "
          f"load average {load}")
    print(f"out-of-fold: {note['folds']} {note['arch']} models of {note['steps']} steps "
          f"({note['seconds']:.0f} s); injected label errors K = {k} of {act.size} labels "
          f"({100 * rate:.2f} %)")
    print(f"{'ranking':50s} {'precision@K':>11s} {'× random':>9s} {'s':>6s}")
    print(f"{'random (= error rate)':50s} {rate:11.3f} {1.0:9.1f}")
    for family in (our_rankings, cleanlab_rankings):
        started = time.perf_counter()
        rankings = family(run, act, oof, fold) if family is our_rankings else family(act, oof)
        seconds = (time.perf_counter() - started) / max(len(rankings), 1)
        for name, score in rankings.items():
            p = precision(score, wrong)
            print(f"{name:50s} {p:11.3f} {p / rate:9.1f} {seconds:6.2f}")
    started = time.perf_counter()
    ranking = audit.audit_run(run, top=None)
    p = audit.precision_at_k(ranking, wrong, run.attributes, k)
    print(f"{'product: audit_run (' + ranking.attrs['predictions'][:11] + ')':50s} {p:11.3f} "
          f"{p / rate:9.1f} {time.perf_counter() - started:6.2f}")
    flagged = ranking[ranking["confident"].to_numpy()]
    hits = wrong[flagged["index"].to_numpy(),
                 flagged["attribute"].map(run.attributes.index).to_numpy()].sum()
    print(f"flagged ● confident: {len(flagged)} labels, {hits / max(len(flagged), 1):.3f} of "
          f"them wrong, {hits / k:.3f} of all errors")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
