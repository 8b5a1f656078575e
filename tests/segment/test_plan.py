"""Plan fingerprints on real data, plan checks, and bad inputs that must raise clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realdata import need
from medlens.errors import ConfigError, DatasetError, GeometryError, MedlensError
from medlens.segment.datasets import load_folder
from medlens.segment.fingerprint import dataset_id
from medlens.segment.plan import Normalization, check_dataset, load_plan, save_plan
from medlens.segment.prepare import normalize, prepare_case
from medlens.segment.rules import make_plan


@pytest.fixture(scope="module")
def montgomery(data_root):
    return need(data_root, "montgomery_cxr_lung_masks")


def test_montgomery_fingerprint(montgomery):
    cases = load_folder(montgomery, "binary", limit=12)
    plan = make_plan(cases, montgomery)
    fp = plan.fingerprint
    assert fp.dims == 2 and fp.channels == 1 and fp.n_cases == 12
    assert fp.shape_median == [512, 512]
    # lung fraction per image from the dataset's own index.csv (binarised at 128)
    index = {r.split(",")[0]: float(r.split(",")[4]) for r in (montgomery / "index.csv").read_text().splitlines()[1:]}
    expected = np.mean([index[c.case_id + ".png"] for c in cases])
    assert fp.class_frequencies[1] == pytest.approx(expected, abs=2e-3)
    assert plan.normalization.scheme == "zscore_per_image"
    assert fp.modality != "CT"
    assert all(p % 2 ** plan.network.depth == 0 for p in plan.patch_size)
    assert 0 <= fp.intensity.p00_5 < fp.intensity.p50 < fp.intensity.p99_5 <= 255


def test_lidc_plan_is_ct_with_foreground_clip(data_root):
    root = need(data_root, "lidc_idri_nodule_vois")
    cases = load_folder(root, "binary", limit=30)
    plan = make_plan(cases, root)
    assert plan.fingerprint.dims == 3 and plan.fingerprint.modality == "CT"
    norm = plan.normalization
    assert norm.scheme == "ct_clip_zscore"
    fg = np.concatenate([c.image.array[0][c.mask > 0] for c in cases])
    # percentiles are estimated on a sample of foreground voxels (<=10000 per case)
    assert norm.clip[0] == pytest.approx(np.percentile(fg, 0.5), abs=40)
    assert norm.clip[1] == pytest.approx(np.percentile(fg, 99.5), abs=40)
    x, y = prepare_case(plan, cases[0])
    assert x.shape[1:] == y.shape[1:] and x.dtype == np.float32
    assert x.min() >= (norm.clip[0] - norm.mean) / norm.std - 1e-3
    assert set(np.unique(y)) <= {0, 1}


def test_rescaled_ct_crops_are_normalised_dataset_wide(data_root):
    """MSD lung CT patches are stored rescaled to [0, 1]: detection cannot see CT, the override can; either way
    these tumour-centred crops get the dataset's foreground statistics, not a z-score per crop (the
    per-crop z-score gave test Dice 0.689 against 0.753, benchmarks/results/segment.md)."""
    archive = need(data_root, "msd_lung_tumour_patches") / "val_patches.npz"
    cases = load_folder(archive)
    detected, declared = make_plan(cases, archive), make_plan(cases, archive, modality="ct")
    assert detected.fingerprint.modality == "OT"
    assert detected.normalization.scheme == "dataset_clip_zscore" and "lesion-centred" in detected.reasons[
        "normalization"]
    assert detected.normalization.model_dump(exclude={"scheme"}) == declared.normalization.model_dump(
        exclude={"scheme"})
    montgomery = need(data_root, "montgomery_cxr_lung_masks")  # whole X-rays: a z-score per image
    assert make_plan(load_folder(montgomery, limit=4), montgomery).normalization.scheme == "zscore_per_image"
    assert declared.fingerprint.modality == "CT"
    norm = declared.normalization
    assert norm.scheme == "ct_clip_zscore"
    tumour = np.concatenate([c.image.array[0][c.mask > 0] for c in cases])
    assert norm.clip[0] == pytest.approx(np.percentile(tumour, 0.5), abs=0.02)
    assert norm.mean == pytest.approx(tumour.mean(), abs=0.01)


def test_zscore_per_image(montgomery):
    x = load_folder(montgomery, limit=1)[0].image.array.astype(np.float32)  # a real chest X-ray
    assert abs(x.mean()) > 10 and x.std() > 10
    z = normalize(x, Normalization(scheme="zscore_per_image"))
    assert z.mean() == pytest.approx(0, abs=1e-5) and z.std() == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("elastic, field", [({"sigma": -1}, "elastic.sigma"), ({"sigma": 3, "grid": 1}, "elastic.grid"),
                                            ({"sigma": 3, "prob": 1.5}, "elastic.prob"), (4, "elastic"),
                                            ({"sigma": "wide"}, "elastic.sigma")])
def test_bad_augmentation_in_plan_names_the_field(montgomery, tmp_path, elastic, field):
    plan = make_plan(load_folder(montgomery, "binary", limit=2), montgomery).to_dict()
    plan["augmentations"]["elastic"] = elastic
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match=f"plan.json: field `augmentations.{field}"):
        load_plan(tmp_path / "plan.json")


@pytest.mark.parametrize("bounds", [[30.0, 10.0], [-1.0, 10.0], [12.0], "wide"])
def test_bad_diameter_range_in_plan_names_the_field(montgomery, tmp_path, bounds):
    plan = make_plan(load_folder(montgomery, "binary", limit=2), montgomery).to_dict()
    plan["inference"]["instances"] = {"diameter_range": bounds}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match="field `inference.instances.diameter_range"):
        load_plan(tmp_path / "plan.json")


def _mini(src, dst, n=4):
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for p in sorted((src / "images").glob("*.png"))[:n]:
        shutil.copy(p, dst / "images" / p.name)
        shutil.copy(src / "masks" / p.name, dst / "masks" / p.name)
    return dst


def test_plan_from_another_dataset_is_refused(montgomery, data_root, tmp_path):
    a = _mini(montgomery, tmp_path / "a")
    plan = make_plan(load_folder(a), a)
    save_plan(plan, tmp_path / "plan.json")
    loaded = load_plan(tmp_path / "plan.json")
    check_dataset(loaded, a)
    isbi = need(data_root, "isbi2012_membrane")
    with pytest.raises(ConfigError, match="made for the dataset"):
        check_dataset(loaded, isbi)
    # a user edit that breaks the plan is named
    bad = json.loads((tmp_path / "plan.json").read_text())
    bad["patch_size"] = [100, 100]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="patch_size"):
        load_plan(tmp_path / "bad.json")


def test_mask_shape_mismatch_names_file(montgomery, tmp_path):
    d = _mini(montgomery, tmp_path / "d", n=2)
    victim = sorted((d / "masks").glob("*.png"))[1]
    Image.open(victim).resize((256, 256)).save(victim)
    with pytest.raises(GeometryError, match=victim.name):
        load_folder(d)


def test_labels_outside_classes_names_file(montgomery, tmp_path):
    d = _mini(montgomery, tmp_path / "d", n=1)
    victim = sorted((d / "masks").glob("*.png"))[0]
    arr = (np.asarray(Image.open(victim)) >= 128).astype(np.uint8)
    arr[:10, :10] = 3
    Image.fromarray(arr).save(victim)
    with pytest.raises(DatasetError, match=victim.name):
        load_folder(d, "labels", n_classes=2)
    assert load_folder(d, "labels", n_classes=4)[0].mask.max() == 3


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_folder(tmp_path)
    with pytest.raises(MedlensError, match="no such"):
        load_folder(tmp_path / "absent")
    with pytest.raises(DatasetError, match="empty dataset"):
        dataset_id(tmp_path)


PLAN_V1 = Path(__file__).parent / "data" / "plan_v1_montgomery.json"


def test_unknown_or_missing_plan_field_is_refused_naming_file_and_field(montgomery, tmp_path):
    plan = make_plan(load_folder(montgomery, "binary", limit=2), montgomery).to_dict()
    plan["training"]["epoch"] = 10  # a typo of `epochs`
    (tmp_path / "typo.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match=r"typo.json: field `training.epoch`: Extra inputs are not permitted"):
        load_plan(tmp_path / "typo.json")
    del plan["training"]["epoch"]
    del plan["network"]["depth"]
    plan["training"]["lr"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError) as err:
        load_plan(tmp_path / "bad.json")
    assert "field `network.depth`: Field required" in str(err.value)
    assert "field `training.lr`: Input should be greater than 0" in str(err.value)


def test_saved_plan_is_plain_json_that_reads_back_the_same(montgomery, tmp_path):
    plan = make_plan(load_folder(montgomery, "binary", limit=4), montgomery)
    save_plan(plan, tmp_path / "plan.json")
    raw = json.loads((tmp_path / "plan.json").read_text())
    assert raw["version"] == 2 and set(raw["reasons"]) >= {"target_spacing", "patch_size", "training",
                                                          "augmentations", "postprocessing"}
    assert load_plan(tmp_path).to_dict() == plan.to_dict()


def test_version_1_plan_loads_with_its_postprocessing_moved(tmp_path):
    plan = load_plan(PLAN_V1)
    raw = json.loads(PLAN_V1.read_text())
    assert raw["version"] == 1 and raw["inference"]["keep_component"] == "largest"
    assert plan.version == 2 and plan.fingerprint.structure is None and plan.reasons == {}
    assert plan.postprocessing.steps() == {"min_component_size": 0, "keep_component": "largest", "keep_count": 2,
                                           "fill_holes": True}
    assert plan.patch_size == raw["patch_size"] and plan.training.epochs == raw["training"]["epochs"]


@pytest.mark.parametrize("version", [3, None, "2"])
def test_plan_of_an_unknown_version_is_refused_naming_it(tmp_path, version):
    raw = json.loads(PLAN_V1.read_text())
    raw["version"] = version
    (tmp_path / "plan.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=rf"plan.json: field `version`: plan version {version!r} .* `medlens "
                                          r"segment plan DATA`"):
        load_plan(tmp_path / "plan.json")
