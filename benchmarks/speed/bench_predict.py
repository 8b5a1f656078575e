"""Time `train_bundle` (BreastMNIST cnn, quick params, official split), bundle prediction throughput,
explanation maps, and the issue #7 target: one 2D image predicted with a Grad-CAM overlay ≤ 100 ms on
2 CPU cores once the bundle is loaded.

The per-image path, after `load_bundle`: read one PNG file from disk and prepare it like the training
data (`prepare_input`) → class probabilities (`predict_images`) → Grad-CAM map (`explain`) → overlay PNG
written (`write_overlay`: numpy colour table + Pillow). The reference overlay is the plain matplotlib
figure (imshow gray + imshow jet alpha 0.4, title, savefig bbox_inches="tight") that medlens wrote before.
Fast and reference paths alternate in each repeat; medians over REPEATS runs, after one warm-up call
whose time is reported separately (first call: lazy imports, colour table, font), at 1 and 2 torch
threads (on a 2-core machine that other jobs load, 2 threads can stall on each other).

Run: MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/speed/bench_predict.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medlens.deploy.bundle import load_bundle
from medlens.deploy.train import train_bundle
from medlens.config import load_config
from medlens.deploy.explain import explain, grad_cam, write_overlay
from medlens.deploy.predict import predict_files, predict_images, prepare_input

torch.set_num_threads(2)
CONFIG = Path(__file__).parents[2] / "src/medlens/configs/breastmnist_official.yaml"
REPEATS = 30


def matplotlib_overlay(image: np.ndarray, heat: np.ndarray, path: Path, title: str = "") -> Path:
    """The reference: the matplotlib overlay medlens wrote before (figure, two imshow, savefig)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(image[0], cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def one_image(bundle, png: Path, out: Path, overlay) -> dict[str, float]:
    """Seconds of each step of the per-image path."""
    t0 = time.perf_counter()
    prepared = prepare_input(png, bundle)
    t1 = time.perf_counter()
    proba = predict_images(bundle, prepared.images)
    t2 = time.perf_counter()
    heat = explain(bundle.model, prepared.images, "gradcam")
    t3 = time.perf_counter()
    label = bundle.labels[int(proba[0].argmax())]
    overlay(prepared.images[0], heat[0], out, title=f"{png.name}: {label} (p={proba[0].max():.2f})")
    t4 = time.perf_counter()
    return {"prepare": t1 - t0, "predict": t2 - t1, "gradcam": t3 - t2, "overlay": t4 - t3, "total": t4 - t0}


def command_path(bundle, png: Path, folder: Path) -> float:
    """What `medlens predict BUNDLE PNG --explain DIR` runs after loading: the table and the overlays."""
    from medlens.commands.predict import _write_explanations

    start = time.perf_counter()
    table, prepared = predict_files(bundle, [png])
    table["index"] = table["index"].astype("Int64")
    _write_explanations(bundle, prepared, table, folder)
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


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
    for method in ("gradcam++", "occlusion"):
        start = time.perf_counter()
        maps = explain(bundle.model, prepared[0].images[:32], method)
        seconds = time.perf_counter() - start
        print(f"explain {method} on {len(maps)} images: {seconds:.2f} s ({1000 * seconds / len(maps):.1f} ms/image)")

    # ---- the target: one PNG from disk → probability → Grad-CAM → overlay PNG, once loaded ----
    test_images = np.load(archive)["test_images"]
    pngs = []
    for i in range(REPEATS):
        pngs.append(tmp / f"case{i}.png")
        Image.fromarray(test_images[i]).save(pngs[-1])
    writers = {"fast (numpy + Pillow)": write_overlay, "reference (matplotlib)": matplotlib_overlay}
    steps = ["prepare", "predict", "gradcam", "overlay", "total"]
    print(f"\nOne 2D image (BreastMNIST test PNG, 28×28) with a Grad-CAM overlay, after load_bundle; median of "
          f"{REPEATS} runs per row (ms); load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| torch threads | overlay writer | " + " | ".join(steps) + " | p90 total | first call |")
    print("|---|---|" + "---|" * (len(steps) + 2))
    command: dict[int, list[float]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        first = {name: one_image(bundle, pngs[0], tmp / f"warm{threads}_{k}.png", writer)["total"]
                 for k, (name, writer) in enumerate(writers.items())}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in writers}
        command[threads] = []
        for i, png in enumerate(pngs):
            for k, (name, writer) in enumerate(writers.items()):
                runs[name].append(one_image(bundle, png, tmp / f"out{k}_{i}.png", writer))
            command[threads].append(command_path(bundle, png, tmp / "cams"))
        for name in writers:
            medians = [statistics.median(r[s] for r in runs[name]) for s in steps]
            p90 = float(np.percentile([r["total"] for r in runs[name]], 90))
            print(f"| {threads} | {name} | " + " | ".join(ms(m) for m in medians)
                  + f" | {ms(p90)} | {ms(first[name])} |")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for threads, seconds in command.items():
        print(f"medlens predict internals (predict_files + _write_explanations, one PNG), torch threads {threads}: "
              f"median {ms(statistics.median(seconds))} ms")
    size = Image.open(tmp / "out0_0.png").size, Image.open(tmp / "out1_0.png").size
    print(f"overlay PNG size (w, h): fast {size[0]}, reference {size[1]}")
