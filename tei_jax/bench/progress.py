"""Progress shown while a benchmark runs: notes, and a tqdm bar over the measured rounds."""

from __future__ import annotations

import sys


class Progress:
    """`note(message)` prints a line; `step(message)` advances the bar over `total` steps."""

    def __init__(self, total: int, enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, leave=False)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)

    def step(self, message: str) -> None:
        if self._bar is not None:
            self._bar.set_description(message)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Silent(Progress):
    def __init__(self) -> None:
        super().__init__(0, enabled=False)
