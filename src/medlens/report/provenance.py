"""Where a result came from: the package versions and the machine it was computed on."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

#: Packages whose version is recorded with every result and bundle.
VERSIONED_PACKAGES = ("medlens", "torch", "monai", "numpy", "scipy", "scikit-learn", "scikit-image",
                      "pydicom", "nibabel")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def platform_description() -> str:
    """Operating system, CPU count and the instruction set of torch's CPU kernels (e.g. ``AVX512``).

    The kernel level is part of a result's provenance: AVX2 and AVX-512 kernels round differently, so a
    model trained with torch from the same seed and data can differ between CPUs.
    """
    import torch

    return f"{platform.platform()}; {os.cpu_count()} CPUs; torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"


def shown_path(path, keep: bool = False) -> str | None:
    """How an output names a file or folder of the user's: relative to the data root (``MEDLENS_DATA``, then the
    cache) or to the working folder when it lies inside one, else by its own name only; the absolute path
    only with ``keep`` (``--keep-identifiers``). A folder's absolute path can name a person or a project, so
    results, reports, model cards and bundle manifests do not carry it unasked."""
    if path is None:
        return None
    from pathlib import Path

    path = Path(path)
    if keep:
        return str(path)
    path = path.absolute()
    roots = [os.environ.get("MEDLENS_DATA"), os.environ.get("MEDLENS_CACHE"), Path.home() / ".cache" / "medlens",
             Path.cwd()]
    for root in roots:
        if root:
            try:
                return str(path.resolve().relative_to(Path(root).resolve()))
            except ValueError:
                continue
    return path.name


def shown_config(config, keep: bool = False) -> dict:
    """A study config as outputs record it: its data path shown by :func:`shown_path`."""
    dumped = config.model_dump(mode="json")
    dumped["data"]["path"] = shown_path(dumped["data"].get("path"), keep)
    return dumped
