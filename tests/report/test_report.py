"""Tables, figures and the HTML report from results made by really cross-validating two sklearn models."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from realdata import need
from medlens.evaluate import metrics, splits, stats
from medlens.report import figures, html, tables

FOLD_KEYS = ("sensitivity", "specificity", "accuracy", "auc", "balanced_accuracy", "f1")


def cross_validate(x, y, groups, labels, models: dict, k: int, title: str) -> tuple[dict, dict]:
    """A ``results.json``-shaped dict and out-of-fold predictions, as a study run makes them."""
    folds = splits.kfold_splits(y, groups, k=k, seed=0)
    results = {"study": "report-test", "title": title,
               "task": {"kind": "binary" if len(labels) == 2 else "multiclass", "labels": labels},
               "protocol": {"kind": "kfold", "folds": k, "grouped_by": None if groups is None else "patient",
                            "seed": 0},
               "models": {}, "provenance": {"config": {"data": {"name": "test"}, "folds": k}, "data_md5": "",
                                            "versions": {"numpy": np.__version__}, "seed": 0, "wall_seconds": 0.0}}
    oof = {}
    for name, make in models.items():
        p = np.zeros((len(y), len(labels)))
        rows, started = [], time.perf_counter()
        for i, (train, test) in enumerate(folds):
            p[test] = make().fit(x[train], y[train]).predict_proba(x[test])
            m = metrics.classification_metrics(y[test], p[test], labels)
            rows.append({"fold": i, "n_test": int(test.size), **{key: m[key] for key in FOLD_KEYS}, "_m": m})
        pooled = metrics.classification_metrics(y, p, labels)
        summary = {key: stats.summarize([r[key] for r in rows]) for key in FOLD_KEYS}
        if len(labels) > 2:
            summary["per_class"] = {c: {key: stats.summarize([r["_m"]["per_class"][c][key] for r in rows])
                                        for key in ("sensitivity", "specificity", "auc", "f1")} for c in labels}
        entry = {"summary": summary,
                 "pooled": {"auc": pooled["auc"], "confusion": pooled["confusion"],
                            "sensitivity": pooled["sensitivity"], "specificity": pooled["specificity"],
                            "accuracy": pooled["accuracy"]},
                 "folds": [{k_: v for k_, v in r.items() if k_ != "_m"} for r in rows],
                 "train_seconds": time.perf_counter() - started, "description": f"scikit-learn {name}",
                 "n_parameters": 0}
        if len(labels) == 2:
            entry["pooled"]["auc_ci95"] = list(stats.delong_auc_ci(y, p[:, 1]))
        results["models"][name] = entry
        oof[name] = {"y_true": y, "p": p}
    results["provenance"]["wall_seconds"] = sum(m["train_seconds"] for m in results["models"].values())
    return results, oof


@pytest.fixture(scope="module")
def breast_study(data_root):
    archive = np.load(need(data_root, "medmnist/breastmnist.npz"))
    images = np.concatenate([archive[f"{s}_images"] for s in ("train", "val", "test")]) / 255.0
    x = images.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(images), -1)
    y = np.concatenate([archive[f"{s}_labels"] for s in ("train", "val", "test")]).ravel().astype(int)
    results, oof = cross_validate(
        x, y, None, ["malignant", "normal/benign"],
        {"logreg": lambda: LogisticRegression(C=0.05, max_iter=3000),
         "forest": lambda: RandomForestClassifier(n_estimators=40, random_state=0, n_jobs=1)},
        k=5, title="BreastMNIST <script>alert(1)</script> & co")
    results["reference"] = {"name": "reference design", "sensitivity": 0.897, "specificity": 0.915,
                            "accuracy": 0.927}
    return results, oof


@pytest.fixture(scope="module")
def lidc_study(data_root):
    """3 malignancy classes of the real LIDC nodules from their radiologist characteristics, grouped by patient."""
    table = pd.read_csv(need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv"))
    columns = ["diameter_mm", "Lobulation_value", "Margin_value", "Sphericity_value", "Spiculation_value",
               "Subtlety_value", "Texture_value"]
    x = table[columns].to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    y = np.digitize(table["Malignancy_value"].to_numpy(), [2.5, 3.5])
    return cross_validate(x, y, table["patient_id"].to_numpy(), ["low", "indeterminate", "high"],
                          {"logreg": lambda: LogisticRegression(max_iter=2000), "bayes": GaussianNB},
                          k=5, title="LIDC malignancy, 3 classes")


def test_tables_rows_columns_and_values(breast_study, tmp_path):
    results, _ = breast_study
    table = tables.metrics_table(results)
    assert list(table.index) == ["SE", "SP", "AR", "AUC", "balanced accuracy", "F1", "train time (s)"]
    assert list(table.columns) == ["logreg", "forest", "reference design"]
    se = results["models"]["logreg"]["summary"]["sensitivity"]
    assert table.loc["SE", "logreg"] == (f"{se['mean']:.3f} ± {se['std']:.3f} "
                                         f"[{se['ci95'][0]:.3f}, {se['ci95'][1]:.3f}]")
    assert table.loc["AR", "reference design"] == "0.927" and table.loc["AUC", "reference design"] == "n/a"

    md_path, csv_path = tables.write_tables(results, tmp_path)
    assert md_path.name == "table.md" and csv_path.name == "table.csv"
    md = md_path.read_text()
    assert md.count("\n") == 2 + 7 and "| metric | logreg | forest | reference design |" in md
    csv = pd.read_csv(csv_path, index_col="metric")
    assert list(csv.columns) == [f"{m}_{p}" for m in ("logreg", "forest") for p in ("mean", "std", "ci_lo", "ci_hi")] \
        + ["reference"]
    for model in ("logreg", "forest"):
        summary = results["models"][model]["summary"]
        for row, key in tables.METRIC_ROWS:
            assert csv.loc[row, f"{model}_mean"] == pytest.approx(summary[key]["mean"], rel=1e-5)
            assert csv.loc[row, f"{model}_ci_hi"] == pytest.approx(summary[key]["ci95"][1], rel=1e-5)
        assert csv.loc["train time (s)", f"{model}_mean"] == pytest.approx(
            results["models"][model]["train_seconds"], rel=1e-5)
    assert csv.loc["SE", "reference"] == 0.897 and np.isnan(csv.loc["AUC", "reference"])


def _check_png(path):
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(path).convert("L"))
    assert min(pixels.shape) > 300 and pixels.std() > 10  # a drawn figure, not a blank canvas


def _figures(results, oof, folder):
    return {"Sensitivity, specificity and accuracy": figures.plot_comparison(results, folder / "comparison.png"),
            "ROC": figures.plot_roc(oof, folder / "roc.png"),
            "Confusion": figures.plot_confusion(results, folder / "confusion.png"),
            "Reliability": figures.plot_reliability(oof, folder / "reliability.png")}


def test_figures_binary(breast_study, tmp_path):
    results, oof = breast_study
    for path in _figures(results, oof, tmp_path).values():
        _check_png(path)
    partial = {name: {"y_true": e["y_true"], "p": np.where(np.arange(len(e["p"]))[:, None] < 300, np.nan, e["p"])}
               for name, e in oof.items()}  # e.g. an official split: only the test rows have predictions
    _check_png(figures.plot_roc(partial, tmp_path / "roc_partial.png"))
    _check_png(figures.plot_reliability(partial, tmp_path / "reliability_partial.png"))


def test_html_report_is_self_contained_and_escaped(breast_study, tmp_path):
    results, oof = breast_study
    drawn = _figures(results, oof, tmp_path / "fig")
    page_path = html.write_report(results, tmp_path, drawn,
                                  extra_sections=[("Notes", "first <b>paragraph</b>\n\nsecond paragraph")])
    assert page_path == tmp_path / "report.html"
    page = page_path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<p>first &lt;b&gt;paragraph&lt;/b&gt;</p><p>second paragraph</p>" in page
    assert "not a medical device" in page and "Limitations" in page
    for model, result in results["models"].items():
        assert f"<h3>{model}</h3>" in page
        assert page.count(f"<td>{result['folds'][-1]['n_test']}</td>") >= 1
    assert f"{results['models']['forest']['pooled']['auc']:.3f}" in page
    assert "folds: 5" in page and f"<dd>{np.__version__}</dd>" in page  # config as YAML, versions



def test_tables_page_embeds_tables_and_figures(breast_study, tmp_path):
    results, oof = breast_study
    drawn = _figures(results, oof, tmp_path / "fig")
    frame = pd.DataFrame({"model <x>": ["a & b"], "AUC": [0.91234]})
    path = html.write_tables_page("GAN <check>", {"Comparison": frame}, {"ROC": drawn["ROC"]},
                                  tmp_path / "page" / "index.html", notes="one\n\ntwo")
    page = path.read_text(encoding="utf-8")
    assert "<h1>GAN &lt;check&gt;</h1><p>one</p><p>two</p><h2>Comparison</h2>" in page
    assert "<th>model &lt;x&gt;</th>" in page and "<td>a &amp; b</td><td>0.912</td>" in page
    assert page.count('src="data:image/png;base64,') == 1 and "<figcaption>ROC</figcaption>" in page

def test_multiclass_tables_and_figures(lidc_study, tmp_path):
    results, oof = lidc_study
    per_class = tables.per_class_table(results["models"]["bayes"])
    assert list(per_class.index) == ["low", "indeterminate", "high"]
    assert list(per_class.columns) == ["sensitivity", "specificity", "auc", "f1"]
    assert "reference" not in tables.metrics_numeric(results).columns
    y, p = oof["bayes"]["y_true"], oof["bayes"]["p"]
    pooled = metrics.classification_metrics(y, p, results["task"]["labels"])["per_class"]
    as_pooled = tables.per_class_table({"summary": {"per_class": pooled}})  # one pooled number per cell
    assert as_pooled.loc["high", "auc"] == f"{pooled['high']['auc']:.3f}"
    for path in _figures(results, oof, tmp_path).values():
        _check_png(path)
    page = html.write_report(results, tmp_path, {}).read_text(encoding="utf-8")
    assert "<th>indeterminate</th>" in page and "data:image" not in page


def _with_trust(results, oof):
    """``results`` plus calibration and operating points measured on the real out-of-fold predictions:
    even rows act as the validation set, odd rows as the test set."""
    from copy import deepcopy

    from medlens.evaluate.calibration import expected_calibration_error, temperature_scale
    from medlens.evaluate.operating_points import operating_points

    results = deepcopy(results)
    for name, entry in results["models"].items():
        y, p = oof[name]["y_true"], oof[name]["p"]
        val, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
        scaled, temperature = temperature_scale(p[val], y[val], p[test])
        entry["calibration"] = {"method": "temperature", "n_bins": 10,
                                "ece_before": expected_calibration_error(y[test], p[test, 1]),
                                "ece_before_ci95": [0.01, 0.2],
                                "ece_after": expected_calibration_error(y[test], scaled[:, 1]),
                                "temperature": stats.summarize([temperature]), "temperatures": [temperature]}
        points = operating_points(y[val], p[val], y[test], p[test], target_sensitivity=0.9)
        entry["operating_points"] = {k: {key: (stats.summarize([v]) if key not in ("target", "error") else v)
                                         for key, v in point.items()} for k, point in points.items()}
    return results


def test_tables_with_calibration_and_operating_points(breast_study):
    results = _with_trust(*breast_study)
    table = tables.metrics_table(results)
    assert list(table.index) == ["SE", "SP", "AR", "AUC", "balanced accuracy", "F1", "ECE, 10 bins (pooled)",
                                 "ECE after temperature scaling", "SE at SE≥0.9 threshold (val)",
                                 "SP at SE≥0.9 threshold (val)", "SE at Youden threshold (val)",
                                 "SP at Youden threshold (val)", "train time (s)"]
    calibration = results["models"]["forest"]["calibration"]
    assert table.loc["ECE, 10 bins (pooled)", "forest"] == f"{calibration['ece_before']:.3f} [0.010, 0.200]"
    assert table.loc["ECE after temperature scaling", "forest"] == f"{calibration['ece_after']:.3f}"
    sp = results["models"]["logreg"]["operating_points"]["target_sensitivity"]["specificity"]["mean"]
    assert table.loc["SP at SE≥0.9 threshold (val)", "logreg"] == f"{sp:.3f}"
    assert table.loc["SP at Youden threshold (val)", "reference design"] == "n/a"
    numeric = tables.metrics_numeric(results)
    assert numeric.loc["SP at SE≥0.9 threshold (val)", "logreg_mean"] == pytest.approx(sp)
    assert numeric.loc["ECE, 10 bins (pooled)", "forest_ci_hi"] == pytest.approx(0.2)


def test_render_model_card_omits_what_is_missing():
    from medlens.report.model_card import DEFAULT_INTENDED_USE, render_model_card

    text = render_model_card({"title": "Nodule CNN", "metrics": {"auc": [0.91, 0.88, 0.94], "sensitivity": 0.8}})
    assert text.startswith("# Nodule CNN\n") and DEFAULT_INTENDED_USE in text
    assert "| AUC | 0.910 [0.880, 0.940] |" in text and "| sensitivity | 0.800 |" in text
    for absent in ("## Data", "## Calibration", "## Operating points", "## Subgroups", "## Limitations",
                   "## Evaluation protocol"):
        assert absent not in text
    full = render_model_card({
        "title": "t", "intended_use": "Teaching only.",
        "data": {"name": "montgomery", "licence": "NLM", "n_samples": 138, "class_counts": {"normal": 80, "tb": 58},
                 "checksum": "abc"},
        "protocol": {"kind": "kfold", "folds": 5},
        "calibration": {"ece_before": 0.08, "ece_after": [0.03, 0.02, 0.05], "temperature": 1.7},
        "operating_points": {"se95": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.6}},
        "subgroups": {"sex=F": {"n": 60, "auc": 0.9}, "sex=M": {"n": 78, "auc": 0.85, "sensitivity": 0.7}},
        "limitations": ["one site | one scanner"]})
    assert "Teaching only." in full and DEFAULT_INTENDED_USE not in full
    assert "- **class counts**: normal: 80, tb: 58" in full and "- **licence**: NLM" in full
    assert "- **ECE after scaling (pooled out-of-fold)**: 0.030 [0.020, 0.050]" in full
    assert "| se95 | 0.200 | 0.950 | 0.600 |" in full
    assert "| sex=F | 60 | 0.900 | n/a |" in full  # a value a subgroup lacks is n/a, not invented
    assert "- one site \\| one scanner" in full


def test_study_model_card_and_html(breast_study, tmp_path):
    from medlens.report.model_card import render_model_card, study_model_card, study_model_cards

    results = _with_trust(*breast_study)
    card = study_model_card(results, "forest")
    assert card["title"].endswith(": forest") and card["limitations"]
    assert "subgroups" not in card and "data" not in card  # these results have neither: nothing is invented
    assert card["metrics"]["AUC (pooled, DeLong CI)"][0] == results["models"]["forest"]["pooled"]["auc"]
    assert card["calibration"]["ece_before"][1:] == [0.01, 0.2] and "temperatures" not in card["calibration"]
    assert set(card["operating_points"]) == {"target_sensitivity", "youden"}
    text = render_model_card(card)
    assert "## Calibration" in text and "## Operating points" in text
    with pytest.raises(KeyError, match="forest"):
        study_model_card(results, "absent")
    cards = study_model_cards(results)
    assert cards.count("### Intended use") == 2
    page = html.write_report(results, tmp_path, {}).read_text(encoding="utf-8")
    assert "<h2>Model card</h2>" in page and "operating point (threshold chosen on validation)" in page
    assert page.count("ECE after temperature scaling") == 1  # the results table row
