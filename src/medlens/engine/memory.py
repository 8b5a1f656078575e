"""glibc ``malloc`` settings that keep CPU training from paging its own memory in and out.

A CPU training step allocates and frees the same large activation and gradient buffers again and again.
With glibc's defaults, blocks above an adaptive threshold (at most 32 MiB) are served by fresh ``mmap``
calls and unmapped when freed, and free memory at the top of the heap above 128 KiB is given back to the
kernel, so every step faults the same pages in again, zero-filled by the kernel. In a 4-epoch fit of the
default study's 3D CNN that was 7.8 million page faults and 13 s of system time; with the settings below
it is 0.44 million and 2 s, an epoch takes 2.5 s instead of 4.1 s, and the trained weights are identical
(``benchmarks/speed/bench_malloc.py``, recorded in ``benchmarks/results/models.md``).

The price: every block comes from the heap, and memory a process has freed stays with it until it exits
(ready for its next allocation) instead of returning to the system. The peak resident size of that fit
went from 1.6 to 1.9 GB, and of the whole default study from 2.0 to 2.6 GB.

:class:`~medlens.engine.trainer.Trainer` and :class:`~medlens.synth.gan.GAN` apply them when they start
training (a WGAN-GP on BreastMNIST: 150 steps in 21.6 s instead of 25.9 s, identical weights), and so does the
LIDC-IDRI archive build in processes that only build (:func:`medlens.data.lidc_build.build_patient`).

Only glibc's allocator reads these settings (``mallopt(3)``); elsewhere, when the user has set any
``MALLOC_*`` variable (glibc's own way to choose them, read at start-up), or with
``MEDLENS_KEEP_FREED_MEMORY=0``, nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4

#: Never give free memory at the top of the heap back (2 GiB − 1 byte, the largest value mallopt takes),
#: grow the heap 512 MiB at a time, and serve no block by mmap.
SETTINGS = {M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 512 << 20, M_MMAP_MAX: 0}

#: The same settings as glibc's environment variables, for worker processes about to start (glibc reads them
#: at start-up). A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_`` = 64 KiB (its default
#: ``distributed.nanny.pre-spawn-environ``), which :func:`keep_freed_memory` must take for a user's choice,
#: so the Trainer in a Dask worker would train under glibc's default behaviour; a local cluster that trains or
#: builds starts its workers with these instead (``medlens study --workers``, ``medlens data build --workers``).
#: A worker runs its tasks in threads of its own, which glibc serves from per-thread arenas whose heaps (64 MiB
#: at most) still map and unmap large blocks; one arena (``MALLOC_ARENA_MAX=1``) puts every thread on the main
#: heap these settings govern.
KEEP_FREED_ENVIRON = {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": str(SETTINGS[M_TRIM_THRESHOLD]),
                      "MALLOC_TOP_PAD_": str(SETTINGS[M_TOP_PAD]), "MALLOC_MMAP_MAX_": str(SETTINGS[M_MMAP_MAX])}

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` with ``mallopt`` once per process; True when they are in force.

    Does nothing (and returns False) off Linux, without glibc, with ``MEDLENS_KEEP_FREED_MEMORY=0``, or
    when a ``MALLOC_*`` environment variable shows the user chose the allocator's settings.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    chosen = (os.environ.get("MEDLENS_KEEP_FREED_MEMORY") == "0"
              or any(name.startswith("MALLOC_") for name in os.environ))
    if not sys.platform.startswith("linux") or chosen:
        return _applied
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
    return _applied
