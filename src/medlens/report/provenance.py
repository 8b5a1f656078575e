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
