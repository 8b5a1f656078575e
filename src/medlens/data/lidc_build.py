"""``medlens data build lidc-idri RAW --out DIR``: the LIDC-IDRI archive (DICOM + reader XML) into a study set.

Input
-----
``RAW`` as TCIA distributes it: the download tool's ``<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/``
tree, or one flat folder per series (the patient is then read from the first DICOM header). Every folder that
holds files is a candidate series; what is not a CT series with a reader XML is skipped with a line in the
build log.

Per series
----------
1. The XML is parsed (:func:`~medlens.data.readers.lidc_xml.read_lidc_xml`; another schema is skipped), the
   series read in HU (:func:`~medlens.data.readers.dicom.read_dicom` with ``strict_spacing``: a missing slice
   or uneven spacing is skipped, as is a non-CT series and any file pydicom cannot read).
2. Every reader's ROI is placed on its slice **by SOP Instance UID** (no z fallback). An ROI whose UID is absent
   although its z lies inside the series is an error of the XML (the series is skipped); one whose z lies
   beyond the first or last slice belongs to a lesion cut by the edge of a partial series (flagged below).
3. The rated marks (nodules ≥ 3 mm, the ones with characteristics) are grouped into lesions and given their
   consensus mask by :func:`~medlens.data.readers.lidc_xml.group_marks`: by default the 50 % consensus (the
   rule of :func:`~medlens.data.readers.lidc_xml.consensus_nodules`) of the readers' masks with their outline
   pixels (this builder's masks from the start). :class:`BuildOptions` changes both: ``consensus`` (0 = the union of the readers)
   and ``outline`` (False: only the voxels strictly inside each outline, LIDC's documented convention that
   readers drew on the first voxels outside the nodule, and the default of pylidc's ``Annotation.boolean_mask``). ``consensus=0, outline=False`` reproduces the masks
   of the shipped VOIs (``lidc-nodule-vois``) voxel for voxel (LIDC-IDRI-0001_R_1 and -0003_R_2, the two that
   lie on the shared series; tests/data/test_lidc_build.py).
4. Per lesion a volume of interest is cut at the scan's native spacing: the box of all its readers' marks
   (extended to the slices of ROIs beyond the series' edge) plus ``margin_mm`` on each side. Where the box
   leaves the scan it is **padded** (HU :data:`~medlens.data.readers.dicom.PADDING_HU`, mask 0), never shifted,
   and the row says so (``padded_voxels``, ``cut_by_series_edge``, ``slices_missing_before/after``).

Output (``DIR``)
----------------
``image/<stem>.nii`` (int16 HU) and ``nodule_mask/<stem>.nii`` (uint8 consensus), ``stem =
<PatientID>_R_<n>``: uncompressed NIfTI, which nibabel memory-maps, so a reader touches only the volumes it
uses. ``lesions.csv``: one row per lesion with every column of :data:`TABLE_COLUMNS` (patient, lesion, series,
centre and bounding box in world mm (DICOM LPS), diameters, each reader's nine ratings, their median, count and
most frequent value, flags, provenance). The ``*_value`` columns (most frequent rating, ties to the median of
the tied values rounded up) and ``diameter_mm`` have the names and meaning of the shipped VOIs' sheet, so the
study's ``lidc_nodules`` builder reads this folder unchanged: ``diameter_mm`` is the readers' mean
volume-equivalent diameter (:func:`equivalent_diameter`, within 1 mm of the sheet's LUNA16 values on the
shared nodules), ``max_axial_diameter_mm`` the readers' mean greatest in-plane diameter (pylidc's
``Annotation.diameter``; about 1.4 times larger). ``build_log.tsv`` (patient, file, what was skipped and
why) and ``build.json`` (options, counts, medlens version).

Resumable
---------
Each patient is one task. It writes its files atomically, then its record ``.build/<patient>.json`` (rows, log
lines, md5 of every file it wrote). A patient whose record exists, was made with the same options and whose
files all still have their recorded md5 is done; any other is built again (a file cut short by a killed run
fails its md5). The table and log are assembled from the records at the end, so an interrupted build that is
run again ends with the same table as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medlens.engine.memory import KEEP_FREED_ENVIRON, keep_freed_memory
from medlens.errors import MedlensError, MissingSliceError

STATE = ".build"
TABLE = "lesions.csv"
LOG = "build_log.tsv"
SUMMARY = "build.json"
CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                   "spiculation", "texture", "malignancy")
"""The readers' nine ratings in the XML's order; table columns ``<Name>_value``/``_median``/``_count``."""
MAX_READERS = 4
_PROVENANCE = ("source_md5", "xml_file", "xml_md5", "medlens_version")


def _column(name: str) -> str:
    return name[0].upper() + name[1:]


TABLE_COLUMNS = (
    ["patient_id", "nodule_id", "stem", "seriesuid", "studyuid", "coordX", "coordY", "coordZ", "diameter_mm",
     "max_axial_diameter_mm", "bboxLowX", "bboxLowY", "bboxLowZ", "bboxHighX", "bboxHighY", "bboxHighZ", "voxels", "volume_mm3",
     "n_readers", "len_mal_details"]
    + [f"reader{r}_{c}" for r in range(1, MAX_READERS + 1) for c in CHARACTERISTICS]
    + [f"{_column(c)}_{kind}" for c in CHARACTERISTICS for kind in ("value", "median", "count")]
    + ["voi_shape", "voi_origin", "spacing", "padded_voxels", "cut_by_series_edge", "slices_missing_before",
       "slices_missing_after", *_PROVENANCE]
)


@dataclass(frozen=True)
class BuildOptions:
    """What shapes the output; a record made with other options is built again."""

    margin_mm: float = 10.0
    consensus: float = 0.5
    """Fraction of a lesion's readers who must mark a voxel for the mask (:func:`group_marks` ``level``)."""
    outline: bool = True
    """Whether a reader's outline pixels are part of its mark (this builder's masks from the start); False: only
    the voxels inside the outline (:func:`group_marks` ``outline``; LIDC's convention and pylidc's default). With
    ``consensus=0`` this gives the shipped VOIs' masks."""


@dataclass
class PatientResult:
    """The small summary a patient task sends back (everything large is on disk)."""

    patient_id: str
    lesions: int = 0
    series: int = 0
    slices: int = 0
    skipped: int = 0
    seconds: float = 0.0
    reused: bool = False
    peak_rss_mb: float = 0.0
    """Peak resident memory of the process that built the patient, so far (``ru_maxrss``)."""


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------
def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def discover(raw: str | Path) -> dict[str, list[Path]]:
    """Patient ID → its candidate series folders (each folder of ``raw`` that holds files), sorted.

    In the download tool's tree the patient is the first folder under ``raw``; a folder directly under ``raw``
    (a flat per-series folder) takes the ``PatientID`` of its first DICOM header, or its name.
    """
    raw = Path(raw)
    if not raw.is_dir():
        from medlens.errors import MissingPathError

        raise MissingPathError(raw, "folder")
    patients: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(raw, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        if here == raw or not any(not f.startswith(".") for f in files):
            continue
        parts = here.relative_to(raw).parts
        patient = parts[0] if len(parts) > 1 else _patient_of(here)
        patients.setdefault(patient, []).append(here)
    return {p: sorted(f) for p, f in sorted(patients.items())}


def _patient_of(folder: Path) -> str:
    import pydicom

    for file in sorted(folder.iterdir()):
        if file.is_file() and _visible(file) and file.suffix.lower() != ".xml":
            try:
                return str(pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["PatientID"]).PatientID)
            except Exception:  # noqa: BLE001 - any unreadable file: try the next, else the folder's name
                continue
    return folder.name


# --------------------------------------------------------------------------------------------------
# one patient (runs on a worker)
# --------------------------------------------------------------------------------------------------
class _Skip(Exception):
    """A series that is not built; the message is its build-log line."""

    def __init__(self, file: Path | str, reason: str):
        super().__init__(reason)
        self.file, self.reason = str(file), reason


def _md5(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _record_path(out: Path, patient: str) -> Path:
    return out / STATE / f"{patient}.json"


def is_done(out: Path, patient: str, options: BuildOptions) -> dict | None:
    """The patient's record when it is complete and every file it lists has its recorded md5, else None."""
    path = _record_path(out, patient)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if record.get("options") != asdict(options):
        return None
    for rel, md5 in record.get("files", {}).items():
        target = out / rel
        if not target.is_file() or _md5(target) != md5:
            return None
    return record


def build_patient(patient: str, folders: list[str], out: str, options: BuildOptions,
                  reuse_memory: bool = False) -> PatientResult:
    """Build one patient's lesions into ``out`` and record them; returns a small summary.

    Skipped series are logged, never raised; an unexpected error propagates (the task fails, no record is
    written, and the next run builds the patient again).

    ``reuse_memory``: keep freed memory for the next series (:func:`medlens.engine.memory.keep_freed_memory`,
    the Trainer's allocator setting). Each series is read as one float32 volume (about 250 MB for a typical
    LIDC-IDRI series) and freed when its lesions are written; with glibc's defaults every volume is a fresh
    ``mmap`` whose pages the kernel must map and zero when first written (30 series of 240 slices: 16.3–17.7 s
    built as is, 11.4–11.8 s with the setting; peak RSS 547 → 607 MB). The process then keeps its peak memory
    until it exits, so this is only for a process that does the build and nothing else: ``medlens data build``
    and the local Dask workers it starts, never the workers of a scheduler it joins.
    """
    if reuse_memory:
        keep_freed_memory()
    start = time.perf_counter()
    out_dir = Path(out)
    record = is_done(out_dir, patient, options)
    if record is not None:
        return PatientResult(patient, len(record["rows"]), record["series"], record["slices"], len(record["log"]),
                             0.0, reused=True)
    rows: list[dict] = []
    log: list[list[str]] = []
    files: dict[str, str] = {}
    n_series = n_slices = 0
    for folder in map(Path, folders):
        try:
            series_rows, written, slices = _build_series(patient, folder, out_dir, options, len(rows), log)
        except _Skip as skip:
            log.append([patient, skip.file, skip.reason])
            continue
        rows.extend(series_rows)
        files.update(written)
        n_series += 1
        n_slices += slices
    if not folders:
        log.append([patient, "", "no series folder"])
    record = {"patient": patient, "options": asdict(options), "rows": rows, "log": log, "files": files,
              "series": n_series, "slices": n_slices}
    from medlens.files import write_text_atomically

    write_text_atomically(_record_path(out_dir, patient), json.dumps(record, indent=1, default=_plain))
    return PatientResult(patient, len(rows), n_series, n_slices, len(log), time.perf_counter() - start,
                         peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value)}")


def _series_md5(folder: Path) -> str:
    """One md5 over the md5 of every visible file of the folder (``md5  name`` lines, sorted by name).

    A series downloaded by ``medlens data fetch lidc-idri`` has a record of its files' md5s, each checked
    against TCIA's at download: when it lists exactly the folder's files, those md5s are used instead of
    reading every file again (hashing a 120 MB series costs about as much as decoding it).
    """
    from medlens.data.tcia import RECORD

    names = sorted(f.name for f in folder.iterdir() if f.is_file() and _visible(f))
    recorded: dict[str, str] = {}
    if (folder / RECORD).is_file():
        try:
            recorded = json.loads((folder / RECORD).read_text(encoding="utf-8"))["files"]
        except (ValueError, KeyError):
            recorded = {}
    if sorted(recorded) != names:
        recorded = {name: _md5(folder / name) for name in names}
    lines = "".join(f"{recorded[name]}  {name}\n" for name in names)
    return hashlib.md5(lines.encode()).hexdigest()


def _read_xml(folder: Path):
    from medlens.data.readers.lidc_xml import read_lidc_xml

    xmls = sorted(f for f in folder.iterdir() if f.is_file() and _visible(f) and f.suffix.lower() == ".xml")
    if not xmls:
        raise _Skip(folder, "no reader XML in the folder: not an LIDC CT series with annotations")
    problems = []
    for xml in xmls:
        try:
            return xml, read_lidc_xml(xml)
        except MedlensError as exc:
            problems.append((xml, str(exc)))
    raise _Skip(problems[0][0], f"not an LIDC reader XML: {problems[0][1]}")


def _read_series(folder: Path):
    from medlens.data.readers.dicom import read_dicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = read_dicom(folder, strict_spacing=True)
        except MedlensError as exc:
            where = getattr(exc, "path", None) or folder
            text = str(exc)
            if isinstance(exc, MissingSliceError) or "uneven slice gaps" in text:
                text = f"missing slices or uneven spacing: {text}"
            raise _Skip(where, text) from exc
    notes = [str(w.message) for w in caught if not _only_xml(str(w.message))]
    if image.modality != "CT":
        raise _Skip(folder, f"not a CT series (Modality {image.modality}, {image.meta.get('n_files')} file(s))")
    if len(image.shape) != 3:
        raise _Skip(folder, f"not a volume (shape {image.shape})")
    return image, notes


def _only_xml(message: str) -> bool:
    """Whether a reader warning only says that the folder's XML files are not DICOM (they are expected)."""
    if "non-DICOM file" not in message or " more" in message.rsplit(": ", 1)[-1]:
        return False
    return all(name.strip().lower().endswith(".xml") for name in message.rsplit(": ", 1)[-1].split(","))


def _build_series(patient: str, folder: Path, out: Path, options: BuildOptions, numbered: int,
                  log: list[list[str]]) -> tuple[list[dict], dict[str, str], int]:
    from medlens.data.readers.lidc_xml import group_marks, reader_marks

    image, notes = _read_series(folder)
    xml, sessions = _read_xml(folder)
    for note in notes:
        log.append([patient, str(folder), f"note: {note}"])
    z = np.array([p[2] for p in image.meta["slice_positions"]])
    step = float(np.median(np.diff(z))) if len(z) > 1 else image.spacing[0]
    low, high = min(z[0], z[-1]) - abs(step) / 2, max(z[0], z[-1]) + abs(step) / 2
    marks = reader_marks(xml, image, by_z=False, sessions=_rated_only(sessions))
    beyond: dict[int, list[float]] = {}
    for index, mark in enumerate(marks):
        for roi in mark.unplaced:
            if low <= roi.z <= high:
                raise _Skip(xml, f"reader {mark.reader + 1} nodule {mark.nodule_id!r} names SOP Instance UID "
                                 f"{roi.sop_uid} (z {roi.z} mm), absent from the series")
            beyond.setdefault(index, []).append(roi.z)
    lesions = group_marks(marks, options.consensus, options.outline)
    if not lesions:
        log.append([patient, str(xml), "note: no rated nodule (>= 3 mm) on this series"])
    provenance = {"source_md5": _series_md5(folder), "xml_file": xml.name, "xml_md5": _md5(xml),
                  "medlens_version": _version()}
    rows, written = [], {}
    for lesion in lesions:
        outside = [zz for m in lesion.marks for zz in beyond.get(marks.index(m), [])]
        stem = f"{patient}_R_{numbered + len(rows) + 1}"
        row, voi, mask = _lesion(image, lesion, outside, z, step, options)
        row.update(patient_id=patient, nodule_id=numbered + len(rows) + 1, stem=stem,
                   seriesuid=image.meta["series_uid"], studyuid=image.meta["study_uid"], **provenance)
        for sub, array in (("image", voi), ("nodule_mask", mask)):
            target = _write_voi(out / sub / f"{stem}.nii", array, row)
            written[f"{sub}/{stem}.nii"] = _md5(target)
        rows.append(row)
    return rows, written, image.shape[0]


def _rated_only(sessions: list) -> list:
    """The sessions with only their rated nodules (≥ 3 mm, with a malignancy rating): the others are never
    built, so they are not rasterised."""
    from dataclasses import replace

    return [replace(s, nodules=[n for n in s.nodules if n.characteristics.get("malignancy") is not None])
            for s in sessions]


def _version() -> str:
    from medlens import __version__

    return __version__


def _world(image, index) -> np.ndarray:
    """LPS (x, y, z) mm of voxel ``index`` (z, y, x), fractional allowed."""
    origin = np.array(image.origin[::-1], dtype=float)
    return origin + np.asarray(image.direction) @ (np.asarray(index, dtype=float) * np.array(image.spacing))


def _lesion(image, lesion, outside_z: list[float], z: np.ndarray, step: float, options: BuildOptions):
    from scipy import ndimage

    from medlens.data.readers.dicom import PADDING_HU

    shape = image.shape
    spacing = np.array(image.spacing)
    low = np.array(lesion.origin)
    high = low + np.array(lesion.consensus.shape)  # exclusive
    extra_low = extra_high = 0
    for zz in outside_z:  # slices of ROIs beyond the series' edge, on the series' own grid
        k = int(round((zz - z[0]) / step))
        extra_low, extra_high = max(extra_low, -k), max(extra_high, k - (shape[0] - 1))
    low[0] -= extra_low
    high[0] += extra_high
    margin = np.ceil(options.margin_mm / spacing).astype(int)
    box_low, box_high = low - margin, high + margin
    size = box_high - box_low
    voi = np.full(size, PADDING_HU, dtype=np.float32)
    mask = np.zeros(size, dtype=np.uint8)
    src_low, src_high = np.maximum(box_low, 0), np.minimum(box_high, shape)
    inner = tuple(slice(a - b, c - b) for a, b, c in zip(src_low, box_low, src_high))
    voi[inner] = image.array[0][tuple(slice(a, c) for a, c in zip(src_low, src_high))]
    placed = tuple(slice(o - b, o - b + n) for o, b, n in zip(lesion.origin, box_low, lesion.consensus.shape))
    mask[placed] = lesion.consensus
    hu = np.rint(voi)
    if not np.array_equal(hu, voi):
        raise _Skip(image.source, "HU values are not integers (rescale slope/intercept not integral)")
    voxels = int(lesion.consensus.sum())
    com = np.array(ndimage.center_of_mass(lesion.consensus)) + np.array(lesion.origin)
    occupied = np.argwhere(lesion.consensus) + np.array(lesion.origin)
    corners = np.array([_world(image, occupied.min(0)), _world(image, occupied.max(0))])
    centre = _world(image, com)
    row: dict[str, Any] = {
        "coordX": centre[0], "coordY": centre[1], "coordZ": centre[2],
        "diameter_mm": equivalent_diameter(lesion, spacing),
        "max_axial_diameter_mm": _max_axial_diameter(lesion, spacing),
        "bboxLowX": corners[:, 0].min(), "bboxLowY": corners[:, 1].min(), "bboxLowZ": corners[:, 2].min(),
        "bboxHighX": corners[:, 0].max(), "bboxHighY": corners[:, 1].max(), "bboxHighZ": corners[:, 2].max(),
        "voxels": voxels, "volume_mm3": voxels * float(np.prod(spacing)),
        "n_readers": len(lesion.readers),
        "voi_shape": "x".join(map(str, size)), "voi_origin": "",
        "spacing": "x".join(f"{s:g}" for s in spacing),
        "padded_voxels": int(voi.size - np.prod(np.maximum(src_high - src_low, 0))),
        "cut_by_series_edge": bool(outside_z),
        "slices_missing_before": int(extra_low), "slices_missing_after": int(extra_high),
    }
    row.update(_ratings(lesion))
    origin_world = _world(image, box_low)
    row["voi_origin"] = ",".join(f"{v:.4f}" for v in origin_world)
    return row, hu.astype(np.int16), mask


def equivalent_diameter(lesion, spacing: np.ndarray) -> float:
    """The lesion's diameter: the mean over its readers of the diameter of the sphere as large as what the reader
    outlined, ``mean_r (6 V_r / π)^(1/3)`` (mm).

    ``V_r`` is the volume of the voxels strictly inside reader ``r``'s outlines (:attr:`Mark.interior`: LIDC's
    readers drew on the first voxels outside the nodule; Armato et al., Med Phys 38:915, 2011), all of the
    reader's marks of the lesion together, on the slices of the series (a lesion cut by the series' edge is
    measured on what lies on it, and flagged). This is the family of the shipped sheet's ``diameter_mm``, which
    is LUNA16's (``annotations.csv``: the readers' annotations merged, "positions and diameters averaged";
    Setio et al., Med Image Anal 42:1, 2017); LUNA16's per-reader rule is not published in a form that
    reproduces it: on the four nodules of the shared XML this definition differs from the sheet by −0.24,
    +0.80, +0.22 and +0.14 mm (benchmarks/results/data_build.md).
    """
    voxel = float(np.prod(spacing))
    per_reader: dict[int, np.ndarray] = {}
    for mark in lesion.marks:
        inside = per_reader.setdefault(mark.reader, np.zeros(lesion.consensus.shape, dtype=bool))
        at = tuple(slice(o - g, o - g + n) for o, g, n in zip(mark.origin, lesion.origin, mark.interior.shape))
        inside[at] |= mark.interior
    if not per_reader:
        return math.nan
    return float(np.mean([(6 * int(inside.sum()) * voxel / math.pi) ** (1 / 3) for inside in per_reader.values()]))


def _max_axial_diameter(lesion, spacing: np.ndarray) -> float:
    """Mean over readers of each reader's largest in-plane extent (the longest distance between two voxels
    of one slice of the reader's mask, in mm; pylidc's ``Annotation.diameter`` measures the same on the contour)."""
    per_reader: dict[int, float] = {}
    for mark in lesion.marks:
        per_reader[mark.reader] = max(per_reader.get(mark.reader, 0.0), _longest_in_plane(mark.mask, spacing))
    return float(np.mean(list(per_reader.values()))) if per_reader else math.nan


def _longest_in_plane(mask: np.ndarray, spacing: np.ndarray) -> float:
    """The longest distance (mm) between two marked voxels of one plane of ``mask`` (D, H, W), 0 if none.

    The two voxels farthest apart in a plane are corners of their convex hull, and a corner is the first or
    last marked voxel of its row: the distances are taken among those (at most 2 × H per plane, every plane at
    once) instead of among all the plane's voxels, with the same result.
    """
    if mask.size == 0:
        return 0.0
    marked = mask.any(axis=2)  # (D, H): rows with a voxel
    first = mask.argmax(axis=2)
    last = mask.shape[2] - 1 - mask[:, :, ::-1].argmax(axis=2)
    rows = np.broadcast_to(np.arange(mask.shape[1]), marked.shape)
    ends = np.concatenate([np.stack([rows, first], -1), np.stack([rows, last], -1)], axis=1) * spacing[1:]
    valid = np.concatenate([marked, marked], axis=1)  # (D, 2H)
    farthest = 0.0  # squared; sqrt is monotonic and correctly rounded, so sqrt(max) = max(sqrt)
    block = max(1, 2**18 // valid.shape[1] ** 2)  # planes at once: (block, 2H, 2H) distances, ≤ 2 MB each
    for start in range(0, len(ends), block):
        y, x, ok = ends[start:start + block, :, 0], ends[start:start + block, :, 1], valid[start:start + block]
        dy, dx = y[:, :, None] - y[:, None, :], x[:, :, None] - x[:, None, :]
        squared = np.where(ok[:, :, None] & ok[:, None, :], dy * dy + dx * dx, 0.0)
        farthest = max(farthest, float(squared.max()))
    return math.sqrt(farthest)


def _ratings(lesion) -> dict[str, Any]:
    """Each reader's nine ratings (``reader<k>_<name>``), and per rating the most frequent value, median, count."""
    by_reader: dict[int, dict[str, int]] = {}
    for mark in lesion.marks:  # one reader's merged marks: the last rated one counts, as in consensus_nodules
        by_reader[mark.reader] = mark.characteristics
    row: dict[str, Any] = {}
    for slot, reader in enumerate(sorted(by_reader)[:MAX_READERS], start=1):
        for name in CHARACTERISTICS:
            row[f"reader{slot}_{name}"] = by_reader[reader].get(name)
    for name in CHARACTERISTICS:
        values = [r[name] for r in by_reader.values() if r.get(name) is not None]
        row[f"{_column(name)}_count"] = len(values)
        row[f"{_column(name)}_median"] = float(np.median(values)) if values else math.nan
        row[f"{_column(name)}_value"] = most_frequent(values)
    row["len_mal_details"] = row["Malignancy_count"]
    return row


def most_frequent(values: list[int]) -> float:
    """The most frequent rating; a tie goes to the median of the tied values, rounded up (NaN when none)."""
    if not values:
        return math.nan
    counts = {v: values.count(v) for v in set(values)}
    top = max(counts.values())
    tied = sorted(v for v, c in counts.items() if c == top)
    return float(math.ceil(np.median(tied)))


def _write_voi(target: Path, array: np.ndarray, row: dict) -> Path:
    from medlens.data.readers.nifti import write_nifti
    from medlens.files import write_atomically
    from medlens.image import MedImage

    spacing = tuple(float(s) for s in row["spacing"].split("x"))
    origin_xyz = [float(v) for v in row["voi_origin"].split(",")]
    image = MedImage(array[None], spacing, origin=tuple(origin_xyz[::-1]))
    return write_atomically(target, lambda path: write_nifti(image, path))


# --------------------------------------------------------------------------------------------------
# the whole build
# --------------------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What a build did: patients built or reused, failed tasks, skipped inputs, counts and times."""

    out: Path
    patients: dict[str, PatientResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    log: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    where: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> list[list[str]]:
        return [line for line in self.log if not line[2].startswith("note:")]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def build_lidc_idri(raw: str | Path, out: str | Path, *, options: BuildOptions = BuildOptions(),
                    workers: int | None = None, scheduler: str | None = None,
                    on_patient: Callable[[str, PatientResult | None], None] | None = None,
                    patients: dict[str, list[Path]] | None = None, reuse_memory: bool = False) -> BuildReport:
    """Build every patient of ``raw`` into ``out``, resuming from what an earlier run finished.

    Parameters
    ----------
    raw, out : str or Path
        The archive (see the module docstring) and the output folder.
    options : BuildOptions
        VOI margin.
    workers, scheduler : optional
        Without either, patients are built one after the other in this process. ``workers`` starts a local
        Dask cluster of that many processes, one thread each (the build holds the GIL most of the time: pydicom's
        parsing, the XML; a second thread in a worker ran no faster and held a second series in memory:
        15.3-16.1 s and 975 MB against 14.9-15.1 s and 545 MB for 30 series of 240 slices on one worker);
        ``scheduler`` (or ``MEDLENS_DASK_SCHEDULER``) joins a running one, whose workers keep their threads.
        One task per patient; the task writes its files, only a small summary comes back.
    on_patient : callable, optional
        Called with each patient and its result (None when its task failed) as it finishes.
    patients : dict, optional
        The result of :func:`discover`, if already made.
    reuse_memory : bool
        Build in processes that keep freed memory for the next series (see :func:`build_patient`): this one
        when no Dask is used, the workers of the local cluster with ``workers``; never the workers of a running
        scheduler. For a process that builds and then exits (the CLI does); same output either way.
    """
    from medlens.engine.cluster import dask_client, run_tasks, scheduler_address

    start = time.perf_counter()
    out = Path(out)
    (out / STATE).mkdir(parents=True, exist_ok=True)
    found = discover(raw) if patients is None else patients
    report = BuildReport(out)
    reuse_memory = reuse_memory and scheduler_address(scheduler) is None
    items = [(f"lidc-build-{p}", (p, [str(f) for f in folders], str(out), options, reuse_memory))
             for p, folders in found.items()]

    def done(key: str, result: PatientResult) -> None:
        report.patients[result.patient_id] = result
        if on_patient is not None:
            on_patient(result.patient_id, result)

    def failed(key: str, error: BaseException) -> None:
        patient = key.removeprefix("lidc-build-")
        report.failed[patient] = f"{type(error).__name__}: {error}"
        if on_patient is not None:
            on_patient(patient, None)

    if workers is None and scheduler_address(scheduler) is None:
        for key, args in items:
            try:
                done(key, build_patient(*args))
            except Exception as exc:  # noqa: BLE001 - one patient's failure must not stop the others
                failed(key, exc)
    else:
        with dask_client(workers, scheduler, threads=1, environ=KEEP_FREED_ENVIRON if reuse_memory else None
                         ) as client:
            outcome = run_tasks(client, build_patient, items, retries=1, on_done=done, on_error=failed)
            report.where = outcome.where
    report.seconds = time.perf_counter() - start
    finish(out, found, report, options)
    return report


def finish(out: Path, patients: dict[str, list[Path]], report: BuildReport, options: BuildOptions) -> None:
    """Assemble ``lesions.csv``, ``build_log.tsv`` and ``build.json`` from the patients' records."""
    import pandas as pd

    from medlens.files import write_text_atomically

    rows, log = [], []
    for patient in sorted(patients):
        record = is_done(out, patient, options)
        if record is None:
            continue
        rows.extend(record["rows"])
        log.extend(record["log"])
    for patient, error in sorted(report.failed.items()):
        log.append([patient, "", f"task failed: {error}"])
    report.log = log
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.sort_values(["patient_id", "nodule_id"], kind="stable")
    write_text_atomically(out / TABLE, table.to_csv(index=False))
    write_text_atomically(out / LOG, "patient\tfile\tproblem\n" + "".join("\t".join(line) + "\n" for line in log))
    summary = {
        "medlens_version": _version(), "options": asdict(options), "patients": len(patients),
        "patients_built": sum(not r.reused for r in report.patients.values()),
        "patients_reused": sum(r.reused for r in report.patients.values()),
        "patients_failed": sorted(report.failed), "lesions": len(table),
        "series": sum(r.series for r in report.patients.values()),
        "slices": sum(r.slices for r in report.patients.values()),
        "skipped": len(report.skipped), "seconds": round(report.seconds, 3), "workers": report.where,
    }
    write_text_atomically(out / SUMMARY, json.dumps(summary, indent=1))
