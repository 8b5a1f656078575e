"""2D central slice vs 2.5D vs 3D CNN vs CNN-LSTM on the same folds of two real volume sets.

* ``lidc``: 630 LIDC-IDRI nodules (benign/malignant), ``build_dataset("lidc_nodules", spacing=1.0, size=32)``,
  volumes (2, 32, 32, 32) = lung-windowed CT + nodule mask; folds stratified and grouped by patient.
* ``adrenal``: AdrenalMNIST3D 28³ (all 1,584 volumes, official splits pooled), stratified folds.

Every model sees the same ``k`` outer folds (``kfold_splits(labels, groups, k, seed)``); inside each
fold's training part a 15 % inner split (``inner_validation_split``) selects the epoch by validation
AUC. Models (all compact CNNs of width ``--width``, depth 3, AdamW, cosine schedule, balanced class
weights, flips, ``--epochs`` epochs):

* ``2d_central``: ``cnn_view(view="central")`` — the 2D ``cnn`` on the central axial slice;
* ``2.5d``: ``cnn_view(view="2.5d")`` — the 2D ``cnn`` on the three orthogonal central slices as channels;
* ``3d_cnn``: the ``cnn`` model on the whole volume (3D convolutions);
* ``cnn_lstm``: ``cnn_lstm`` — the same 2D encoder on every axial slice, LSTM(64), last state.

Writes one JSON per dataset (per-fold AUC/accuracy, parameters, training seconds) and prints a
Markdown table. Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/quality/bench_sequence.py --folds 3 --epochs 6 --out /tmp/bench_sequence

``--seed`` fixes the folds and the inner splits; ``--train-seed K`` (default: ``--seed``) changes only the
networks' initial weights and sample order, so runs with K = 0, 1, 2 on the same folds give the spread over
training seeds (write each to its own ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medlens.data.builders import build_dataset
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.splits import inner_validation_split, kfold_splits
from medlens.evaluate.stats import summarize
from medlens.models.registry import build
import medlens.models.sequence  # noqa: F401  (registers cnn_lstm and cnn_view)

DATA = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))


def load(name: str):
    if name == "lidc":
        return build_dataset("lidc_nodules", DATA / "lidc_idri_nodule_vois", spacing=1.0, size=32)
    return build_dataset("medmnist", DATA / "medmnist" / "adrenalmnist3d.npz", name="adrenalmnist3d")


def models(width: int, epochs: int) -> dict[str, tuple[str, dict]]:
    common = {"width": width, "depth": 3, "epochs": epochs, "patience": None}
    return {
        "2d_central": ("cnn_view", {"view": "central", **common}),
        "2.5d": ("cnn_view", {"view": "2.5d", **common}),
        "3d_cnn": ("cnn", common),
        "cnn_lstm": ("cnn_lstm", {"axis": 0, "cell": "lstm", "hidden": 64, **common}),
    }


def run(name: str, folds: int, epochs: int, width: int, seed: int, train_seed: int, out: Path) -> dict:
    data = load(name)
    splits = kfold_splits(data.labels, data.groups, k=folds, seed=seed)
    result = {"dataset": name, "n": len(data), "shape": list(data.images.shape[1:]),
              "class_counts": np.bincount(data.labels).tolist(), "folds": folds, "epochs": epochs,
              "width": width, "seed": seed, "train_seed": train_seed, "models": {}}
    saved = out / f"sequence_{name}.json"
    if saved.is_file():  # resume: keep the models an earlier run with the same settings finished
        earlier = json.loads(saved.read_text())
        earlier.setdefault("train_seed", earlier["seed"])  # files written before --train-seed existed
        if all(earlier[k] == result[k] for k in ("n", "folds", "epochs", "width", "seed", "train_seed")):
            result["models"] = earlier["models"]
    for key, (model_name, params) in models(width, epochs).items():
        if key in result["models"]:
            continue
        rows, seconds, cpu_seconds, n_params = [], 0.0, 0.0, None
        for i, (train_idx, test_idx) in enumerate(splits):
            train = data.subset(train_idx)
            inner, held = inner_validation_split(train.labels, train.groups, 0.15, seed + i)
            model = build(model_name, seed=train_seed + i, **params)
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(train.subset(inner), train.subset(held))
            seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
            scores = classification_metrics(data.labels[test_idx], model.predict_proba(data.subset(test_idx)))
            rows.append({"fold": i, "auc": float(scores["auc"]), "accuracy": float(scores["accuracy"])})
            n_params = model.n_parameters
            print(f"{name} {key} fold {i}: auc {scores['auc']:.3f} acc {scores['accuracy']:.3f} "
                  f"({seconds:.0f} s so far)", flush=True)
        result["models"][key] = {"model": model_name, "params": params, "folds": rows, "n_parameters": n_params,
                                 "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
                                 "auc": summarize([r["auc"] for r in rows]),
                                 "accuracy": summarize([r["accuracy"] for r in rows])}
        saved.write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    lines = ["| data | model | AUC mean [95% CI] | accuracy mean [95% CI] | parameters | train wall s | train CPU s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for key, m in r["models"].items():
            auc, acc = m["auc"], m["accuracy"]
            lines.append(f"| {r['dataset']} | {key} | {auc['mean']:.3f} [{auc['ci95'][0]:.3f}, {auc['ci95'][1]:.3f}] | "
                         f"{acc['mean']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] | {m['n_parameters']:,} | "
                         f"{m['train_seconds']:.0f} | {m.get('train_cpu_seconds', float('nan')):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["lidc", "adrenal"], choices=["lidc", "adrenal"])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="folds and inner splits")
    parser.add_argument("--train-seed", type=int, help="the networks' training seed (default: --seed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")
    train_seed = args.seed if args.train_seed is None else args.train_seed
    results = [run(d, args.folds, args.epochs, args.width, args.seed, train_seed, args.out) for d in args.datasets]
    print(table(results))


if __name__ == "__main__":
    main()
