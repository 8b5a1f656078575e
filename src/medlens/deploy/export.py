"""ONNX export of a bundled model, checked against the bundle's own outputs.

Models whose capabilities say ``onnx`` (image networks such as ``cnn``) give one torch module from model-ready
images to logits (:meth:`medlens.models.base.Model.export_graph`). The exported graph takes model-ready
images (prepared as ``medlens predict`` prepares them: scaled, windowed, resized or cut to the bundle's
``image_shape``), applies that module (the model's input standardisation ``(x − mean) / std`` and its
network) and, when the bundle is calibrated, the temperature, and returns class probabilities
``softmax(z / T)``. The batch axis is dynamic. It is written with
``torch.onnx.export(..., dynamo=True)`` and compared with ONNX Runtime on the images given: the largest
absolute difference from the float32 PyTorch forward is recorded next to the file.

Needs the ``onnx`` extra: ``pip install "medlens[onnx]"`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlens.errors import MedlensError, ModelError

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4


class ProbabilityGraph(nn.Module):
    """``softmax(logits(x) / T)``: a model's whole prediction as one module (``logits`` is the model's
    :meth:`~medlens.models.base.Model.export_graph`)."""

    def __init__(self, logits: nn.Module, temperature: float | None = None):
        super().__init__()
        self.logits = logits
        self.temperature = float(temperature or 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(image) / self.temperature, dim=1)


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MedlensError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                           'pip install "medlens[onnx]"') from exc


def export_onnx(model, images: np.ndarray, path: str | Path, temperature: float | None = None) -> dict:
    """Export a fitted model whose capabilities include ONNX and check it on ``images``.

    Parameters
    ----------
    model
        A fitted model or pipeline (e.g. :class:`medlens.models.cnn.CNNClassifier`).
    images : ndarray, shape (N, C, ...)
        Model-ready example images (e.g. the validation set), used to trace and to check the export.
    path : str or Path
        The ``.onnx`` file to write.
    temperature : float, optional
        The bundle's temperature; the graph divides the logits by it.

    Returns
    -------
    dict
        ``file``, ``opset``, ``input``/``output`` names, ``checked_on`` (number of images) and
        ``max_abs_diff`` between ONNX Runtime and the float32 PyTorch probabilities.

    Raises
    ------
    MedlensError
        The extra packages are missing, or the ONNX outputs differ by more than ``TOLERANCE``.
    """
    _require_onnx()
    import onnxruntime

    if not model.capabilities.onnx:
        raise ModelError(f"ONNX export: model {model.name!r} does not export (its capabilities say so); only "
                         "models of one image network do")
    path = Path(path)
    logits = model.export_graph().float().cpu().to(memory_format=torch.contiguous_format).eval()
    graph = ProbabilityGraph(logits, temperature).eval()
    x = torch.from_numpy(np.ascontiguousarray(images[: max(2, min(len(images), 8))], dtype=np.float32))
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(graph, (x,), dynamo=True, input_names=["image"], output_names=["probabilities"],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = np.ascontiguousarray(images, dtype=np.float32)
    got = session.run(None, {"image": check})[0]
    with torch.no_grad():
        expected = graph(torch.from_numpy(check)).numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        raise MedlensError(f"{path}: ONNX Runtime probabilities differ from PyTorch's by {difference:.2e} "
                           f"(tolerance {TOLERANCE:g}); the export is not faithful")
    return {"file": path.name, "opset": int(program.model.opset_imports.get("", 0)) or None,
            "input": "image", "output": "probabilities", "checked_on": int(len(check)),
            "max_abs_diff": difference}
