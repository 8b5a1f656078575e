"""Model cards: what a model is for, what it was trained and tested on, how well and how sure it is.

A card is a plain ``dict`` so that a study (``results.json``) and a model bundle (its manifest) can both
build one and :func:`render_model_card` can turn either into Markdown. The layout follows Mitchell et al.,
"Model Cards for Model Reporting", FAT* 2019 (doi:10.1145/3287560.3287596): intended use, data,
evaluation protocol, metrics with uncertainty, calibration, operating points, subgroups, limitations.

Keys of a card (all optional except ``title``; a missing key is left out of the Markdown, never filled
with invented values):

``title`` : str
    Heading of the card.
``model`` : str
    One line on the model (architecture, inputs).
``intended_use`` : str
    Defaults to :data:`DEFAULT_INTENDED_USE` (research only, not for clinical use) when absent or None.
``data`` : dict
    ``name``, ``source`` (provenance), ``licence``, ``n_samples``, ``class_counts`` (dict label → n or a
    list in label order together with ``labels``), ``checksum`` (md5 of the source files), and any other
    scalar keys, shown as they are.
``protocol`` : str or dict
    A sentence, or a dict shown as ``key: value`` items.
``metrics`` : dict
    name → value, or ``[value, lo, hi]`` (a 95 % confidence interval), or a study summary
    ``{"mean", "std", "ci95"}``.
``calibration`` : dict
    ``ece_before``, ``ece_after``, ``temperature``, ``method``, ``n_bins`` (any subset).
``operating_points`` : dict
    name → dict with ``threshold`` and metrics such as ``sensitivity``/``specificity`` (values as in
    ``metrics``), or name → number.
``subgroups`` : dict
    subgroup → metrics dict (values as in ``metrics``).
``limitations`` : list of str
``extra`` : dict of heading → text
    More sections, in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The intended-use statement of every medlens model unless a card says otherwise.
DEFAULT_INTENDED_USE = ("Research use only. This model is not a medical device, was not validated for "
                        "clinical use and must not be used for diagnosis or treatment of patients.")

#: Limitations every cross-validated study shares; :func:`study_model_card` lists them.
STUDY_LIMITATIONS = (
    "Cross-validation on one data set estimates performance on data like it; it says nothing about other "
    "scanners, sites, populations or acquisition protocols (no external validation).",
    "Confidence intervals over few folds are wide, and folds are not independent samples, so the "
    "Student-t interval is approximate.",
    "Labels carry the uncertainty of their source (e.g. radiologist ratings rather than pathology).",
)

_METRIC_NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "accuracy": "accuracy",
                 "auc": "AUC", "balanced_accuracy": "balanced accuracy", "f1": "F1",
                 "ece": "ECE", "ece_before": "ECE before scaling", "ece_after": "ECE after scaling"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if _is_number(value):
        if isinstance(value, int):
            return str(value)
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return _md(value)


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell or list item (pipes escaped, newlines folded)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_value(value: Any) -> str:
    """One metric as text: ``0.912``, ``0.912 [0.871, 0.953]`` or ``0.912 ± 0.030 [0.871, 0.953]``.

    Accepts a number, a sequence ``[value, lo, hi]`` (or ``[value]``) and a fold summary dict with
    ``mean`` and optional ``std`` and ``ci95``; anything else is shown as text.
    """
    if isinstance(value, Mapping) and "mean" in value:
        text = _num(value.get("mean"))
        std = value.get("std")
        if _is_number(std) and not math.isnan(std):
            text += f" ± {_num(float(std))}"
        ci = value.get("ci95")
        if isinstance(ci, Sequence) and len(ci) == 2 and all(_is_number(v) and not math.isnan(v) for v in ci):
            text += f" [{_num(float(ci[0]))}, {_num(float(ci[1]))}]"
        return text
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) == 3 and all(_is_number(v) for v in values):
            return f"{_num(float(values[0]))} [{_num(float(values[1]))}, {_num(float(values[2]))}]"
        return ", ".join(_num(v) for v in values)
    return _num(value)


def _label(name: str) -> str:
    return _METRIC_NAMES.get(name, name.replace("_", " "))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    return "\n".join(lines)


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    return _table(["metric", "value"], [[_md(_label(k)), format_value(v)] for k, v in metrics.items()])


def _data_section(data: Mapping[str, Any]) -> str:
    names = {"name": "name", "source": "source / provenance", "licence": "licence", "n_samples": "samples",
             "checksum": "checksum (md5)"}
    items = []
    labels = data.get("labels")
    for key, value in data.items():
        if key in ("labels",) or value is None:
            continue
        if key == "class_counts":
            if isinstance(value, Mapping):
                text = ", ".join(f"{_md(k)}: {_num(v)}" for k, v in value.items())
            elif isinstance(labels, Sequence) and len(labels) == len(value):
                text = ", ".join(f"{_md(k)}: {_num(v)}" for k, v in zip(labels, value))
            else:
                text = ", ".join(_num(v) for v in value)
            items.append(f"- **class counts**: {text}")
        elif isinstance(value, (Mapping, list, tuple)):
            items.append(f"- **{_md(names.get(key, key))}**: {format_value(value)}")
        else:
            items.append(f"- **{_md(names.get(key, key.replace('_', ' ')))}**: {_num(value)}")
    return "\n".join(items)


def _calibration_section(calibration: Mapping[str, Any]) -> str:
    names = {"method": "method", "n_bins": "bins", "ece_before": "ECE before scaling (pooled out-of-fold)",
             "ece_after": "ECE after scaling (pooled out-of-fold)", "temperature": "temperature (over folds)",
             "pooled_auc_after": "pooled out-of-fold AUC after scaling"}
    items = [f"- **{_md(names.get(k, k.replace('_', ' ')))}**: {format_value(v)}"
             for k, v in calibration.items() if v is not None]
    return "\n".join(items)


def _operating_points_section(points: Mapping[str, Any]) -> str:
    simple = {k: v for k, v in points.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in points.items() if isinstance(v, Mapping)}
    parts = []
    if nested:
        columns: list[str] = []
        for entry in nested.values():
            columns.extend(c for c in entry if c not in columns)
        rows = [[_md(name)] + [format_value(entry[c]) if c in entry else "n/a" for c in columns]
                for name, entry in nested.items()]
        parts.append(_table(["operating point"] + [_label(c) for c in columns], rows))
    if simple:
        parts.append("\n".join(f"- **{_md(k)}**: {format_value(v)}" for k, v in simple.items()))
    return "\n\n".join(parts)


def _subgroups_section(subgroups: Mapping[str, Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for entry in subgroups.values():
        columns.extend(c for c in entry if c not in columns)
    rows = [[_md(name)] + [format_value(entry[c]) if c in entry else "n/a" for c in columns]
            for name, entry in subgroups.items()]
    return _table(["subgroup"] + [_label(c) for c in columns], rows)


def render_model_card(card: Mapping[str, Any], level: int = 1) -> str:
    """Markdown text of a model card.

    Parameters
    ----------
    card : dict
        See the module docstring for the keys. ``intended_use`` falls back to
        :data:`DEFAULT_INTENDED_USE`; any other missing (or None / empty) key is omitted.
    level : int
        Heading level of the title (1 → ``#``); sections are one level below.

    Returns
    -------
    str
        The card as Markdown, ending in a newline.
    """
    h1, h2 = "#" * level, "#" * (level + 1)
    parts = [f"{h1} {_md(card.get('title') or 'Model card')}"]
    if card.get("model"):
        parts.append(_md(card["model"]))
    parts.append(f"{h2} Intended use\n\n{card.get('intended_use') or DEFAULT_INTENDED_USE}")
    if card.get("data"):
        parts.append(f"{h2} Data\n\n{_data_section(card['data'])}")
    protocol = card.get("protocol")
    if protocol:
        text = protocol if isinstance(protocol, str) else "\n".join(
            f"- **{_md(k)}**: {_num(v)}" for k, v in protocol.items() if v is not None)
        parts.append(f"{h2} Evaluation protocol\n\n{text}")
    if card.get("metrics"):
        parts.append(f"{h2} Metrics\n\n{_metrics_table(card['metrics'])}")
    if card.get("calibration"):
        parts.append(f"{h2} Calibration\n\n{_calibration_section(card['calibration'])}")
    if card.get("operating_points"):
        parts.append(f"{h2} Operating points\n\n{_operating_points_section(card['operating_points'])}")
    if card.get("subgroups"):
        parts.append(f"{h2} Subgroups\n\n{_subgroups_section(card['subgroups'])}")
    if card.get("limitations"):
        parts.append(f"{h2} Limitations\n\n" + "\n".join(f"- {_md(item)}" for item in card["limitations"]))
    for heading, text in (card.get("extra") or {}).items():
        parts.append(f"{h2} {_md(heading)}\n\n{text}")
    return "\n\n".join(parts) + "\n"


def _protocol_sentence(protocol: Mapping[str, Any]) -> str:
    kind = protocol.get("kind")
    if kind == "kfold":
        grouped = protocol.get("grouped_by")
        text = (f"{protocol.get('folds', '?')}-fold cross-validation, stratified by class"
                + (f", grouped by {grouped}" if grouped else ""))
    elif kind == "official":
        text = "the dataset's official train / validation / test split"
    else:
        text = str(kind or "unknown protocol")
    extras = []
    if protocol.get("inner_val_fraction"):
        extras.append(f"an inner validation split of {protocol['inner_val_fraction']:.0%} of each training "
                      "part for early stopping, calibration and threshold choice")
    if protocol.get("calibration") and protocol["calibration"] != "none":
        extras.append(f"{protocol['calibration']} scaling fitted on that validation split")
    if protocol.get("seed") is not None:
        extras.append(f"seed {protocol['seed']}")
    if protocol.get("quick"):
        extras.append("QUICK smoke run (subsampled, fewer folds): figures are not representative")
    return text[0].upper() + text[1:] + ("; " + "; ".join(extras) if extras else "") + "."


def study_model_card(results: Mapping[str, Any], model_key: str) -> dict[str, Any]:
    """The card of one model of a study, built from its ``results.json`` content.

    Parameters
    ----------
    results : dict
        A study's results (:func:`medlens.study.run_study`).
    model_key : str
        Key under ``results["models"]``.

    Returns
    -------
    dict
        A card for :func:`render_model_card`: title, model, intended use, data, protocol, metrics
        (per-fold summaries with their 95 % CI, and the pooled AUC with DeLong's CI), calibration and
        operating points when the study recorded them, subgroups when it has them, limitations.
    """
    models = results.get("models") or {}
    if model_key not in models:
        raise KeyError(f"model {model_key!r} is not in the study's results (models: {sorted(models)})")
    entry = models[model_key]
    data = results.get("data") or {}
    provenance = results.get("provenance") or {}
    task = results.get("task") or {}
    card: dict[str, Any] = {"title": f"{results.get('title') or results.get('study') or 'study'}: {model_key}"}
    described = entry.get("description") or entry.get("model")
    if described:
        n = entry.get("n_parameters")
        card["model"] = str(described) + (f" ({int(n):,} parameters)" if n else "")
    card["intended_use"] = DEFAULT_INTENDED_USE
    card_data: dict[str, Any] = {}
    for key, target in (("name", "name"), ("origin", "source"), ("licence", "licence"),
                        ("citation", "citation"), ("source", "local copy"), ("n_samples", "n_samples"),
                        ("n_groups", "patients"), ("label_rule", "label rule")):
        if data.get(key) is not None:
            card_data[target] = data[key]
    if data.get("class_counts") is not None:
        card_data["class_counts"] = data["class_counts"]
        if task.get("labels"):
            card_data["labels"] = task["labels"]
    if provenance.get("data_md5"):
        card_data["checksum"] = provenance["data_md5"]
    if card_data:
        card["data"] = card_data
    if results.get("protocol"):
        card["protocol"] = _protocol_sentence(results["protocol"])
    summary = entry.get("summary") or {}
    metrics: dict[str, Any] = {f"{_label(k)} (fold mean)": v for k, v in summary.items()
                               if isinstance(v, Mapping) and "mean" in v}
    pooled = entry.get("pooled") or {}
    if pooled.get("auc") is not None:
        ci = pooled.get("auc_ci95")
        metrics["AUC (pooled, DeLong CI)"] = [pooled["auc"], *ci] if ci else pooled["auc"]
    if metrics:
        card["metrics"] = metrics
    if entry.get("calibration"):
        calibration = dict(entry["calibration"])
        for key in ("ece_before", "ece_after"):  # value and its bootstrap interval as [value, lo, hi]
            ci = calibration.pop(f"{key}_ci95", None)
            if calibration.get(key) is not None and ci:
                calibration[key] = [calibration[key], *ci]
        calibration.pop("temperatures", None)  # per-fold values; the summary stays under "temperature"
        card["calibration"] = calibration
    if entry.get("operating_points"):
        points = {}
        for name, point in entry["operating_points"].items():
            if isinstance(point, Mapping):
                points[name] = {k: point[k] for k in ("target", "threshold", "sensitivity", "specificity",
                                                      "pooled_sensitivity", "pooled_specificity") if k in point}
            else:
                points[name] = point
        card["operating_points"] = points
    if entry.get("subgroups"):
        card["subgroups"] = entry["subgroups"]
    card["limitations"] = list(STUDY_LIMITATIONS)
    if (results.get("protocol") or {}).get("quick"):
        card["limitations"].insert(0, "Quick smoke run: subsampled data and fewer folds; not a measurement.")
    return card


def study_model_cards(results: Mapping[str, Any]) -> str:
    """Markdown with one card section per model of a study (``model_card.md``)."""
    title = results.get("title") or results.get("study") or "study"
    parts = [f"# Model cards: {_md(title)}",
             "One card per model of the study; every figure is computed on held-out test folds."]
    parts.extend(render_model_card(study_model_card(results, key), level=2).rstrip("\n")
                 for key in (results.get("models") or {}))
    return "\n\n".join(parts) + "\n"
