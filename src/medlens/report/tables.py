"""Tables of a study's ``results.json``: metrics as rows, models as columns.

Each model column holds its per-fold summary (mean ± std with the Student-t 95% interval, see
:func:`medlens.evaluate.stats.summarize`; for a model trained with several seeds, the mean over seeds and
the seeds' standard deviation, :func:`medlens.evaluate.summaries.average_over_seeds`); a ``reference`` entry in the results (a published design's
figures) becomes one more column with its single values.

Studies that record calibration and operating points (:mod:`medlens.study`) get more rows, after F1:
the pooled out-of-fold ECE before and after temperature scaling (with its bootstrap 95% interval) and
the test-fold sensitivity and specificity at the thresholds chosen on validation data (target
sensitivity, Youden's J). Results without them keep the basic rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from medlens.files import write_csv_atomically, write_text_atomically

#: (row label, key in ``summary`` / ``reference``) in table order; train time is handled apart.
METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("SE", "sensitivity"),
    ("SP", "specificity"),
    ("AR", "accuracy"),
    ("AUC", "auc"),
    ("balanced accuracy", "balanced_accuracy"),
    ("F1", "f1"),
)
TRAIN_TIME_ROW = "train time (s)"
#: Columns of the per-fold table, in order.
FOLD_COLUMNS: tuple[str, ...] = ("fold", "n_test", "sensitivity", "specificity", "accuracy", "auc",
                                 "balanced_accuracy", "f1")


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _fmt(value, digits: int = 3) -> str:
    number = _number(value)
    return "n/a" if math.isnan(number) else f"{number:.{digits}f}"


def _summary_cell(summary: dict) -> str:
    """``"mean ± std [lo, hi]"``, or what of it is known; with several training seeds also
    ``"; seeds s.d. x (n)"``, the spread of the fold mean over seeds."""
    if not summary or math.isnan(_number(summary.get("mean"))):
        return "n/a"
    text = _fmt(summary["mean"])
    if not math.isnan(_number(summary.get("std"))):
        text += f" ± {_fmt(summary['std'])}"
    lo, hi = (summary.get("ci95") or [math.nan, math.nan])[:2]
    if not (math.isnan(_number(lo)) or math.isnan(_number(hi))):
        text += f" [{_fmt(lo)}, {_fmt(hi)}]"
    if "seed_std" in summary:
        n_seeds = summary.get("n_seeds", len(summary.get("seed_means") or []))
        text += f"; seeds s.d. {_fmt(summary['seed_std'])} ({n_seeds})"
    return text


def _calibration_summary(model: dict, key: str) -> dict:
    """The pooled ``key`` of a model's calibration (``ece_before`` / ``ece_after``) with its bootstrap interval;
    when the model was trained with several seeds, the value is their mean, the interval the first seed's, and
    ``seed_std`` / ``n_seeds`` the spread over the seeds (see ``evaluate.summaries.average_over_seeds``)."""
    calibration = model.get("calibration") or {}
    if calibration.get(key) is None:
        return {}
    summary = {"mean": calibration[key], "ci95": calibration.get(f"{key}_ci95") or [math.nan, math.nan]}
    spread = (calibration.get("seed_std") or {}).get(key)
    if spread is not None:
        summary["seed_std"] = spread
        summary["n_seeds"] = len(model.get("training_seeds") or [])
    return summary


def trust_rows(results: dict) -> list[tuple[str, object]]:
    """Rows of calibration and operating points present in ``results``: (label, model_result → summary).

    A summary is a dict with ``mean`` and optionally ``std`` and ``ci95``, as
    :func:`medlens.evaluate.stats.summarize` makes; an empty dict where a model lacks the value.
    """
    models = list((results.get("models") or {}).values())
    rows: list[tuple[str, object]] = []
    calibration = [m.get("calibration") or {} for m in models]
    if any("ece_before" in c for c in calibration):
        bins = next((c.get("n_bins") for c in calibration if c.get("n_bins")), 10)
        rows.append((f"ECE, {bins} bins (pooled)", lambda m: _calibration_summary(m, "ece_before")))
    if any("ece_after" in c for c in calibration):
        rows.append(("ECE after temperature scaling", lambda m: _calibration_summary(m, "ece_after")))
    points = [m.get("operating_points") or {} for m in models]
    if any("target_sensitivity" in p for p in points):
        target = next(p["target_sensitivity"].get("target") for p in points if "target_sensitivity" in p)
        for short, key in (("SE", "sensitivity"), ("SP", "specificity")):
            rows.append((f"{short} at SE≥{target:g} threshold (val)", lambda m, key=key: (
                (m.get("operating_points") or {}).get("target_sensitivity") or {}).get(key) or {}))
    if any("youden" in p for p in points):
        for short, key in (("SE", "sensitivity"), ("SP", "specificity")):
            rows.append((f"{short} at Youden threshold (val)", lambda m, key=key: (
                (m.get("operating_points") or {}).get("youden") or {}).get(key) or {}))
    return rows


def reference_name(results: dict) -> str | None:
    """The display name of the reference column, or None when the results have no reference."""
    reference = results.get("reference")
    if not reference:
        return None
    return str(reference.get("name") or "reference")


def metrics_table(results: dict) -> pd.DataFrame:
    """Display table: rows SE, SP, AR, AUC, balanced accuracy, F1, [:func:`trust_rows`], train time;
    one column per model.

    Model cells read ``"mean ± std [lo, hi]"`` (3 decimals; ``"n/a"`` where undefined); the train time
    cell is ``train_seconds``. The reference column (named after ``reference.name``) shows its single
    values, ``"n/a"`` where the reference does not report the metric.
    """
    extra = trust_rows(results)
    rows = [label for label, _ in METRIC_ROWS] + [label for label, _ in extra] + [TRAIN_TIME_ROW]
    table = pd.DataFrame(index=pd.Index(rows, name="metric"))
    for model, result in results.get("models", {}).items():
        summary = result.get("summary", {})
        cells = [_summary_cell(summary.get(key, {})) for _, key in METRIC_ROWS]
        cells.extend(_summary_cell(get(result)) for _, get in extra)
        cells.append(_fmt(result.get("train_seconds"), 1))
        table[model] = cells
    name = reference_name(results)
    if name is not None:
        reference = results["reference"]
        table[name] = [_fmt(reference.get(key)) for _, key in METRIC_ROWS] + ["n/a"] * (len(extra) + 1)
    return table


def metrics_numeric(results: dict) -> pd.DataFrame:
    """Numeric table for csv: one row per metric, columns ``<model>_mean``, ``_std``, ``_ci_lo``, ``_ci_hi``
    (and ``_seed_std`` for a model trained with several seeds).

    The train time row has ``train_seconds`` as its mean and NaN elsewhere. A ``reference`` column
    holds the reference design's values when the results have one.
    """
    extra = trust_rows(results)
    rows = [label for label, _ in METRIC_ROWS] + [label for label, _ in extra] + [TRAIN_TIME_ROW]
    table = pd.DataFrame(index=pd.Index(rows, name="metric"))
    for model, result in results.get("models", {}).items():
        summary = result.get("summary", {})
        columns = {"mean": [], "std": [], "ci_lo": [], "ci_hi": []}
        entries = [summary.get(key) or {} for _, key in METRIC_ROWS] + [get(result) for _, get in extra]
        if any("seed_std" in entry for entry in entries):
            columns["seed_std"] = []
        for entry in entries:
            lo, hi = (entry.get("ci95") or [math.nan, math.nan])[:2]
            columns["mean"].append(_number(entry.get("mean")))
            columns["std"].append(_number(entry.get("std")))
            columns["ci_lo"].append(_number(lo))
            columns["ci_hi"].append(_number(hi))
            if "seed_std" in columns:
                columns["seed_std"].append(_number(entry.get("seed_std")))
        columns["mean"].append(_number(result.get("train_seconds")))
        for part in columns:
            if part != "mean":
                columns[part].append(math.nan)
        for part, values in columns.items():
            table[f"{model}_{part}"] = values
    if results.get("reference"):
        reference = results["reference"]
        table["reference"] = [_number(reference.get(key)) for _, key in METRIC_ROWS] + [math.nan] * (len(extra) + 1)
    return table


def folds_table(model_result: dict) -> pd.DataFrame:
    """One row per fold of one model: fold, n_test and the fold's metrics (NaN where absent)."""
    records = [{column: fold.get(column, math.nan) for column in FOLD_COLUMNS}
               for fold in model_result.get("folds", [])]
    return pd.DataFrame.from_records(records, columns=list(FOLD_COLUMNS))


def _cell(value) -> str:
    """A fold summary (dict) as ``"mean ± std [lo, hi]"``, a single (pooled) number with 3 decimals."""
    return _summary_cell(value) if isinstance(value, dict) else _fmt(value)


def per_class_table(model_result: dict) -> pd.DataFrame | None:
    """Multiclass: rows = classes, columns = per-class metrics (sensitivity, specificity, auc, f1).

    Reads ``summary.per_class = {label: {metric: value}}`` where a value is either a fold summary
    (:func:`medlens.evaluate.stats.summarize`, shown as ``"mean ± std [lo, hi]"``) or one pooled number;
    None when the model has no per-class entry.
    """
    per_class = model_result.get("summary", {}).get("per_class")
    if not per_class:
        return None
    present = {key for entry in per_class.values() for key in entry}
    known = [key for _, key in METRIC_ROWS if key in present]
    metrics = known + sorted(present - set(known))
    records = {label: {key: _cell(entry.get(key)) for key in metrics} for label, entry in per_class.items()}
    return pd.DataFrame.from_dict(records, orient="index", columns=metrics)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``table`` (index as the first column), cells as text."""
    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for index, row in table.iterrows():
        cells = [str(index)] + [str(v).replace("|", "\\|") for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``table.md`` (:func:`metrics_table`) and ``table.csv`` (:func:`metrics_numeric`) into ``out_dir``.

    Returns the two paths (markdown, csv).
    """
    out = Path(out_dir)
    numeric = metrics_numeric(results)
    return (write_text_atomically(out / "table.md", to_markdown(metrics_table(results))),
            write_csv_atomically(out / "table.csv", numeric, index=True, float_format="%.6g"))
