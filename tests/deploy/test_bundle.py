"""The bundle format on real BreastMNIST: round trips, and refusal of every way a bundle can be damaged or
walked around (edited manifest, missing record, paths outside the bundle, pickles, other versions), and a
re-save killed half-way that leaves the old bundle whole."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import medlens
from medlens.config import load_config
from medlens.data.dataset import ArrayDataset
from medlens.deploy.bundle import CHECKSUMS, BundleError, load_bundle, open_bundle, sha256, write_bundle, write_text
from medlens.deploy.classifier import load_classifier, save_classifier
from medlens.models.pipeline import build_pipeline

from realdata import REPO, need

torch.set_num_threads(1)
CONFIG = "src/medlens/configs/breastmnist_official.yaml"


@pytest.fixture(scope="module")
def breast(data_root):
    z = np.load(need(data_root, "medmnist/breastmnist.npz"))
    meta = {"labels": ["malignant", "normal, benign"], "source_md5": "test"}

    def part(split, n):
        return ArrayDataset(images=z[f"{split}_images"][:n, None].astype(np.float32) / 255.0,
                            labels=z[f"{split}_labels"][:n], meta=dict(meta))

    return part("train", 240), part("val", 60), part("test", 40)


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / CONFIG)


def _save(model, params, config, data, folder, **kwargs):
    return save_classifier(model, params, config, data.meta, folder, model_id=model.name,
                           image_shape=data.images.shape[1:], **kwargs)


@pytest.fixture(scope="module")
def cnn_bundle(breast, config, tmp_path_factory):
    train, val, test = breast
    params = {"arch": "resnet", "epochs": 2, "progress": False, "seed": 0}
    model = build_pipeline("cnn", params, config.features).fit(train, val)
    folder = _save(model, params, config, train, tmp_path_factory.mktemp("cnn") / "bundle", metrics={"auc": 0.5},
                   threshold=0.4)
    return model, folder


def _rewrite_record(folder):
    """Recompute the integrity record after a deliberate edit (what a careful forger would do)."""
    lines = [line.split("  ", 1)[1] for line in (folder / CHECKSUMS).read_text().splitlines()]
    (folder / CHECKSUMS).write_text("".join(f"{sha256(folder / name)}  {name}\n" for name in lines))


def test_cnn_round_trip_gives_identical_probabilities(cnn_bundle, breast):
    model, folder = cnn_bundle
    test = breast[2]
    loaded = load_classifier(folder)
    expected = model.predict_proba(test)
    got = loaded.model.predict_proba(test)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    assert loaded.threshold == 0.4 and loaded.labels == ["malignant", "normal, benign"]
    assert loaded.image_shape == (1, 28, 28)
    manifest = loaded.manifest
    assert manifest["kind"] == "classifier" and manifest["format_version"] == 2
    assert manifest["model"]["name"] == "cnn" and manifest["model"]["params"]["arch"] == "resnet"
    assert manifest["model"]["capabilities"] == {"inputs": ["image"], "explain": ["gradcam", "gradcam++",
                                                                                  "occlusion"], "onnx": True}
    assert manifest["config"]["data"]["builder"] == "medmnist"
    record = (folder / CHECKSUMS).read_text()
    assert {line.split("  ")[1] for line in record.splitlines()} == {"weights.safetensors", "model_card.md",
                                                                    "manifest.json"}
    assert manifest["versions"]["torch"] == torch.__version__
    assert subprocess.run(["sha256sum", "--quiet", "-c", CHECKSUMS], cwd=folder).returncode == 0


def test_bp_round_trip_computes_its_gabor_features_itself(breast, config, tmp_path):
    """The fitted pipeline is the object that prepares inputs: neither training nor loading passes features."""
    train, _, test = breast
    params = {"hidden": [8], "iterations": 30, "features": ["gabor_*"], "seed": 0}
    model = build_pipeline("bp", params, config.features).fit(train)
    assert [s.kind for s in model.steps] == ["gabor"]
    _save(model, params, config, train, tmp_path / "b")
    loaded = load_classifier(tmp_path / "b")
    np.testing.assert_array_equal(loaded.model.predict_proba(test), model.predict_proba(test))
    assert loaded.manifest["pipeline"]["steps"][0]["wavelengths"] == [3.0, 6.0]
    assert loaded.capabilities.explain == ("occlusion",) and "image" in loaded.capabilities.inputs


def _copy(folder, tmp_path, name="copy"):
    return shutil.copytree(folder, tmp_path / name)


def test_tampered_weights_are_refused(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    weights = copy / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="weights.safetensors: sha256 differs"):
        load_bundle(copy)


@pytest.mark.parametrize("edit", ["threshold", "labels"])
def test_an_edited_manifest_is_refused(cnn_bundle, tmp_path, edit):
    copy = _copy(cnn_bundle[1], tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    if edit == "threshold":
        manifest["threshold"] = 0.01
    else:
        manifest["data"]["labels"] = manifest["data"]["labels"][::-1]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json: sha256 differs"):
        load_bundle(copy)


def test_a_record_that_skips_the_manifest_or_lists_nothing_is_refused(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    lines = (copy / CHECKSUMS).read_text().splitlines()
    (copy / CHECKSUMS).write_text("".join(f"{line}\n" for line in lines if not line.endswith("manifest.json")))
    with pytest.raises(BundleError, match="does not cover manifest.json"):
        load_bundle(copy)
    (copy / CHECKSUMS).write_text("")
    with pytest.raises(BundleError, match="does not cover manifest.json"):
        load_bundle(copy)


def test_a_listed_path_outside_the_bundle_is_refused_before_it_is_read(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a bundle file")
    with open(copy / CHECKSUMS, "a") as record:
        record.write(f"{sha256(secret)}  ../secret.txt\n")
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(copy)
    copy2 = _copy(cnn_bundle[1], tmp_path, "copy2")
    (copy2 / "link.txt").symlink_to(secret)
    with open(copy2 / CHECKSUMS, "a") as record:
        record.write(f"{sha256(secret)}  link.txt\n")
    with pytest.raises(BundleError, match="link.txt: leads outside the bundle"):
        load_bundle(copy2)


def test_the_loader_reads_only_listed_files(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    reader = open_bundle(copy)
    (copy / "extra.json").write_text("{}")
    with pytest.raises(BundleError, match="extra.json: not listed"):
        reader.json("extra.json")


def test_a_format_1_bundle_with_a_pickle_is_refused_and_nothing_runs(tmp_path):
    """The previous release's layout (manifest.json + weights.pt, no integrity record for the manifest):
    refused with the format named, and the pickle inside weights.pt is never opened."""

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "payload-ran"), "w"))

    old = tmp_path / "old"
    old.mkdir()
    (old / "weights.pt").write_bytes(pickle.dumps(Payload()))
    (old / "manifest.json").write_text(json.dumps({"format_version": 1, "medlens_version": "0.1.0",
                                                    "files": {}, "model": {"name": "cnn"}}))
    with pytest.raises(BundleError, match="bundle format 1.*Train it again"):
        load_bundle(old)
    assert not (tmp_path / "payload-ran").exists()


def test_other_major_version_newer_format_and_non_bundle_are_refused(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["medlens_version"] = "99.0.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_record(copy)
    with pytest.raises(BundleError, match="major versions differ"):
        load_bundle(copy)
    manifest["medlens_version"], manifest["format_version"] = medlens.__version__, 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_record(copy)
    with pytest.raises(BundleError, match="bundle format 3 is newer"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a medlens bundle"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="a classifier bundle, where a segmenter bundle is needed"):
        load_bundle(cnn_bundle[1], kind="segmenter")


def test_model_card_is_written_and_hash_checked(cnn_bundle, tmp_path):
    _, folder = cnn_bundle
    card = (folder / "model_card.md").read_text()
    assert "Research use only" in card and "Limitations" in card and "explanations: gradcam" in card
    copy = _copy(folder, tmp_path)
    (copy / "model_card.md").write_text(card.replace("Research use only", "Cleared for clinical use"))
    with pytest.raises(BundleError, match="model_card.md"):
        load_bundle(copy)


def test_a_failed_resave_leaves_the_old_bundle_whole(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[1], tmp_path)
    before = (copy / CHECKSUMS).read_text()

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_bundle(copy, "classifier", {}, {"model_card.md": write_text("new"), "weights.safetensors": broken})
    assert (copy / CHECKSUMS).read_text() == before
    load_classifier(copy)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_resave_killed_half_way_leaves_the_old_bundle_loadable(cnn_bundle, tmp_path):
    """SIGKILL while the new bundle is being written: the old one still loads, and the next save clears the
    dead writer's staging folder."""
    copy = _copy(cnn_bundle[1], tmp_path)
    ready = tmp_path / "half-written"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from medlens.deploy.bundle import write_bundle, write_text

        def stall(path):
            path.write_text("partial")
            Path({str(ready)!r}).touch()
            time.sleep(60)

        write_bundle({str(copy)!r}, "classifier", {{}}, {{"a.txt": write_text("a"), "b.txt": stall}})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        for _ in range(600):
            if ready.exists() or child.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert ready.exists(), "the writer never reached its second file"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-copy-")]
    load_classifier(copy)  # the old bundle, whole
    write_bundle(tmp_path / "copy", "classifier", {}, {"a.txt": write_text("a")})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-copy-")]


@pytest.fixture(scope="module")
def calibrated(config, tmp_path_factory):
    """A quick BreastMNIST cnn with a temperature and the sensitivity-0.9 operating point, both fitted on val."""
    from medlens.deploy.train import train_bundle

    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    manifest = train_bundle(config, out, quick=True, max_samples=400, threshold="sensitivity:0.9", calibrate=True,
                            quiet=True)
    return out, manifest


def test_operating_point_is_chosen_on_validation(calibrated, config):
    from medlens.evaluate.operating_points import threshold_for_sensitivity
    from medlens.study import load_dataset, subsample

    out, manifest = calibrated
    bundle = load_classifier(out)
    data = subsample(load_dataset(config), 400, config.seed)
    val = data.subset(np.flatnonzero(data.split == "val"))
    p_val = bundle.predict_proba(val)[:, 1]
    assert bundle.threshold == pytest.approx(threshold_for_sensitivity(val.labels, p_val, 0.9))
    assert manifest["training"]["validation"]["sensitivity"] >= 0.9
    assert manifest["metrics"]["split"] == "official test" and 0.0 <= manifest["metrics"]["specificity"] <= 1.0
    assert "sensitivity ≥ 0.9" in (out / "model_card.md").read_text()


def test_temperature_changes_confidence_not_ranking(calibrated, config):
    from scipy.stats import rankdata

    from medlens.study import load_dataset, subsample

    out, manifest = calibrated
    bundle = load_classifier(out)
    assert manifest["temperature"] is not None and manifest["temperature"] > 0
    data = subsample(load_dataset(config), 400, config.seed)
    test = data.subset(np.flatnonzero(data.split == "test"))
    raw, scaled = bundle.model.predict_proba(test)[:, 1], bundle.predict_proba(test)[:, 1]
    assert not np.allclose(raw, scaled)
    np.testing.assert_array_equal(rankdata(raw), rankdata(scaled))
    val = data.subset(np.flatnonzero(data.split == "val"))
    y = val.labels

    def nll(p):
        return -np.mean(np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-12, None)))

    # the temperature minimises the validation NLL, and T = 1 (no scaling) lies in its search range
    assert nll(bundle.predict_proba(val)[:, 1]) <= nll(bundle.model.predict_proba(val)[:, 1]) + 1e-6


def test_onnx_export_matches_pytorch_on_real_images(config, tmp_path):
    """The exported graph (standardise, network, temperature, softmax) gives the bundle's probabilities."""
    import onnxruntime

    from medlens.deploy.train import train_bundle
    from medlens.study import load_dataset, subsample

    manifest = train_bundle(config, tmp_path / "b", quick=True, max_samples=300, calibrate=True, quiet=True,
                            onnx=True)
    assert manifest["onnx"]["max_abs_diff"] <= 1e-4 and manifest["onnx"]["checked_on"] > 0
    assert "model.onnx" in (tmp_path / "b" / CHECKSUMS).read_text()
    bundle = load_classifier(tmp_path / "b")
    data = subsample(load_dataset(config), 300, config.seed)
    test = data.subset(np.flatnonzero(data.split == "test"))
    session = onnxruntime.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": test.images.astype(np.float32)})[0]
    # the bundle predicts under bfloat16 autocast where it speeds up the CPU; ONNX runs float32
    np.testing.assert_allclose(got, bundle.predict_proba(test), atol=0.02)
    assert np.mean(got.argmax(axis=1) == bundle.predict_proba(test).argmax(axis=1)) >= 0.97


def test_onnx_is_refused_for_a_model_that_cannot_export(config, tmp_path):
    from medlens.deploy.train import train_bundle
    from medlens.errors import ConfigError

    with pytest.raises(ConfigError, match="--onnx: model svm .* does not export"):
        train_bundle(config, tmp_path / "b", model_id="svm", quick=True, max_samples=200, quiet=True, onnx=True)


def test_train_resume_continues_an_interrupted_training_to_the_same_bundle(config, tmp_path, monkeypatch):
    """`medlens train --resume` after a training stopped in its second epoch: the same weights as an
    uninterrupted training; without --resume the unfinished run is refused, never silently restarted."""
    from medlens.deploy.train import train_bundle
    from medlens.engine.trainer import Trainer
    from medlens.errors import MedlensError

    train_bundle(config, tmp_path / "whole", quick=True, max_samples=300, quiet=True)
    epoch = Trainer._train_epoch
    calls = [0]

    def stopping(self, *args):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return epoch(self, *args)

    monkeypatch.setattr(Trainer, "_train_epoch", stopping)
    with pytest.raises(KeyboardInterrupt):
        train_bundle(config, tmp_path / "again", quick=True, max_samples=300, quiet=True)
    monkeypatch.setattr(Trainer, "_train_epoch", epoch)
    with pytest.raises(MedlensError, match="did not finish.*--resume"):
        train_bundle(config, tmp_path / "again", quick=True, max_samples=300, quiet=True)
    train_bundle(config, tmp_path / "again", quick=True, max_samples=300, quiet=True, resume=True)
    whole, again = open_bundle(tmp_path / "whole"), open_bundle(tmp_path / "again")
    for key, value in whole.arrays().items():
        np.testing.assert_array_equal(again.arrays()[key], value)
    assert not (tmp_path / ".again.resume").exists()
