"""Issue 27: labels are checked before any work starts (0.5/1.5, negative, a 7 in a binary set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hostile import snapshot
from realdata import need
from medlens.data.builders import medmnist
from medlens.data.dataset import ArrayDataset
from medlens.data.labels import check_labels
from medlens.errors import LabelError

BREAST = "medmnist/breastmnist.npz"


def _breast_with_labels(data_root: Path, target: Path, change) -> Path:
    """BreastMNIST with its train labels passed through ``change`` (saved as ``target``)."""
    with np.load(need(data_root, BREAST)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_labels"] = change(arrays["train_labels"])
    np.savez_compressed(target, **arrays)
    return target


@pytest.mark.parametrize("change, problem", [
    (lambda y: y.astype(np.float32) + 0.5, r"label 1\.5 at position 0 \(546 such value\(s\)\) is not a whole number"),
    (lambda y: y.astype(np.int8) - 1, r"label -1 at .* is negative"),
    (lambda y: np.where(np.arange(len(y))[:, None] == 17, 7, y), r"label 7 at sample train_17 .*has no class: the 2 classes "
                                                                  r"are 0 malignant, 1 normal, benign"),
])
def test_bad_labels_fail_when_the_dataset_is_built(tmp_path, data_root, change, problem):
    path = _breast_with_labels(data_root, tmp_path / "breastmnist.npz", change)
    before = snapshot(tmp_path)
    with pytest.raises(LabelError, match=problem):
        medmnist(path, name="breastmnist")
    assert snapshot(tmp_path) == before


def test_features_extract_refuses_bad_labels_before_any_work(tmp_path, data_root):
    from medlens.commands.features import app

    path = _breast_with_labels(data_root, tmp_path / "breastmnist.npz", lambda y: y.astype(np.float64) * 1.5)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extract", str(path), "--out", str(tmp_path / "features.npz")])
    assert result.exit_code == 2, result.output
    assert "breastmnist.npz [train_labels]: label 1.5" in " ".join(result.output.split())
    assert snapshot(tmp_path) == before  # no features.npz, no lock, no temporary file


def test_check_labels_cases():
    assert check_labels(np.array([0.0, 1.0, 2.0]), names=["a", "b", "c"]).dtype == np.int64
    assert check_labels(np.array([True, False])).tolist() == [1, 0]
    for bad in ([0, np.nan], [0, np.inf], ["a", "b"], [0, 2**40]):
        with pytest.raises(LabelError):
            check_labels(np.array(bad))
    with pytest.raises(LabelError, match=r"data.csv: label 2 at sample p2"):
        ArrayDataset(images=np.zeros((3, 1, 2, 2), np.float32), labels=[0, 1, 2], ids=np.array(["p0", "p1", "p2"]),
                     meta={"labels": ["benign", "malignant"], "source": "data.csv"})
