r"""Denoising autoencoder against classical baselines, side by side on the same held-out noisy images.

For each dataset the autoencoder is trained on clean training images with noise drawn afresh each
epoch; the baselines' parameters are tuned by grid search (best mean PSNR) on separate tuning images.
All methods then denoise the *same* noisy held-out images (noise seeded), and PSNR and SSIM are taken
against the clean images with the same data range.

- PneumoniaMNIST (chest X-ray, 28×28): Gaussian noise σ = 25.5 (10 % of 0–255); train split
  (4708) for the AE, 32 val images for tuning, the first 200 test images for evaluation.
- BreastMNIST (ultrasound, 28×28): speckle, L = 4 looks; train split (546), 32 val, all 156 test.
- LIDC-IDRI CT (512×512 slices, HU): low-dose Poisson noise at dose factor 0.25 (per-pixel
  attenuation-domain model, :class:`medlens.enhance.noise.PoissonCTNoise`); the AE trains on 64×64
  patches of patients 0001 and 0002 (28 slices), baselines are tuned on four 128×128 crops of those
  slices, evaluation on all 11 slices of the held-out patient 0003 (AE learning rate 1e-3, see --ct-lr).
  Data range 4095 HU (the window −1024…3071 HU).

Run (MEDLENS_DATA must name the shared data folder), one dataset per process::

    nice -n 10 .venv/bin/python benchmarks/quality/bench_denoise.py --datasets lidc --epochs 40 \
        --out benchmarks/results/enhance_denoise_lidc.json
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

from medlens.data.readers.dicom import read_dicom
from medlens.data.readers.medmnist import load_medmnist
from medlens.enhance import baselines
from medlens.enhance.autoencoder import Denoiser, scale
from medlens.enhance.quality import batch_quality
from medlens.enhance.sources import CT_WINDOW

LIDC = {
    "LIDC-IDRI-0001": "lidc_idri_ct/LIDC-IDRI-0001",
    "LIDC-IDRI-0002": "lidc_idri_ct_more/LIDC-IDRI-0002",
    "LIDC-IDRI-0003": "lidc_idri_ct_more/LIDC-IDRI-0003",
}


def _series_folder(root: Path) -> Path:
    return next(p.parent for p in sorted(root.rglob("*.dcm")))


def lidc_slices(data: Path, patient: str) -> np.ndarray:
    """``(D, 1, 512, 512)`` HU slices of one patient (padding already −1024 HU by the reader)."""
    image = read_dicom(_series_folder(data / LIDC[patient]))
    return np.maximum(np.moveaxis(image.array, 1, 0), CT_WINDOW[0]).astype(np.float32)


def medmnist_sets(data: Path, name: str, n_test: int | None):
    path = data / "medmnist" / f"{name}.npz"
    train = load_medmnist(path, "train")[0].astype(np.float32)
    tune = load_medmnist(path, "val")[0][:32].astype(np.float32)
    test = load_medmnist(path, "test")[0][:n_test].astype(np.float32)
    return train, tune, test


def run_dataset(name: str, train: np.ndarray, tune: np.ndarray, test: np.ndarray, model: Denoiser,
                seed: int) -> dict:
    window = model.window
    data_range = window[1] - window[0]
    rng = np.random.default_rng(seed + 100)
    tune_noisy = np.stack([model.noise(x, rng) for x in tune])
    test_noisy = np.stack([model.noise(x, rng) for x in test])
    rows = {"noisy input": {**batch_quality(test[:, 0], test_noisy[:, 0], data_range), "seconds": 0.0,
                            "params": {}}}
    start = time.perf_counter()
    history = model.fit(train)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = model.denoise(test_noisy)
    rows["autoencoder"] = {**batch_quality(test[:, 0], out[:, 0], data_range),
                           "seconds": time.perf_counter() - start, "params": model.manifest()["architecture"]}
    print(f"[{name}] autoencoder trained {train_seconds:.0f} s, {len(history.train_loss)} epochs: "
          f"PSNR {rows['autoencoder']['psnr']:.2f} dB", flush=True)
    clean_s, noisy_s = scale(test[:, 0], window), scale(test_noisy[:, 0], window)
    for method in baselines.BASELINES:
        params = baselines.tune(method, scale(tune[:, 0], window), scale(tune_noisy[:, 0], window))
        start = time.perf_counter()
        denoised = baselines.apply(method, noisy_s, **params)
        rows[method] = {**batch_quality(clean_s, denoised, 1.0), "seconds": time.perf_counter() - start,
                        "params": params}
        print(f"[{name}] {method} {params}: PSNR {rows[method]['psnr']:.2f} dB", flush=True)
    return {"noise": model.manifest()["noise"], "n_train": int(len(train)), "n_tune": int(len(tune)),
            "n_test": int(len(test)), "data_range": data_range, "train_seconds": train_seconds,
            "epochs_run": len(history.train_loss), "final_train_loss": history.train_loss[-1],
            "methods": rows,
            "ae_minus_nlm_db": rows["autoencoder"]["psnr"] - rows["nlm"]["psnr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/enhance_denoise.json"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ct-lr", type=float, default=1e-3,
                        help="CT learning rate (the MedMNIST sets use 2e-3)")
    parser.add_argument("--residual-scale", default="auto",
                        help="s of X̂ = Y − s·f(Y): 'auto' (the noise RMS, the default) or a number (1 = unscaled)")
    parser.add_argument("--datasets", default="pneumoniamnist,breastmnist,lidc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))
    results = {}
    residual_scale = args.residual_scale if args.residual_scale == "auto" else float(args.residual_scale)
    common = dict(channels=(32, 64, 64), strides=(1, 2, 2), epochs=args.epochs, patience=None, seed=args.seed,
                  residual_scale=residual_scale)
    for name in args.datasets.split(","):
        start = time.perf_counter()
        if name == "pneumoniamnist":
            train, tune, test = medmnist_sets(data, name, 200)
            model = Denoiser(modality="DX", window=(0.0, 255.0), noise="gaussian", noise_params={"sigma": 25.5},
                             batch_size=32, lr=2e-3, **common)
        elif name == "breastmnist":
            train, tune, test = medmnist_sets(data, name, None)
            model = Denoiser(modality="US", window=(0.0, 255.0), noise="speckle", noise_params={"looks": 4.0},
                             batch_size=32, lr=2e-3, samples_per_epoch=4 * len(train), **common)
        elif name == "lidc":
            train = np.concatenate([lidc_slices(data, p) for p in ("LIDC-IDRI-0001", "LIDC-IDRI-0002")])
            test = lidc_slices(data, "LIDC-IDRI-0003")
            tune = np.stack([s[:, 192:320, 192:320] for s in train[::7][:4]])
            model = Denoiser(modality="CT", window=CT_WINDOW, noise="poisson_ct", noise_params={"dose": 0.25},
                             patch=64, samples_per_epoch=1024, batch_size=16, lr=args.ct_lr, **common)
        else:
            raise SystemExit(f"unknown dataset {name}")
        results[name] = run_dataset(name, train, tune, test, model, args.seed)
        results[name]["wall_seconds"] = time.perf_counter() - start
    results["provenance"] = {"seed": args.seed, "epochs": args.epochs, "threads": args.threads,
                             "ct_lr": args.ct_lr, "residual_scale": args.residual_scale, "torch": torch.__version__,
                             "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| dataset | method | PSNR dB | SSIM | seconds |\n|---|---|---|---|---|")
    for name, r in results.items():
        if name == "provenance":
            continue
        for method, row in r["methods"].items():
            print(f"| {name} | {method} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['seconds']:.1f} |")
        print(f"| {name} | AE − NLM | {r['ae_minus_nlm_db']:+.2f} | | |")


if __name__ == "__main__":
    main()
