"""Feature extractors compared by linear/SVM probes, and transfer against training from scratch.

Part 1 — extractors. On BreastMNIST and PneumoniaMNIST every extractor is fitted on the official
train split (labels used only by ``cnn``), features are extracted for the val + test images, and
logistic-regression and RBF-SVM probes are scored on those by stratified 5-fold CV
(:func:`medlens.features.probe.probe_cv`: the study's ``kfold_splits``, ``classification_metrics``,
``summarize``). ``transfer`` on BreastMNIST is the CNN trained on PneumoniaMNIST's train labels, frozen.

Part 2 — label budget on BreastMNIST. With 10 %, 25 % and 100 % of the train-split labels (stratified
subsample, seeded), compare on the official test split (156 images):
  scratch   the registry's ``cnn`` trained on the labelled subset only;
  transfer  PneumoniaMNIST-pretrained CNN features (frozen) + logistic regression on the subset;
  ae        autoencoder latent codes, the AE trained without labels on all BreastMNIST train images,
            + logistic regression on the subset.

Run: ``nice -n 10 .venv/bin/python benchmarks/quality/bench_features.py --out benchmarks/results/enhance_features.json``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from medlens.data.builders import medmnist
from medlens.data.dataset import ArrayDataset
from medlens.evaluate.metrics import classification_metrics
from medlens.features.extractors import AutoencoderExtractor, CNNExtractor, GaborExtractor
from medlens.features.probe import probe_cv, probe_holdout
from medlens.models.registry import build

DESCRIPTIONS = {
    "gabor": "Gabor magnitude mean/std/energy, λ = 2, 4, 8 px × 4 orientations (36 features)",
    "cnn": "compact CNN trained on this train split, GAP of each block (112 features)",
    "ae": "denoising AE trained without labels on this train split, bottleneck mean+max (128 features)",
    "transfer": "compact CNN trained on PneumoniaMNIST labels, frozen (112 features)",
}


def split(data: ArrayDataset, *names: str) -> ArrayDataset:
    return data.subset(np.flatnonzero(np.isin(data.split, names)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/enhance_features.json"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data")) / "medmnist"
    sets = {name: medmnist(root / f"{name}.npz") for name in ("pneumoniamnist", "breastmnist")}
    results: dict = {"extractors": {}, "budget": {}}
    fitted: dict = {}
    for name, data in sets.items():
        train, held = split(data, "train"), split(data, "val", "test")
        extractors = {"gabor": GaborExtractor(), "cnn": CNNExtractor(epochs=args.epochs, seed=args.seed),
                      "ae": AutoencoderExtractor(epochs=args.epochs, seed=args.seed)}
        if name == "breastmnist":  # trained on PneumoniaMNIST's train labels, frozen: fit ignores BreastMNIST
            source = split(sets["pneumoniamnist"], "train")
            extractors["transfer"] = CNNExtractor(pretrain=source, epochs=args.epochs, seed=args.seed)
        for method, extractor in extractors.items():
            start = time.perf_counter()
            extractor.fit(train.images, train.labels)
            features = extractor.transform(held.images)
            seconds = time.perf_counter() - start
            fitted[name, method] = extractor
            row = {"n_features": int(features.shape[1]), "seconds": seconds}
            for probe in ("logistic", "svm"):
                r = probe_cv(features, held.labels, probe=probe, k=5, seed=args.seed, names=data.meta["labels"])
                row[probe] = {m: r["summary"][m] for m in ("auc", "accuracy")}
            results["extractors"][f"{name}/{method}"] = row
            print(f"[{name}] {method}: logistic AUC {row['logistic']['auc']['mean']:.3f}, "
                  f"SVM AUC {row['svm']['auc']['mean']:.3f} ({seconds:.0f} s)", flush=True)

    breast = sets["breastmnist"]
    train, test = split(breast, "train"), split(breast, "test")
    names = breast.meta["labels"]
    transfer_train = fitted["breastmnist", "transfer"].transform(train.images)
    transfer_test = fitted["breastmnist", "transfer"].transform(test.images)
    ae_train = fitted["breastmnist", "ae"].transform(train.images)
    ae_test = fitted["breastmnist", "ae"].transform(test.images)
    for fraction in (0.1, 0.25, 1.0):
        index = np.arange(len(train))
        if fraction < 1.0:
            index, _ = train_test_split(index, train_size=fraction, stratify=train.labels, random_state=args.seed)
        y = train.labels[index]
        start = time.perf_counter()
        scratch = build("cnn", epochs=args.epochs, seed=args.seed).fit(train.subset(index))
        m_scratch = classification_metrics(test.labels, scratch.predict_proba(test), names)
        rows = {"scratch": m_scratch, "scratch_seconds": time.perf_counter() - start,
                "transfer": probe_holdout(transfer_train[index], y, transfer_test, test.labels, "logistic", names,
                                          args.seed),
                "ae": probe_holdout(ae_train[index], y, ae_test, test.labels, "logistic", names, args.seed)}
        results["budget"][str(fraction)] = {
            "n_labelled": int(len(index)),
            **{k: ({m: float(v[m]) for m in ("auc", "accuracy")} if isinstance(v, dict) else v)
               for k, v in rows.items()}}
        print(f"[budget {fraction:.0%}, n={len(index)}] scratch AUC {m_scratch['auc']:.3f}, transfer "
              f"{rows['transfer']['auc']:.3f}, ae {rows['ae']['auc']:.3f}", flush=True)
    results["provenance"] = {"seed": args.seed, "epochs": args.epochs, "threads": args.threads,
                             "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print("\n| dataset | method | description | probe | AUC (95% CI) | accuracy (95% CI) |\n|---|---|---|---|---|---|")
    for key, row in results["extractors"].items():
        dataset, method = key.split("/")
        for probe in ("logistic", "svm"):
            auc, acc = row[probe]["auc"], row[probe]["accuracy"]
            print(f"| {dataset} | {method} | {DESCRIPTIONS[method]} | {probe} | {auc['mean']:.3f} "
                  f"({auc['ci95'][0]:.3f}–{auc['ci95'][1]:.3f}) | {acc['mean']:.3f} "
                  f"({acc['ci95'][0]:.3f}–{acc['ci95'][1]:.3f}) |")
    print("\n| labels | n | scratch CNN AUC / acc | transfer + LR AUC / acc | AE codes + LR AUC / acc |\n"
          "|---|---|---|---|---|")
    for fraction, row in results["budget"].items():
        cells = " | ".join(f"{row[k]['auc']:.3f} / {row[k]['accuracy']:.3f}" for k in ("scratch", "transfer", "ae"))
        print(f"| {float(fraction):.0%} | {row['n_labelled']} | {cells} |")


if __name__ == "__main__":
    main()
