"""Training time with and without medlens' glibc malloc settings (:mod:`medlens.engine.memory`).

``--model cnn3d``: one fit of the default study's 3D CNN (``configs/lidc_nodules.yaml``) on the training
part of fold 0 of the real LIDC nodules, ``--epochs`` epochs without early stopping. ``--model gan``: a
WGAN-GP (``medlens.synth.gan``, default settings) trained for ``--steps`` generator steps on the
BreastMNIST training images. Each run is in a
fresh process: with the settings (the default) and without them (``MEDLENS_KEEP_FREED_MEMORY=0``,
glibc's defaults). Repeats are interleaved. Reported per run: fit seconds, the median epoch seconds, the
process's user and system CPU seconds, its minor page faults and its peak resident size, and whether the
two settings gave the same trained weights (they must: an allocator setting changes no arithmetic).

Usage::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/speed/bench_malloc.py --epochs 4 --repeats 3
    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/speed/bench_malloc.py --model gan --steps 150 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REPORT = """
usage = resource.getrusage(resource.RUSAGE_SELF)
weights = b"".join(v.float().numpy().tobytes() for v in network.state_dict().values())
print(json.dumps({"applied": memory.keep_freed_memory(), "fit_s": seconds, "epoch_s": epoch_s,
                  "user_s": usage.ru_utime, "system_s": usage.ru_stime, "minor_faults": usage.ru_minflt,
                  "peak_rss_mb": usage.ru_maxrss / 1024, "weights_sha256": hashlib.sha256(weights).hexdigest()}))
"""

FIT_CNN = """
import hashlib, json, resource, sys, time
from pathlib import Path
import numpy as np, torch
from medlens.config import load_config
from medlens.study import load_dataset, make_folds
from medlens.models.cnn import CNNClassifier
from medlens.engine import memory
config = load_config(Path("configs/lidc_nodules.yaml"))
data = load_dataset(config)
fold = make_folds(data, config, 10)[0]
params = dict(next(m for m in config.models if m.key == "cnn3d").params)
params.update(epochs=int(sys.argv[1]), patience=None, progress=False, seed=fold.seed)
model = CNNClassifier(**params)
start = time.perf_counter()
model.fit(data.subset(fold.train), data.subset(fold.val))
seconds = time.perf_counter() - start
network, epoch_s = model.network_, float(np.median(model.history_.epoch_seconds))
""" + REPORT

FIT_GAN = """
import hashlib, json, os, resource, sys, time
from pathlib import Path
import numpy as np
from medlens.synth.gan import GAN, GANConfig
from medlens.engine import memory
archive = np.load(Path(os.environ["MEDLENS_DATA"]) / "medmnist/breastmnist.npz")
gan = GAN(GANConfig(steps=int(sys.argv[1]), seed=0))
start = time.perf_counter()
gan.fit(archive["train_images"][:, None] / 255.0, archive["train_labels"].ravel())
seconds = time.perf_counter() - start
network, epoch_s = gan.generator, None
""" + REPORT


def run(script: str, length: int, keep: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MEDLENS_KEEP_FREED_MEMORY"] = "1" if keep else "0"
    env["MEDLENS_QUIET"] = "1"
    out = subprocess.run([sys.executable, "-c", script, str(length)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("cnn3d", "gan"), default="cnn3d")
    ap.add_argument("--epochs", type=int, default=4, help="cnn3d: training epochs")
    ap.add_argument("--steps", type=int, default=150, help="gan: generator steps")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    script, length = (FIT_CNN, args.epochs) if args.model == "cnn3d" else (FIT_GAN, args.steps)
    results: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(args.repeats):
        for keep in (False, True):
            results[keep].append(run(script, length, keep))
            print(("kept " if keep else "glibc") + " " + json.dumps(results[keep][-1]), flush=True)
    print("\n| allocator | fit s | epoch s | user CPU s | system CPU s | minor page faults | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for keep in (False, True):
        rows = results[keep]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]
               if k not in ("applied", "weights_sha256") and rows[0][k] is not None}
        name = "medlens settings (kept freed memory)" if keep else "glibc defaults"
        epoch = f"{med['epoch_s']:.2f}" if "epoch_s" in med else "–"
        print(f"| {name} | {med['fit_s']:.1f} | {epoch} | {med['user_s']:.1f} | {med['system_s']:.1f} | "
              f"{med['minor_faults']:,.0f} | {med['peak_rss_mb']:,.0f} |")
    applied = {keep: {r["applied"] for r in rows} for keep, rows in results.items()}
    hashes = {r["weights_sha256"] for rows in results.values() for r in rows}
    print(f"\nsettings in force: with {applied[True]}, without {applied[False]}; "
          f"identical trained weights in all {2 * args.repeats} runs: {len(hashes) == 1}")


if __name__ == "__main__":
    main()
