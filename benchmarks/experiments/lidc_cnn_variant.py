"""The default study's 3D CNN with some of its settings changed, everything else as in the default study.

Runs the default LIDC study (``configs/lidc_nodules.yaml``: same data, folds, seed, calibration and report)
with only its ``cnn3d`` model, its ``params`` updated by each ``--set KEY=VALUE`` (VALUE read as YAML), under
the model id ``--id``. Compare the result with the ``cnn3d`` column of a default study run, fold by fold::

    .venv/bin/python benchmarks/experiments/compare_runs.py runs/DEFAULT runs/VARIANT --model cnn3d --second-model ID

Variants measured (``benchmarks/RESULTS.md``), each about 9–20 minutes on 2 cores:

- ``--set auxiliary_weight=0.5 --id cnn3d_aux``: the network also regresses the readers' eight semantic
  ratings of each nodule (loss CE + λ·MSE, Shen et al. 2019); those outputs are cut off afterwards, so the
  model still predicts from the image alone.
- ``--set arch=resnet --id cnn3d_resnet``: the CIFAR-style ResNet instead of the compact CNN.
- ``--set width=32 --id cnn3d_w32``: the compact CNN with twice the channels.
- no ``--set``, under another machine setting: ``ATEN_CPU_CAPABILITY=avx2`` (torch's AVX2 kernels instead of
  AVX-512, as on another CPU) or ``OMP_NUM_THREADS=1`` (one torch thread instead of two): the same model, seed
  and data; what changes is the machine's rounding (issue #23: how much of a rerun's difference is machine noise).

Usage::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/experiments/lidc_cnn_variant.py --set auxiliary_weight=0.5 \\
        --id cnn3d_aux --out runs/lidc-aux
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from medlens.config import default_config_path, load_config
from medlens.study import run_study


def setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → (key, YAML value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                    help="a cnn3d parameter to change (repeat for several; none: the default cnn3d)")
    ap.add_argument("--id", required=True, help="model id of the variant in the report")
    ap.add_argument("--out", type=Path, required=True, help="study output folder")
    args = ap.parse_args()

    config = load_config(default_config_path())
    cnn = next(m for m in config.models if m.key == "cnn3d")
    changes = dict(args.set)
    variant = cnn.model_copy(deep=True, update={"id": args.id})
    variant.params.update(changes)
    if changes:
        variant.description = f"{cnn.description}; changed: {', '.join(f'{k}={v}' for k, v in changes.items())}"
    run_study(config.model_copy(update={"models": [variant]}), args.out, quiet=True)


if __name__ == "__main__":
    main()
