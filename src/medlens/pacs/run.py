"""``medlens predict BUNDLE --pacs URL --study UID``: a study from a PACS through the bundles and back.

Stages, each timed (:class:`Report` ``seconds``):

1. **query**: list the study's series and choose one: ``series_uid``, else the largest series of the modality
   the bundles were trained on (CT). A study without such a series, or a named series of another modality,
   is refused before anything is downloaded.
2. **pull**: download and check it (:func:`medlens.pacs.pull.pull_study`) into a private temporary folder,
   removed at the end whatever happens.
3. **read**: the series in HU (:func:`medlens.data.readers.read_dicom`).
4. **segment** (with a segmentation bundle): its label map, in the series' geometry.
5. **classify** (with a nodule bundle): the lesions, from ``at`` or one per connected component of the
   segmentation (:mod:`medlens.pacs.lesions`), each classified as in ``medlens predict``.
   Both model stages run on :data:`MODEL_THREADS` torch threads.
6. **write**: the SEG (:mod:`medlens.pacs.seg`) and the SR (:mod:`medlens.pacs.sr`) into ``out``.
7. **validate**: each object (:mod:`medlens.pacs.validate`); one failure stops the run before any push.
8. **push** (when asked): send them and check what arrived (:mod:`medlens.pacs.push`).

``out`` also gets ``findings.csv`` (one row per lesion) and ``run.json`` (what ran, on what, how long, what
was written and pushed). Those files name the patient by pseudonym only (``patient_pseudonym``,
:mod:`medlens.data.identifiers`) unless ``keep_identifiers``; the DICOM objects carry the patient module as
DICOM requires.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pydicom

import medlens
from medlens.errors import ConfigError, MedlensError, PacsError
from medlens.files import json_ready, write_csv_atomically, write_text_atomically
from medlens.pacs.client import Pacs, SeriesRecord
from medlens.pacs.lesions import MIN_DIAMETER_MM, lesion_at, lesions_from_mask
from medlens.pacs.models import Classifier, Segmenter, classify, segment
from medlens.pacs.pull import choose_series, pull_study
from medlens.pacs.sr import POSITIVE_LABEL, Finding

SEG_FILE, SR_FILE, TABLE_FILE, RUN_FILE = "seg.dcm", "sr.dcm", "findings.csv", "run.json"
STAGES = ("query", "pull", "read", "segment", "classify", "write", "validate", "push")
MODEL_THREADS = 1
"""torch threads of the model stages. One series' windows (and one lesion's cube) are small pieces of work:
on the shared 2-core machine the tests' segmenter took a median 0.23 s for LIDC-IDRI-0001 with one thread
and 3.1 s (0.4 to 14.7 s) with two, the threads waiting on each other (benchmarks/results/pacs.md), as
``medlens predict`` found for a few images."""


@dataclass
class Request:
    """What to run on which study."""

    study_uid: str
    out: Path
    series_uid: str | None = None
    at: tuple[float, float, float] | None = None
    min_diameter_mm: float = MIN_DIAMETER_MM
    class_names: list[str] | None = None
    keep_identifiers: bool = False


@dataclass
class Report:
    """What a run did (written to ``run.json``)."""

    server: str
    study_uid: str
    series_uid: str = ""
    modality: str = ""
    patient: dict = field(default_factory=dict)
    n_instances: int = 0
    models: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    components_dropped: int = 0
    objects: list[dict] = field(default_factory=list)
    pushed_to: str | None = None
    pushed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    medlens_version: str = medlens.__version__


class _Clock:
    def __init__(self, report: Report):
        self.report, self.start = report, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.report.seconds[stage] = round(self.report.seconds.get(stage, 0.0) + now - self.start, 4)
        self.start = now


def patient_fields(pulled, keep: bool) -> dict[str, str]:
    """Who the study belongs to, as tables and logs may name it: ``patient_pseudonym``, or with ``keep`` the
    patient's ID, name and birth date (:func:`medlens.data.identifiers.redact_identifiers`)."""
    from medlens.data.identifiers import redact_identifiers

    return redact_identifiers({"patient_id": pulled.patient_id, "patient_name": pulled.patient_name,
                               "patient_birth_date": pulled.birth_date}, keep=keep)


def split_models(models: list[Classifier | Segmenter]) -> tuple[Classifier | None, Segmenter | None]:
    """The classifier and the segmenter among the loaded bundles (at most one of each)."""
    classifiers = [m for m in models if isinstance(m, Classifier)]
    segmenters = [m for m in models if isinstance(m, Segmenter)]
    if len(classifiers) > 1 or len(segmenters) > 1 or not models:
        raise ConfigError("--pacs: give one nodule bundle, one segmentation bundle, or one of each (--segmenter)")
    return (classifiers[0] if classifiers else None), (segmenters[0] if segmenters else None)


def expected_modality(models: list[Classifier | Segmenter]) -> str | None:
    """The modality the bundles were trained on (they must agree), None when they do not say."""
    modalities = {m.modality for m in models if m.modality}
    if len(modalities) > 1:
        raise ConfigError(f"--pacs: the bundles were trained on different modalities ({', '.join(sorted(modalities))})")
    return modalities.pop() if modalities else None


def pick_series(server: str, study_uid: str, found: list[SeriesRecord], series_uid: str | None,
                modality: str | None, models: list[Classifier | Segmenter]) -> SeriesRecord:
    """The series to run on (module docstring, stage 1)."""
    if series_uid and modality:
        chosen = choose_series(server, study_uid, found, [series_uid], None)[0]
        if chosen.modality != modality:
            kind = chosen.modality or "of unknown modality"
            trained = "was" if len(models) == 1 else "were"
            raise PacsError(f"{server}: series {series_uid} of study {study_uid} is {kind}; {_names(models)} "
                            f"{trained} trained on {modality}")
        return chosen
    chosen = choose_series(server, study_uid, found, [series_uid] if series_uid else None, modality)
    return max(chosen, key=lambda s: (s.n_instances or 0, s.series_uid))


def _names(models: list[Classifier | Segmenter]) -> str:
    return " and ".join(f"bundle {m.identity.name}" for m in models)


def run_on_study(source: Pacs, models: list[Classifier | Segmenter], request: Request, *,
                 push_to: Pacs | None = None, say: Callable[[str], None] = lambda _: None) -> Report:
    """Run the bundles on a study of ``source`` and, with ``push_to``, push the results (module docstring).

    Raises
    ------
    PacsError
        The server cannot be reached or refuses, an unknown study or series, a series of the wrong modality,
        without pixel data, or changed while pulled; a push that did not arrive.
    DicomObjectError
        A written object fails validation (nothing is pushed).
    MedlensError
        Bad options, e.g. a nodule bundle without ``at`` or a segmentation bundle.
    """
    from medlens.data.readers import read_dicom
    from medlens.engine.threads import torch_threads

    classifier, segmenter = split_models(models)
    if classifier is None and request.at is not None:
        raise ConfigError("--at places a nodule for a nodule bundle; a segmentation bundle alone takes none")
    if classifier is not None and segmenter is None and request.at is None:
        raise ConfigError(f"{classifier.identity.name}: a nodule bundle needs the nodule's position (--at z,y,x) or a "
                          "segmentation bundle that finds the nodules (--segmenter)")
    if classifier is not None and classifier.needs_mask and segmenter is None:
        raise ConfigError(f"{classifier.identity.name}: this bundle measures the lesion's mask (radiomic features); "
                          "a position alone (--at) is not enough: give a segmentation bundle too (--segmenter)")
    out = Path(request.out)
    taken = [name for name in (SEG_FILE, SR_FILE, TABLE_FILE, RUN_FILE) if (out / name).exists()]
    if taken:
        raise MedlensError(f"{out}: already holds {', '.join(taken)}; write into another folder")
    server = str(source.address)
    report = Report(server=server, study_uid=request.study_uid,
                    models=[{"bundle": m.identity.name, "kind": m.identity.kind, "model": m.identity.model_id,
                             "sha256": m.identity.digest} for m in models])
    clock = _Clock(report)

    modality = expected_modality(models)
    record = pick_series(server, request.study_uid, source.find_series(request.study_uid), request.series_uid,
                         modality, models)
    report.series_uid, report.modality = record.series_uid, record.modality
    clock.lap("query")
    say(f"pulling series {record.series_uid} ({record.modality}, {record.n_instances} instances) from {server}")
    with pull_study(source, request.study_uid, series_uids=[record.series_uid]) as pulled:
        series = pulled.series[0]
        report.patient = patient_fields(pulled, request.keep_identifiers)
        report.n_instances = pulled.n_instances
        clock.lap("pull")
        image = read_dicom(series.folder)
        by_uid = {str(h.SOPInstanceUID): h for h in (pydicom.dcmread(p, stop_before_pixels=True) for p in series.files)}
        sources = [by_uid[uid] for uid in image.meta["sop_uids"]]
        clock.lap("read")

        labels = None
        if segmenter is not None:
            say(f"segmenting with {segmenter.identity.name}")
            with torch_threads(MODEL_THREADS):
                labels = segment(segmenter, image)
            clock.lap("segment")
        findings = []
        if classifier is not None:
            lesions, report.components_dropped = (
                ([lesion_at(request.at, image, labels)], 0) if request.at is not None
                else lesions_from_mask(labels, image, request.min_diameter_mm))
            if report.components_dropped:
                report.notes.append(f"{report.components_dropped} segmentation component(s) under "
                                    f"{request.min_diameter_mm:g} mm left out")
            say(f"classifying {len(lesions)} lesion(s) with {classifier.identity.name}")
            with torch_threads(MODEL_THREADS):
                predictions = classify(classifier, series.folder, lesions, pulled.root)
            findings = [Finding(lesion, prediction) for lesion, prediction in zip(lesions, predictions)]
            clock.lap("classify")

        written = _write_objects(out, labels, sources, findings, segmenter, classifier, request, report)
        clock.lap("write")
        validations = _validate_objects(written, labels, sources, findings, report)
        clock.lap("validate")
        _write_findings(out, findings, classifier, report, written)
    if push_to is not None and validations:
        from medlens.pacs.push import push_objects

        say(f"pushing {len(validations)} object(s) to {push_to.address}")
        result = push_objects(push_to, validations)
        report.pushed_to, report.pushed = result.server, result.found
        clock.lap("push")
    elif push_to is not None:
        report.notes.append("nothing to push: no object was written")
    write_text_atomically(out / RUN_FILE, json.dumps(json_ready(asdict(report)), indent=2))
    return report


def _write_objects(out: Path, labels, sources, findings, segmenter, classifier, request: Request,
                   report: Report) -> dict[str, object]:
    from medlens.pacs.seg import write_seg
    from medlens.pacs.sr import write_sr

    written: dict[str, object] = {}
    if labels is not None:
        if labels.any():
            names = request.class_names or segmenter.class_names or (
                ["nodule"] if classifier is not None else [f"class {k}" for k in range(1, int(labels.max()) + 1)])
            written["seg"] = write_seg(labels, sources, names, segmenter.identity, out / SEG_FILE)
        else:
            report.notes.append("the segmentation is empty: no SEG written")
    if findings:
        written["sr"] = write_sr(findings, sources, classifier, out / SR_FILE)
    elif classifier is not None:
        report.notes.append("no lesion of at least the minimum diameter: no SR written")
    return written


def _validate_objects(written: dict, labels, sources, findings, report: Report) -> list:
    from medlens.pacs.validate import validate_seg, validate_sr

    validations = {}
    if "seg" in written:
        validations["seg"] = validate_seg(written["seg"].path, labels, sources)
    if "sr" in written:
        probabilities = [f.prediction.probabilities[POSITIVE_LABEL] for f in findings]
        validations["sr"] = validate_sr(written["sr"].path, probabilities, sources[0])
    for kind, validation in validations.items():
        item = written[kind]
        report.objects.append({"kind": kind.upper(), "file": item.path.name, "sop_uid": item.sop_uid,
                               "series_uid": item.series_uid, "checks": validation.checks,
                               "dciodvfy_warnings": len(validation.warnings)})
    return list(validations.values())


def _write_findings(out: Path, findings, classifier, report: Report, written: dict) -> None:
    import pandas as pd

    rows = []
    for finding in findings:
        lesion, prediction = finding.lesion, finding.prediction
        row = {**report.patient, "study_uid": report.study_uid, "series_uid": report.series_uid,
               "finding": f"nodule {lesion.number}", "found_by": lesion.source,
               "z": lesion.centre_voxel[0], "y": lesion.centre_voxel[1], "x": lesion.centre_voxel[2],
               "x_mm": lesion.position_mm[0], "y_mm": lesion.position_mm[1], "z_mm": lesion.position_mm[2],
               "diameter_mm": lesion.diameter_mm, "volume_mm3": lesion.volume_mm3,
               **{f"p_{label}": p for label, p in prediction.probabilities.items()},
               "label": prediction.label, "threshold": prediction.threshold,
               "threshold_rule": classifier.threshold_rule, "bundle": classifier.identity.name,
               "bundle_sha256": classifier.identity.digest,
               "sr_sop_uid": written["sr"].sop_uid if "sr" in written else None}
        rows.append(row)
        report.findings.append({k: row[k] for k in ("finding", "diameter_mm", f"p_{POSITIVE_LABEL}", "label")})
    if rows:
        write_csv_atomically(out / TABLE_FILE, pd.DataFrame(rows))


def predict_study(bundles: list[Path], url: str, request: Request, *, push: bool = False, push_url: str | None = None,
                  aet: str | None = None, move_port: int | None = None,
                  say: Callable[[str], None] = lambda _: None) -> Report:
    """Load the bundles, connect, and :func:`run_on_study`; ``push`` sends the results back to ``url`` (or to
    ``push_url``). The bundles are loaded before the PACS is contacted, so a bad bundle costs no download."""
    from medlens.pacs.client import DEFAULT_AET, connect
    from medlens.pacs.models import load_model

    models = [load_model(path) for path in bundles]
    split_models(models)
    source = connect(url, aet=aet or DEFAULT_AET, move_port=move_port)
    target = None
    if push or push_url:
        target = source if not push_url or push_url == url else connect(push_url, aet=aet or DEFAULT_AET)
    return run_on_study(source, models, request, push_to=target, say=say)
