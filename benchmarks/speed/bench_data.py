"""Speed of the data layer on the real data, each next to a plain reference doing the same work.

* ``verify``: md5 of every file of each local set (``medlens.data.fetch.verify``) against ``hashlib.md5`` of
  the same files read whole (reference); both after one warm-up pass, so the page cache holds the files.
* ``load_medmnist``: one call per split of each real MedMNIST archive against ``np.load(path)[key]`` of the
  same two arrays (reference); the reader adds key checks, the channel axis and label reshaping.
* ``download``: ``fetch.download_dataset`` of pneumoniamnist.npz (4.2 MB) from an http.server on 127.0.0.1
  (md5 while streaming, temp file, rename) against ``shutil.copyfileobj`` of the same URL into a file.

Best of ``--repeat`` runs. Run from the repository root::

    MEDLENS_DATA=/work/shared/data .venv/bin/python benchmarks/speed/bench_data.py
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import os
import platform
import shutil
import tempfile
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np

from medlens.data import catalog, fetch
from medlens.data.readers.medmnist import load_medmnist

LOCAL = ["lidc-nodule-vois", "lidc-idri-ct", "lidc-idri-ct-more", "montgomery-cxr", "isbi2012-membrane",
         "msd-lung-patches", "dsb2018-nuclei", "dsb2018-stardist", "pneumoniamnist", "breastmnist",
         "adrenalmnist3d", "adrenalmnist3d_64"]
MEDMNIST = ["pneumoniamnist", "breastmnist", "adrenalmnist3d", "adrenalmnist3d_64"]


def best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_md5(files: list[Path]) -> None:
    for file in files:
        hashlib.md5(file.read_bytes()).hexdigest()


def bench_verify(repeat: int) -> list[str]:
    rows = ["| set | files | MB | verify s | MB/s | hashlib s | ratio |", "|---|---|---|---|---|---|---|"]
    for name in LOCAL:
        report = fetch.verify(name, strict=True)
        root = report.location if report.location.is_dir() else report.location.parent
        files = [root / check.path for check in report.checks]
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        ours = best(lambda: fetch.verify(name), repeat)
        ref = best(lambda: plain_md5(files), repeat)
        rows.append(f"| {name} | {len(files)} | {megabytes:.1f} | {ours:.3f} | {megabytes / ours:.0f} | "
                    f"{ref:.3f} | {ours / ref:.2f} |")
    return rows


def bench_load(repeat: int) -> list[str]:
    rows = ["| archive | split | shape | load_medmnist s | np.load s | ratio |", "|---|---|---|---|---|---|"]
    for name in MEDMNIST:
        path = fetch.resolve(name)
        for split in ("train", "val", "test"):
            images, _ = load_medmnist(path, split)

            def reference(path=path, split=split):
                with np.load(path) as archive:
                    return archive[f"{split}_images"], archive[f"{split}_labels"]

            ours = best(lambda: load_medmnist(path, split), repeat)
            ref = best(reference, repeat)
            rows.append(f"| {name} | {split} | {tuple(images.shape)} | {ours:.4f} | {ref:.4f} | {ours / ref:.2f} |")
    return rows


def bench_download(repeat: int) -> list[str]:
    source = fetch.resolve("pneumoniamnist")
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    handler = partial(quiet, directory=str(source.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/{source.name}"
    entry = catalog.get("pneumoniamnist")
    catalog._catalog()["pneumoniamnist"] = dataclasses.replace(entry, url=url)
    megabytes = source.stat().st_size / 1e6
    try:
        with tempfile.TemporaryDirectory() as tmp:

            def ours():
                shutil.rmtree(Path(tmp) / "ours", ignore_errors=True)
                fetch.download_dataset("pneumoniamnist", dest=Path(tmp) / "ours", progress=False)

            def reference():
                with urllib.request.urlopen(url) as response, open(Path(tmp) / "plain.npz", "wb") as out:
                    shutil.copyfileobj(response, out)

            t_ours, t_ref = best(ours, repeat), best(reference, repeat)
    finally:
        catalog._catalog()["pneumoniamnist"] = entry
        httpd.shutdown()
        httpd.server_close()
    return ["| file | MB | download_dataset s | MB/s | copyfileobj s | ratio |", "|---|---|---|---|---|---|",
            f"| pneumoniamnist.npz | {megabytes:.1f} | {t_ours:.3f} | {megabytes / t_ours:.0f} | {t_ref:.3f} | "
            f"{t_ours / t_ref:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is reported")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"MEDLENS_DATA={os.environ.get('MEDLENS_DATA')}, best of {args.repeat}\n")
    for title, bench in (("verify", bench_verify), ("load_medmnist", bench_load), ("download", bench_download)):
        print(f"### {title}\n")
        print("\n".join(bench(args.repeat)) + "\n")


if __name__ == "__main__":
    main()
