"""Paired comparison of one model in two runs of the same binary study (same data, folds and seeds).

Checks with each run's ``predictions.csv`` (written by ``medlens study``) that both scored the same samples
in the same folds, then reads the per-fold AUC, accuracy, sensitivity and specificity the study recorded in
``results.json`` and prints each run's fold means, the paired differences (mean ± standard error over
folds, folds where the second run is better) and the pooled out-of-fold AUC of each. For two settings
of one model, e.g. the default study's ``cnn3d`` before and after a change::

    .venv/bin/python benchmarks/experiments/compare_runs.py runs/lidc-check runs/lidc-final2 --model cnn3d
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["auc", "accuracy", "sensitivity", "specificity"]


def model_entry(run: Path, model: str) -> dict:
    """The model's entry in the run's ``results.json``."""
    models = json.loads((run / "results.json").read_text())["models"]
    if model not in models:
        raise SystemExit(f"{run / 'results.json'}: no model {model!r} (has {', '.join(models)})")
    return models[model]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path, help="study output folder (the reference run)")
    ap.add_argument("second", type=Path, help="study output folder (the changed run)")
    ap.add_argument("--model", required=True, help="model id in the first run")
    ap.add_argument("--second-model", help="model id in the second run (default: the same id)")
    args = ap.parse_args()

    frames = [pd.read_csv(run / "predictions.csv") for run in (args.first, args.second)]
    for frame in frames[1:]:
        same = frame[["id", "label", "fold"]].reset_index(drop=True).equals(frames[0][["id", "label", "fold"]])
        if not same:
            raise SystemExit("the two runs did not score the same samples in the same folds")
    models = (args.model, args.second_model or args.model)
    entries = [model_entry(run, m) for run, m in zip((args.first, args.second), models)]
    figures = [pd.DataFrame(entry["folds"]).set_index("fold")[METRICS] for entry in entries]
    difference = figures[1] - figures[0]
    print(f"{args.first}:{models[0]} (A) versus {args.second}:{models[1]} (B), {len(difference)} folds\n")
    print("| metric | A fold mean | B fold mean | B − A (± s.e.) | folds B better / worse |")
    print("|---|---|---|---|---|")
    for metric in difference.columns:
        d = difference[metric]
        print(f"| {metric} | {figures[0][metric].mean():.4f} | {figures[1][metric].mean():.4f} | "
              f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} | {(d > 0).sum()} / {(d < 0).sum()} |")
    print(f"\npooled out-of-fold AUC: A {entries[0]['pooled']['auc']:.4f}, B {entries[1]['pooled']['auc']:.4f}")
    print("\nper-fold AUC A:", " ".join(f"{v:.3f}" for v in figures[0]["auc"]))
    print("per-fold AUC B:", " ".join(f"{v:.3f}" for v in figures[1]["auc"]))


if __name__ == "__main__":
    main()
