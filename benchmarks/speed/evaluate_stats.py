"""Benchmark of medlens.evaluate: DeLong (fast midrank) against the direct O(mn) DeLong and the bootstrap,
and the grouped k-fold split of the real LIDC nodules.

Real data only: logistic-regression scores on BreastMNIST and PneumoniaMNIST (14×14 mean-pooled pixels,
trained on the train split, scored on train+val+test so N is large), LIDC nodule patient ids.

Run:  MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/speed/evaluate_stats.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medlens.evaluate import splits, stats

DATA = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))


def scores(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y_test, p_test, y_all, p_all) of a logistic regression on a MedMNIST set."""
    archive = np.load(DATA / f"medmnist/{name}.npz")

    def pooled(split):
        images = archive[f"{split}_images"] / 255.0
        return images.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(images), -1)

    model = LogisticRegression(C=0.05, max_iter=3000).fit(pooled("train"), archive["train_labels"].ravel())
    y_test, p_test = archive["test_labels"].ravel(), model.predict_proba(pooled("test"))[:, 1]
    y_all = np.concatenate([archive[f"{s}_labels"].ravel() for s in ("train", "val", "test")])
    p_all = np.concatenate([model.predict_proba(pooled(s))[:, 1] for s in ("train", "val", "test")])
    return y_test, p_test, y_all, p_all


def direct_delong_variance(y: np.ndarray, s: np.ndarray) -> float:
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(1).var(ddof=1) / x.size + psi.mean(0).var(ddof=1) / z.size


def timed(fn, repeat: int = 3):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    lines = ["| data | N | AUC | DeLong 95% CI | bootstrap 95% CI (2000, stratified) | DeLong s | direct DeLong s "
             "| bootstrap s | |var fast − direct| |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("breastmnist", "pneumoniamnist"):
        y_test, p_test, y_all, p_all = scores(name)
        for label, y, p in ((f"{name} test", y_test, p_test), (f"{name} all splits", y_all, p_all)):
            t_fast, (auc, var) = timed(lambda: stats.delong_auc_variance(y, p))
            ci = stats.delong_auc_ci(y, p)
            t_direct, direct = timed(lambda: direct_delong_variance(y, p), repeat=1)
            t_boot, boot = timed(lambda: stats.bootstrap_ci(roc_auc_score, y, p, n_boot=2000, seed=0), repeat=1)
            lines.append(f"| {label} | {y.size} | {auc:.4f} | [{ci[0]:.4f}, {ci[1]:.4f}] | "
                         f"[{boot[0]:.4f}, {boot[1]:.4f}] | {t_fast:.4f} | {t_direct:.4f} | {t_boot:.2f} | "
                         f"{abs(var - direct):.1e} |")
    table = pd.read_csv(DATA / "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv")
    labels, patients = table.Diagnosis_value.to_numpy(), table.patient_id.to_numpy()
    t_split, folds = timed(lambda: splits.kfold_splits(labels, patients, k=10, seed=0))
    shares = [labels[test].mean() for _, test in folds]
    sizes = [test.size for _, test in folds]
    splits.assert_no_group_leak(folds, patients)
    lines.append("")
    lines.append(f"LIDC nodules (CSV rows {labels.size}, {np.unique(patients).size} patients), 10-fold grouped by "
                 f"patient: {t_split:.3f} s; test fold sizes {min(sizes)}–{max(sizes)}; malignant share per fold "
                 f"{min(shares):.3f}–{max(shares):.3f} (overall {labels.mean():.3f}); no patient leak.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
