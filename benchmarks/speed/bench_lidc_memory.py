"""Peak memory of loading the LIDC nodule dataset (the ``lidc_nodules`` builder) as the number of volumes grows:
images in memory (the default) against cubes written to a memory-mapped ``.npy`` (``images_file``).

The set is the shipped VOIs replicated under new patient IDs to ``--volumes`` labelled volumes: a folder whose
``image/`` and ``nodule_mask/`` hold symbolic links to the shipped NIfTI files under new names, and whose metadata
sheet repeats the shipped rows with the new IDs. The copies exist only to measure memory and time, never for
accuracy figures.

Each (volumes, mode) runs in a fresh process that builds the dataset, touches nothing else, and reports its peak
RSS (``ru_maxrss``), the wall time and the size of ``images``. Printed and appended to ``--jsonl``.

Usage (a one-line rerun for a quiet machine)::

    MEDLENS_DATA=/work/shared/data PYTHONPATH=src python benchmarks/speed/bench_lidc_memory.py \\
        --volumes 1000 20000 --modes lazy memory --work /tmp/lidc_memory --jsonl benchmarks/results/data_memory.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from medlens.data.builders import LIDC_METADATA, lidc_malignancy_label, lidc_stems

CHILD = """
import json, resource, sys, time
from pathlib import Path
from medlens.data.builders import lidc_nodules
root, mode, npy = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
data = lidc_nodules(root, images_file=npy if mode == "lazy" else None)
print(json.dumps({"n": len(data), "seconds": time.perf_counter() - start, "images_type": type(data.images).__name__,
                  "images_gb": data.images.nbytes / 1e9,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def replicate_vois(shipped: Path, out: Path, volumes: int) -> Path:
    """A folder of ``volumes`` labelled VOIs: links to the shipped files under new patient IDs."""
    folder = out / f"vois-{volumes}"
    if (folder / LIDC_METADATA).is_file():
        return folder
    table = pd.read_csv(shipped / LIDC_METADATA)
    table = table[[lidc_malignancy_label(int(v)) is not None for v in table["Malignancy_value"]]]
    table = table[[(shipped / "image" / f"{s}.nii.gz").is_file() for s in lidc_stems(table)]]
    rows = []
    for i in range(volumes):
        row = table.iloc[i % len(table)].copy()
        source = f"{row['patient_id']}_R_{row['nodule_id']}"
        row["patient_id"] = f"REPLV-{i // len(table):03d}-{row['patient_id']}"
        rows.append(row)
        for sub in ("image", "nodule_mask"):
            link = folder / sub / f"{row['patient_id']}_R_{row['nodule_id']}.nii.gz"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(shipped / sub / f"{source}.nii.gz")
    pd.DataFrame(rows).to_csv(folder / LIDC_METADATA, index=False)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--modes", nargs="+", default=["lazy", "memory"], choices=["lazy", "memory"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lidc_memory"))
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    shipped = Path(os.environ.get("MEDLENS_DATA", "../shared/data")) / "lidc_idri_nodule_vois"
    for volumes in args.volumes:
        folder = replicate_vois(shipped, args.work, volumes)
        for mode in args.modes:
            npy = args.work / f"cubes-{volumes}.npy"
            npy.unlink(missing_ok=True)
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode, str(npy)], check=True,
                                  capture_output=True, text=True, env={**os.environ, "MEDLENS_QUIET": "1"})
            row = {"volumes": volumes, "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1]),
                   "note": args.note, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            print(f"{volumes:6d} volumes, {mode:6s}: peak RSS {row['peak_rss_mb']:8.0f} MB, {row['seconds']:7.1f} s, "
                  f"images {row['images_gb']:.2f} GB ({row['images_type']})", flush=True)
            if args.jsonl is not None:
                with args.jsonl.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
            npy.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
