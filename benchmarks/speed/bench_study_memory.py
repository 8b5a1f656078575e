"""Peak memory of a `medlens study` of the feature models (data loading, Gabor features, folds) as the number of
volumes grows: images read lazily from a ``.npy`` file (the ``lidc_nodules`` builder's ``images_file``) against
images in memory.

The data are the shipped LIDC VOIs replicated under new patient IDs (``bench_lidc_memory.replicate_vois``: links
to the shipped files under new names; the copies exist only to measure memory and time, never for accuracy).
The study is the default config (``configs/lidc_nodules.yaml``: its data preparation, Gabor bank, protocol and
seed) with its feature models only (``size_reference``, ``bp``, ``svm``, ``twostage``, ``bp_radiomics``; the 3D
CNN reads the pixels and is not what this measures) and ``--folds`` folds. Each (volumes, mode) runs in a fresh
process through :func:`medlens.study.run_study` and reports its peak RSS (``ru_maxrss``) and wall time; printed
and appended to ``--jsonl``.

    MEDLENS_DATA=../shared/data PYTHONPATH=src python benchmarks/speed/bench_study_memory.py \\
        --volumes 1000 20000 --modes lazy --folds 10 --work /tmp/study_memory --jsonl benchmarks/results/study_memory.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench_lidc_memory import replicate_vois

CHILD = """
import json, resource, sys, time
from pathlib import Path
import yaml
from medlens.config import load_config, parse_config, default_config_path
from medlens.study import run_study
root, mode, work, folds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
raw = load_config(default_config_path()).model_dump(mode="json", exclude={"source"})
raw["data"]["path"] = str(root)
if mode == "lazy":
    raw["data"]["params"]["images_file"] = str(work / "cubes.npy")
raw["models"] = [m for m in raw["models"] if m["id"] != "cnn3d"]
start = time.perf_counter()
results = run_study(parse_config(raw), work / "study", folds=folds, quiet=True, overwrite=True)
print(json.dumps({"n": results["data"]["n_samples"], "seconds": round(time.perf_counter() - start, 1),
                  "auc_bp": results["models"]["bp"]["summary"]["auc"]["mean"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--modes", nargs="+", choices=["lazy", "memory"], default=["lazy"])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/study_memory"))
    parser.add_argument("--jsonl", type=Path, default=Path("benchmarks/results/study_memory.jsonl"))
    args = parser.parse_args()
    shipped = Path(os.environ.get("MEDLENS_DATA", "../shared/data")) / "lidc_idri_nodule_vois"
    for volumes in args.volumes:
        root = replicate_vois(shipped, args.work, volumes)
        for mode in args.modes:
            work = args.work / f"run-{volumes}-{mode}"
            work.mkdir(parents=True, exist_ok=True)
            done = subprocess.run([sys.executable, "-c", CHILD, str(root), mode, str(work), str(args.folds)],
                                  capture_output=True, text=True, check=True, env={**os.environ, "MEDLENS_QUIET": "1"})
            record = {"bench": "study_memory", "volumes": volumes, "mode": mode, "folds": args.folds,
                      **json.loads(done.stdout.strip().splitlines()[-1])}
            print(json.dumps(record), flush=True)
            with open(args.jsonl, "a") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
