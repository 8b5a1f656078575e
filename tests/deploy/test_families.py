"""Every classification family of the registry goes through the same commands on real data:
`medlens train CONFIG --model ID`, then `medlens predict` on raw files, then `--explain` where the model's
capabilities declare a method (and a clear error where they declare none).

Families and data: LIDC-IDRI nodules (bp, svm, logistic, twostage and the 3D cnn; predicted on
LIDC-IDRI-0001's raw DICOM series and its reader XML), BreastMNIST (the 2D cnn, a deep ensemble, bp on pixels;
predicted on a PNG and an npz of real test images), AdrenalMNIST3D (cnn_lstm and cnn_view; predicted on an
npz of real test volumes). Trainings are a few epochs on subsamples: these tests check the plumbing, not the
figures.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from medlens.commands.predict import predict
from medlens.commands.train import train
from medlens.config import load_config
from medlens.models.registry import available

from realdata import REPO, need

torch.set_num_threads(1)
app = typer.Typer()
app.command(name="train")(train)
app.command(name="predict")(predict)
runner = CliRunner()


@pytest.fixture(scope="module")
def configs(data_root, tmp_path_factory):
    """Study configs on the real sets, each with the models of one family group and few epochs."""
    need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv")
    need(data_root, "medmnist/adrenalmnist3d.npz")
    folder = tmp_path_factory.mktemp("configs")
    lidc = load_config(REPO / "src/medlens/configs/lidc_nodules.yaml").model_dump(mode="json", exclude={"source"})
    lidc["models"].append({"id": "logistic_radiomics", "name": "logistic", "params": {"features": ["shape_*", "hu_*"]}})
    lidc["quick"]["models"] = None
    breast = load_config(REPO / "src/medlens/configs/breastmnist_official.yaml").model_dump(mode="json",
                                                                                            exclude={"source"})
    adrenal = {"study": "adrenal-families", "data": {"builder": "medmnist", "name": "adrenalmnist3d"},
               "protocol": {"kind": "official"},
               "models": [{"id": "cnn_lstm", "name": "cnn_lstm", "params": {"epochs": 2, "width": 8}},
                          {"id": "cnn_view", "name": "cnn_view", "params": {"view": "2.5d", "epochs": 2}}]}
    paths = {}
    for name, raw in (("lidc", lidc), ("breast", breast), ("adrenal", adrenal)):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(raw))
    return paths


@pytest.fixture(scope="module")
def inputs(data_root, tmp_path_factory):
    """Raw files to predict: LIDC-IDRI-0001's DICOM series, BreastMNIST test images as a PNG and an npz,
    AdrenalMNIST3D test volumes as an npz."""
    folder = tmp_path_factory.mktemp("inputs")
    series = sorted(need(data_root, "lidc_idri_ct/LIDC-IDRI-0001").glob("*/*"))[0]
    breast = np.load(data_root / "medmnist/breastmnist.npz")
    Image.fromarray(breast["test_images"][0]).save(folder / "lesion.png")
    np.savez(folder / "lesions.npz", test_images=breast["test_images"][1:4])
    adrenal = np.load(data_root / "medmnist/adrenalmnist3d.npz")
    np.savez(folder / "adrenals.npz", test_images=adrenal["test_images"][:2])
    return {"lidc": [series], "breast": [folder / "lesion.png", folder / "lesions.npz"],
            "adrenal": [folder / "adrenals.npz"]}


#: (config, model id, registered family, rows predicted, what --explain does: a method or None)
CASES = [
    ("lidc", "bp_radiomics", "bp", 1, "occlusion"),
    ("lidc", "svm", "svm", 1, "occlusion"),
    ("lidc", "logistic_radiomics", "logistic", 1, None),
    ("lidc", "twostage", "twostage", 1, "occlusion"),
    ("lidc", "cnn3d", "cnn", 1, "gradcam"),
    ("breast", "cnn", "cnn", 4, "gradcam"),
    ("breast", "cnn_ens5", "ensemble", 4, "gradcam"),
    ("breast", "bp", "bp", 4, "occlusion"),
    ("adrenal", "cnn_lstm", "cnn_lstm", 2, "occlusion"),
    ("adrenal", "cnn_view", "cnn_view", 2, "occlusion"),
]


def test_the_cases_cover_every_classification_family():
    assert {family for _, _, family, _, _ in CASES} == set(available())


@pytest.mark.parametrize("group, model_id, family, rows, method", CASES, ids=[c[1] for c in CASES])
def test_train_predict_and_explain(configs, inputs, tmp_path, group, model_id, family, rows, method):
    bundle = tmp_path / "bundle"
    sizes = {"lidc": "160", "breast": "300", "adrenal": "240"}
    result = runner.invoke(app, ["train", str(configs[group]), "--model", model_id, "--out", str(bundle), "--quick",
                                 "--max-samples", sizes[group], "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["name"] == family and manifest["kind"] == "classifier"
    explains = manifest["model"]["capabilities"]["explain"]
    assert (method in explains) if method else explains == []
    table_path = tmp_path / "preds.csv"
    args = ["predict", str(bundle), *map(str, inputs[group]), "--out", str(table_path), "--quiet"]
    cams = tmp_path / "cams"
    if method:
        args += ["--explain", str(cams), "--method", method]
    result = runner.invoke(app, args)
    if method is None:
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, [*args, "--explain", str(cams)])
        assert result.exit_code == 2 and "cannot be explained" in result.output
        assert not cams.exists()
        return
    assert result.exit_code == 0, result.output
    table = pd.read_csv(table_path)
    assert len(table) == rows and table["error"].isna().all(), table.to_string()
    labels = manifest["data"]["labels"]
    probabilities = table[[f"p_{label}" for label in labels]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0) and set(table["label"]) <= set(labels)
    overlays = sorted(cams.glob("*.png"))
    assert len(overlays) == rows
    assert all(np.asarray(Image.open(p)).std() > 0 for p in overlays)


def test_no_code_outside_the_registry_branches_on_a_model_name():
    """What a model can do is asked of its capabilities; its registered name is looked up only in the registry."""
    families = "|".join(available())
    pattern = re.compile(rf"""(==|!=)\s*["']({families})["']|["']({families})["']\s*(==|!=)|"""
                         rf"""\bin\s*[(\[{{][^)\]}}]*["']({families})["']""")
    offenders = []
    for path in sorted((REPO / "src" / "medlens").rglob("*.py")):
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
