"""Study configs fail before any training, with a message naming the field."""

from __future__ import annotations

import re

import pytest

from realdata import REPO
import yaml

from medlens.config import default_config_path, load_config, parse_config
from medlens.errors import ConfigError, MissingPathError

CONFIGS = sorted((REPO / "src" / "medlens" / "configs").glob("*.yaml"))


def _default() -> dict:
    return yaml.safe_load(default_config_path().read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.models and config.source == path


def test_default_config_is_the_ct_lung_study():
    config = load_config(default_config_path())
    assert config.data.name == "lidc-nodule-vois"
    assert config.protocol.folds == 10 and config.protocol.group_by == "patient"
    assert {"bp", "cnn", "svm", "twostage"} <= {m.name for m in config.models}


def test_unknown_model_names_the_field():
    mapping = _default()
    mapping["models"][1]["name"] = "deep_magic"
    with pytest.raises(ConfigError, match=r"models\[1\]\.name.*deep_magic"):
        parse_config(mapping, "study.yaml")


def test_missing_dataset_names_the_field():
    mapping = _default()
    mapping["data"]["name"] = "no-such-set"
    with pytest.raises(ConfigError, match=r"data\.name"):
        parse_config(mapping, "study.yaml")


def test_bad_value_names_the_field():
    mapping = _default()
    mapping["protocol"]["folds"] = 1
    with pytest.raises(ConfigError, match=r"protocol\.folds"):
        parse_config(mapping, "study.yaml")


def test_unknown_key_is_rejected():
    mapping = _default()
    mapping["protocol"]["fold"] = 5
    with pytest.raises(ConfigError, match=r"protocol\.fold"):
        parse_config(mapping, "study.yaml")


def test_duplicate_model_ids_are_rejected():
    mapping = _default()
    mapping["models"].append(dict(mapping["models"][1]))
    with pytest.raises(ConfigError, match="unique"):
        parse_config(mapping, "study.yaml")


def test_missing_config_file(tmp_path):
    with pytest.raises(MissingPathError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


@pytest.mark.parametrize("edit, field", [
    ("  - {id: bp, name: bp, params: {inputs: pixels}}", "models[0].params.lr"),
    ("protocol: {kind: official, repeats: 3, seed: 0}", "protocol.threshold"),
    ("features:\n  gabor: {wavelengths: [3, 6], orientations: 4}", "features.gabor.wavelengths[1]"),
])
def test_nan_and_inf_fail_at_validation_naming_the_field(tmp_path, edit, field, monkeypatch):
    """A copy of a shipped config with one value made NaN or infinite; no data is read (the builder that
    would read it is replaced by one that fails the test)."""
    from medlens.data import builders

    text = (REPO / "configs" / "breastmnist_official.yaml").read_text()
    assert edit in text
    replaced = {
        "models[0].params.lr": "  - {id: bp, name: bp, params: {inputs: pixels, lr: .nan}}",
        "protocol.threshold": "protocol: {kind: official, repeats: 3, seed: 0, threshold: .inf}",
        "features.gabor.wavelengths[1]": "features:\n  gabor: {wavelengths: [3, -.inf], orientations: 4}",
    }[field]
    path = tmp_path / "study.yaml"
    path.write_text(text.replace(edit, replaced))
    monkeypatch.setattr(builders, "build_dataset", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(ConfigError, match=rf"study.yaml: field `{re.escape(field)}`: -?(nan|inf) is not a finite number"):
        load_config(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_unreadable_yaml_values_are_config_errors(tmp_path):
    for text, problem in (("study: x\nwhen: 2024-02-30\n", "YAML value cannot be read"),
                          (b"study: \xff\xfe\n", "not UTF-8")):
        path = tmp_path / "bad.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ConfigError, match=problem):
            load_config(path)
