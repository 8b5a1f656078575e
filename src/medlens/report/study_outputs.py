"""The files of a finished study: ``predictions.csv``, tables, figures, model cards, Grad-CAM overlays and
``report.html`` (``results.json`` is written last, by :func:`medlens.study.run_study`, so that its presence
marks a finished study)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medlens.data.dataset import ArrayDataset
from medlens.files import write_atomically, write_csv_atomically, write_text_atomically


def write_study_outputs(results: dict[str, Any], oof: dict[str, dict[str, np.ndarray]], data: ArrayDataset,
                  out_dir: Path) -> None:
    """predictions.csv, table.md/csv, figures, model_card.md and report.html (results.json is written by
    the caller).

    ``oof[key]`` holds ``y_true``, the raw out-of-fold ``p``, optionally ``p_calibrated`` (temperature
    scaled), ``p_seeds`` (the raw out-of-fold probabilities of further training seeds) and ``fold`` (the test
    fold of each sample, -1 where never tested).
    """
    from medlens.report.figures import plot_comparison, plot_confusion, plot_reliability, plot_roc
    from medlens.report.html import write_report
    from medlens.report.model_card import study_model_cards
    from medlens.report.tables import write_tables

    ids = data.ids if data.ids is not None else np.arange(len(data)).astype(str)
    frame = pd.DataFrame({"id": ids, "label": data.labels})
    if data.groups is not None:
        frame["group"] = data.groups
    folds = next((entry["fold"] for entry in oof.values() if entry.get("fold") is not None), None)
    if folds is not None:
        frame["fold"] = folds
    names = data.meta.get("labels") or [str(c) for c in range(data.n_classes)]
    for key, entry in oof.items():
        for c, name in enumerate(names):
            frame[f"{key}_p_{name}"] = entry["p"][:, c]
        if entry.get("p_calibrated") is not None:
            for c, name in enumerate(names):
                frame[f"{key}_calibrated_p_{name}"] = entry["p_calibrated"][:, c]
        for k, p in enumerate(entry.get("p_seeds") or [], start=1):  # further training seeds
            for c, name in enumerate(names):
                frame[f"{key}_seed{k}_p_{name}"] = p[:, c]
    write_csv_atomically(out_dir / "predictions.csv", frame)
    write_tables(results, out_dir)
    write_text_atomically(out_dir / "model_card.md", study_model_cards(results))
    calibrated = {key: {"y_true": e["y_true"], "p": e["p_calibrated"]} for key, e in oof.items()
                  if e.get("p_calibrated") is not None}
    raw_title = "Reliability before scaling" if calibrated else None
    n_bins = int((results.get("protocol") or {}).get("ece_bins") or 10)
    figures = {
        "Comparison of models (SE, SP, AR)": plot_comparison(results, out_dir / "comparison.png"),
        "ROC curves (pooled out-of-fold)": plot_roc(oof, out_dir / "roc.png"),
        "Confusion matrices (pooled)": plot_confusion(results, out_dir / "confusion.png"),
        "Reliability diagrams" + (" (raw probabilities)" if calibrated else ""):
            plot_reliability(oof, out_dir / "reliability.png", n_bins=n_bins, title=raw_title),
    }
    if calibrated:
        figures["Reliability diagrams after temperature scaling (fitted on each fold's validation split)"] = \
            plot_reliability(calibrated, out_dir / "reliability_calibrated.png", n_bins=n_bins,
                             title="Reliability after temperature scaling")
    augment = results["provenance"]["config"].get("augment")
    if augment:
        from medlens.synth.augment import synthetic_grid

        labels = ", ".join(f"row {c + 1}: {name}" for c, name in enumerate(names))
        figures[f"Synthetic training images from the GAN {augment['checkpoint']} ({labels}); "
                f"{augment['n_per_class']} per class were added to each training fold"] = \
            synthetic_grid(augment["checkpoint"], out_dir / "synthetic_samples.png")
    for key, entry in oof.items():
        if entry.get("explain") and len(entry["explain"]["ids"]):
            figures[f"Grad-CAM of {key} (last fold; the test images it is surest of, per true class)"] = \
                write_explanations(entry["explain"], out_dir / "explanations" / key)
    write_report(results, out_dir, figures={k: Path(v) for k, v in figures.items() if v})


def write_explanations(explained: dict, folder: Path) -> Path:
    """One overlay PNG per explained image in ``folder`` and their column, ``folder.png``, for the report."""
    from PIL import Image

    from medlens.deploy.explain import write_overlay

    paths = [write_overlay(image, heat, folder / f"{name}.png", title=title)
             for image, heat, name, title in zip(explained["images"], explained["maps"], explained["ids"],
                                                 explained["titles"])]
    tiles = [Image.open(p).convert("RGB") for p in paths]
    column = Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles)), "white")
    top = 0
    for tile in tiles:
        column.paste(tile, (0, top))
        top += tile.height
    return write_atomically(folder.with_suffix(".png"), lambda tmp: column.save(tmp, format="PNG"))
