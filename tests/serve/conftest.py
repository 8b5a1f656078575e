"""Bundles trained on real data (tiny, quick params) and one running service on a loopback port, shared by
the API, bad-input and browser tests of this folder."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from realdata import REPO, need

TOKEN = "test-token-0123456789"
LIDC_0001 = ("lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192")


class LoopbackServer:
    """uvicorn serving an ASGI app in a thread, on a port the system picks on 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def breast_npz(data_root) -> Path:
    return need(data_root, "medmnist/breastmnist.npz")


@pytest.fixture(scope="session")
def lidc_series(data_root) -> Path:
    return need(data_root, LIDC_0001)


@pytest.fixture(scope="session")
def bundles(data_root, breast_npz, lidc_series, tmp_path_factory) -> dict[str, Path]:
    """Bundles of every kind the service serves, trained in a few steps on real data: a 2D CNN and a BP network
    on BreastMNIST, a 3D CNN and a BP network on Gabor + radiomic features of LIDC nodules (LIDC-IDRI-0001 left
    out), a 2D U-Net on MSD lung-tumour patches and a 3D U-Net on LIDC nodule VOIs."""
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle
    from medlens.segment.bundle import save_segmenter
    from medlens.segment.datasets import load_folder
    from medlens.segment.rules import make_plan
    from medlens.segment.train import train_segmenter

    need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv")
    msd = need(data_root, "msd_lung_tumour_patches/val_patches.npz")
    root = tmp_path_factory.mktemp("bundles")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        breast = load_config(REPO / "src/medlens/configs/breastmnist_official.yaml")
        train_bundle(breast, root / "breast", "cnn", quick=True, max_samples=300, quiet=True)
        train_bundle(breast, root / "breast-bp", "bp", quick=True, max_samples=300, quiet=True)
        nodules = load_config(REPO / "src/medlens/configs/lidc_nodules.yaml")
        train_bundle(nodules, root / "nodules", "cnn3d", quick=True, max_samples=240, quiet=True,
                     exclude_groups=["LIDC-IDRI-0001"])
        train_bundle(nodules, root / "nodules-bp", "bp_radiomics", quick=True, max_samples=120, quiet=True,
                     exclude_groups=["LIDC-IDRI-0001"])
        cases = load_folder(msd)
        plan = make_plan(cases, msd).copy_with(**{"network.channels": 8, "training.epochs": 2,
                                                  "training.steps_per_epoch": 10, "inference.tta_flips": False})
        model, history = train_segmenter(plan, cases)
        save_segmenter(model, plan, root / "tumour-seg", history)
        vois = load_folder(data_root / "lidc_idri_nodule_vois", "binary", limit=20)
        plan = make_plan(vois, data_root / "lidc_idri_nodule_vois").copy_with(**{
            "network.channels": 4, "training.epochs": 1, "training.steps_per_epoch": 4, "inference.tta_flips": False})
        model, history = train_segmenter(plan, vois)
        save_segmenter(model, plan, root / "nodule-seg", history)
    finally:
        torch.set_num_threads(threads)
    return {name: root / name for name in ("breast", "breast-bp", "nodules", "nodules-bp", "tumour-seg",
                                           "nodule-seg")}


@pytest.fixture(scope="session")
def service(bundles):
    """The service on a loopback port with a token and small limits: (base URL, the Service object)."""
    from medlens.serve.app import Settings, create_app
    from medlens.serve.uploads import Limits

    limits = Limits(max_upload_bytes=24 << 20, max_voxels=64 << 20, max_unzipped_bytes=64 << 20,
                    request_seconds=120)
    app = create_app(Settings(list(bundles.values()), token=TOKEN, limits=limits))
    with LoopbackServer(app) as server:
        yield server.url, app.app.state.service


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture()
def client(service):
    url, _ = service
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as session:
        yield session


@pytest.fixture(scope="session")
def breast_png(breast_npz, tmp_path_factory) -> Path:
    """BreastMNIST test image 0 as a PNG."""
    path = tmp_path_factory.mktemp("inputs") / "breast_test_0.png"
    Image.fromarray(np.load(breast_npz)["test_images"][0]).save(path)
    return path


@pytest.fixture(scope="session")
def lidc_zip(lidc_series, tmp_path_factory) -> Path:
    """LIDC-IDRI-0001's 16 slices and its reader XML, zipped inside their series folder."""
    path = tmp_path_factory.mktemp("inputs") / "LIDC-IDRI-0001.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(lidc_series.iterdir()):
            archive.write(file, f"{lidc_series.name}/{file.name}")
    return path
