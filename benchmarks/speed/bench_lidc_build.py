"""Scale of `medlens data build lidc-idri`: a replicated archive built in one process and on 1 and 2 Dask workers,
against pydicom alone reading and decoding the same files.

The archive: the three local patients (LIDC-IDRI-0001..0003, 39 slices with their XML) copied under new patient
IDs and UIDs (:mod:`medlens.data.replicate`) to ``--patients`` patients. The copies exist only to measure speed
and memory, never for accuracy figures.

Measured per run (each into a fresh output folder, files already in the page cache from the baseline):

* ``pydicom``: ``pydicom.dcmread(f).pixel_array`` over every DICOM file, one process: the practical limit;
* ``inproc``: ``build_lidc_idri`` without Dask (one patient after the other);
* ``dask-1`` and ``dask-2``: the same on a LocalCluster of 1 and 2 worker processes (start-up included).

By default each copied series carries the record ``medlens data fetch lidc-idri`` writes (every file's md5,
checked at download), which the build uses for its provenance column; ``--no-records`` makes the build hash
every source file itself (about as costly as decoding it).

Printed and appended to ``--jsonl``: series/s, slices/s, the ratio of the build's slice rate to pydicom's, and the
peak RSS of each process that built patients (``ru_maxrss`` reported by the tasks).

Usage (a one-line rerun for a quiet machine)::

    MEDLENS_DATA=/work/shared/data PYTHONPATH=src python benchmarks/speed/bench_lidc_build.py --patients 300 \\
        --work /tmp/lidc_scale --jsonl benchmarks/results/data_build.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import pydicom

from medlens.data.lidc_build import build_lidc_idri, discover
from medlens.data.replicate import replicate_archive

SOURCES = {"LIDC-IDRI-0001": "lidc_idri_ct", "LIDC-IDRI-0002": "lidc_idri_ct_more",
           "LIDC-IDRI-0003": "lidc_idri_ct_more"}


def pydicom_baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for file in files:
        pydicom.dcmread(file).pixel_array  # noqa: B018 - the decode is what is timed
    return time.perf_counter() - start


def read_dicom_baseline(folders: list[Path]) -> float:
    """medlens's own series reader (headers, sort, HU) over every series: the build's per-slice part."""
    from medlens.data.readers import read_dicom

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for folder in folders:
            read_dicom(folder, strict_spacing=True)
    return time.perf_counter() - start


def run_build(raw: Path, out: Path, workers: int | None, patients: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = build_lidc_idri(raw, out, workers=workers, patients=patients)
    seconds = time.perf_counter() - start
    assert report.ok, report.failed or report.skipped[:3]
    per_worker: dict[str, float] = {}
    for key, result in report.patients.items():
        where = report.where.get(f"lidc-build-{key}", "this process")
        per_worker[where] = max(per_worker.get(where, 0.0), result.peak_rss_mb)
    return {"seconds": seconds, "series": sum(r.series for r in report.patients.values()),
            "slices": sum(r.slices for r in report.patients.values()),
            "lesions": sum(r.lesions for r in report.patients.values()), "peak_rss_mb": per_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lidc_scale"))
    parser.add_argument("--runs", nargs="+", default=["inproc", "dask-1", "dask-2"])
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--note", default="")
    parser.add_argument("--no-records", action="store_true",
                        help="copies without the download record: the build hashes every source file itself")
    args = parser.parse_args()
    root = Path(os.environ.get("MEDLENS_DATA", "../shared/data"))
    made = time.perf_counter()
    raw = args.work / ("raw-norecord" if args.no_records else "raw")
    replicate_archive([root / folder / patient for patient, folder in SOURCES.items()], raw, args.patients,
                      record=not args.no_records)
    print(f"replicated archive: {args.patients} patients in {raw} ({time.perf_counter() - made:.1f} s)")
    patients = {p: f for p, f in discover(raw).items() if p.startswith("REPL-")
                and int(p.split("-")[1]) <= args.patients}
    files = sorted(f for folders in patients.values() for d in folders for f in d.iterdir() if f.suffix == ".dcm")
    pydicom_baseline(files[: min(len(files), 200)])  # warm-up
    base = pydicom_baseline(files)
    base_rate = len(files) / base
    print(f"pydicom read+decode: {len(files)} files in {base:.2f} s = {base_rate:.1f} slices/s")
    folders = [d for ds in patients.values() for d in ds]
    reader = read_dicom_baseline(folders)
    print(f"medlens read_dicom: {len(folders)} series in {reader:.2f} s = {len(files) / reader:.1f} slices/s")
    rows = []
    for name in args.runs:
        workers = None if name == "inproc" else int(name.split("-")[1])
        result = run_build(raw, args.work / f"out-{name}", workers, patients)
        rate = result["slices"] / result["seconds"]
        row = {"run": name, "patients": len(patients), **result, "series_per_s": result["series"] / result["seconds"],
               "slices_per_s": rate, "pydicom_slices_per_s": base_rate, "ratio_to_pydicom": rate / base_rate,
               "read_dicom_seconds": reader,
               "overhead_per_series_s": (result["seconds"] - reader) / max(1, result["series"]),
               "records": not args.no_records, "cpus": os.cpu_count(), "platform": platform.platform(), "note": args.note,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        rows.append(row)
        rss = ", ".join(f"{mb:.0f}" for mb in row["peak_rss_mb"].values())
        print(f"{name:7s} {row['seconds']:7.2f} s  {row['series_per_s']:6.2f} series/s  {rate:7.1f} slices/s  "
              f"ratio {row['ratio_to_pydicom']:.2f}  peak RSS per process (MB): {rss}")
    if args.jsonl is not None:
        with args.jsonl.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
