"""Fuzz every medlens reader with Hypothesis and count the inputs and the exceptions that are not a
``MedlensError`` (issue 27; goal 0). The generators and the property are those of the test suite's short
seeded run (``tests/fuzzing.py``, ``tests/data/readers/test_fuzz.py``); this script runs many more inputs
and keeps going after a finding, printing each distinct one (reader, exception type, where it was raised)
with the damaged input saved for replay.

    MEDLENS_DATA=../shared/data PYTHONPATH=src python benchmarks/quality/fuzz_readers.py --examples 2000 \\
        --seed 0 --save benchmarks/results/fuzz_findings

Output: one line per reader (inputs, ok, MedlensError, other) and a JSON summary (``--json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import fuzzing  # noqa: E402
import logging  # noqa: E402
from medlens.errors import MedlensError  # noqa: E402


def fuzz_target(name: str, examples: int, root: Path, seed_value: int, save: Path | None) -> dict:
    target = fuzzing.TARGETS[name]
    counts = collections.Counter()
    findings: dict[tuple[str, str], dict] = {}
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=fuzzing.inputs(target, root))
    def run(data: bytes) -> None:
        counts["inputs"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                target.read(_write(folder, target, data), root)
                counts["ok"] += 1
            except MedlensError:
                counts["medlens_error"] += 1
            except Exception as exc:  # noqa: BLE001 (counted, not raised: the run goes on)
                counts["other"] += 1
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                key = (type(exc).__name__, f"{Path(frame.filename).name}:{frame.lineno}")
                if key not in findings:
                    findings[key] = {"reader": name, "exception": key[0], "where": key[1], "message": str(exc)[:300],
                                     "count": 0}
                    if save is not None:
                        save.mkdir(parents=True, exist_ok=True)
                        replay = save / f"{name}-{key[0]}-{len(findings)}{Path(target.filename).suffix}"
                        replay.write_bytes(data)
                        findings[key]["input"] = str(replay)
                findings[key]["count"] += 1

    run()
    return {"reader": name, **counts, "findings": list(findings.values())}


def _write(folder: Path, target, data: bytes) -> Path:
    path = folder / target.filename
    path.write_bytes(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="Inputs per reader.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", default=",".join(fuzzing.TARGETS), help="Comma-separated target names.")
    parser.add_argument("--save", type=Path, default=None, help="Folder for the inputs of each distinct finding.")
    parser.add_argument("--json", type=Path, default=None, help="Write the summary here.")
    args = parser.parse_args()
    root = Path(os.environ.get("MEDLENS_DATA", REPO.parent / "shared" / "data")).resolve()
    os.environ.update(fuzzing.FUZZ_LIMITS)
    for logger in ("tifffile", "nibabel", "pydicom"):  # they log each damaged field they repair or skip
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    results, start = [], time.time()
    for name in args.readers.split(","):
        t0 = time.time()
        result = fuzz_target(name, args.examples, root, args.seed, args.save)
        result["seconds"] = round(time.time() - t0, 1)
        results.append(result)
        print(f"{name:13s} inputs {result.get('inputs', 0):6d}  ok {result.get('ok', 0):6d}  "
              f"MedlensError {result.get('medlens_error', 0):6d}  other {result.get('other', 0):5d}  "
              f"({result['seconds']} s)", flush=True)
        for finding in result["findings"]:
            print(f"    {finding['count']:4d} × {finding['exception']} at {finding['where']}: {finding['message'][:160]}")
    total = {k: sum(r.get(k, 0) for r in results) for k in ("inputs", "ok", "medlens_error", "other")}
    print(f"total: {total} in {time.time() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"seed": args.seed, "examples": args.examples, "total": total,
                                         "readers": results}, indent=1))


if __name__ == "__main__":
    main()
