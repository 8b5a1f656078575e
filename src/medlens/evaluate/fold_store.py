"""What a cross-validation has finished, kept on disk so that a killed run resumes instead of starting over.

A :class:`FoldStore` is a folder (a study keeps it in ``<out>/.resume``) holding, per model, training seed and
fold:

* ``<model>/seed<s>/fold<k>.json`` and ``.npz``: the fold's :class:`~medlens.evaluate.protocol.FoldResult`
  (its figures, temperature, operating points and its test probabilities), written atomically once the fold
  is finished;
* ``<model>/seed<s>/fold<k>/``: the resume checkpoints of the fold's trainings
  (:func:`medlens.engine.trainer.resumable`), so that a fold killed during training continues from its last
  epoch;
* ``<model>/seed<s>/fold<k>.model.npz`` and ``.model.json``: for the fold whose fitted model a study
  explains (its last), the model's state (:meth:`~medlens.models.base.Model.state`).

``study.json`` records what the folds belong to (the study config and the data's checksum): resuming a
different study into the same folder is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import MedlensError
from medlens.evaluate.protocol import Fold, FoldResult
from medlens.files import json_ready, write_atomically, write_text_atomically


class FoldStore:
    """The finished folds of a cross-validation (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def bind(self, identity: dict[str, Any], resume: bool) -> "FoldStore":
        """Tie the store to the study ``identity`` (config, data checksum).

        With ``resume`` an earlier store must have the same identity (else an error says what differs), and its
        finished folds are kept; without it, an earlier store is an unfinished study that this call would
        silently discard, so it is refused unless the folder is empty.
        """
        record = self.folder / "study.json"
        wanted = json.loads(json.dumps(json_ready(identity)))
        if record.is_file():
            if not resume:
                raise MedlensError(f"{self.folder.parent}: holds an unfinished study (killed or stopped); pass "
                                   "--resume to continue it, or --overwrite to start it again")
            found = json.loads(record.read_text(encoding="utf-8"))
            if found != wanted:
                changed = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
                raise MedlensError(f"{self.folder.parent}: the unfinished study there differs in "
                                   f"{', '.join(changed)}; resume it with the same config and data, or start "
                                   "again with --overwrite")
        else:
            write_text_atomically(record, json.dumps(wanted, indent=2))
        return self

    def _base(self, model: str, offset: int, fold: Fold) -> Path:
        return self.folder / model / f"seed{offset}" / f"fold{fold.index}"

    def training_folder(self, model: str, offset: int, fold: Fold) -> Path:
        """Where the fold's trainings keep their resume checkpoints."""
        return self._base(model, offset, fold)

    def load(self, model: str, offset: int, fold: Fold) -> FoldResult | None:
        """The finished result of a fold, or None when it has not finished."""
        base = self._base(model, offset, fold)
        record, arrays = base.with_suffix(".json"), base.with_suffix(".npz")
        if not (record.is_file() and arrays.is_file()):
            return None
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["test"] != fold.test.tolist():
            raise MedlensError(f"{record}: was made on other folds; start the study again with --overwrite")
        with np.load(arrays) as loaded:
            proba = loaded["proba"]
            calibrated = loaded["calibrated"] if "calibrated" in loaded.files else None
        return FoldResult(fold, proba, calibrated, saved["temperature"], saved["operating_points"], saved["row"],
                          saved["seconds"])

    def save(self, model: str, offset: int, result: FoldResult) -> None:
        """Record a finished fold (arrays first, then its record, each atomically) and drop its checkpoints."""
        base = self._base(model, offset, result.fold)
        arrays = {"proba": result.proba}
        if result.calibrated is not None:
            arrays["calibrated"] = result.calibrated
        write_atomically(base.with_suffix(".npz"), lambda tmp: np.savez(tmp, **arrays))
        record = {"test": result.fold.test.tolist(), "temperature": result.temperature,
                  "operating_points": result.operating_points, "row": result.row, "seconds": result.seconds}
        write_text_atomically(base.with_suffix(".json"), json.dumps(json_ready(record)))
        shutil.rmtree(base, ignore_errors=True)

    def save_model(self, model: str, offset: int, fold: Fold, fitted) -> None:
        """Keep a fold's fitted model (its state: arrays and JSON), for what the study does with it after the
        folds (explaining an image network's last fold)."""
        state = fitted.state()
        base = self._base(model, offset, fold)
        write_atomically(base.with_suffix(".model.npz"), lambda tmp: np.savez(tmp, **state.arrays))
        write_text_atomically(base.with_suffix(".model.json"), json.dumps(json_ready(state.meta)))

    def load_model(self, model: str, offset: int, fold: Fold, unfitted):
        """The fold's model kept by :meth:`save_model`, restored into ``unfitted`` (None when not kept)."""
        from medlens.models.base import ModelState

        base = self._base(model, offset, fold)
        arrays, meta = base.with_suffix(".model.npz"), base.with_suffix(".model.json")
        if not (arrays.is_file() and meta.is_file()):
            return None
        with np.load(arrays, allow_pickle=False) as loaded:
            state = ModelState(arrays={k: loaded[k] for k in loaded.files},
                               meta=json.loads(meta.read_text(encoding="utf-8")))
        return unfitted.load_state(state)

    def clear(self) -> None:
        """Remove the store (the study it belongs to has finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)
