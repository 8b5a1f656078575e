"""Paired comparison of one model in two runs of the same binary study (same data, folds and seeds).

Reads each run's ``predictions.csv`` (written by ``medlens study``), checks that both scored the same
samples in the same folds, and prints per fold and as fold mean: AUC, accuracy at 0.5, sensitivity and
specificity of each run, the paired differences (mean ± standard error over folds, folds where the
second run is better) and the pooled out-of-fold AUC of each. For two settings of one model, e.g. the
default study's ``cnn3d`` before and after a change::

    .venv/bin/python benchmarks/compare_runs.py runs/lidc-check runs/lidc-ema --model cnn3d
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def positive_column(frame: pd.DataFrame, model: str, path: Path) -> str:
    """The model's raw probability of the positive (last-named) class."""
    columns = [c for c in frame.columns if c.startswith(f"{model}_p_") and "_calibrated_" not in c]
    if len(columns) != 2:
        raise SystemExit(f"{path}: expected two raw probability columns for model {model!r}, found {columns}")
    return columns[-1]


def fold_figures(y: np.ndarray, p: np.ndarray, fold: np.ndarray) -> pd.DataFrame:
    """AUC, accuracy, sensitivity and specificity at threshold 0.5 on each fold."""
    rows = []
    for k in np.unique(fold):
        yk, pk = y[fold == k], p[fold == k]
        call = pk > 0.5
        rows.append({"fold": int(k), "auc": roc_auc_score(yk, pk), "accuracy": np.mean(call == yk),
                     "sensitivity": np.mean(call[yk == 1]), "specificity": np.mean(~call[yk == 0])})
    return pd.DataFrame(rows).set_index("fold")


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
    y, fold = frames[0]["label"].to_numpy(), frames[0]["fold"].to_numpy()
    models = (args.model, args.second_model or args.model)
    probabilities = [frame[positive_column(frame, m, run)].to_numpy()
                     for frame, m, run in zip(frames, models, (args.first, args.second))]
    figures = [fold_figures(y, p, fold) for p in probabilities]
    difference = figures[1] - figures[0]
    print(f"{args.first}:{models[0]} (A) versus {args.second}:{models[1]} (B), {len(difference)} folds\n")
    print("| metric | A fold mean | B fold mean | B − A (± s.e.) | folds B better / worse |")
    print("|---|---|---|---|---|")
    for metric in difference.columns:
        d = difference[metric]
        print(f"| {metric} | {figures[0][metric].mean():.4f} | {figures[1][metric].mean():.4f} | "
              f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} | {(d > 0).sum()} / {(d < 0).sum()} |")
    print(f"\npooled out-of-fold AUC: A {roc_auc_score(y, probabilities[0]):.4f}, "
          f"B {roc_auc_score(y, probabilities[1]):.4f}")
    print("\nper-fold AUC A:", " ".join(f"{v:.3f}" for v in figures[0]["auc"]))
    print("per-fold AUC B:", " ".join(f"{v:.3f}" for v in figures[1]["auc"]))


if __name__ == "__main__":
    main()
