"""Print the calibration and operating-point table of a finished study (its results.json and predictions.csv).

Run: ``python benchmarks/experiments/summarize_calibration.py runs/lidc_cal`` (the table of results/calibration.md).
"""
import json
import sys

import pandas as pd
from sklearn.metrics import roc_auc_score

out = sys.argv[1]
r = json.load(open(f"{out}/results.json"))
f = pd.read_csv(f"{out}/predictions.csv")
y = f["label"].to_numpy()
print("| model | ECE before [95% CI] | ECE after [95% CI] | T (fold mean ± sd) | ≤ 0.05 after | pooled AUC raw | pooled AUC scaled | SE at SE≥0.95 thr (fold mean [CI]) | SP at SE≥0.95 thr (fold mean [CI]) | pooled SE / SP | SE / SP at Youden (fold mean) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k, e in r["models"].items():
    c = e["calibration"]; op = e["operating_points"]; t = op["target_sensitivity"]; yj = op["youden"]
    raw = f[f"{k}_p_malignant"].to_numpy(); cal = f[f"{k}_calibrated_p_malignant"].to_numpy()
    s = lambda d: f"{d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
    print(f"| {k} | {c['ece_before']:.3f} [{c['ece_before_ci95'][0]:.3f}, {c['ece_before_ci95'][1]:.3f}] "
          f"| {c['ece_after']:.3f} [{c['ece_after_ci95'][0]:.3f}, {c['ece_after_ci95'][1]:.3f}] "
          f"| {c['temperature']['mean']:.2f} ± {c['temperature']['std']:.2f} | {'yes' if c['ece_after'] <= 0.05 else 'no'} "
          f"| {roc_auc_score(y, raw):.3f} | {roc_auc_score(y, cal):.3f} "
          f"| {s(t['sensitivity'])} | {s(t['specificity'])} | {t['pooled_sensitivity']:.3f} / {t['pooled_specificity']:.3f} "
          f"| {yj['sensitivity']['mean']:.3f} / {yj['specificity']['mean']:.3f} |")
print("wall", r["provenance"]["wall_seconds"], {k: e["train_seconds"] for k, e in r["models"].items()})
