"""Figures of a study: model comparison, ROC, confusion matrices, reliability.

Drawn with matplotlib's object interface and the Agg canvas (no pyplot, no display, no global state),
in the Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008, *Color Universal Design*), at 150 dpi.
Each function writes one image to ``path`` (the format follows the suffix; png by default) and returns it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medlens.errors import ConfigError
from medlens.evaluate.calibration import expected_calibration_error, reliability_curve
from medlens.evaluate.metrics import classification_metrics, roc_points
from medlens.files import write_atomically

#: Okabe-Ito colours, black left out (used for references and the chance line).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
REFERENCE_COLOUR = "#7F7F7F"
DPI = 150
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False}
COMPARED = (("SE", "sensitivity"), ("SP", "specificity"), ("AR", "accuracy"))


def _number(value) -> float:
    """``value`` as a float; None or anything else not numeric is NaN (results may hold JSON nulls)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    # the temporary name ends with the target's, so savefig picks the format from the suffix as before
    return write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=DPI))


def _oof_arrays(name: str, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the tested samples: rows of ``p`` holding NaN (never tested, such as the
    training part of an official split) are left out."""
    y = np.asarray(entry["y_true"]).reshape(-1).astype(np.int64)
    p = np.asarray(entry["p"], dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ConfigError(f"figures: out-of-fold p of model {name!r} must have shape (N, K) with N = "
                          f"{y.size} labels, got {p.shape}")
    tested = ~np.isnan(p).any(axis=1)
    if not tested.any():
        raise ConfigError(f"figures: model {name!r} has no out-of-fold predictions")
    return y[tested], p[tested]


def plot_comparison(results: dict, path: str | Path) -> Path:
    """Grouped bars of SE, SP and AR per model (fold mean), 95% CI as error bars; the reference design's
    values as hatched grey bars when ``results`` has a ``reference`` that reports them. An undefined value
    (NaN) leaves its bar out rather than drawing it at zero."""
    models = results.get("models", {})
    reference = results.get("reference") or {}
    series = []  # (name, means, (lower errors, upper errors) or None, colour, hatch)
    for i, (model, result) in enumerate(models.items()):
        summary = result.get("summary", {})
        means, low, high = [], [], []
        for _, key in COMPARED:
            entry = summary.get(key) or {}
            mean = _number(entry.get("mean"))
            lo, hi = (_number(v) for v in (entry.get("ci95") or [None, None])[:2])
            means.append(mean)
            low.append(max(mean - lo, 0.0) if np.isfinite(lo + mean) else 0.0)
            high.append(max(hi - mean, 0.0) if np.isfinite(hi + mean) else 0.0)
        series.append((model, means, (low, high), _colour(i), None))
    values = [_number(reference.get(key)) for _, key in COMPARED]
    if np.isfinite(values).any():  # a reference that reports none of SE, SP, AR gets no bars
        series.append((str(reference.get("name") or "reference"), values, None, REFERENCE_COLOUR, "//"))
    if not series:
        raise ConfigError("figures: results has no models to compare")

    with matplotlib.rc_context(STYLE):
        figure = _new_figure(max(5.5, 1.2 + 1.1 * len(series)), 4.0)
        axes = figure.add_subplot()
        x = np.arange(len(COMPARED))
        width = 0.8 / len(series)
        for j, (name, means, errors, colour, hatch) in enumerate(series):
            offset = (j - (len(series) - 1) / 2) * width
            axes.bar(x + offset, means, width, label=name, color=colour, hatch=hatch,
                     edgecolor="white" if hatch is None else "black", linewidth=0.6,
                     yerr=None if errors is None else np.asarray(errors), capsize=3,
                     error_kw={"elinewidth": 1.0, "ecolor": "black"})
            for xi, mean in zip(x + offset, means):
                if np.isfinite(mean):
                    axes.text(xi, 0.02, f"{mean:.2f}", ha="center", va="bottom", rotation=90,
                              fontsize=8, color="white" if hatch is None else "black")
        axes.set_xticks(x, [label for label, _ in COMPARED])
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("value (fold mean, 95% CI)")
        figure.suptitle(textwrap.fill(str(results.get("title") or results.get("study") or "model comparison"), 60))
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        axes.grid(axis="y", alpha=0.3)
        return _save(figure, path)


def _macro_roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-average one-vs-rest ROC: the class TPRs interpolated on a common FPR grid and averaged."""
    grid = np.linspace(0.0, 1.0, 201)
    tprs = []
    for c in range(p.shape[1]):
        positive = (y == c).astype(np.int64)
        if positive.min() == positive.max():
            continue
        fpr, tpr, _ = roc_points(positive, p[:, c])
        tprs.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(tprs, axis=0)


def plot_roc(oof: dict, path: str | Path) -> Path:
    """Pooled out-of-fold ROC curve per model, its AUC in the legend.

    ``oof`` maps a model name to ``{"y_true": (N,), "p": (N, K)}``. Binary: the ROC of ``p[:, 1]``.
    Multiclass: the macro-average of the one-vs-rest curves, with the macro one-vs-rest AUC.
    Rows of ``p`` holding NaN (samples never tested) are left out.
    """
    if not oof:
        raise ConfigError("figures: no out-of-fold predictions to plot")
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(5.2, 4.8)
        axes = figure.add_subplot()
        multiclass = False
        for i, (name, entry) in enumerate(oof.items()):
            y, p = _oof_arrays(name, entry)
            auc = classification_metrics(y, p)["auc"]
            if p.shape[1] == 2:
                fpr, tpr, _ = roc_points(y, p[:, 1])
            else:
                multiclass = True
                fpr, tpr = _macro_roc(y, p)
            axes.plot(fpr, tpr, color=_colour(i), linewidth=2, label=f"{name} (AUC {auc:.3f})")
        axes.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=0.8, label="chance")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.set_aspect("equal")
        axes.set_xlabel("1 − specificity (false positive rate)")
        axes.set_ylabel("sensitivity (true positive rate)")
        axes.set_title("ROC, pooled out-of-fold" + (" (macro one-vs-rest)" if multiclass else ""))
        axes.legend(loc="lower right")
        axes.grid(alpha=0.3)
        return _save(figure, path)


def plot_confusion(results: dict, path: str | Path) -> Path:
    """One pooled confusion matrix per model (counts, and in brackets the share of the true class)."""
    models = {name: r["pooled"]["confusion"] for name, r in results.get("models", {}).items()
              if r.get("pooled", {}).get("confusion")}
    if not models:
        raise ConfigError("figures: no model in results has a pooled confusion matrix")
    labels = list(results.get("task", {}).get("labels") or [])
    with matplotlib.rc_context(STYLE):
        k = len(next(iter(models.values())))
        side = 2.2 + 0.55 * k
        figure = _new_figure(side * len(models), side + 0.4)
        for i, (name, confusion) in enumerate(models.items()):
            cm = np.asarray(confusion, dtype=np.float64)
            names = labels if len(labels) == cm.shape[0] else [str(c) for c in range(cm.shape[0])]
            share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            axes = figure.add_subplot(1, len(models), i + 1)
            axes.imshow(share, cmap="viridis", vmin=0, vmax=1)
            for r in range(cm.shape[0]):
                for c in range(cm.shape[1]):
                    axes.text(c, r, f"{int(cm[r, c])}\n({share[r, c]:.0%})", ha="center", va="center",
                              fontsize=9, color="black" if share[r, c] > 0.6 else "white")
            axes.set_xticks(range(cm.shape[1]), names, rotation=30, ha="right")
            axes.set_yticks(range(cm.shape[0]), names)
            axes.set_xlabel("predicted")
            if i == 0:
                axes.set_ylabel("true")
            axes.set_title(name)
            axes.spines[:].set_visible(False)
        return _save(figure, path)


def plot_reliability(oof: dict, path: str | Path, n_bins: int = 10, title: str | None = None) -> Path:
    """Reliability diagram per model from out-of-fold predictions, ECE in the legend.

    ``title`` replaces the default heading ("Reliability, pooled out-of-fold"); the bin count is
    always appended.

    Binary: positive-class probability against the observed positive rate; multiclass: top-label
    confidence against accuracy (see :mod:`medlens.evaluate.calibration`). Marker area follows the
    number of samples in the bin. Rows of ``p`` holding NaN (samples never tested) are left out.
    """
    if not oof:
        raise ConfigError("figures: no out-of-fold predictions to plot")
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(5.2, 4.8)
        axes = figure.add_subplot()
        axes.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=0.8, label="perfect calibration")
        multiclass = False
        for i, (name, entry) in enumerate(oof.items()):
            y, p = _oof_arrays(name, entry)
            scores = p[:, 1] if p.shape[1] == 2 else p
            multiclass |= p.shape[1] > 2
            curve = reliability_curve(y, scores, n_bins)
            ece = expected_calibration_error(y, scores, n_bins)
            sizes = 12 + 150 * curve["count"] / curve["count"].max()
            axes.plot(curve["confidence"], curve["frequency"], color=_colour(i), linewidth=1.5,
                      label=f"{name} (ECE {ece:.3f})")
            axes.scatter(curve["confidence"], curve["frequency"], s=sizes, color=_colour(i), alpha=0.8)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.set_aspect("equal")
        axes.set_xlabel("mean top-label confidence" if multiclass else "mean predicted probability (positive)")
        axes.set_ylabel("accuracy" if multiclass else "observed positive rate")
        axes.set_title(f"{title or 'Reliability, pooled out-of-fold'} ({n_bins} bins)")
        axes.legend(loc="upper left")
        axes.grid(alpha=0.3)
        return _save(figure, path)
