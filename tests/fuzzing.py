"""Property-based fuzzing of every medlens reader (issue 27), bundles included: shared by the seeded run in the test suite
(``tests/data/readers/test_fuzz.py``) and the longer run of ``benchmarks/quality/fuzz_readers.py``.

Each target starts from real files (MEDLENS_DATA, and the DICOM files that ship with pydicom) and lets
Hypothesis damage them: byte flips, overwritten runs, 32-bit integers written at header offsets, insertions,
deletions, truncation, and for the formats whose first bytes are a header (PNG IHDR, NIfTI, npy) edits that
keep the file's checksums valid so that the damage reaches the decoder. The property: a reader either
returns, or raises a :class:`~medlens.errors.MedlensError`; anything else is a defect. The size limits are
lowered while fuzzing (``MEDLENS_MAX_BYTES`` 64 MiB) so that a claimed size within the default limits
cannot exhaust the machine.
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from medlens.errors import MedlensError

LIDC_SERIES = ("lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
               "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192")
FUZZ_LIMITS = {"MEDLENS_MAX_BYTES": str(64 * 2**20)}
"""Environment while fuzzing: a claimed array over 64 MiB is refused before it is allocated."""

INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 15, 16, 255, 256, 32767, 32768, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
                    60000, 1200, 0x7FFF0000]


@dataclass
class Target:
    """One reader under fuzzing: its seed files' bytes, the file name to write, and the call."""

    name: str
    seeds: Callable[[Path], list[bytes]]
    filename: str
    read: Callable[[Path, Path], object]
    hot: int = 4096
    """Mutations fall in the first ``hot`` bytes (the header) three times out of four."""


# ------------------------------------------------------------------------------------------ mutations
@st.composite
def damaged(draw, seed: bytes, hot: int) -> bytes:
    """``seed`` with 1–6 random mutations (see the module docstring)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        limit = len(data) if draw(st.integers(0, 3)) == 0 else min(len(data), hot)
        pos = draw(st.integers(0, max(limit - 1, 0)))
        kind = draw(st.sampled_from(["flip", "overwrite", "int", "insert", "delete", "truncate"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "int":
            value = draw(st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**32 - 1))
            data[pos:pos + 4] = struct.pack(draw(st.sampled_from(["<I", ">I"])), value)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC so that a damaged field reaches the decoder (a CRC error stops it early)."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos:pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4:end])))
        pos = end + 4
    return bytes(out)


def _restore_zip_crcs(data: bytes) -> bytes:
    """An npz whose members were edited: rebuilt with correct CRCs when its directory still reads."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = []
            for info in archive.infolist():
                with archive.open(info) as fh:
                    fh._expected_crc = None  # read what is there, whatever its CRC
                    members.append((info, fh.read()))
    except Exception:  # noqa: BLE001 (a directory too damaged to read: keep the bytes as they are)
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info, content in members:
            archive.writestr(info, content)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ seeds
@functools.lru_cache(maxsize=None)
def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _dicom_seeds(root: Path) -> list[bytes]:
    from pydicom.data import get_testdata_file

    series = sorted((root / LIDC_SERIES).glob("*.dcm"))
    names = ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm",
             "rtdose_1frame.dcm", "JPEGLSNearLossless_16.dcm"]
    return [_read(str(series[0]))] + [_read(get_testdata_file(n)) for n in names]


def _nifti_seeds(root: Path) -> list[bytes]:
    voi = _read(str(root / "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"))
    return [gzip.decompress(voi), voi]


def _png_seeds(root: Path) -> list[bytes]:
    small = sorted((root / "nuclei_dsb2018_stage1_subset/labels").glob("*.png"))[0]
    return [_read(str(small)), _read(str(root / "montgomery_cxr_lung_masks/masks/MCUCXR_0001_0.png"))]


def _tiff_seeds(root: Path) -> list[bytes]:
    return [_read(str(root / "nuclei_dsb2018_stardist/stardist_data_images/img2d.tif"))]


def _npz_seeds(root: Path) -> list[bytes]:
    with np.load(root / "medmnist/breastmnist.npz") as z:
        small = {k: z[k][:12] for k in z.files}
    stored, compressed = io.BytesIO(), io.BytesIO()
    np.savez(stored, **small)
    np.savez_compressed(compressed, **small)
    return [stored.getvalue(), compressed.getvalue()]


def _xml_seeds(root: Path) -> list[bytes]:
    text = _read(str(root / LIDC_SERIES / "69.xml"))
    first = text.index(b"</readingSession>") + len(b"</readingSession>")
    return [text[:first] + b"\n</LidcReadMessage>\n"]  # one reader's session: faster, same structure


def _yaml_seeds(root: Path) -> list[bytes]:
    configs = Path(__file__).resolve().parents[1] / "src" / "medlens" / "configs"
    return [_read(str(p)) for p in sorted(configs.glob("*.yaml"))]


# ------------------------------------------------------------------------------------------ calls
def _read_dicom(path: Path, root: Path) -> object:
    from medlens.data.readers import read_dicom

    return read_dicom(path)


def _read_series(path: Path, root: Path) -> object:
    """A three-slice series whose middle slice is the damaged one (geometry across files)."""
    import shutil

    from medlens.data.readers import read_dicom

    folder = path.parent / "series"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    series = sorted((root / LIDC_SERIES).glob("*.dcm"))
    shutil.copy(series[0], folder / "a.dcm")
    shutil.copy(series[2], folder / "c.dcm")
    shutil.copy(path, folder / "b.dcm")
    return read_dicom(folder)


def _read_image(path: Path, root: Path) -> object:
    from medlens.data.readers import read_image

    return read_image(path)


def _read_npz(path: Path, root: Path) -> object:
    from medlens.commands.inspect import describe_npz
    from medlens.data.readers.medmnist import load_medmnist, medmnist_counts

    load_medmnist(path, "train")
    medmnist_counts(path)
    return describe_npz(path)


@functools.lru_cache(maxsize=1)
def _lidc_image(root: str):
    import warnings

    from medlens.data.readers import read_dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dicom(Path(root) / LIDC_SERIES)


def _read_xml(path: Path, root: Path) -> object:
    from medlens.data.readers import consensus_nodules, read_lidc_xml

    sessions = read_lidc_xml(path)
    return sessions, consensus_nodules(path, _lidc_image(str(root)))


def _read_yaml(path: Path, root: Path) -> object:
    from medlens.config import load_config

    return load_config(path)


@functools.lru_cache(maxsize=1)
def _seed_bundle(root: str) -> Path:
    """A real classifier bundle (a BP network on 60 BreastMNIST images, a few steps) to damage."""
    import tempfile

    from medlens.config import load_config
    from medlens.data.dataset import ArrayDataset
    from medlens.deploy.classifier import save_classifier
    from medlens.models.pipeline import build_pipeline

    with np.load(Path(root) / "medmnist/breastmnist.npz") as z:
        data = ArrayDataset(images=z["train_images"][:60, None].astype(np.float32) / 255.0,
                            labels=z["train_labels"][:60], meta={"labels": ["malignant", "normal, benign"]})
    params = {"inputs": "pixels", "hidden": [4], "iterations": 5, "seed": 0}
    model = build_pipeline("bp", params).fit(data)
    config = load_config(Path(__file__).resolve().parents[1] / "src/medlens/configs/breastmnist_official.yaml")
    folder = Path(tempfile.mkdtemp(prefix="medlens-fuzz-bundle-")) / "bundle"
    return save_classifier(model, params, config, data.meta, folder, model_id="bp", image_shape=(1, 28, 28))


def _bundle_seeds(name: str) -> Callable[[Path], list[bytes]]:
    return lambda root: [_read(str(_seed_bundle(str(root)) / name))]


def _read_bundle(part: str) -> Callable[[Path, Path], object]:
    """Load a copy of the seed bundle whose ``part`` (manifest or integrity record) is the damaged bytes; for the
    manifest, half of the inputs also get a record recomputed to match them (a careful forger's edit), so that
    the damage reaches the manifest's reader and the model's loader."""

    def read(path: Path, root: Path) -> object:
        import hashlib
        import shutil

        from medlens.deploy.bundle import CHECKSUMS, load_bundle

        folder = path.parent / "bundle"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(_seed_bundle(str(root)), folder)
        damaged_bytes = path.read_bytes()
        (folder / part).write_bytes(damaged_bytes)
        if part == "manifest.json" and len(damaged_bytes) % 2 == 0:
            lines = (folder / CHECKSUMS).read_text().splitlines()
            names = [line.split("  ", 1)[1] for line in lines]
            (folder / CHECKSUMS).write_text("".join(
                f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names))
        return load_bundle(folder)

    return read


TARGETS = {
    "dicom": Target("dicom", _dicom_seeds, "slice.dcm", _read_dicom, hot=2048),
    "dicom_series": Target("dicom_series", lambda root: _dicom_seeds(root)[:1], "slice.dcm", _read_series, hot=2048),
    "nifti": Target("nifti", _nifti_seeds, "volume.nii", _read_image, hot=352),
    "nifti_gz": Target("nifti_gz", lambda root: _nifti_seeds(root)[:1], "volume.nii.gz", _read_image, hot=352),
    "png": Target("png", _png_seeds, "picture.png", _read_image, hot=256),
    "tiff": Target("tiff", _tiff_seeds, "picture.tif", _read_image, hot=512),
    "npz": Target("npz", _npz_seeds, "archive.npz", _read_npz, hot=1024),
    "lidc_xml": Target("lidc_xml", _xml_seeds, "annotations.xml", _read_xml, hot=1 << 20),
    "yaml": Target("yaml", _yaml_seeds, "study.yaml", _read_yaml, hot=1 << 20),
    "bundle_manifest": Target("bundle_manifest", _bundle_seeds("manifest.json"), "manifest.json",
                              _read_bundle("manifest.json"), hot=1 << 20),
    "bundle_record": Target("bundle_record", _bundle_seeds("checksums.sha256"), "checksums.sha256",
                            _read_bundle("checksums.sha256"), hot=1 << 20),
}


def prepare(target: Target, data: bytes) -> bytes:
    """Format-aware repair after mutation: valid PNG CRCs (half of the PNGs), gzip for ``nifti_gz``, valid
    zip CRCs for npz (half), so that damage inside a checksummed container reaches the decoder."""
    if target.name == "png" and data[:1] == b"\x89" and len(data) % 2 == 0:
        return _fix_png_crcs(data)
    if target.name == "nifti_gz":
        return gzip.compress(data, compresslevel=1)
    if target.name == "npz" and len(data) % 2 == 0:
        return _restore_zip_crcs(data)
    return data


def inputs(target: Target, root: Path):
    """Hypothesis strategy of damaged inputs for ``target`` (after :func:`prepare`)."""
    seeds = target.seeds(root)
    return st.sampled_from(seeds).flatmap(lambda seed: damaged(seed, target.hot)).map(lambda d: prepare(target, d))


def outcome(target: Target, data: bytes, folder: Path, root: Path) -> BaseException | None:
    """Write ``data`` and call the reader: None when it returned or raised a MedlensError, else the exception."""
    path = folder / target.filename
    path.write_bytes(data)
    try:
        target.read(path, root)
    except MedlensError:
        return None
    except Exception as exc:  # noqa: BLE001 (the point: any other exception is a finding)
        return exc
    return None
