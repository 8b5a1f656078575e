"""Fixtures of the PACS tests: a real Orthanc, tiny bundles trained on real data, a private temporary folder.

* ``orthanc``: one Orthanc process for the session (``tests/orthanc_server.py``), emptied and loaded with
  LIDC-IDRI-0001's 16-slice CT series before each test that asks for ``pacs``;
* ``nodule_bundle``: the default study's ``bp_radiomics`` nodule classifier, trained without LIDC-IDRI-0001;
* ``nodule_segmenter``: a 3D U-Net trained for 20 steps on 40 LIDC nodule VOIs at a coarse spacing, with its
  two largest components kept (few steps: the mask is rough, the tests check what is done with it);
* every test gets its own ``tempfile`` folder (``private_tmp``) so that it can check that nothing is left in
  it, and a pseudonym key of its own (``MEDLENS_PSEUDONYM_KEY``), so that no key file is written.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pydicom
import pytest
import torch

from orthanc_server import OrthancServer, missing
from realdata import REPO, need

torch.set_num_threads(2)
CONFIG = REPO / "src/medlens/configs/lidc_nodules.yaml"
PSEUDONYM_KEY = "medlens-tests-pseudonym-key"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This test's folder for :mod:`tempfile` (pulls land there), and a pseudonym key in the environment."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("MEDLENS_PSEUDONYM_KEY", PSEUDONYM_KEY)
    return folder


@pytest.fixture(scope="session")
def lidc(lidc_series_dir):
    """LIDC-IDRI-0001 as read by medlens: the image, the slice headers in its slice order, and the readers' 50 %
    consensus mask of its nodule (from the XML beside the series)."""
    from medlens.data.readers import consensus_nodules, read_dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the XML beside the series is skipped with a warning
        image = read_dicom(lidc_series_dir)
    headers = {str(h.SOPInstanceUID): h for h in
               (pydicom.dcmread(p, stop_before_pixels=True) for p in lidc_series_dir.glob("*.dcm"))}
    nodule = consensus_nodules(next(lidc_series_dir.glob("*.xml")), image)[0].mask
    return image, [headers[uid] for uid in image.meta["sop_uids"]], nodule


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc with DICOMweb, stopped after the session."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def pacs(orthanc, lidc_series_dir) -> OrthancServer:
    """The Orthanc, holding LIDC-IDRI-0001's CT series and nothing else."""
    orthanc.clear()
    orthanc.upload(sorted(lidc_series_dir.glob("*.dcm")))
    return orthanc


@pytest.fixture(scope="session")
def nodule_bundle(data_root, tmp_path_factory) -> Path:
    """bp_radiomics (Gabor + radiomic features of the nodule mask), LIDC-IDRI-0001 left out of training."""
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle

    need(data_root, "lidc_idri_nodule_vois")
    out = tmp_path_factory.mktemp("nodule-bundle")
    train_bundle(load_config(CONFIG), out, "bp_radiomics", threshold="sensitivity:0.95", quiet=True,
                 exclude_groups=["LIDC-IDRI-0001"])
    return out


@pytest.fixture(scope="session")
def nodule_segmenter(data_root, tmp_path_factory) -> Path:
    """A tiny nodule segmentation bundle (see the module docstring)."""
    from medlens.segment.bundle import save_segmenter
    from medlens.segment.datasets import load_folder
    from medlens.segment.rules import make_plan
    from medlens.segment.train import train_segmenter

    root = need(data_root, "lidc_idri_nodule_vois")
    cases = load_folder(root, "binary", limit=40)
    plan = make_plan(cases, root).copy_with(**{
        "target_spacing": [2.5, 2.0, 2.0], "patch_size": [16, 16, 16], "network.channels": 4, "network.depth": 2,
        "training.epochs": 2, "training.steps_per_epoch": 10, "inference.tta_flips": False,
        "inference.overlap": 0.25, "postprocessing.keep_component": "largest", "postprocessing.keep_count": 2})
    model, history = train_segmenter(plan, cases)
    return save_segmenter(model, plan, tmp_path_factory.mktemp("nodule-segmenter") / "bundle", history)
