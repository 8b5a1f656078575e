"""Scale of `medlens data build lidc-idri`: a replicated archive built in one process and on 1 and 2 Dask workers,
against pydicom alone reading and decoding the same files.

The archive: the three local patients (LIDC-IDRI-0001..0003, 39 slices with their XML) copied under new patient
IDs and UIDs (:mod:`medlens.data.replicate`) to ``--patients`` patients. With ``--slices N`` each series is first
lengthened to N slices (:func:`medlens.data.replicate.lengthen_patient`: copies of its slices at the missing
positions, so that every contour of its XML lies on the series, as in the archive, where a series has about 240
slices). The copies exist only to measure speed and memory, never for accuracy figures.

Measured in each of ``--repeats`` rounds, one after the other (the machine is shared: compare the ratios of one
round, which share its load; the medians over rounds are printed at the end):

* ``pydicom``: ``pydicom.dcmread(f).pixel_array`` over every DICOM file, in a fresh process: the practical
  limit, measured again just before each build (the load of a shared machine drifts) and the build's ratio
  taken to that measure;
* ``read_dicom``: medlens's series reader over every series (the build's per-slice part), in a fresh process
  set up as the build's (the first ``--src`` tree);
* for each source tree of ``--src`` (default: this checkout's ``src``) and each run of ``--runs``, a build into
  a fresh output folder, in a fresh process (``PYTHONPATH`` = that tree), timed around ``build_lidc_idri``
  alone, after the modules the build uses are imported (about 1 s once per process, printed apart; a Dask
  worker's imports count in its run): ``inproc`` (no Dask, one patient after the other), ``dask-1``, ``dask-2`` (a LocalCluster of 1 or 2
  worker processes, start-up included). Several trees compare a change with what it replaced in one run, e.g.
  ``--src src /tmp/before/src`` after ``git archive <commit> src | tar -x -C /tmp/before``.

Each build runs as ``medlens data build`` does, keeping freed volumes' memory for the next series
(``reuse_memory=True``, :func:`medlens.engine.memory.keep_freed_memory`); ``--no-reuse-memory`` measures
without. By default each copied series carries the record ``medlens data fetch lidc-idri`` writes (every file's md5,
checked at download), which the build uses for its provenance column; ``--no-records`` makes the build hash
every source file itself (about as costly as decoding it).

Printed and appended to ``--jsonl``: series/s, slices/s, the ratio of the build's slice rate to pydicom's of the
same round, the build's time per series beyond ``read_dicom``, and the peak RSS of each process that built
patients (``ru_maxrss`` reported by the tasks).

Usage (one-line reruns for a quiet machine)::

    MEDLENS_DATA=/work/shared/data PYTHONPATH=src python benchmarks/speed/bench_lidc_build.py --patients 300 \\
        --repeats 3 --work /tmp/lidc_scale --jsonl benchmarks/results/data_build.jsonl
    MEDLENS_DATA=/work/shared/data PYTHONPATH=src python benchmarks/speed/bench_lidc_build.py --patients 30 \\
        --slices 240 --runs inproc --repeats 3 --work /tmp/lidc_scale --jsonl benchmarks/results/data_build.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from medlens.data.lidc_build import discover
from medlens.data.replicate import lengthen_patient, replicate_archive

SOURCES = {"LIDC-IDRI-0001": "lidc_idri_ct", "LIDC-IDRI-0002": "lidc_idri_ct_more",
           "LIDC-IDRI-0003": "lidc_idri_ct_more"}

_BUILD = """
import inspect, json, shutil, sys, time, warnings
from pathlib import Path
start = time.perf_counter()
from medlens.data.lidc_build import build_lidc_idri, discover
import medlens.data.readers.lidc_xml, nibabel, pandas, scipy.ndimage, skimage.draw  # what the build imports
imports = time.perf_counter() - start
raw, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), (None if sys.argv[3] == "0" else int(sys.argv[3]))
prefix, count, reuse = sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1"
# as `medlens data build` runs it (a tree from before the option builds as it did)
extra = {"reuse_memory": reuse} if "reuse_memory" in inspect.signature(build_lidc_idri).parameters else {}
patients = {p: f for p, f in discover(raw).items() if p.startswith(prefix) and int(p.split("-")[1]) <= count}
shutil.rmtree(out, ignore_errors=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    report = build_lidc_idri(raw, out, workers=workers, patients=patients, **extra)
    seconds = time.perf_counter() - start
assert report.ok, (report.failed, report.skipped[:3])
rss = {}
for key, result in report.patients.items():
    where = report.where.get(f"lidc-build-{key}", "this process")
    rss[where] = max(rss.get(where, 0.0), result.peak_rss_mb)
print(json.dumps({"seconds": seconds, "imports_s": imports, "series": sum(r.series for r in report.patients.values()),
                  "slices": sum(r.slices for r in report.patients.values()),
                  "lesions": sum(r.lesions for r in report.patients.values()), "peak_rss_mb": rss}))
"""


_PYDICOM = """
import sys, time
import pydicom
files = sys.stdin.read().splitlines()
start = time.perf_counter()
for file in files:
    pydicom.dcmread(file).pixel_array
print(time.perf_counter() - start)
"""


def pydicom_baseline(files: list[Path]) -> float:
    """Seconds for ``pydicom.dcmread(f).pixel_array`` over ``files`` in a fresh process, as the builds run."""
    done = subprocess.run([sys.executable, "-c", _PYDICOM], input="\n".join(map(str, files)), capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


_READ = """
import sys, time, warnings
from pathlib import Path
from medlens.data.readers import read_dicom
if sys.argv[1] == "1":
    from medlens.engine.memory import keep_freed_memory
    keep_freed_memory()
folders = [Path(line) for line in sys.stdin.read().splitlines()]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    for folder in folders:
        read_dicom(folder, strict_spacing=True)
print(time.perf_counter() - start)
"""


def read_dicom_baseline(src: Path, folders: list[Path], reuse: bool) -> float:
    """medlens's own series reader (headers, sort, HU) over every series, in a fresh process set up as the
    build's (``reuse``: :func:`~medlens.engine.memory.keep_freed_memory`): the build's per-slice part."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    done = subprocess.run([sys.executable, "-c", _READ, "1" if reuse else "0"], input="\n".join(map(str, folders)),
                          env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def run_build(src: Path, raw: Path, out: Path, workers: int | None, prefix: str, count: int, reuse: bool) -> dict:
    """One build in a fresh process whose ``medlens`` comes from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "MEDLENS_QUIET": "1"}
    done = subprocess.run([sys.executable, "-c", _BUILD, str(raw), str(out), str(workers or 0), prefix, str(count),
                           "1" if reuse else "0"], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"build with {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit(src: Path) -> str:
    """``git describe`` of the tree ``src`` belongs to (``-dirty`` with uncommitted changes), or '' outside git."""
    done = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def make_archive(args, root: Path) -> tuple[Path, str]:
    """The replicated archive (lengthened first with ``--slices``) and the prefix of its patient IDs."""
    sources = [root / folder / patient for patient, folder in SOURCES.items()]
    name = "raw" + (f"-{args.slices}" if args.slices else "") + ("-norecord" if args.no_records else "")
    if args.slices:
        long = args.work / f"long-{args.slices}"
        if not long.exists():
            partial = args.work / f".long-{args.slices}.partial"
            for source in sources:
                lengthen_patient(source, partial, args.slices)
            partial.rename(long)
        sources = [long / patient for patient in SOURCES]
    raw = args.work / name
    prefix = f"L{args.slices}" if args.slices else "REPL"
    replicate_archive(sources, raw, args.patients, prefix=prefix, record=not args.no_records)
    return raw, prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--slices", type=int, default=0, help="lengthen each series to this many slices first")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lidc_scale"))
    parser.add_argument("--runs", nargs="+", default=["inproc", "dask-1", "dask-2"])
    parser.add_argument("--src", nargs="+", type=Path, default=[Path(__file__).resolve().parents[2] / "src"],
                        help="source trees to build with (each in its own process)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--note", default="")
    parser.add_argument("--no-reuse-memory", action="store_true",
                        help="build without keep_freed_memory (the CLI uses it; a library call does not by default)")
    parser.add_argument("--no-records", action="store_true",
                        help="copies without the download record: the build hashes every source file itself")
    args = parser.parse_args()
    root = Path(os.environ.get("MEDLENS_DATA", "../shared/data"))
    made = time.perf_counter()
    raw, prefix = make_archive(args, root)
    print(f"replicated archive: {args.patients} patients in {raw} ({time.perf_counter() - made:.1f} s)")
    patients = {p: f for p, f in discover(raw).items() if p.startswith(prefix)
                and int(p.split("-")[1]) <= args.patients}
    folders = [d for ds in patients.values() for d in ds]
    files = sorted(f for d in folders for f in d.iterdir() if f.suffix == ".dcm")
    for file in files:  # into the page cache
        file.read_bytes()
    rows = []
    for repeat in range(args.repeats):
        base = pydicom_baseline(files)
        reader = read_dicom_baseline(args.src[0], folders, not args.no_reuse_memory)
        print(f"[{repeat}] pydicom read+decode: {len(files)} files in {base:.2f} s = {len(files) / base:.1f} "
              f"slices/s; read_dicom: {len(folders)} series in {reader:.2f} s = {len(files) / reader:.1f} slices/s "
              f"(ratio {base / reader:.3f})")
        for src in args.src:
            for name in args.runs:
                workers = None if name == "inproc" else int(name.split("-")[1])
                base = pydicom_baseline(files)  # just before the build it is compared with
                base_rate = len(files) / base
                result = run_build(src, raw, args.work / f"out-{name}", workers, prefix, args.patients,
                                   not args.no_reuse_memory)
                rate = result["slices"] / result["seconds"]
                row = {"run": name, "src": str(src), "commit": _commit(src), "repeat": repeat, "patients": len(patients),
                       "slices_per_series": result["slices"] / max(1, result["series"]), **result,
                       "series_per_s": result["series"] / result["seconds"], "slices_per_s": rate,
                       "pydicom_slices_per_s": base_rate, "ratio_to_pydicom": rate / base_rate,
                       "read_dicom_seconds": reader, "read_dicom_ratio": base / reader,
                       "overhead_per_series_s": (result["seconds"] - reader) / max(1, result["series"]),
                       "records": not args.no_records, "reuse_memory": not args.no_reuse_memory, "cpus": os.cpu_count(), "platform": platform.platform(),
                       "note": args.note, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                rows.append(row)
                rss = ", ".join(f"{mb:.0f}" for mb in row["peak_rss_mb"].values())
                print(f"[{repeat}] {name:7s} {src}: {row['seconds']:7.2f} s  {row['series_per_s']:6.2f} series/s  "
                      f"{rate:7.1f} slices/s  ratio {row['ratio_to_pydicom']:.3f} (pydicom {base_rate:.0f}/s)  beyond read_dicom "
                      f"{1000 * row['overhead_per_series_s']:.1f} ms/series  peak RSS per process (MB): {rss}")
    print("medians over repeats:")
    for src in args.src:
        for name in args.runs:
            mine = [r for r in rows if r["run"] == name and r["src"] == str(src)]
            print(f"  {name:7s} {src}: ratio {statistics.median(r['ratio_to_pydicom'] for r in mine):.3f}, "
                  f"{statistics.median(r['slices_per_s'] for r in mine):.1f} slices/s, beyond read_dicom "
                  f"{1000 * statistics.median(r['overhead_per_series_s'] for r in mine):.1f} ms/series")
    if args.jsonl is not None:
        with args.jsonl.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
