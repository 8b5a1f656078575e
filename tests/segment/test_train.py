"""Short training on real data beats trivial baselines; predict keeps geometry; the CLI runs end to end."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medlens.commands.segment import app
from medlens.deploy.bundle import BundleError, load_bundle
from medlens.errors import ConfigError, UnreadableFileError
from medlens.segment.bundle import build_model, load_ensemble, load_segmenter, save_segmenter
from medlens.segment.datasets import load_folder
from medlens.segment.evaluate import evaluate_cases, mean_dice
from medlens.segment.infer import predict_files, segment_image
from medlens.segment.io import read_image, write_mask
from medlens.segment.rules import make_plan
from medlens.segment.train import train_segmenter

from realdata import need

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def msd(data_root):
    root = need(data_root, "msd_lung_tumour_patches")
    train = load_folder(root / "val_patches.npz")
    test = load_folder(root / "test_patches.npz", limit=40)
    plan = make_plan(train, root / "val_patches.npz").copy_with(**{
        "network.channels": 8, "training.epochs": 4, "training.steps_per_epoch": 20, "inference.tta_flips": False})
    model, history = train_segmenter(plan, train)
    return plan, model, history, test


def test_short_training_beats_trivial_baselines(msd):
    plan, model, history, test = msd
    assert history.steps == 80 and history.train_loss[-1] < history.train_loss[0]
    preds = {c.case_id: segment_image(model, plan, c.image) for c in test}
    dice = evaluate_cases(preds, test)["summary"]["dice"]["mean"]
    all_fg = np.mean([mean_dice(np.ones_like(c.mask), c.mask) for c in test])
    all_bg = np.mean([mean_dice(np.zeros_like(c.mask), c.mask) for c in test])
    assert dice > max(all_fg, all_bg) + 0.15, (dice, all_fg, all_bg)


def test_rotation_tta_makes_the_prediction_turn_with_the_image(msd):
    # averaging over the eight symmetries of the square makes the probabilities equivariant to quarter
    # turns; the trained network alone, or with flips only, is not
    plan, model, _, test = msd
    plan = plan.copy_with(**{"augmentations.rot90": True})
    image = test[0].image
    turned = type(image)(np.rot90(image.array, 1, axes=(-2, -1)).copy(), image.spacing)

    def gap(**inference):
        p = plan.copy_with(**{f"inference.{k}": v for k, v in inference.items()})
        _, prob = segment_image(model, p, image, return_probabilities=True)
        _, prob_turned = segment_image(model, p, turned, return_probabilities=True)
        return np.abs(prob_turned - np.rot90(prob, 1, axes=(-2, -1))).max()

    assert image.shape[0] == image.shape[1] == plan.patch_size[0]
    assert gap(tta_flips=True, tta_rotations=True) < 1e-4
    assert gap(tta_flips=True, tta_rotations=False) > 1e-3


def test_bundle_round_trip(msd, tmp_path):
    plan, model, history, test = msd
    save_segmenter(model, plan, tmp_path / "m", history)
    loaded, plan2 = load_segmenter(tmp_path / "m")
    x = test[0].image
    assert np.array_equal(segment_image(model, plan, x), segment_image(loaded, plan2, x))
    assert load_bundle(tmp_path / "m").history.steps == history.steps  # the one loader of every bundle kind
    # an edited plan would change the masks: the bundle's integrity record refuses it, as a missing file
    edited = json.loads((tmp_path / "m" / "plan.json").read_text())
    edited["postprocessing"]["keep_component"] = "largest"
    (tmp_path / "m" / "plan.json").write_text(json.dumps(edited))
    with pytest.raises(BundleError, match="plan.json: sha256 differs"):
        load_segmenter(tmp_path / "m")
    save_segmenter(model, plan, tmp_path / "m", history)
    (tmp_path / "m" / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="weights.safetensors: listed in the bundle's checksums.sha256 but missing"):
        load_segmenter(tmp_path / "m")


def test_ensemble_averages_its_members_probabilities(msd, data_root, tmp_path):
    plan, model, history, test = msd
    other_plan = plan.copy_with(**{"training.seed": 1})
    other, _ = train_segmenter(other_plan, load_folder(need(data_root, "msd_lung_tumour_patches") / "val_patches.npz"))
    save_segmenter(model, plan, tmp_path / "m0", history)
    save_segmenter(other, other_plan, tmp_path / "m1")
    members, loaded_plan = load_ensemble([tmp_path / "m0", tmp_path / "m1"])
    image = test[0].image
    _, p0 = segment_image(model, plan, image, return_probabilities=True)
    _, p1 = segment_image(other, plan, image, return_probabilities=True)
    mask, both = segment_image(members, loaded_plan, image, return_probabilities=True)
    assert np.abs(p0 - p1).max() > 1e-2  # two seeds really are two models
    assert np.allclose(both, (p0 + p1) / 2, atol=1e-5)
    assert np.array_equal(mask, both.argmax(axis=0))
    assert np.array_equal(segment_image([model], plan, image, return_probabilities=True)[1], p0)
    # members must come from one plan: a wider network is named, with the folder that has it
    other_plan = other_plan.copy_with(**{"network.channels": 4})
    save_segmenter(build_model(other_plan), other_plan, tmp_path / "narrow")
    with pytest.raises(ConfigError, match=r"narrow: its plan differs .* in network"):
        load_ensemble([tmp_path / "m0", tmp_path / "narrow"])


def test_predict_keeps_nifti_affine_and_png_size(data_root, tmp_path):
    voi = need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz")
    cxr = need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png")
    for src in (voi, cxr):
        image = read_image(src)
        cases = load_folder(src.parent.parent, "binary", limit=2)
        plan = make_plan(cases, src.parent.parent).copy_with(**{"network.channels": 4, "inference.tta_flips": True})
        model = build_model(plan).eval()  # untrained: geometry only
        (out,) = predict_files(model, plan, [src], tmp_path / "pred")
        if src.suffix == ".gz":
            ref, got = nib.load(src), nib.load(out)
            assert np.array_equal(ref.affine, got.affine) and got.shape == ref.shape
            assert np.array_equal(ref.header.get_zooms(), got.header.get_zooms())
        else:
            with Image.open(out) as im:
                assert im.size == (512, 512) and im.mode == "L"
        # the mask is written where asked and never over its input
        with pytest.raises(UnreadableFileError, match="overwrite"):
            write_mask(np.zeros(image.shape, np.int64), image, src)


def test_cli_plan_train_predict_evaluate(data_root, tmp_path):
    src = need(data_root, "montgomery_cxr_lung_masks")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for p in sorted((src / "images").glob("*.png"))[:4]:
        for sub in ("images", "masks"):
            Image.open(src / sub / p.name).resize((64, 64)).save(data / sub / p.name)
    runner = CliRunner()
    r = runner.invoke(app, ["plan", str(data), "--out", str(tmp_path / "plan.json"), "--rot90", "--elastic", "2",
                            "-q"])
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "plan.json").read_text())
    aug = written["augmentations"]
    assert aug["rot90"] is True and aug["elastic"] == {"sigma": 2.0, "grid": 3, "prob": 0.5}
    assert written["inference"]["tta_rotations"] is True  # predicts over the turns it trained on
    r = runner.invoke(app, ["train", str(data), "--plan", str(tmp_path / "plan.json"), "--out",
                            str(tmp_path / "model"), "--epochs", "1", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(data), "--plan", str(tmp_path / "plan.json"), "--out",
                            str(tmp_path / "model1"), "--epochs", "1", "--seed", "1", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "model1" / "plan.json").read_text())["training"]["seed"] == 1
    r = runner.invoke(app, ["predict", str(tmp_path / "model"), str(data / "images"), "--out",
                            str(tmp_path / "pred"), "--no-tta", "--ensemble", str(tmp_path / "model1"), "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
    # cross-validation from the same plan, edited by hand to train briefly: post-processing decided on the folds
    edited = json.loads((tmp_path / "plan.json").read_text())
    edited["training"].update(epochs=1, steps_per_epoch=5)
    (tmp_path / "short.json").write_text(json.dumps(edited))
    r = runner.invoke(app, ["cv", str(data), "--plan", str(tmp_path / "short.json"), "--folds", "2", "--out",
                            str(tmp_path / "cv"), "-q"])
    assert r.exit_code == 0, r.output
    decided = json.loads((tmp_path / "cv" / "plan.json").read_text())["postprocessing"]
    assert decided["decision"]["n_cases"] == 4 and len(decided["decision"]["trials"]) == len(decided["candidates"])
    assert len((tmp_path / "cv" / "metrics.csv").read_text().splitlines()) == 5
    r = runner.invoke(app, ["predict", str(tmp_path / "cv"), str(data / "images"), "--out", str(tmp_path / "cvpred"),
                            "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "cvpred").glob("*.png"))) == 4
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(data), "--out", str(tmp_path / "rep"), "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "metrics.csv").read_text().startswith("case,dice,iou,hd95,pixel_error")
    assert len(list((tmp_path / "rep" / "overlays").glob("*.png"))) == 4
    # a plan from another dataset: clear error naming the plan, exit status 2
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "images" / sorted((other / "images").iterdir())[0].name).unlink()
    r = runner.invoke(app, ["train", str(other), "--plan", str(tmp_path / "plan.json"), "--out", str(tmp_path / "m2")])
    assert r.exit_code == 2 and "made for the dataset" in r.output


def test_dicom_mask_written_as_nifti_in_series_geometry(lidc_series_dir, data_root, tmp_path):
    image = read_image(lidc_series_dir)
    mask = (image.array[0] > -400).astype(np.int64)
    out = write_mask(mask, image, tmp_path / "series.nii.gz")
    written = nib.load(out)
    assert written.shape == image.shape[::-1]
    # the VOI of the same patient (verified voxel-exact against this series) lands on the same voxels
    voi = nib.load(need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"))
    hu = np.asarray(voi.dataobj)
    to_series = np.linalg.inv(written.affine) @ voi.affine
    for ijk in ([0, 0, 0], [10, 20, 3], [40, 50, 8]):
        i, j, k = np.round(to_series @ [*ijk, 1])[:3].astype(int)
        assert image.array[0][k, j, i] == hu[tuple(ijk)]
        assert np.asarray(written.dataobj)[i, j, k] == int(hu[tuple(ijk)] > -400)


def test_elastic_and_rot90_augmentation_on_real_em_patches(data_root):
    from medlens.segment.train import PatchDataset, elastic_deform

    cases = load_folder(need(data_root, "isbi2012_membrane"), "binary", limit=2)
    image, mask = cases[0].image.array[:, :128, :128].astype(np.float32), cases[0].mask[None, :128, :128]
    rng = np.random.default_rng(0)
    x, y = elastic_deform(image, mask, sigma=10.0, grid=3, rng=rng)
    assert x.shape == image.shape and y.shape == mask.shape and y.dtype == mask.dtype
    assert set(np.unique(y)) <= {0, 1}  # nearest-neighbour labels: no new classes
    assert not np.array_equal(y, mask) and mean_dice(y[0], mask[0]) > 0.7  # moved, but the same structure
    still_x, still_y = elastic_deform(image, mask, sigma=0.0, grid=3, rng=rng)
    np.testing.assert_allclose(still_x, image, atol=1e-5)
    assert np.array_equal(still_y, mask)
    plan = make_plan(cases, need(data_root, "isbi2012_membrane")).copy_with(**{
        "patch_size": [64, 64], "augmentations": {"flip_axes": [], "intensity_scale": 0.0, "intensity_shift": 0.0,
                                                  "rot90": True, "elastic": {"sigma": 4.0, "grid": 3, "prob": 1.0}}})
    data = PatchDataset([(c.image.array.astype(np.float32), c.mask[None]) for c in cases], plan, 4, seed=0)
    xs = [data[i] for i in range(4)]
    assert all(a.shape == (1, 64, 64) and b.shape == (1, 64, 64) for a, b in xs)
    assert all(set(np.unique(b.numpy())) <= {0, 1} for _, b in xs)
