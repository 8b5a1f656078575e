"""Does conditional-GAN augmentation help a CNN trained on few labels? BreastMNIST and PneumoniaMNIST.

For each dataset and each labelled fraction of the official training split (stratified subset, seed 0):

1. a conditional GAN (``medlens.synth.gan``, 28 px; ``--gan-kind dcgan``: spectral norm, label smoothing
   0.9; ``wgan-gp``: gradient penalty) is trained on the labelled subset only; its checkpoint folder and a
   sample grid (PNG) are written;
2. its quality: FID and KID of 1,000 samples (classes in the training split's proportions) against
   the full training split, in the feature space of a compact ``cnn`` trained on the full training
   split for ``--extractor-epochs`` epochs (the in-domain extractor; not Inception), next to the real-versus-real floor (test split
   against training split), and the nearest-neighbour copy check against the labelled subset;
3. the ``cnn`` model (compact, width ``--width``, depth 3, batch 32, about ``--steps`` optimiser steps
   whatever the training-set size: ``epochs = max(3, ceil(steps · batch / n))``) is trained per seed
   under three conditions, keeping the epoch of best AUC on the official validation split, and scored
   on the official test split:
   ``none`` (no augmentation), ``classical`` (random flips, the ``cnn`` model's ``augment=True``),
   ``gan`` (no flips; ``augment_with_generator`` appends, per class, as many synthetic images as the
   labelled subset's largest class has).

Per-seed differences of test AUC and accuracy (gan − none, classical − none, gan − classical) are
summarised with a Student-t 95 % interval over seeds. Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/quality/bench_gan_augment.py --datasets breastmnist --seeds 3 --out /tmp/bench_gan
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from medlens.data.builders import build_dataset
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.stats import summarize
from medlens.models.registry import build
from medlens.report.html import write_tables_page
from medlens.synth.augment import augment_with_generator
from medlens.synth.gan import GAN, KINDS, GANConfig, save_grid
from medlens.synth.quality import FeatureExtractor, quality_report

DATA = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))
FILES = {"breastmnist": "breastmnist.npz", "pneumoniamnist": "pneumoniamnist.npz"}
CONDITIONS = ("none", "classical", "gan")


def labelled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified positions of ``fraction`` of ``labels`` (all of them for 1.0)."""
    index = np.arange(len(labels))
    if fraction >= 1.0:
        return index
    kept, _ = train_test_split(index, train_size=fraction, stratify=labels, random_state=seed)
    return np.sort(kept)


def train_or_reuse_gan(subset, folder: Path, args, labels: list[str], extra: dict) -> tuple[GAN, dict]:
    """Train the GAN on ``subset`` and save it to ``folder``, or load it from an earlier run with the
    same kind, steps and width; returns the GAN and its loss summary."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        same = (saved["config"]["kind"], saved["config"]["steps"], saved["config"]["width"])
        if same == (args.gan_kind, args.gan_steps, args.gan_width):
            losses = saved.get("losses") or {"gan_seconds": saved["history"]["seconds"],
                                             "gan_steps": saved["history"]["steps"],
                                             "d_loss_last100": saved["history"]["d_loss_last100"],
                                             "g_loss_last100": saved["history"]["g_loss_last100"]}
            return GAN.load(folder), losses
    config = GANConfig(kind=args.gan_kind, image_size=28, n_classes=2, width=args.gan_width, steps=args.gan_steps,
                       seed=0)
    gan = GAN(config, labels)
    history = gan.fit(subset.images, subset.labels)
    losses = {"gan_seconds": history.seconds, "gan_steps": len(history.g_loss),
              **{f"{k}_{part}": float(np.mean(getattr(history, k)[sl]))
                 for k in ("d_loss", "g_loss") for part, sl in (("first100", slice(100)), ("last100", slice(-100, None)))}}
    gan.save(folder, extra={**extra, "losses": losses})
    save_grid(gan.sample(32, seed=1)[0], folder / "samples.png")
    return gan, losses


def proportional_samples(gan: GAN, n: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """``n`` samples with classes in the proportions of ``labels``."""
    counts = np.round(np.bincount(labels, minlength=gan.config.n_classes) / len(labels) * n).astype(int)
    return np.concatenate([gan.sample(int(k), label=c, seed=seed + c)[0] for c, k in enumerate(counts) if k])


def run(name: str, args) -> dict:
    data = build_dataset("medmnist", DATA / "medmnist" / FILES[name], name=name)
    train, val, test = (data.subset(np.flatnonzero(data.split == s)) for s in ("train", "val", "test"))
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    extractor = FeatureExtractor(width=args.width, epochs=args.extractor_epochs, seed=0).fit(train)
    result = {"dataset": name, "gan_kind": args.gan_kind, "n_train": len(train), "n_val": len(val), "n_test": len(test),
              "extractor_seconds": time.perf_counter() - start, "fractions": {}}
    clf = {"arch": "compact", "width": args.width, "depth": 3, "batch_size": args.batch_size, "patience": None}
    for fraction in args.fractions:
        subset = train.subset(labelled_subset(train.labels, fraction, 0))
        gan, losses = train_or_reuse_gan(subset, out / f"{args.gan_kind}_{fraction:g}", args, data.meta["labels"],
                                         {"dataset": name, "fraction": fraction, "n_labelled": len(subset)})
        synthetic = proportional_samples(gan, 1000, train.labels, seed=100)
        quality = quality_report(extractor, train.images, test.images, synthetic, subset.images)
        n_per_class = int(np.bincount(subset.labels).max())
        entry = {"n_labelled": len(subset), **losses, "quality": quality, "n_synthetic_per_class": n_per_class,
                 "classifier_steps": args.steps, "runs": []}
        print(f"{name} {fraction:g}: n={len(subset)} GAN {losses['gan_seconds']:.0f} s, FID {quality['fid']:.2f} "
              f"(real-vs-real {quality['fid_real_vs_real']:.2f}), copy ratio {quality['ratio']:.2f}", flush=True)
        for seed in range(args.seeds):
            augmented = augment_with_generator(subset, gan, n_per_class, seed=1000 + seed)
            for condition in CONDITIONS:
                fit_on = augmented if condition == "gan" else subset
                epochs = max(args.min_epochs, -(-args.steps * args.batch_size // len(fit_on)))
                model = build("cnn", augment=condition == "classical", seed=seed, epochs=epochs, **clf)
                t0 = time.perf_counter()
                model.fit(fit_on, val)
                scores = classification_metrics(test.labels, model.predict_proba(test))
                entry["runs"].append({"seed": seed, "condition": condition, "auc": float(scores["auc"]),
                                      "accuracy": float(scores["accuracy"]), "seconds": time.perf_counter() - t0})
                print(f"  seed {seed} {condition}: auc {scores['auc']:.4f} acc {scores['accuracy']:.4f}", flush=True)
        entry["summary"] = summarise(entry["runs"])
        result["fractions"][f"{fraction:g}"] = entry
        (args.out / f"gan_augment_{name}.json").write_text(json.dumps(result, indent=1))
    return result


def summarise(runs: list[dict]) -> dict:
    by = {(r["condition"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    summary = {}
    for metric in ("auc", "accuracy"):
        for c in CONDITIONS:
            summary[f"{metric}_{c}"] = summarize([by[c, s][metric] for s in seeds])
        for a, b in (("gan", "none"), ("classical", "none"), ("gan", "classical")):
            summary[f"{metric}_{a}_minus_{b}"] = summarize([by[a, s][metric] - by[b, s][metric] for s in seeds])
    return summary


def _ci(s: dict) -> str:
    return f"{s['mean']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"


def frames(results: list[dict]) -> dict[str, pd.DataFrame]:
    """The two comparison tables: test AUC per condition with the paired differences, and the GAN's quality."""
    augmentation, quality = [], []
    for r in results:
        for fraction, e in r["fractions"].items():
            data = f"{r['dataset']} ({r.get('gan_kind', 'dcgan')}, {e['gan_steps']} steps)"
            s, q = e["summary"], e["quality"]
            seeds = len({run["seed"] for run in e["runs"]})
            augmentation.append({"data": data, "labels": f"{float(fraction):.0%}", "n": e["n_labelled"],
                                 "seeds": seeds, **{f"AUC {c}": f"{s[f'auc_{c}']['mean']:.3f}" for c in CONDITIONS},
                                 "ΔAUC gan−none [95% CI]": _ci(s["auc_gan_minus_none"]),
                                 "ΔAUC classical−none": _ci(s["auc_classical_minus_none"]),
                                 "ΔAUC gan−classical": _ci(s["auc_gan_minus_classical"]),
                                 "Δacc gan−none": _ci(s["accuracy_gan_minus_none"])})
            quality.append({"data": data, "labels": f"{float(fraction):.0%}", "GAN s": f"{e['gan_seconds']:.0f}",
                            "FID": f"{q['fid']:.2f}",
                            "FID real-vs-real": f"{q['fid_real_vs_real']:.2f}", "KID ×10³": f"{1e3 * q['kid']:.2f}",
                            "KID real-vs-real ×10³": f"{1e3 * q['kid_real_vs_real']:.2f}",
                            "NN-distance ratio (samples / held-out)": f"{q['ratio']:.2f}",
                            "copy fraction": f"{q['copy_fraction']:.3f}"})
    return {"Test AUC with and without augmentation (official test split)": pd.DataFrame(augmentation),
            "GAN quality (in-domain features, not Inception)": pd.DataFrame(quality)}


def markdown(frame: pd.DataFrame) -> str:
    rows = [list(frame.columns), ["---"] * frame.shape[1], *frame.astype(str).values.tolist()]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in rows)


def collect(folders: list[Path]) -> tuple[list[dict], dict[str, Path]]:
    """Every ``gan_augment_*.json`` under ``folders`` and the sample grid of each GAN they trained."""
    results, grids = [], {}
    for folder in folders:
        for path in sorted(folder.glob("gan_augment_*.json")):
            r = json.loads(path.read_text())
            results.append(r)
            kind = r.get("gan_kind", "dcgan")
            for fraction, e in r["fractions"].items():
                grid = folder / r["dataset"] / f"{kind}_{fraction}" / "samples.png"
                if grid.is_file():
                    grids[f"{r['dataset']}, {float(fraction):.0%} labels, {kind}, {e['gan_steps']} steps: "
                          "32 samples, columns alternating the classes (odd: label 0, even: label 1)"] = grid
    return results, grids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 1.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400,
                        help="classifier optimiser steps: epochs = max(--min-epochs, ceil(steps·batch / n_train))")
    parser.add_argument("--min-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8, help="classifier and extractor width")
    parser.add_argument("--extractor-epochs", type=int, default=4)
    parser.add_argument("--gan-steps", type=int, default=400)
    parser.add_argument("--gan-width", type=int, default=16)
    parser.add_argument("--gan-kind", default="dcgan", choices=list(KINDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_gan"))
    parser.add_argument("--collect", type=Path, nargs="+",
                        help="train nothing: gather the results of earlier --out folders (tables, and --html)")
    parser.add_argument("--html", type=Path, help="also write the tables and sample grids as one HTML page")
    args = parser.parse_args()
    if args.collect:
        results, grids = collect(args.collect)
    else:
        torch.set_num_threads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        results = [run(name, args) for name in args.datasets]
        grids = collect([args.out])[1]
    tables = frames(results)
    print("\n\n".join(markdown(frame) for frame in tables.values()))
    if args.html:
        write_tables_page("GAN augmentation at few labels: BreastMNIST and PneumoniaMNIST", tables, grids, args.html,
                          notes=__doc__)


if __name__ == "__main__":
    main()
