"""Time loading a CT series to a float32 HU volume: medlens ``read_dicom`` against SimpleITK.

Both read the same files in one process, alternating, ``--repeats`` times after a first load of each
(a warm-up that also puts the files in the page cache); the best and the median wall times are printed with their
ratio. SimpleITK is the usual reference: ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames`` and
``Execute`` (GDCM applies the rescale), then a cast to float32 and ``GetArrayFromImage``.
The two volumes are also compared voxel for voxel (they differ only on padding voxels).

Usage::

    MEDLENS_DATA=/work/shared/data python benchmarks/speed/bench_dicom_load.py [--series FOLDER] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from medlens.data.readers import read_dicom
from medlens.data.readers.dicom import PADDING_HU

LIDC_0001 = (
    "lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
)


def load_medlens(folder: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the series folder also holds the reader XML
        return read_dicom(folder).array[0]


def load_sitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(sitk.Cast(reader.Execute(), sitk.sitkFloat32))


def once(load, folder: Path) -> float:
    start = time.perf_counter()
    load(folder)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=Path, default=None, help="Series folder (default: LIDC-IDRI-0001).")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    folder = args.series or Path(os.environ.get("MEDLENS_DATA", "/work/shared/data")) / LIDC_0001

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = read_dicom(folder)
    ours, theirs = image.array[0], load_sitk(folder)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    differ = ours != theirs
    # medlens sets PixelPaddingValue voxels to PADDING_HU; SimpleITK keeps stored × slope + intercept.
    padded = theirs == image.meta["padding_value"] * image.meta["rescale_slope"] + image.meta["rescale_intercept"]

    medlens_times, sitk_times = [], []
    for _ in range(args.repeats):  # alternate, so that load from other processes hits both alike
        medlens_times.append(once(load_medlens, folder))
        sitk_times.append(once(load_sitk, folder))

    ms = lambda ts, f: 1000 * f(ts)  # noqa: E731
    print(f"series: {folder.name} ({ours.shape[0]} slices, {ours.shape[1]}x{ours.shape[2]})")
    print(f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
          f"SimpleITK {sitk.Version.VersionString()}, cpus {os.cpu_count()}, repeats {args.repeats}")
    print(f"voxels that differ: {int(differ.sum())} of {differ.size}, of which padding voxels: "
          f"{int((differ & padded).sum())} (medlens: {PADDING_HU:g} HU there); "
          f"max |difference| elsewhere: {float(np.abs(ours - theirs)[~padded].max()):g} HU")
    print(f"{'reader':<10} {'best ms':>8} {'median ms':>10}")
    print(f"{'medlens':<10} {ms(medlens_times, min):8.1f} {ms(medlens_times, statistics.median):10.1f}")
    print(f"{'SimpleITK':<10} {ms(sitk_times, min):8.1f} {ms(sitk_times, statistics.median):10.1f}")
    print(f"speed-up (SimpleITK / medlens): best {min(sitk_times) / min(medlens_times):.2f}x, "
          f"median {statistics.median(sitk_times) / statistics.median(medlens_times):.2f}x")


if __name__ == "__main__":
    main()
