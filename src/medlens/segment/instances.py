"""Cells and nuclei: instance labels from a foreground, per-instance measurements, and instance scores.

* **Instances.** A marker-controlled watershed of ``-distance`` (the Euclidean distance transform of
  the foreground), restricted to the foreground, splits touching objects (scikit-image ``watershed``).
  The markers (``markers=``):

  - ``"hmaxima"``: the h-maxima of the distance transform of the interior map (the
    foreground when there is none), smoothed by a Gaussian of σ ``smooth`` pixels: regional maxima
    that rise at least ``h`` pixels above their surroundings (Soille, *Morphological Image Analysis*,
    2003, §6.3.5). Two touching nuclei whose predicted interiors still meet at a neck keep two maxima,
    one per nucleus, where the connected components of the interior would give one.
  - ``"hmaxima_relative"`` (default): the same with the smoothed distance map divided by its maximum within each
    connected component of the interior map, so ``h`` is a fraction of that component's inscribed
    radius and one setting serves nuclei of 5 and of 90 pixels across (the DSB 2018 images span both).
  - ``"components"``: the connected components of the interior map (the distance-transform peaks
    ``min_distance`` apart when there is none).

  Every connected component of the interior map (then of the foreground) that holds no marker becomes
  one marker of its own, so a small nucleus whose interior has no h-maximum is not lost or merged.
  ``method="components"`` takes connected components of the foreground, without a watershed.
  The defaults (``hmaxima_relative``, ``h = 0.1``, ``σ = 1``) were chosen by AP on validation images of
  DSB 2018 (10 of the training images), never on the test images (``benchmarks/quality/bench_segment.py nuclei``).
* **Object scale.** :func:`median_diameter` is the area-weighted median equivalent diameter of the
  connected components of an interior map, in physical units: ``d = 2 √(A/π)`` in 2D, ``d = ∛(6V/π)``
  in 3D, the diameter of the disc (ball) of the component's area A (volume V). A plan in instance mode
  records the range of the training images' values (``inference.instances.diameter_range``,
  :func:`diameter_range`); an image whose nuclei fall outside it is predicted again at a scale that
  brings them into it (:func:`medlens.segment.infer.segment_image`), as Cellpose rescales every image to
  a canonical diameter (Stringer et al., Nat Methods 18:100, 2021). Without it, a network trained on
  nuclei 8 to 70 px across meets 95 px nuclei at a scale it never saw.
* **Measurements.** Area, centroid and mean intensity per instance (``regionprops_table``).
* **Scores.** Instances are matched one-to-one at IoU ≥ τ (IoU > 0.5 is unique by construction; for
  lower τ the Hungarian matching on IoU is used). Average precision as in the 2018 Data Science Bowl
  and StarDist (Schmidt et al., MICCAI 2018): ``AP_τ = TP / (TP + FP + FN)``. Aggregated Jaccard index
  (Kumar et al., IEEE TMI 36:1550, 2017): ``AJI = Σ_i |G_i ∩ S_j*| / (Σ_i |G_i ∪ S_j*| + Σ_{S unused} |S|)``
  with ``j* = argmax_j IoU(G_i, S_j)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.measure import regionprops_table
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

from medlens.errors import ConfigError, GeometryError


MARKERS = ("hmaxima", "hmaxima_relative", "components")
DEFAULT_H = {"hmaxima": 2.0, "hmaxima_relative": 0.1, "components": 0.0}  # h when options name no h
INSTANCE_DEFAULTS: dict[str, Any] = {"markers": "hmaxima_relative", "h": DEFAULT_H["hmaxima_relative"],
                                     "smooth": 1.0, "min_size": 8}


def _markers(fg: np.ndarray, interior: np.ndarray | None, markers: str, h: float, smooth: float,
             min_distance: int) -> np.ndarray:
    """Watershed markers (see the module docstring), plus one for every marker-less component of the
    interior map and then of the foreground."""
    if markers not in MARKERS:
        raise ConfigError(f"instances: unknown markers {markers!r}; choose one of {MARKERS}")
    seed_region = fg if interior is None else np.asarray(interior, dtype=bool) & fg
    seed_components = cc_label(seed_region)
    fg_components = seed_components if interior is None else cc_label(fg)
    if markers in ("hmaxima", "hmaxima_relative"):
        dist = ndi.distance_transform_edt(seed_region)
        if smooth > 0:
            dist = ndi.gaussian_filter(dist, smooth)
        if markers == "hmaxima_relative":
            n = int(seed_components.max())
            peak = np.ones(n + 1)  # index 0: background, left at 0 / 1
            peak[1:] = ndi.maximum(dist, seed_components, np.arange(1, n + 1))
            dist = dist / np.maximum(peak[seed_components], 1e-6)
        labels = cc_label(h_maxima(dist, h).astype(bool) & seed_region)
    elif interior is not None:
        labels = seed_components
    else:
        dist = ndi.distance_transform_edt(fg)
        peaks = peak_local_max(dist, min_distance=min_distance, labels=fg_components, exclude_border=False)
        labels = np.zeros(fg.shape, np.int64)
        labels[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return _mark_unmarked(_mark_unmarked(labels, seed_components), fg_components)


def _mark_unmarked(labels: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``labels`` plus one new marker for each of the connected ``components`` (a label image) that
    holds none."""
    unmarked = np.setdiff1d(np.unique(components[components > 0]), np.unique(components[labels > 0]))
    extra = cc_label(np.isin(components, unmarked))
    return np.where(extra > 0, extra + labels.max(), labels)


def instances_from_foreground(foreground: np.ndarray, interior: np.ndarray | None = None,
                              method: str = "watershed", markers: str = "hmaxima_relative", h: float = 0.1,
                              smooth: float = 1.0, min_distance: int = 3, min_size: int = 8) -> np.ndarray:
    """Instance label image (0 background, 1..N) from a boolean foreground (2D or 3D).

    Parameters
    ----------
    foreground : np.ndarray
        Boolean mask of all objects.
    interior : np.ndarray, optional
        Boolean map of object interiors (foreground minus boundaries); the markers come from it.
    method : str
        ``watershed`` (marker-controlled, on the distance transform) or ``components`` (connected
        components of the foreground).
    markers : str
        ``hmaxima_relative``, ``hmaxima`` or ``components`` (see the module docstring).
    h, smooth : float
        Height of the h-maxima (pixels; with ``hmaxima_relative`` a fraction of each interior
        component's largest distance) and σ of the Gaussian smoothing of the distance map (pixels).
    min_distance : int
        Minimum peak separation in pixels with ``markers="components"`` and no interior.
    min_size : int
        Objects smaller than this many pixels are dropped.
    """
    fg = np.asarray(foreground, dtype=bool)
    if method == "components":
        labels = cc_label(fg)
    elif method == "watershed":
        seeds = _markers(fg, interior, markers, float(h), float(smooth), min_distance)
        labels = watershed(-ndi.distance_transform_edt(fg), seeds, mask=fg)
    else:
        raise ConfigError(f"instances: unknown method {method!r}; choose watershed or components")
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        small = np.nonzero(sizes < min_size)[0]
        labels[np.isin(labels, small[small > 0])] = 0
    return relabel_sequential(labels)[0]


def median_diameter(interior: np.ndarray, spacing: tuple[float, ...] | None = None, min_size: int = 8) -> float:
    """Area-weighted median equivalent diameter (physical units; see the module docstring) of the
    connected components of a boolean ``interior`` map with at least ``min_size`` pixels: the diameter of
    the component that holds the median interior pixel. Weighting by area keeps the many small fragments
    a network leaves on nuclei larger than it was trained on from hiding the nuclei themselves. NaN when
    there are no components."""
    interior = np.asarray(interior, dtype=bool)
    sizes = np.bincount(cc_label(interior).ravel())[1:]
    sizes = np.sort(sizes[sizes >= min_size])
    if not sizes.size:
        return float("nan")
    measure = sizes * float(np.prod(spacing if spacing is not None else (1.0,) * interior.ndim))
    diameters = 2.0 * np.sqrt(measure / np.pi) if interior.ndim == 2 else np.cbrt(6.0 * measure / np.pi)
    cumulative = np.cumsum(sizes)
    return float(diameters[np.searchsorted(cumulative, cumulative[-1] / 2)])


def diameter_range(cases, percentiles: tuple[float, float] = (0, 90), min_size: int = 8) -> list[float] | None:
    """The ``percentiles`` of the per-image :func:`median_diameter` of the cases' interior class (label 1
    of the instance-mode target); ``None`` when no case has objects.

    The default, from the smallest image's value to the 90th percentile, leaves images of nuclei as small
    as any trained on alone and brings larger ones down to sizes the network saw often. Chosen on 10 DSB
    2018 validation images zoomed ×0.5, 1, 2 and 3 (``benchmarks/results/segment.md``): the 10th
    percentile as the lower end enlarged small nuclei the network handled well unscaled."""
    values = [median_diameter(c.mask == 1, c.image.spacing, min_size) for c in cases if c.mask is not None]
    values = [v for v in values if np.isfinite(v)]
    return np.percentile(values, percentiles).tolist() if values else None


def rescale_factor(interior: np.ndarray, spacing: tuple[float, ...], bounds: list[float] | None,
                   min_size: int = 8) -> float:
    """Factor ``f`` by which an image's spacing is multiplied so that the median diameter of its objects
    (measured on the predicted ``interior``) moves to the nearer end of ``bounds``; 1 inside the bounds,
    without bounds, or without objects."""
    if not bounds:
        return 1.0
    d = median_diameter(interior, spacing, min_size)
    if not np.isfinite(d) or bounds[0] <= d <= bounds[1]:
        return 1.0
    return float(np.clip(d, bounds[0], bounds[1]) / d)


def measure_instances(labels: np.ndarray, intensity: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-instance ``label``, ``area``, ``centroid-*`` and (with an image) ``mean_intensity``."""
    props = ["label", "area", "centroid"] + (["intensity_mean"] if intensity is not None else [])
    table = regionprops_table(labels, intensity_image=intensity, properties=props)
    if "intensity_mean" in table:
        table["mean_intensity"] = table.pop("intensity_mean")
    return table


def _iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true instance, predicted instance) pair, labels relabelled 1..N."""
    t, _, _ = relabel_sequential(np.array(true))
    p, _, _ = relabel_sequential(np.array(pred))
    nt, np_ = int(t.max()), int(p.max())
    overlap = np.bincount(t.ravel() * (np_ + 1) + p.ravel(), minlength=(nt + 1) * (np_ + 1))
    overlap = overlap.reshape(nt + 1, np_ + 1).astype(np.float64)
    area_t, area_p = overlap.sum(axis=1, keepdims=True), overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(area_t + area_p - overlap, 1)
    return iou[1:, 1:]


def match_instances(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, int | float]:
    """One-to-one matching at IoU ≥ ``threshold``: ``tp``, ``fp``, ``fn``, ``ap`` = TP/(TP+FP+FN),
    precision, recall, and the counts of true and predicted instances."""
    if np.shape(true) != np.shape(pred):
        raise GeometryError(f"instance maps differ in shape: {np.shape(true)} vs {np.shape(pred)}")
    iou = _iou_matrix(true, pred)
    nt, np_ = iou.shape
    if nt and np_:
        if threshold > 0.5:
            tp = int((iou >= threshold).sum())
        else:
            rows, cols = linear_sum_assignment(-iou)
            tp = int((iou[rows, cols] >= threshold).sum())
    else:
        tp = 0
    fp, fn = np_ - tp, nt - tp
    denom = tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "n_true": nt, "n_pred": np_,
            "ap": tp / denom if denom else 1.0,
            "precision": tp / np_ if np_ else float(nt == 0), "recall": tp / nt if nt else 1.0}


def aggregated_jaccard(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard index (Kumar et al., 2017), see the module docstring."""
    t, _, _ = relabel_sequential(np.array(true))
    p, _, _ = relabel_sequential(np.array(pred))
    nt, np_ = int(t.max()), int(p.max())
    if nt == 0:
        return 1.0 if np_ == 0 else 0.0
    overlap = np.bincount(t.ravel() * (np_ + 1) + p.ravel(), minlength=(nt + 1) * (np_ + 1))
    overlap = overlap.reshape(nt + 1, np_ + 1).astype(np.float64)
    area_t, area_p = overlap[1:].sum(axis=1), overlap[:, 1:].sum(axis=0)
    inter = overlap[1:, 1:]
    union = area_t[:, None] + area_p[None, :] - inter
    best = np.argmax(inter / np.maximum(union, 1), axis=1)
    rows = np.arange(nt)
    hit = inter[rows, best] > 0
    c = inter[rows, best][hit].sum()
    u = union[rows, best][hit].sum() + area_t[~hit].sum()
    used = np.zeros(np_, bool)
    used[best[hit]] = True
    u += area_p[~used].sum()
    return float(c / u) if u else 1.0


def labels_from_prediction(pred: np.ndarray, options: dict[str, Any] | None = None) -> np.ndarray:
    """Instances from a predicted label map: with interior (1) / boundary (2) classes the markers come
    from the interiors, otherwise from the whole foreground. ``options`` (a plan's
    ``inference.instances``) override :data:`INSTANCE_DEFAULTS`; options without ``h`` take the
    :data:`DEFAULT_H` of their markers."""
    pred = np.asarray(pred)
    interior = pred == 1 if pred.max() > 1 else None
    options = {k: v for k, v in (options or {}).items() if v is not None}
    opts = {**INSTANCE_DEFAULTS, **options}
    if "h" not in options:
        opts["h"] = DEFAULT_H.get(opts["markers"], opts["h"])
    return instances_from_foreground(pred > 0, interior=interior, markers=opts["markers"], h=opts["h"],
                                     smooth=opts["smooth"], min_size=int(opts["min_size"]))


def score_instances(preds: dict[str, np.ndarray], cases, threshold: float = 0.5,
                    options: dict[str, Any] | None = None) -> list[dict]:
    """Per case: true and predicted counts, AP at IoU ≥ ``threshold`` and AJI, for predicted label maps
    (keyed by case id) against the cases' true instance images; ``options`` as in
    :func:`labels_from_prediction`."""
    rows = []
    for case in cases:
        if case.instances is None:
            raise ConfigError(f"{case.image.meta.get('source')}: no instance labels (use mask mode 'instance')")
        lab = labels_from_prediction(preds[case.case_id], options)
        m = match_instances(case.instances, lab, threshold)
        rows.append({"case": case.case_id, "n_true": m["n_true"], "n_pred": m["n_pred"], "ap": m["ap"],
                     "aji": aggregated_jaccard(case.instances, lab)})
    return rows
