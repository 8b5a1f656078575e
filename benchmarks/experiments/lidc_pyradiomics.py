"""Do the standard IBSI radiomics features beat the default study's own features on LIDC-IDRI nodules?

PyRadiomics (van Griethuysen et al., Cancer Research 2017) computes the feature families of the Image
Biomarker Standardisation Initiative (Zwanenburg et al., Radiology 2020) inside a mask: 3D shape, first-order
statistics and five texture matrices (GLCM, GLRLM, GLSZM, GLDM, NGTDM), on the original image and on
Laplacian-of-Gaussian (σ = 1, 2, 3 mm) and 8 undecimated wavelet-filtered images: 1,130 features per nodule.
Here they are taken from each nodule's HU crop and readers' mask as the ``lidc_nodules`` builder finds them,
resampled to 1 mm by trilinear interpolation (as in IBSI's reference configurations; PyRadiomics' B-spline
reads past the edge of a two-slice crop and gave such nodules different features from run to run), with a
fixed bin width of 25 HU. Each filter is extracted on its own, so a nodule too thin for one filter keeps the
others; a missing value is filled with the training part's median.

Classifiers, fitted on each fold's train + inner-validation part of the study's own folds
(:func:`medlens.study.make_folds` on ``configs/lidc_nodules.yaml``):

* ``logistic``: quantile-normalised features, L2 logistic regression, C chosen by 5-fold inner CV on AUC;
* ``extra_trees``: 500 trees, leaves ≥ 3, √d features per split;
* ``mean``: the average of the two probabilities.

Prints a Markdown table (fold mean ± s.d. of AUC and of accuracy at 0.5), appends one JSON line per row to
``--out`` and writes ``--predictions`` in the study's ``predictions.csv`` layout, so
``benchmarks/experiments/accuracy_headroom.py`` reads it too.

PyRadiomics is not a medlens dependency: its only release that installs on Python 3.11 is a source archive
that must be built against the installed numpy. Install it into the project's environment first::

    .venv/bin/pip install --no-build-isolation pyradiomics==3.0.1

then run from the repository root (about 5 minutes of extraction on 2 cores, cached in ``--features``)::

    MEDLENS_DATA=../shared/data .venv/bin/python benchmarks/experiments/lidc_pyradiomics.py
"""

from __future__ import annotations

import argparse
import json
import logging
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from lidc_label_ceiling import fold_scores, out_of_fold, result_row  # benchmarks/, the script's folder
from medlens.config import load_config
from medlens.study import load_dataset, make_folds

FILTERS = {"Original": {}, "LoG": {"sigma": [1.0, 2.0, 3.0]}, "Wavelet": {}}
SETTINGS = {"resampledPixelSpacing": [1, 1, 1], "interpolator": "sitkLinear", "binWidth": 25, "label": 1}

MODELS = {
    "logistic": lambda: make_pipeline(
        SimpleImputer(strategy="median"), QuantileTransformer(n_quantiles=200, output_distribution="normal"),
        StandardScaler(), LogisticRegressionCV(Cs=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3], cv=5,
                                               scoring="roc_auc", max_iter=5000)),
    "extra_trees": lambda: make_pipeline(
        SimpleImputer(strategy="median"),
        ExtraTreesClassifier(n_estimators=500, min_samples_leaf=3, max_features="sqrt", random_state=0)),
}


def nodule_features(paths: tuple[Path, Path]) -> dict[str, float]:
    """PyRadiomics features of one nodule (image, mask), one extraction per filter; a failing filter is skipped."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    image_path, mask_path = paths
    image = sitk.Cast(sitk.ReadImage(str(image_path)), sitk.sitkFloat32)  # int16 HU overflows the binning
    mask = sitk.Cast(sitk.ReadImage(str(mask_path)) > 0, sitk.sitkUInt8)
    values: dict[str, float] = {}
    for name, options in FILTERS.items():
        extractor = featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
        extractor.enableAllFeatures()
        extractor.disableAllImageTypes()
        extractor.enableImageTypeByName(name, customArgs=options)
        try:
            result = extractor.execute(image, mask)
        except (ValueError, IndexError, RuntimeError, MemoryError) as error:
            print(f"{image_path.name}: {name} features skipped ({error})", flush=True)
            continue
        values.update({k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")})
    return values


def extract(data, source: Path, workers: int) -> pd.DataFrame:
    """One row of features per nodule of ``data``, in its order (image/<id>.nii.gz, nodule_mask/<id>.nii.gz)."""
    pairs = [(source / "image" / f"{i}.nii.gz", source / "nodule_mask" / f"{i}.nii.gz") for i in data.ids]
    with Pool(workers) as pool:
        rows = pool.map(nodule_features, pairs, chunksize=8)
    return pd.DataFrame(rows, index=list(data.ids)).sort_index(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/lidc_nodules.yaml")
    ap.add_argument("--features", type=Path, default=Path("runs/lidc_pyradiomics_features.csv.gz"),
                    help="feature cache: read if present, written otherwise")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lidc_pyradiomics.jsonl"))
    ap.add_argument("--predictions", type=Path, default=Path("runs/lidc-pyradiomics/predictions.csv"))
    args = ap.parse_args()

    config = load_config(Path(args.config))
    data = load_dataset(config)
    folds = make_folds(data, config, config.protocol.folds)
    if args.features.is_file():
        table = pd.read_csv(args.features, index_col=0).loc[list(data.ids)]
    else:
        table = extract(data, Path(data.meta["source"]), args.workers)
        args.features.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.features)
    table = table.replace([np.inf, -np.inf], np.nan)
    inputs = {"original image (107 features)": table.filter(regex="^original_"), "all filters": table}
    y = data.labels
    fold_of = np.empty(len(y), int)
    for k, fold in enumerate(folds):
        fold_of[fold.test] = k
    print(f"{len(data)} nodules, {len(folds)} folds, {table.shape[1]} features, "
          f"{int(table.isna().any(axis=1).sum())} nodules with a skipped filter\n")
    print("| features | model | AUC | ACC |\n|---|---|---|---|")
    predictions = pd.DataFrame({"id": data.ids, "label": y, "group": data.groups, "fold": fold_of})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as log:
        for label, frame in inputs.items():
            x = frame.to_numpy(float)
            probabilities = {name: out_of_fold(x, y, folds, make) for name, make in MODELS.items()}
            probabilities["mean"] = np.mean(list(probabilities.values()), axis=0)
            for name, p in probabilities.items():
                cells, scores = result_row(*fold_scores(p, y, folds))
                print(f"| {label} | {name} | {cells} |", flush=True)
                log.write(json.dumps({"features": label, "n_features": x.shape[1], "model": name, **scores}) + "\n")
                column = f"pyradiomics_{'original' if label.startswith('original') else 'all'}_{name}"
                predictions[f"{column}_p_malignant"] = p
    args.predictions.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(args.predictions, index=False)


if __name__ == "__main__":
    main()
