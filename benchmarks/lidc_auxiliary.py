"""The default study's 3D CNN trained with the readers' semantic ratings as auxiliary targets.

Runs the default LIDC study (``configs/lidc_nodules.yaml``: same data, folds, seed, calibration and report)
with only its ``cnn3d`` model, given ``auxiliary_weight`` λ: during training the network also regresses
the readers' eight semantic ratings of each nodule (calcification, internal structure, lobulation, margin,
sphericity, spiculation, subtlety, texture; loss CE + λ·MSE, Shen et al. 2019), and those outputs are cut
off afterwards, so the model still predicts from the image alone. Compare its ``cnn3d_aux`` column with the
``cnn3d`` column of a default study run (λ = 0). About 11 minutes on 2 cores::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/lidc_auxiliary.py --weight 0.5 --out runs/lidc-aux-0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medlens.config import default_config_path, load_config
from medlens.study import run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weight", type=float, default=0.5, help="auxiliary_weight λ of the cnn3d model")
    ap.add_argument("--out", type=Path, required=True, help="study output folder")
    args = ap.parse_args()

    config = load_config(default_config_path())
    cnn = next(m for m in config.models if m.key == "cnn3d")
    aux = cnn.model_copy(deep=True, update={"id": "cnn3d_aux"})
    aux.params["auxiliary_weight"] = args.weight
    aux.description = f"{cnn.description}; also learns the readers' 8 semantic ratings (auxiliary_weight {args.weight})"
    run_study(config.model_copy(update={"models": [aux]}), args.out, quiet=True)


if __name__ == "__main__":
    main()
