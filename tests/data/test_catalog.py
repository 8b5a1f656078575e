"""The dataset catalogue: names, lookup errors, MedMNIST table, and the local sets' facts against real data."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from realdata import need
from medlens.data import catalog
from medlens.errors import DatasetError

MEDMNIST_2D = ["pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
               "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"]
MEDMNIST_3D = ["organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d",
               "synapsemnist3d"]
LOCAL_SETS = ["lidc-nodule-vois", "lidc-idri", "lidc-idri-ct", "lidc-idri-ct-more", "montgomery-cxr", "isbi2012-membrane",
              "msd-lung-patches", "dsb2018-nuclei", "dsb2018-stardist"]


def test_every_medmnist_flag_and_size_is_named():
    expected = [f"{flag}{suffix}" for flag in MEDMNIST_2D for suffix in ("", "_64", "_128", "_224")]
    expected += [f"{flag}{suffix}" for flag in MEDMNIST_3D for suffix in ("", "_64")]
    names = catalog.names()
    assert names == expected + LOCAL_SETS
    assert len(set(names)) == len(names) == 69


def test_unknown_name_lists_close_names():
    with pytest.raises(DatasetError, match="pneumoniamnist") as err:
        catalog.get("pneumonia")
    assert "'pneumonia'" in str(err.value)
    with pytest.raises(DatasetError, match="medlens data list"):
        catalog.get("zzzz")


def test_lookup_ignores_case_and_spaces():
    assert catalog.get(" BreastMNIST ").name == "breastmnist"


def test_medmnist_entries_match_the_generated_table():
    table = json.loads(catalog.MEDMNIST_INFO.read_text(encoding="utf-8"))
    assert table["generated_from"]["version"] == "3.0.2"
    for flag, info in table["datasets"].items():
        for size, archive in info["files"].items():
            entry = catalog.get(flag if size == "28" else f"{flag}_{size}")
            assert entry.md5 == archive["md5"] and entry.url == archive["url"]
            assert entry.url.startswith("https://zenodo.org/records/10519652/files/")
            assert entry.local_path == f"medmnist/{entry.name}.npz"
            assert entry.files == [(f"{entry.name}.npz", entry.md5)]
            assert entry.size_px == int(size) and entry.dims == (3 if flag.endswith("3d") else 2)
            assert entry.splits == info["n_samples"] and entry.labels == info["labels"]
            assert entry.format == "medmnist-npz" and entry.layout == "file"


def test_known_official_values():
    # md5s and licences as stated in the shared data README (checked there against info.py 3.0.2).
    assert catalog.get("pneumoniamnist").md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert catalog.get("pneumoniamnist_64").md5 == "8f4eceb4ccffa70c672198ea285246c6"
    assert catalog.get("nodulemnist3d").md5 == "8755a7e9e05a4d9ce80a24c3e7a256f3"
    assert catalog.get("adrenalmnist3d_64").md5 == "17721accfe9fb005146a47d33bc54b2f"
    assert catalog.get("breastmnist").labels == ["malignant", "normal, benign"]
    assert catalog.get("breastmnist").splits == {"train": 546, "val": 78, "test": 156}
    assert catalog.get("dermamnist").licence == "CC BY-NC 4.0"
    assert catalog.get("chestmnist").task == "multilabel" and len(catalog.get("chestmnist").labels) == 14
    assert catalog.get("retinamnist").task == "ordinal"
    assert catalog.get("pathmnist").n_channels == 3


@pytest.mark.parametrize("name", [n for n in LOCAL_SETS if n != "lidc-idri"])
def test_local_sets_have_no_unverified_download(name):
    entry = catalog.get(name)
    assert entry.url is None and entry.layout == "folder"
    assert entry.source.startswith("http") and entry.citation and entry.licence
    assert entry.files, "every local set is checked file by file or through its manifest"
    assert (entry.manifest is None) == (entry.md5 is None)


def test_local_paths_exist_in_the_data_root(data_root):
    for name in LOCAL_SETS:
        if name != "lidc-idri":  # the archive is downloaded, never shipped
            assert (data_root / catalog.get(name).local_path).is_dir(), name


def test_lidc_vois_counts_match_the_metadata(data_root):
    folder = need(data_root, catalog.get("lidc-nodule-vois").local_path)
    have = {path.name.removesuffix(".nii.gz") for path in (folder / "image").glob("*.nii.gz")}
    with (folder / "MetadatabyNoduleMaxVoting.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if f"{r['patient_id']}_R_{r['nodule_id']}" in have]
    counts = {"benign": sum(r["Diagnosis"] == "Benign" for r in rows),
              "malignant": sum(r["Diagnosis"] == "Malign" for r in rows)}
    entry = catalog.get("lidc-nodule-vois")
    assert entry.class_counts == {"all": counts}
    assert entry.splits == {"all": len(have)} == {"all": len(rows)}


def test_montgomery_counts_match_file_names(data_root):
    folder = need(data_root, "montgomery_cxr_lung_masks")
    digits = [path.stem[-1] for path in (folder / "images").glob("MCUCXR_*.png")]
    counts = {"normal": digits.count("0"), "tuberculosis": digits.count("1")}
    assert catalog.get("montgomery-cxr").class_counts == {"all": counts}
    assert len(list((folder / "masks").glob("*.png"))) == catalog.get("montgomery-cxr").n_samples


def test_folder_split_sizes_match_real_files(data_root):
    def count(name: str, pattern: str) -> int:
        return len(list(need(data_root, catalog.get(name).local_path).glob(pattern)))

    assert count("isbi2012-membrane", "train/image/*.png") == catalog.get("isbi2012-membrane").splits["train"]
    assert count("lidc-idri-ct", "*/*/*/*.dcm") == catalog.get("lidc-idri-ct").n_samples
    assert count("lidc-idri-ct-more", "*/*/*/*.dcm") == catalog.get("lidc-idri-ct-more").n_samples
    assert count("dsb2018-nuclei", "images/*.png") == catalog.get("dsb2018-nuclei").n_samples
    assert count("dsb2018-stardist", "*/img2d.tif") == catalog.get("dsb2018-stardist").n_samples
    msd = need(data_root, "msd_lung_tumour_patches")
    for split, n in catalog.get("msd-lung-patches").splits.items():
        with np.load(msd / f"{split}_patches.npz") as archive:
            assert archive["images"].shape == (n, 1, 48, 48)


def test_checksum_identifies_content():
    entry = catalog.get("isbi2012-membrane")
    assert entry.md5 is None and len(entry.checksum) == 32
    changed = dataclasses.replace(entry, files=[(entry.files[0][0], "0" * 32), *entry.files[1:]])
    assert changed.checksum != entry.checksum
    assert catalog.get("breastmnist").checksum == catalog.get("breastmnist").md5
