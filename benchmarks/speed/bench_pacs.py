"""The PACS round trip of issue 25, timed stage by stage, and the cost of writing a large DICOM SEG.

**Round trip** (target ≤ 10 s on 2 cores with the bundles loaded): a real Orthanc (started here, as in the
tests: ``tests/orthanc_server.py``) holds LIDC-IDRI-0001's 16-slice CT series. With both bundles loaded, each
repeat runs what ``medlens predict NODULES --segmenter SEG --pacs URL --study UID --push`` runs: query (the
study by patient ID, then its series) → pull (list, retrieve, check) → read (HU volume) → segment (nodule
segmentation bundle) → classify (nodule bundle, one lesion per component) → write (SEG + SR) → validate
(dciodvfy, highdicom read-back, voxel equality) → push (STOW-RS or C-STORE, then the arrival check). The pushed
series are deleted between repeats (not timed). One warm-up run comes first (imports, highdicom's standard
tables, the first torch call) and is reported apart. Over DICOMweb and over DIMSE (C-GET, C-STORE).

**Threads**: the segment stage alone at 1 and 2 torch threads, interleaved (the run uses 1).

**SEG encoding**: a 512 × 512 × 300 mask (two ellipsoids, a pair of lungs in size: 279 slices touched) on 300
source headers, written by medlens (:func:`medlens.pacs.seg.write_seg`) and by highdicom's writer with its
defaults (BINARY, native transfer syntax, empty frames left out), then by the per-frame compressed path
(JPEG 2000 lossless, the one BINARY allows: every frame is encoded on its own), without and with 2 worker
processes. Each variant in a fresh process (highdicom loads its tables of the standard once per process,
reported as ``first_call_extra_s``), median of REPEATS.

Run (rerun on a quiet machine; the bundles are trained first when not given, ~1 min):
    MEDLENS_DATA=/work/shared/data PYTHONPATH=src .venv/bin/python benchmarks/speed/bench_pacs.py \
        --out benchmarks/results/pacs.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc launcher the tests use

SERIES = ("lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
          "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192")
CONFIG = REPO / "src/medlens/configs/lidc_nodules.yaml"


def train_bundles(folder: Path) -> tuple[Path, Path]:
    """The tests' bundles: bp_radiomics without LIDC-IDRI-0001, and the tiny nodule segmenter."""
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle
    from medlens.segment.bundle import save_segmenter
    from medlens.segment.datasets import load_folder
    from medlens.segment.rules import make_plan
    from medlens.segment.train import train_segmenter

    data = Path(os.environ["MEDLENS_DATA"])
    nodules = folder / "nodules"
    train_bundle(load_config(CONFIG), nodules, "bp_radiomics", threshold="sensitivity:0.95", quiet=True,
                 exclude_groups=["LIDC-IDRI-0001"])
    cases = load_folder(data / "lidc_idri_nodule_vois", "binary", limit=40)
    plan = make_plan(cases, data / "lidc_idri_nodule_vois").copy_with(**{
        "target_spacing": [2.5, 2.0, 2.0], "patch_size": [16, 16, 16], "network.channels": 4, "network.depth": 2,
        "training.epochs": 2, "training.steps_per_epoch": 10, "inference.tta_flips": False,
        "inference.overlap": 0.25, "postprocessing.keep_component": "largest", "postprocessing.keep_count": 2})
    model, history = train_segmenter(plan, cases)
    return nodules, save_segmenter(model, plan, folder / "segmenter", history)


def round_trip(nodules: Path, segmenter: Path, repeats: int) -> dict:
    import torch

    from medlens.pacs.client import StudyQuery, connect
    from medlens.pacs.models import load_model
    from medlens.pacs.run import STAGES, Request, run_on_study
    from orthanc_server import OrthancServer

    torch.set_num_threads(2)
    series = Path(os.environ["MEDLENS_DATA"]) / SERIES
    models = [load_model(nodules), load_model(segmenter)]
    results = {}
    with tempfile.TemporaryDirectory() as work, OrthancServer(Path(work) / "orthanc") as orthanc:
        orthanc.upload(sorted(series.glob("*.dcm")))
        for protocol in ("dicomweb", "dimse"):
            pacs = connect(getattr(orthanc, protocol))
            runs = []
            for repeat in range(repeats + 1):
                start = time.perf_counter()
                study = pacs.find_studies(StudyQuery(patient_id="LIDC-IDRI-0001", modality="CT"))[0].study_uid
                found = time.perf_counter() - start
                report = run_on_study(pacs, models, Request(study, Path(work) / f"{protocol}-{repeat}"), push_to=pacs)
                seconds = dict(report.seconds)
                seconds["query"] += found
                seconds["total"] = time.perf_counter() - start
                runs.append(seconds)
                for item in orthanc.series_of(study):
                    if item["MainDicomTags"]["Modality"] in ("SEG", "SR"):
                        orthanc.delete("series", item["ID"])
            timed = runs[1:]
            median = {stage: statistics.median(r.get(stage, 0.0) for r in timed) for stage in (*STAGES, "total")}
            results[protocol] = {
                "first_run_s": round(runs[0]["total"], 3),
                "median_s": {k: round(v, 3) for k, v in median.items()},
                "share": {k: round(median[k] / median["total"], 3) for k in STAGES},
                "totals_s": [round(r["total"], 3) for r in timed],
            }
    return results


def segment_threads(segmenter: Path, repeats: int) -> dict:
    """Seconds of the segment stage on LIDC-IDRI-0001 at 1 and 2 torch threads, interleaved (the run uses 1:
    :data:`medlens.pacs.run.MODEL_THREADS`)."""
    import warnings

    from medlens.data.readers import read_dicom
    from medlens.engine.threads import torch_threads
    from medlens.pacs.models import load_model, segment

    model = load_model(segmenter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader XML beside the series
        image = read_dicom(Path(os.environ["MEDLENS_DATA"]) / SERIES)
    segment(model, image)
    seconds = {1: [], 2: []}
    for _ in range(repeats):
        for threads in (1, 2):
            with torch_threads(threads):
                start = time.perf_counter()
                segment(model, image)
                seconds[threads].append(round(time.perf_counter() - start, 3))
    return {f"{n}_threads": {"median_s": statistics.median(s), "runs_s": s} for n, s in seconds.items()}


SEG_VARIANT = r'''
import copy, glob, json, statistics, sys, time
import numpy as np, pydicom
from pydicom.uid import generate_uid
variant, repeats, series = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base = pydicom.dcmread(sorted(glob.glob(series + "/*.dcm"))[0], stop_before_pixels=True)
sources = []
for k in range(300):
    header = copy.deepcopy(base)
    header.SOPInstanceUID = generate_uid()
    header.ImagePositionPatient = [-166.0, -171.7, -100.0 - k]
    header.InstanceNumber = k + 1
    sources.append(header)
zz, yy, xx = np.ogrid[:300, :512, :512]
mask = np.zeros((300, 512, 512), np.uint8)
for cx in (180, 330):
    mask[((yy - 256) / 150.0) ** 2 + ((xx - cx) / 80.0) ** 2 + ((zz - 150) / 140.0) ** 2 < 1] = 1
import highdicom as hd
from pydicom.sr.codedict import codes
from medlens.pacs.models import ModelIdentity
from medlens.pacs.seg import write_seg

def highdicom_default(out, **options):
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lung", segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Lung, algorithm_type="AUTOMATIC",
        algorithm_identification=hd.AlgorithmIdentificationSequence(name="x", family=codes.DCM.ArtificialIntelligence,
                                                                     version="1"))
    seg = hd.seg.Segmentation(sources, mask, "BINARY", [description], generate_uid(), 1, generate_uid(), 1,
                              "m", "m", "1", "1", **options)
    seg.save_as(out)

identity = ModelIdentity("lungs", "segmenter", "ab" * 32, "unet", None)
run = {
    "medlens": lambda out: write_seg(mask, sources, ["lung"], identity, out),
    "highdicom_default": highdicom_default,
    "highdicom_jpeg2000": lambda out: highdicom_default(out, transfer_syntax_uid=pydicom.uid.JPEG2000Lossless),
    "highdicom_jpeg2000_2_workers": lambda out: highdicom_default(out, transfer_syntax_uid=pydicom.uid.JPEG2000Lossless,
                                                                  workers=2),
}[variant]
import os, tempfile
times = []
with tempfile.TemporaryDirectory() as folder:
    for repeat in range(repeats + 1):
        out = os.path.join(folder, f"seg{repeat}.dcm")
        start = time.perf_counter()
        run(out)
        times.append(time.perf_counter() - start)
    size = os.path.getsize(out)
print(json.dumps({"variant": variant, "median_s": round(statistics.median(times[1:]), 3),
                  "first_call_extra_s": round(times[0] - statistics.median(times[1:]), 3),
                  "frames": int((mask.any(axis=(1, 2))).sum()), "file_mb": round(size / 1e6, 2)}))
'''


def seg_encoding(repeats: int, variants: list[str]) -> list[dict]:
    series = str(Path(os.environ["MEDLENS_DATA"]) / SERIES)
    rows = []
    for variant in variants:
        done = subprocess.run([sys.executable, "-c", SEG_VARIANT, variant, str(repeats), series], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodule-bundle", type=Path, help="nodule classifier bundle (default: train one)")
    parser.add_argument("--segmenter", type=Path, help="nodule segmentation bundle (default: train one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seg-repeats", type=int, default=3)
    parser.add_argument("--seg-variants", nargs="*", default=["medlens", "highdicom_default", "highdicom_jpeg2000",
                                                              "highdicom_jpeg2000_2_workers"])
    parser.add_argument("--skip-round-trip", action="store_true")
    parser.add_argument("--skip-seg", action="store_true")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    # pseudonyms of the run's tables: a key of the benchmark's own, so that no key file is created in $HOME
    os.environ.setdefault("MEDLENS_PSEUDONYM_KEY", "bench-pacs")
    result = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.skip_round_trip:
        with tempfile.TemporaryDirectory() as folder:
            nodules, segmenter = args.nodule_bundle, args.segmenter
            if nodules is None or segmenter is None:
                nodules, segmenter = train_bundles(Path(folder))
            result["round_trip"] = round_trip(nodules, segmenter, args.repeats)
            result["segment_threads"] = segment_threads(segmenter, args.repeats + 1)
        print(json.dumps(result["round_trip"], indent=2), flush=True)
    if not args.skip_seg:
        result["seg_512x512x300"] = seg_encoding(args.seg_repeats, args.seg_variants)
    result["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
