"""Time `train_bundle` (BreastMNIST cnn, quick params, official split) and bundle prediction throughput.

Run: MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/bench_predict.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medlens.bundle import load_bundle
from medlens.commands.train import train_bundle
from medlens.config import load_config
from medlens.explain import grad_cam
from medlens.predict import predict_files

torch.set_num_threads(2)
CONFIG = Path(__file__).parents[1] / "src/medlens/configs/breastmnist_official.yaml"

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    start = time.perf_counter()
    manifest = train_bundle(load_config(CONFIG), tmp / "bundle", quick=True, quiet=True)
    print(f"train_bundle (cnn resnet, epochs 2, BreastMNIST official train/val, test scored): "
          f"{time.perf_counter() - start:.1f} s; test metrics {manifest['metrics']}")
    start = time.perf_counter()
    bundle = load_bundle(tmp / "bundle")
    print(f"load_bundle: {1000 * (time.perf_counter() - start):.0f} ms")
    archive = Path(os.environ["MEDLENS_DATA"]) / "medmnist/breastmnist.npz"
    start = time.perf_counter()
    table, prepared = predict_files(bundle, [archive])
    seconds = time.perf_counter() - start
    print(f"predict_files on breastmnist.npz test_images: {len(table)} images in {seconds:.2f} s "
          f"({len(table) / seconds:.0f} images/s)")
    start = time.perf_counter()
    maps = grad_cam(bundle.model, prepared[0].images)
    seconds = time.perf_counter() - start
    print(f"grad_cam on {len(maps)} images: {seconds:.2f} s")
