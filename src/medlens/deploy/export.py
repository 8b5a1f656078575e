"""ONNX export of a bundled CNN, checked against the bundle's own outputs.

The exported graph takes model-ready images (prepared as ``medlens predict`` prepares them: scaled,
windowed, resized or cut to the bundle's ``image_shape``), applies the model's input standardisation
``(x − mean) / std``, the network and, when the bundle is calibrated, the temperature, and returns
class probabilities ``softmax(z / T)``. The batch axis is dynamic. It is written with
``torch.onnx.export(..., dynamo=True)`` and compared with ONNX Runtime on the images given: the largest
absolute difference from the float32 PyTorch forward is recorded next to the file.

Needs the ``onnx`` extra: ``pip install "medlens[onnx]"`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlens.errors import MedlensError, ModelError

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4


class ProbabilityGraph(nn.Module):
    """``softmax(network(standardise(x)) / T)``: a CNN model's whole prediction as one module
    (``standardise`` is :meth:`medlens.models.cnn.CNNClassifier.standardise`, ``(x − mean) / std``)."""

    def __init__(self, network: nn.Module, standardise: Callable[[torch.Tensor], torch.Tensor],
                 temperature: float | None = None):
        super().__init__()
        self.network = network
        self.standardise = standardise
        self.temperature = float(temperature or 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.standardise(image))
        return torch.softmax(logits / self.temperature, dim=1)


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MedlensError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                           'pip install "medlens[onnx]"') from exc


def export_onnx(model, images: np.ndarray, path: str | Path, temperature: float | None = None) -> dict:
    """Export a fitted ``cnn`` model to ONNX and check it on ``images``.

    Parameters
    ----------
    model
        A fitted :class:`medlens.models.cnn.CNNClassifier`.
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

    if getattr(model, "name", None) != "cnn" or getattr(model, "network_", None) is None:
        raise ModelError("ONNX export: only fitted cnn models export; tabular models (bp, svm) are not torch graphs "
                         "of images")
    path = Path(path)
    network = model.network_.float().cpu().to(memory_format=torch.contiguous_format).eval()
    graph = ProbabilityGraph(network, model.standardise, temperature).eval()
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
