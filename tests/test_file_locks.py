"""tests/file_locks.py: a lock file removed by its holder never lets two holders in at once."""

from __future__ import annotations

import os
import threading
import time

import file_locks


def test_a_waiter_on_a_removed_file_does_not_join_the_holder_of_the_new_one(tmp_path):
    path = tmp_path / "x.lock"
    first = file_locks.acquire(path)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (file_locks.release(file_locks.acquire(path), path), got.set()))
    waiter.start()  # blocks on the first file
    time.sleep(0.2)
    # The first holder removes the file; a newcomer makes a new one and locks it; then the first
    # lets go. The waiter now locks the old, nameless file: it must see that and wait again.
    os.unlink(path)
    newcomer = file_locks.acquire(path, blocking=False)
    assert newcomer is not None
    os.close(first)
    assert not got.wait(0.5), "two holders at once"
    file_locks.release(newcomer, path)
    assert got.wait(10)
    waiter.join(10)
    assert not path.exists()  # the waiter removed it when done


def test_held_files_stay_and_unheld_ones_are_removed(tmp_path):
    held, stale = tmp_path / "held.lock", tmp_path / "stale.lock"
    fd = file_locks.acquire(held)
    stale.touch()
    try:
        assert file_locks.acquire(held, blocking=False) is None
        assert file_locks.remove_unheld(tmp_path) == 1
        assert held.exists() and not stale.exists()
    finally:
        file_locks.release(fd, held)
    assert not held.exists()
