"""Raw DICOM to decision on LIDC-IDRI patients the bundles never saw (issue 7 target).

Trains bundles of the default study's ``bp_radiomics`` and ``cnn3d`` models on the nodule VOIs of
every patient except LIDC-IDRI-0001 and -0003 (the patients whose DICOM series are in the data
folder; -0002 has no VOI), then runs ``medlens predict`` on the three raw series, each nodule found
by its LIDC XML (50 % reader consensus). Prints one Markdown table.

Run: ``MEDLENS_DATA=../shared/data python benchmarks/quality/bench_dicom_predict.py [--models bp_radiomics cnn3d]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from medlens.deploy.bundle import load_bundle
from medlens.config import load_config
from medlens.deploy.predict import predict_files
from medlens.deploy.train import train_bundle

CONFIG = Path(__file__).parents[2] / "src/medlens/configs/lidc_nodules.yaml"
HELD_OUT = ["LIDC-IDRI-0001", "LIDC-IDRI-0003"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bp_radiomics", "cnn3d"])
    args = parser.parse_args()
    root = Path(os.environ.get("MEDLENS_DATA", "../shared/data")).resolve()
    series = sorted(root.glob("lidc_idri_ct*/LIDC-IDRI-000[123]/*/*"))
    config = load_config(CONFIG)
    print("| model | threshold (rule) | T | train s | predict s (3 series) | series | readers' ratings | p malignant | call |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_id in args.models:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            manifest = train_bundle(config, Path(folder), model_id, threshold="sensitivity:0.95", calibrate=True,
                                    quiet=True, exclude_groups=HELD_OUT)
            trained = time.perf_counter() - start
            bundle = load_bundle(folder)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the XML beside each series is reported as a skipped file
                table, _ = predict_files(bundle, series)
            predicted = time.perf_counter() - start
        for row in table.itertuples():
            patient = next(p for p in Path(row.path).parts if p.startswith("LIDC-IDRI-"))
            ratings = row.roi.split("ratings ")[-1].rstrip(")") if isinstance(row.roi, str) else row.error
            print(f"| {model_id} | {manifest['threshold']:.3f} (SE ≥ 0.95 on val) | {manifest['temperature']:.2f} "
                  f"| {trained:.1f} | {predicted:.2f} | {patient} | {ratings} | {row.p_malignant:.3f} | {row.label} |")


if __name__ == "__main__":
    main()
