"""A study's report as one self-contained HTML file.

Everything is inline: the stylesheet is a ``<style>`` block and each figure is embedded as a base64
``data:`` URI, so ``report.html`` opens offline, can be mailed or archived alone, and fetches nothing.
All text from the results (names, config values, extra sections) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from medlens.errors import MissingPathError, UnreadableFileError
from medlens.files import write_text_atomically
from medlens.report.model_card import DEFAULT_INTENDED_USE, STUDY_LIMITATIONS, format_value, study_model_card
from medlens.report.tables import folds_table, metrics_table, per_class_table

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1b1b1b; background: #ffffff; max-width: 1100px; margin: 2rem auto; padding: 0 1.2rem;
       line-height: 1.5; font-size: 16px; }
h1 { font-size: 1.8rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid #0072B2; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
.subtitle { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef4f9; }
tbody tr:nth-child(even) { background: #f7f7f7; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
figcaption { color: #444; font-size: 0.9rem; }
pre { background: #f5f5f5; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
.extra p { white-space: pre-wrap; }
.note { background: #fff6e0; border-left: 4px solid #E69F00; padding: 0.6rem 0.9rem; }
"""


def _text(value) -> str:
    """Escaped display text of a cell value: floats with 3 decimals, NaN and None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return escape(str(value))


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    """An escaped HTML table of ``frame``."""
    head = ([escape(str(frame.index.name or ""))] if index else []) + [escape(str(c)) for c in frame.columns]
    rows = []
    for label, *values in frame.itertuples(index=True, name=None):  # keeps each column's type (ints stay ints)
        cells = ([f"<th>{escape(str(label))}</th>"] if index else []) + [f"<td>{_text(v)}</td>" for v in values]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _definitions(items: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{_text(v)}</dd>" for k, v in items) + "</dl>"


def _paragraphs(text: str) -> str:
    blocks = [block.strip() for block in str(text).split("\n\n") if block.strip()]
    return "".join(f"<p>{escape(block)}</p>" for block in blocks)


def _data_uri(path: Path) -> str:
    if not path.is_file():
        raise MissingPathError(path, "figure file")
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise UnreadableFileError(path, f"figure format {path.suffix!r} cannot be embedded; use one of {sorted(_MIME)}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _class_counts(results: dict) -> list[tuple[str, int]] | None:
    """(label, number of samples) from the first pooled confusion matrix (its row sums)."""
    labels = list(results.get("task", {}).get("labels") or [])
    for result in results.get("models", {}).values():
        confusion = result.get("pooled", {}).get("confusion")
        if confusion:
            names = labels if len(labels) == len(confusion) else [str(c) for c in range(len(confusion))]
            return [(name, int(sum(row))) for name, row in zip(names, confusion)]
    return None


def _protocol_text(protocol: dict) -> str:
    """One sentence for the protocol of ``results.json``."""
    kind = protocol.get("kind")
    if kind == "kfold":
        grouped = protocol.get("grouped_by")
        return (f"{protocol.get('folds', '?')}-fold cross-validation, stratified by class"
                + (f", grouped by {grouped} (no {grouped} in both train and test of a fold)" if grouped else ""))
    if kind == "official":
        repeats = protocol.get("repeats") or 1
        return ("the dataset's official train / validation / test split"
                + (f", trained {repeats} times with different seeds" if repeats > 1 else ""))
    return str(kind or "n/a")


def _overview(results: dict) -> str:
    task = results.get("task", {})
    protocol = results.get("protocol", {})
    provenance = results.get("provenance", {})
    counts = _class_counts(results)
    data = [("task", task.get("kind", "n/a")), ("classes", ", ".join(map(str, task.get("labels") or [])) or "n/a")]
    if counts:
        data.append(("samples", sum(n for _, n in counts)))
        data.extend((f"samples, {name}", n) for name, n in counts)
    data.append(("data md5", provenance.get("data_md5") or "n/a"))
    proto = [("protocol", _protocol_text(protocol)), ("seed", protocol.get("seed", provenance.get("seed")))]
    proto.extend((str(k), v) for k, v in protocol.items()
                 if k not in {"kind", "folds", "grouped_by", "seed"} and v is not None)
    return ("<h2>Task and data</h2>" + _definitions(data)
            + "<h2>Protocol</h2>" + _definitions(proto)
            + "<p>Every metric is computed on each test fold; the table gives the mean ± standard deviation over "
              "folds and the Student-t 95% confidence interval of the mean [lo, hi]. SE = sensitivity, SP = "
              "specificity, AR = accuracy (recognition rate). The pooled AUC is computed on all out-of-fold "
              "predictions together, with DeLong's 95% confidence interval.</p>")


def _reference_note(results: dict) -> str:
    reference = results.get("reference") or {}
    if not reference.get("note"):
        return ""
    return f"<p>Reference, {escape(str(reference.get('name') or 'reference'))}: {escape(str(reference['note']))}</p>"


def _pooled(results: dict) -> str:
    rows = {}
    for name, result in results.get("models", {}).items():
        pooled = result.get("pooled") or {}
        if not pooled:
            continue
        ci = pooled.get("auc_ci95")
        rows[name] = {"AUC": pooled.get("auc"),
                      "AUC 95% CI (DeLong)": f"[{_text(ci[0])}, {_text(ci[1])}]" if ci else "n/a",
                      "SE": pooled.get("sensitivity"), "SP": pooled.get("specificity"),
                      "AR": pooled.get("accuracy")}
    if not rows:
        return ""
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return "<h3>Pooled out-of-fold</h3>" + _table(frame)


def _figures(figures: Mapping[str, Path]) -> str:
    if not figures:
        return ""
    blocks = [f'<figure><img alt="{escape(name, quote=True)}" src="{_data_uri(Path(path))}">'
              f"<figcaption>{escape(name)}</figcaption></figure>" for name, path in figures.items()]
    return "<h2>Figures</h2>" + "".join(blocks)


def _per_model(results: dict) -> str:
    parts = []
    for name, result in results.get("models", {}).items():
        parts.append(f"<h3>{escape(name)}</h3>")
        if result.get("description"):
            parts.append(f"<p>{escape(str(result['description']))}</p>")
        per_class = per_class_table(result)
        if per_class is not None:
            per_class.index.name = "class"
            parts.append("<p>Per class (one-vs-rest):</p>" + _table(per_class))
        folds = folds_table(result)
        if len(folds):
            parts.append(_table(folds, index=False))
    return "<h2>Per-fold results</h2>" + "".join(parts) if parts else ""


def _card_rows(mapping: Mapping, label) -> pd.DataFrame:
    """A one-column-per-key table of ``name → {key: value}`` with cells as model-card text."""
    columns: list[str] = []
    for entry in mapping.values():
        columns.extend(c for c in entry if c not in columns)
    records = {name: {label(c): format_value(entry[c]) if c in entry else "n/a" for c in columns}
               for name, entry in mapping.items()}
    return pd.DataFrame.from_dict(records, orient="index", columns=[label(c) for c in columns])


def _model_card(results: dict) -> str:
    """The study's model cards (:func:`medlens.report.model_card.study_model_card`): intended use, data
    and protocol once, then per model its metrics, calibration, operating points and subgroups, then
    the limitations. ``model_card.md`` holds the same cards as Markdown."""
    models = results.get("models", {})
    cards = [study_model_card(results, key) for key in models]
    first = cards[0] if cards else {}
    parts = ["<h2>Model card</h2>",
             f'<p class="note"><b>Intended use:</b> {escape(first.get("intended_use") or DEFAULT_INTENDED_USE)}</p>']
    data = first.get("data") or {}
    if data:
        items = []
        for key, value in data.items():
            if key == "labels":
                continue
            if key == "class_counts" and isinstance(value, list) and len(data.get("labels") or []) == len(value):
                value = ", ".join(f"{name}: {n}" for name, n in zip(data["labels"], value))
            items.append((str(key).replace("_", " "), value if isinstance(value, (str, int)) else format_value(value)))
        parts.append("<h3>Data and provenance</h3>" + _definitions(items))
    if first.get("protocol"):
        parts.append(f"<h3>Evaluation protocol</h3><p>{escape(str(first['protocol']))}</p>")
    for key, card in zip(models, cards):
        parts.append(f"<h3>{escape(key)}</h3>")
        if card.get("model"):
            parts.append(f"<p>{escape(card['model'])}</p>")
        if card.get("metrics"):
            frame = pd.DataFrame({"value": [format_value(v) for v in card["metrics"].values()]},
                                 index=pd.Index(list(card["metrics"]), name="metric"))
            parts.append(_table(frame))
        if card.get("calibration"):
            shown = {k: v for k, v in card["calibration"].items() if k != "temperatures"}
            parts.append("<p>Calibration:</p>" + _definitions(
                (k.replace("_", " "), v if isinstance(v, str) else format_value(v)) for k, v in shown.items()))
        if card.get("operating_points"):
            frame = _card_rows(card["operating_points"], lambda c: c.replace("_", " "))
            frame.index.name = "operating point (threshold chosen on validation)"
            parts.append(_table(frame))
        if card.get("subgroups"):
            frame = _card_rows(card["subgroups"], lambda c: c.replace("_", " "))
            frame.index.name = "subgroup"
            parts.append("<p>Subgroups (pooled out-of-fold):</p>" + _table(frame))
    limitations = first.get("limitations") or list(STUDY_LIMITATIONS)
    parts.append("<h3>Limitations</h3><ul>" + "".join(f"<li>{escape(item)}</li>" for item in limitations)
                 + "<li>A comparison with a published reference design is indicative only unless data and protocol "
                   "are the same.</li></ul>")
    return "".join(parts)


def _plain(value):
    """``value`` with anything YAML cannot represent (paths, numpy scalars) turned into strings."""
    return json.loads(json.dumps(value, default=str))


def _provenance(results: dict) -> str:
    provenance = results.get("provenance", {})
    versions = provenance.get("versions") or {}
    wall = provenance.get("wall_seconds")
    items = [("data md5", provenance.get("data_md5") or "n/a"), ("seed", provenance.get("seed")),
             ("wall time (s)", f"{wall:.1f}" if isinstance(wall, (int, float)) else wall)]
    items.extend((f"version: {name}", str(v)) for name, v in versions.items())
    executed = provenance.get("executed") or {}
    tasks = ""
    if executed.get("kind") == "dask":
        items.append(("executed on", f"Dask scheduler {executed.get('scheduler')}, {executed.get('workers')} "
                                     "worker(s)"))
        rows = "".join(f"<tr><td>{escape(str(task))}</td><td>{escape(str(worker))}</td></tr>"
                       for task, worker in (executed.get("tasks") or {}).items())
        tasks = ("<details><summary>Where each task ran</summary><table><tr><th>model / seed / fold</th>"
                 f"<th>worker</th></tr>{rows}</table></details>")
    config = yaml.safe_dump(_plain(provenance.get("config") or {}), sort_keys=False, allow_unicode=True)
    return ("<h2>Provenance</h2>" + _definitions(items) + tasks
            + "<h3>Configuration</h3><pre>" + escape(config) + "</pre>")


def write_report(results: dict, out_dir: str | Path, figures: Mapping[str, Path],
                 extra_sections: Iterable[tuple[str, str]] = ()) -> Path:
    """Write ``out_dir/report.html``, a self-contained report of a study.

    Parameters
    ----------
    results : dict
        A study's ``results.json`` content.
    out_dir : path
        Folder to write into (created when missing).
    figures : mapping of caption to image path
        png, svg or jpeg files, embedded in the order given.
    extra_sections : iterable of (heading, text)
        More sections, placed after the per-fold results; the text is escaped, blank lines start a
        new paragraph and single line breaks are kept.

    Returns
    -------
    Path
        The written ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = str(results.get("title") or results.get("study") or "medlens study")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    extra = "".join(f'<section class="extra"><h2>{escape(str(heading))}</h2>{_paragraphs(text)}</section>'
                    for heading, text in extra_sections)
    body = (
        f"<h1>{escape(title)}</h1>"
        f'<p class="subtitle">study <code>{escape(str(results.get("study", "n/a")))}</code>, report written {stamp} '
        "by medlens</p>"
        + _overview(results)
        + "<h2>Results</h2>" + _table(metrics_table(results)) + _reference_note(results) + _pooled(results)
        + _figures(figures)
        + _per_model(results)
        + extra
        + _model_card(results)
        + _provenance(results))
    return write_text_atomically(out / "report.html", _page(title, body))


def _page(title: str, body: str) -> str:
    """A complete HTML document with the report style sheet around ``body``."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_tables_page(title: str, tables: Mapping[str, pd.DataFrame], figures: Mapping[str, Path],
                      path: str | Path, notes: str = "") -> Path:
    """A self-contained HTML page of captioned tables and embedded figures, in the study report's style
    (for benchmark results that are not a study, e.g. the GAN augmentation comparison).

    ``notes`` is plain text placed under the title (blank lines start paragraphs).
    """
    body = (f"<h1>{escape(title)}</h1>" + _paragraphs(notes)
            + "".join(f"<h2>{escape(caption)}</h2>" + _table(frame, index=False) for caption, frame in tables.items())
            + _figures(figures))
    return write_text_atomically(path, _page(title, body))
