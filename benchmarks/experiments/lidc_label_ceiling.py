"""How well can the default study's labels be predicted from what the radiologists themselves described?

The LIDC-IDRI malignancy label is the readers' own 1–5 rating (1–2 benign, 4–5 malignant, 3 left out).
The same readers also rated eight semantic characteristics of each nodule (calcification, internal
structure, lobulation, margin, sphericity, spiculation, subtlety, texture; the ``*_value`` columns of
``MetadatabyNoduleMaxVoting.csv``, which the ``lidc_nodules`` builder carries as the dataset's ``aux``).
A classifier given those ratings and the diameter sees the features the readers based their malignancy
rating on, described by the readers, so its score is an optimistic
reference for an image-only model: it is *not* a model medlens offers (the ratings are not available for a
new scan), only a measure of how much of the label the readers' descriptions explain.

Every row uses the study's own folds (:func:`medlens.study.make_folds` on ``configs/lidc_nodules.yaml``:
10-fold stratified, grouped by patient, seed 0) and fits on each fold's train + inner-validation part.
Models: logistic regression on standardised inputs (C = 0.3) and extra trees (500 trees, leaves ≥ 3).
Prints a Markdown table (fold mean ± s.d. of AUC and of accuracy at 0.5) and appends one JSON line per row
to ``--out``. Run from the repository root::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/experiments/lidc_label_ceiling.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medlens.config import load_config
from medlens.data.builders import LIDC_METADATA, lidc_stems
from medlens.study import load_dataset, make_folds

MODELS = {
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000)),
    "extra_trees": lambda: ExtraTreesClassifier(n_estimators=500, min_samples_leaf=3, random_state=0),
}


def out_of_fold(x: np.ndarray, y: np.ndarray, folds, make_model) -> np.ndarray:
    """Test-fold probabilities of the positive class of ``make_model()`` fitted on each fold's train + val part."""
    p = np.zeros(len(y))
    for fold in folds:
        fit = np.concatenate([fold.train, fold.val])
        p[fold.test] = make_model().fit(x[fit], y[fit]).predict_proba(x[fold.test])[:, 1]
    return p


def fold_scores(p: np.ndarray, y: np.ndarray, folds) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold test AUC and accuracy at 0.5 of the out-of-fold probabilities ``p``."""
    auc = np.array([roc_auc_score(y[fold.test], p[fold.test]) for fold in folds])
    acc = np.array([accuracy_score(y[fold.test], p[fold.test] >= 0.5) for fold in folds])
    return auc, acc


def result_row(auc: np.ndarray, acc: np.ndarray) -> tuple[str, dict]:
    """The Markdown cells "AUC | ACC" (fold mean ± s.d.) and the JSON fields of per-fold scores and means."""
    cells = f"{auc.mean():.3f} ± {auc.std(ddof=1):.3f} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f}"
    fields = {"auc": auc.round(4).tolist(), "acc": acc.round(4).tolist(),
              "auc_mean": round(float(auc.mean()), 4), "acc_mean": round(float(acc.mean()), 4)}
    return cells, fields


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/lidc_nodules.yaml")
    ap.add_argument("--out", default="benchmarks/results/lidc_ceiling.jsonl")
    args = ap.parse_args()

    config = load_config(Path(args.config))
    data = load_dataset(config)
    folds = make_folds(data, config, config.protocol.folds)
    sheet = pd.read_csv(Path(data.meta["source"]) / LIDC_METADATA)
    sheet.index = lidc_stems(sheet)
    diameter = sheet.loc[data.ids, ["diameter_mm"]].to_numpy(float)
    names = data.meta["feature_names"]
    image = data.features[:, [i for i, n in enumerate(names) if n.startswith(("shape_", "hu_"))]]
    semantic = data.aux.astype(float)  # the builder's auxiliary targets: the readers' 8 ratings
    rated = data.meta["aux_names"]
    inputs = {
        "diameter": diameter,
        "diameter + calcification + margin ratings": np.hstack([diameter, semantic[:, [rated.index("calcification"),
                                                                                      rated.index("margin")]]]),
        "diameter + image shape/HU features (bp_radiomics inputs without Gabor)": np.hstack([diameter, image]),
        "diameter + 8 semantic ratings": np.hstack([diameter, semantic]),
        "diameter + 8 semantic ratings + image shape/HU": np.hstack([diameter, semantic, image]),
    }
    print(f"{len(data)} nodules, {len(np.unique(data.groups))} patients, {len(folds)} folds\n")
    print("| inputs | model | AUC | ACC |\n|---|---|---|---|")
    with open(args.out, "a") as log:
        for label, x in inputs.items():
            for model_name, make_model in MODELS.items():
                p = out_of_fold(x, data.labels, folds, make_model)
                cells, scores = result_row(*fold_scores(p, data.labels, folds))
                print(f"| {label} | {model_name} | {cells} |", flush=True)
                log.write(json.dumps({"inputs": label, "model": model_name, **scores}) + "\n")


if __name__ == "__main__":
    main()
