"""Thread control for small models.

A full-batch MLP on a few hundred rows does microseconds of work per operation; spread over several
intra-op threads it spends its time synchronising, and on a busy 2-core machine one fit measured
77 s with 2 threads against 2.2 s with one (BP network, 500 × 36 Gabor features, 2000 iterations).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
