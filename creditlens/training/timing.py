"""Wall time per training phase, exclusive: a phase opened inside another pauses the outer one."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PHASES = ("generation", "scoring", "contrast", "logging")


class PhaseTimer:
    """``with timer("scoring"): ...`` adds the block's seconds to ``totals["scoring"]``.

    Nested phases are exclusive (the inner block's time is not counted in the outer one). On CUDA the
    device is synchronised at every boundary so asynchronous kernels land in the right phase. A timer
    built with ``enabled=False`` (until a run log switches it on) measures nothing and never synchronises.
    """

    def __init__(self, device: torch.device | str = "cpu", enabled: bool = True):
        self.enabled = enabled
        self.cuda = torch.device(device).type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        now = self._now()
        if self._stack:
            outer = self._stack[-1]
            self.totals[outer[0]] += now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = self._now()
            inner, start = self._stack.pop()
            self.totals[inner] += now - start
            if self._stack:
                self._stack[-1][1] = now

    def pop(self) -> dict[str, float]:
        """Totals since the last ``pop`` (every phase of :data:`PHASES` present), then reset."""
        out = {name: float(self.totals.get(name, 0.0)) for name in PHASES}
        self.totals = defaultdict(float)
        return out

    def now(self) -> float:
        """A timestamp on the same clock (synchronised on CUDA)."""
        return self._now()
