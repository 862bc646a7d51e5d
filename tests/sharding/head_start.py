"""Slow subprocesses started as soon as the run knows it will need them.

The default suite runs in one pytest process that keeps about one of the box's two cores
busy. The multi-device checks and the data-parallel servers load and compile for a minute in
their own processes: started when collection finishes (tests/sharding/conftest.py), they do
that on the other core while the tests before them run, and their tests only collect the
result. Run alone (`pytest tests/sharding/test_parity.py`), the same start happens just before.
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")
_STARTED: dict[str, object] = {}


def begin(name: str, start: Callable[[], T]) -> None:
    """Start `name` now (once), for a later `take`."""
    if name not in _STARTED:
        _STARTED[name] = start()


def take(name: str, start: Callable[[], T]) -> T:
    """What `begin` started for `name`, or a fresh start when nothing was begun."""
    return _STARTED.pop(name) if name in _STARTED else start()


def stop_all() -> None:
    """Stop whatever was begun and never taken (a run cut short, a deselected test)."""
    while _STARTED:
        _, started = _STARTED.popitem()
        started.stop()
