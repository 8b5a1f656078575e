"""Training throughput of medlens' Trainer against a plain PyTorch loop, on real MedMNIST data.

Same network, same data, same optimiser (Adam, lr 1e-3), same batch size; no validation set, so both
do exactly the forward/backward/step work. The plain loop is the textbook one: ``DataLoader(TensorDataset,
shuffle=True)``, float32, default memory format, glibc's default allocator. The Trainer runs with its
defaults (``amp="auto"``, ``channels_last="auto"``, and its allocator setting,
:func:`medlens.engine.memory.keep_freed_memory`) and with each bf16 / channels-last speed-up switched on and
off, to show what each is worth; one more row runs the plain loop after applying the allocator setting, to
show that part alone. Every run is a fresh process, because the allocator setting, once applied, lasts
for the life of the process.

Cases: a 2D compact CNN (width 16, 3 blocks) on BreastMNIST train (546 × 28×28) and a 3D compact CNN
(width 8, 3 blocks) on AdrenalMNIST3D train (1188 × 28³). Each variant is run ``--repeats`` times,
interleaved, after one untimed warm-up epoch; samples/s is the median over repeats.

Usage::

    MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/speed/bench_trainer.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medlens.engine import TrainConfig, Trainer, memory
from medlens.models.cnn import compact_cnn


def load(path: Path) -> TensorDataset:
    z = np.load(path)
    x = torch.from_numpy(z["train_images"][:, None].astype(np.float32) / 255.0)
    return TensorDataset(x, torch.from_numpy(z["train_labels"].ravel().astype(np.int64)))


def network(dims: int) -> nn.Module:
    torch.manual_seed(0)
    return compact_cnn(dims, 1, 2, width=16 if dims == 2 else 8, depth=3)


def plain_loop(dims: int, data: TensorDataset, epochs: int, batch_size: int, keep_freed_memory: bool) -> float:
    """Seconds for ``epochs`` epochs of a plain float32 PyTorch loop (after one warm-up epoch).

    ``keep_freed_memory`` applies medlens' allocator setting first, as :meth:`Trainer.fit` does.
    """
    if keep_freed_memory:
        memory.keep_freed_memory()
    model = network(dims)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    start = 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            start = time.perf_counter()
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def trainer_run(dims: int, data: TensorDataset, epochs: int, batch_size: int, amp: str,
                channels_last: str | bool) -> float:
    """Seconds for ``epochs`` epochs of :class:`Trainer` (its own per-epoch timing, warm-up epoch dropped)."""
    config = TrainConfig(epochs=epochs + 1, batch_size=batch_size, lr=1e-3, amp=amp, channels_last=channels_last,
                         progress=False, patience=None, device="cpu")
    history = Trainer(network(dims), nn.CrossEntropyLoss(), config).fit(data)
    return sum(history.epoch_seconds[1:])


VARIANTS = {
    "plain PyTorch loop (fp32)": False,
    "plain loop + medlens allocator setting": True,
    "Trainer, defaults (auto)": ("auto", "auto"),
    "Trainer, bf16 + channels-last": ("bf16", True),
    "Trainer, bf16 only": ("bf16", False),
    "Trainer, channels-last only": ("off", True),
    "Trainer, fp32 (both off)": ("off", False),
}


def measure(dims: int, name: str, args: argparse.Namespace) -> float:
    """Seconds of one variant's timed epochs, measured in a fresh Python process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("MEDLENS_KEEP_FREED_MEMORY", None)
    command = [sys.executable, __file__, "--data", str(args.data), "--threads", str(args.threads),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--one", str(dims), name]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def run_one(dims: int, name: str, args: argparse.Namespace) -> None:
    """Run one variant in this process and print its seconds as JSON (the child side of :func:`measure`)."""
    torch.set_num_threads(args.threads)
    data = load(args.data / CASES[dims][1])
    variant = VARIANTS[name]
    if isinstance(variant, bool):
        seconds = plain_loop(dims, data, args.epochs, args.batch_size, variant)
    else:
        seconds = trainer_run(dims, data, args.epochs, args.batch_size, *variant)
    print(json.dumps({"seconds": seconds}))


CASES = {2: ("BreastMNIST 2D compact CNN", "medmnist/breastmnist.npz"),
         3: ("AdrenalMNIST3D 3D compact CNN", "medmnist/adrenalmnist3d.npz")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEDLENS_DATA", "/work/shared/data")))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--one", nargs=2, metavar=("DIMS", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(int(args.one[0]), args.one[1], args)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, {args.epochs} timed "
          f"epochs, median of {args.repeats}, each run in a fresh process, load average {os.getloadavg()[0]:.1f}")
    for dims, (title, path) in CASES.items():
        seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name in VARIANTS:
                seconds[name].append(measure(dims, name, args))
        size = len(np.load(args.data / path)["train_labels"])
        base = size * args.epochs / statistics.median(seconds["plain PyTorch loop (fp32)"])
        print(f"\n### {title} (train N = {size})\n")
        print("| variant | samples/s | vs plain loop |\n|---|---:|---:|")
        for name, values in seconds.items():
            rate = size * args.epochs / statistics.median(values)
            print(f"| {name} | {rate:,.0f} | {rate / base:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
