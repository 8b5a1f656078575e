"""Choose the BreastMNIST ensemble's training settings without touching the test split.

The official val split has 78 images and also drives early stopping, so its figures rank settings poorly.
This script scores each setting by 5-fold stratified cross-validation inside the official **train**
split (546 images, every one predicted out of fold), with early stopping on the official val split as
the study does; the test split is never loaded. Each member of an ensemble is a ResNet ``cnn`` trained
without class weights from its own seed (``100 · fold + m + 1000 · offset``); the ensemble's
probability is the members' mean (:mod:`medlens.models.ensemble`).

Prints one JSON line per setting (out-of-fold AUC and accuracy at 0.5 of one member and of the
ensembles of the first k members) and appends it to ``--out``. Run from the repository root::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/experiments/select_breast_cnn.py base shift_long --seed-offset 0 7
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from medlens.config import load_config
from medlens.models.registry import build
from medlens.study import load_dataset

SETTINGS = {
    "base": {},
    "shift": {"augment": "shift"},
    "long": {"epochs": 60, "patience": 15},
    "shift_long": {"augment": "shift", "epochs": 60, "patience": 15},
    "shift_w32": {"augment": "shift", "width": 32},
    "shift_b2": {"augment": "shift", "blocks": 2},
    "shift_s3": {"augment": "shift", "max_shift": 3},
    "shift_long_b2": {"augment": "shift", "epochs": 60, "patience": 15, "blocks": 2},
}


def out_of_fold(data, settings: dict, members: int, offset: int, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(members, n_train)`` out-of-fold probabilities of the positive class, and the train labels."""
    train_idx, val_idx = np.flatnonzero(data.split == "train"), np.flatnonzero(data.split == "val")
    val, labels = data.subset(val_idx), data.labels[train_idx]
    probs = np.zeros((members, len(train_idx)))
    splits = StratifiedKFold(folds, shuffle=True, random_state=0).split(train_idx, labels)
    for f, (fit, held) in enumerate(splits):
        fit_data, held_data = data.subset(train_idx[fit]), data.subset(train_idx[held])
        for m in range(members):
            model = build("cnn", arch="resnet", class_weight=None, **settings, progress=False,
                          seed=100 * f + m + 1000 * offset)
            model.fit(fit_data, val)
            probs[m, held] = np.asarray(model.predict_proba(held_data))[:, 1]
    return probs, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seed-offset", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="/tmp/select_breast_cnn.jsonl")
    args = ap.parse_args()
    data = load_dataset(load_config("configs/breastmnist_official.yaml"))
    for name in args.settings:
        for offset in args.seed_offset:
            start = time.time()
            probs, labels = out_of_fold(data, SETTINGS[name], args.members, offset)
            row = {"setting": name, "params": SETTINGS[name], "seed_offset": offset,
                   "seconds": round(time.time() - start)}
            for k in sorted({1, args.members}):
                p = probs[:k].mean(0)
                row[f"ens{k}"] = {"auc": roc_auc_score(labels, p), "acc": float(np.mean((p > 0.5) == labels))}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
