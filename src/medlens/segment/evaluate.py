"""Scoring masks: Dice, IoU, HD95 and pixel error per case and in summary, and contour overlays.

* Dice ``2|P∩T| / (|P| + |T|)`` and IoU ``|P∩T| / |P∪T|`` (:func:`medlens.evaluate.metrics.dice`,
  :func:`~medlens.evaluate.metrics.iou`: the one Dice of medlens, also what training selects epochs by),
  averaged over the foreground classes.
* HD95: the 95th percentile of the symmetric surface distances, in mm using the image spacing
  (MONAI ``compute_hausdorff_distance(percentile=95)``); NaN where one mask is empty and the other not.
* Pixel error ``1 - accuracy``: the share of pixels whose label differs.
* The ISBI 2012 challenge's pixel error (:func:`fscore_pixel_error`), a different quantity:
  ``1 - F`` with the F-score ``F = 2 TP / (2 TP + FP + FN)`` of the foreground pixels pooled over all
  images, maximised over thresholds of the submitted foreground map (Arganda-Carreras et al., *Front.
  Neuroanat.* 9:142, 2015; Fiji ``trainableSegmentation.metrics.PixelError``). The U-Net paper's 0.0611
  is this figure. For a binary mask it is ``1 -`` the pooled foreground Dice; the summary of a binary
  evaluation carries it as ``pixel_error_fscore``.

Both masks empty counts as Dice = IoU = 1 and HD95 = 0. Summaries over cases are
:func:`medlens.evaluate.stats.summarize` (mean, std, 95 % interval, median, count; NaN left out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from PIL import Image
from skimage.segmentation import find_boundaries

from medlens.errors import DatasetError, GeometryError
from medlens.evaluate.metrics import dice, iou
from medlens.evaluate.stats import summarize
from medlens.files import write_atomically, write_csv_atomically, write_text_atomically
from medlens.segment.datasets import mask_to_target
from medlens.segment.io import case_name, is_image_file, read_image


ISBI_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 11), 1))  # the challenge's sweep


def _batch(mask: np.ndarray) -> torch.Tensor:
    """A boolean mask as MONAI's one-channel batch ``(1, 1, *spatial)``."""
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None]


def case_metrics(pred: np.ndarray, true: np.ndarray, n_classes: int = 2,
                 spacing: tuple[float, ...] | None = None) -> dict[str, float]:
    """Dice, IoU, HD95 (mm) and pixel error of one label map against the truth (foreground classes)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise GeometryError(f"prediction shape {pred.shape} differs from truth shape {true.shape}")
    dices, ious, hd = [], [], []
    for k in range(1, n_classes):
        pk, tk = pred == k, true == k
        dices.append(dice(pk, tk))
        ious.append(iou(pk, tk))
        ps, ts = bool(pk.any()), bool(tk.any())
        if ps and ts:
            hd.append(float(compute_hausdorff_distance(_batch(pk), _batch(tk),
                                                       include_background=True, percentile=95,
                                                       spacing=list(spacing) if spacing else None)))
        else:
            hd.append(0.0 if not ps and not ts else float("nan"))
    return {"dice": float(np.mean(dices)), "iou": float(np.mean(ious)),
            "hd95": float(np.mean(hd)), "pixel_error": float(np.mean(pred != true))}


def fscore_pixel_error(foreground: list[np.ndarray], truths: list[np.ndarray],
                       thresholds: tuple[float, ...] = (0.5,)) -> dict[str, float]:
    """ISBI 2012 pixel error (see the module docstring) of foreground maps (probabilities in [0, 1] or
    binary masks) against binary truths: a pixel is called foreground where the map exceeds the
    threshold; TP, FP and FN are pooled over all images before the F-score. Returns ``error``
    (``1 - max F``), the ``threshold`` that reached it and ``fscore``. The challenge swept
    ``0, 0.1, …, 1``; a single threshold (0.5, the arg-max of two classes) involves no choice on the
    test images."""
    if len(foreground) != len(truths) or not truths:
        raise GeometryError(f"fscore_pixel_error: {len(foreground)} maps for {len(truths)} truths")
    counts = np.zeros((len(thresholds), 3))
    for prob, true in zip(foreground, truths):
        prob, true = np.asarray(prob, dtype=np.float64), np.asarray(true) > 0
        if prob.shape != true.shape:
            raise GeometryError(f"prediction shape {prob.shape} differs from truth shape {true.shape}")
        for i, th in enumerate(thresholds):
            called = prob > th
            counts[i] += [np.sum(called & true), np.sum(called & ~true), np.sum(~called & true)]
    tp, fp, fn = counts.T
    fscore = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    best = int(np.argmax(fscore))
    return {"error": float(1 - fscore[best]), "threshold": float(thresholds[best]), "fscore": float(fscore[best])}


def mean_dice(pred: np.ndarray, true: np.ndarray, n_classes: int = 2) -> float:
    """Foreground Dice (:func:`medlens.evaluate.metrics.dice`) averaged over classes (both empty: 1)."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean([dice(pred == k, true == k) for k in range(1, n_classes)]))


CASE_METRICS = ("dice", "iou", "hd95", "pixel_error")


def summarize_cases(rows: list[dict[str, Any]], keys=CASE_METRICS) -> dict[str, dict]:
    """:func:`medlens.evaluate.stats.summarize` of each metric over the case rows."""
    return {k: summarize([r[k] for r in rows]) for k in keys}


def _to_uint8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, (0.5, 99.5))
    return (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, pred: np.ndarray, true: np.ndarray | None, path: str | Path) -> Path:
    """Write an RGB PNG of ``image`` (``(C, ...)``) with the predicted contour in red and the true one in
    green. Volumes show the slice with the largest true (else predicted) area."""
    img = image.mean(axis=0)
    if img.ndim == 3:
        ref = true if true is not None and true.any() else pred
        z = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(axis=1)))
        img, pred = img[z], pred[z]
        true = None if true is None else true[z]
    rgb = np.repeat(_to_uint8(img)[..., None], 3, axis=2)
    if true is not None:
        rgb[find_boundaries(true, mode="inner")] = (0, 255, 0)
    rgb[find_boundaries(pred, mode="inner")] = (255, 0, 0)
    return write_atomically(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))


def evaluate_cases(preds: dict[str, np.ndarray], cases, n_classes: int = 2,
                   overlay_dir: str | Path | None = None) -> dict[str, Any]:
    """Score predictions (by case id) against :class:`~medlens.segment.datasets.SegCase` truths.

    Returns ``{"cases": [{"case", "dice", "iou", "hd95", "pixel_error"}...], "summary": {...}}``; where
    the cases carry a ``subgroup`` (:func:`~medlens.segment.datasets.read_index`), each row names it and
    ``"subgroups"`` holds the summary of each subgroup.
    """
    rows = []
    for case in cases:
        if case.case_id not in preds:
            raise DatasetError(f"{case.image.meta.get('source')}: no prediction for case {case.case_id}")
        pred = preds[case.case_id]
        row = {"case": case.case_id, **case_metrics(pred, case.mask, n_classes, case.image.spacing)}
        if "subgroup" in case.meta:
            row["subgroup"] = case.meta["subgroup"]
        rows.append(row)
        if overlay_dir is not None:
            overlay(case.image.array, pred, case.mask, Path(overlay_dir) / f"{case.case_id}.png")
    result = {"cases": rows, "summary": summarize_cases(rows)}
    if n_classes == 2:
        result["summary"]["pixel_error_fscore"] = fscore_pixel_error(
            [preds[c.case_id] for c in cases], [c.mask for c in cases])["error"]
    names = sorted({row["subgroup"] for row in rows if "subgroup" in row})
    if names:
        result["subgroups"] = {name: {"n": sum(r.get("subgroup") == name for r in rows),
                                      **summarize_cases([r for r in rows if r.get("subgroup") == name])} for name in names}
    return result


def read_predictions(pred_dir: str | Path, mask_mode: str = "binary", n_classes: int = 2) -> dict[str, np.ndarray]:
    """Label maps from a folder of predicted masks (as written by ``predict``), keyed by case name."""
    pred_dir = Path(pred_dir)
    files = sorted(p for p in pred_dir.iterdir() if is_image_file(p)) if pred_dir.is_dir() else []
    if not files:
        raise DatasetError(f"{pred_dir}: no predicted masks (png/tif/NIfTI) in this folder")
    out = {}
    for p in files:
        img = read_image(p)
        raw = img.array[0].astype(img.meta.get("dtype", "float32"))
        mode = "binary" if mask_mode == "instance" else mask_mode
        out[case_name(p)] = mask_to_target(raw, mode, n_classes, p)[0]
    return out


def evaluation_card(result: dict[str, Any], data: str | Path, predictions: str | Path) -> str:
    """A model-card style summary (Markdown) of a segmentation evaluation, per subgroup where the data has them.

    Uses :func:`medlens.report.model_card.render_model_card`: intended use (research only), the data,
    the mean (± s.d.) of each metric over cases, the same per subgroup (e.g. Montgomery's normal versus
    tuberculosis X-rays), and limitations.
    """
    from medlens.report.model_card import render_model_card

    def means(summary: dict) -> dict[str, str]:
        return {name: f"{value['mean']:.4f} ± {value['std']:.4f} (n = {value['n']})"
                for name, value in summary.items() if isinstance(value, dict) and "mean" in value}

    card = {
        "title": f"Segmentation evaluation: {Path(predictions).name} on {Path(data).name}",
        "data": {"name": Path(data).name, "source": str(data), "n_samples": len(result["cases"])},
        "protocol": f"predicted masks in {predictions} scored against the true masks of {data}, case by case "
                    "(Dice and IoU of the foreground, HD95 in the image's units, pixel error)",
        "metrics": means(result["summary"]),
        "subgroups": {name: means({k: v for k, v in group.items() if k != "n"})
                      for name, group in result.get("subgroups", {}).items()},
        "limitations": ["Scores are only as good as the reference masks (one annotator unless stated).",
                        "Subgroups with few cases have wide uncertainty; compare them with care."],
    }
    return render_model_card(card)


def write_report(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per case) and ``metrics.json`` (cases and summary)."""
    out = Path(out_dir)
    return (write_csv_atomically(out / "metrics.csv", result["cases"]),
            write_text_atomically(out / "metrics.json", json.dumps(result, indent=2)))
