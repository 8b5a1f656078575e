"""How much accuracy could a better threshold buy? The accuracy of a finished binary study at 0.5 and at oracle thresholds.

For each model of a study's ``predictions.csv`` (out-of-fold malignancy probabilities), prints the fold-mean
accuracy at the study's threshold 0.5, the accuracy at the single threshold that is best on all pooled
out-of-fold predictions, and the fold mean of the accuracy at the threshold that is best on *each test fold
itself*. Both oracle thresholds are chosen on the test labels, so they are upper bounds for any threshold
rule, not results: if even the per-fold oracle stays below an accuracy target, no choice of operating point
reaches it and only a model that ranks the cases better can.

Run from the repository root on a finished study (the default study's run of RESULTS.md)::

    .venv/bin/python benchmarks/experiments/accuracy_headroom.py runs/lidc-final
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def best_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """The highest accuracy of the rule ``p ≥ t`` over every threshold t (each score, and above all of them)."""
    return max(float(((p >= t) == y).mean()) for t in np.append(np.unique(p), np.inf))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a study output folder holding predictions.csv")
    args = ap.parse_args()
    source = args.run / "predictions.csv"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; pass the --out folder of a finished `medlens study`")
    table = pd.read_csv(source)
    y = table["label"].to_numpy()
    models = [c.removesuffix("_p_malignant") for c in table.columns
              if c.endswith("_p_malignant") and "_calibrated_" not in c]
    if not models:
        raise SystemExit(f"{source}: no <model>_p_malignant column; is this a binary study?")
    folds = list(table.groupby("fold"))
    print("| model | fold-mean AUC | ACC at 0.5 | ACC at the best pooled threshold (oracle) "
          "| ACC at each test fold's best threshold (oracle) |\n|---|---|---|---|---|")
    for model in models:
        column = f"{model}_p_malignant"
        auc = np.mean([roc_auc_score(f["label"], f[column]) for _, f in folds])
        at_half = np.mean([((f[column] >= 0.5) == f["label"]).mean() for _, f in folds])
        pooled = best_accuracy(y, table[column].to_numpy())
        per_fold = np.mean([best_accuracy(f["label"].to_numpy(), f[column].to_numpy()) for _, f in folds])
        print(f"| {model} | {auc:.3f} | {at_half:.3f} | {pooled:.3f} | {per_fold:.3f} |")


if __name__ == "__main__":
    main()
