"""Throughput of GaborBank.responses against skimage.filters.gabor on the same real images.

Both compute the magnitude ``hypot(real, imag)`` of every filter of one bank (default 4 wavelengths ×
8 orientations, γ = 0.5, bandwidth 1 octave, reflect boundaries) on
  * BreastMNIST ultrasound images (28×28, the first ``--breast`` training images), and
  * LIDC-IDRI-0001 CT slices (512×512, HU, the first ``--ct`` of the 16 DICOM slices).
skimage is looped over images × filters (that is its API: one image, one filter per call); the bank runs
batched in torch. The outputs are checked to agree before the timings are printed.

Run from the repository root::

    MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/speed/bench_gabor.py
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import pydicom
import skimage
import torch
from skimage.filters import gabor

from medlens.preprocess.gabor import GaborBank

LIDC_SERIES = (
    "lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
)


def load_breast(root: Path, n: int) -> np.ndarray:
    return np.load(root / "medmnist/breastmnist.npz")["train_images"][:n].astype(np.float32)


def load_ct(root: Path, n: int) -> np.ndarray:
    files = sorted((root / LIDC_SERIES).glob("*.dcm"))[:n]
    slices = []
    for f in files:
        ds = pydicom.dcmread(f)
        slices.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(slices).astype(np.float32)


def skimage_magnitudes(images: np.ndarray, bank: GaborBank) -> np.ndarray:
    out = np.empty((len(images), bank.n_filters) + images.shape[1:], dtype=np.float32)
    for i, image in enumerate(images):
        for j, p in enumerate(bank.params):
            real, imag = gabor(
                image, 1.0 / p["wavelength"], math.radians(p["theta_deg"]),
                sigma_x=p["sigma"], sigma_y=p["sigma"] / p["gamma"], offset=math.radians(p["psi_deg"]),
            )
            out[i, j] = np.hypot(real, imag)
    return out


def best_of(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breast", type=int, default=256, help="BreastMNIST images")
    parser.add_argument("--ct", type=int, default=2, help="LIDC 512x512 slices")
    parser.add_argument("--wavelengths", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    parser.add_argument("--orientations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (skimage is single-threaded)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="GaborBank timings: best of this many")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))
    bank = GaborBank(args.wavelengths, args.orientations, gamma=0.5, bandwidth=1.0, device=args.device)
    print(f"# GaborBank vs skimage.filters.gabor ({bank.n_filters} filters: λ={args.wavelengths}, "
          f"{args.orientations} orientations, γ=0.5, b=1)")
    print(f"# torch {torch.__version__} ({args.threads} threads, {args.device}), skimage {skimage.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible")
    print("| images | n | path (per λ) | GaborBank img/s | skimage img/s | speed-up | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for label, images in (("BreastMNIST 28×28", load_breast(root, args.breast)),
                          ("LIDC CT 512×512", load_ct(root, args.ct))):
        bank.responses(images[:1])  # warm-up: builds the kernel spectra / conv weights once
        t_bank, ours = best_of(lambda: bank.responses(images), args.repeats)
        t_sk, ref = best_of(lambda: skimage_magnitudes(images, bank), 1)
        diff = float(np.abs(ours - ref).max() / np.abs(ref).max())
        methods = ",".join(bank.methods_for(*images.shape[1:]))
        n = len(images)
        print(f"| {label} | {n} | {methods} | {n / t_bank:.1f} | {n / t_sk:.2f} | {t_sk / t_bank:.1f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()
