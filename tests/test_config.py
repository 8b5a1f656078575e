"""Study configs fail before any training, with a message naming the field."""

from __future__ import annotations

from pathlib import Path

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
