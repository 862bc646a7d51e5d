"""tests/ports.py: the ports test servers get are not the kernel's ephemeral ones, not another
process's, and not one something already listens on."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ports


def test_ports_are_outside_the_ephemeral_range_and_distinct():
    low, high = ports._ephemeral_range()
    got = [ports.reserve_port() for _ in range(5)]
    assert len(set(got)) == 5
    assert all(ports.FIRST <= p < ports.LAST and not low <= p <= high for p in got)


def test_a_port_held_by_another_process_or_listened_on_is_skipped(monkeypatch, tmp_path):
    first = next(f for f in range(ports.FIRST + 7000, ports.LAST - 3, 3)  # three ports nothing listens on
                 if all(ports._binds(p) for p in range(f, f + 3)))
    monkeypatch.setattr(ports, "FIRST", first)
    monkeypatch.setattr(ports, "LAST", first + 3)
    monkeypatch.setattr(ports, "LOCKS", tmp_path)
    monkeypatch.setattr(ports, "_HELD", {})
    # Another process reserves first+1 and keeps it while we ask.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, ports\nports.FIRST, ports.LAST = int(sys.argv[1]), int(sys.argv[1]) + 1\n"
         "ports.LOCKS = __import__('pathlib').Path(sys.argv[2])\nprint(ports.reserve_port(), flush=True)\n"
         "sys.stdin.read()", str(first + 1), str(tmp_path)],
        cwd=Path(__file__).parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == first + 1
        with socket.socket() as listener:  # something else listens on first+2
            listener.bind(("127.0.0.1", first + 2))
            listener.listen()
            assert ports.reserve_port() == first
            with pytest.raises(RuntimeError, match="no free port"):
                ports.reserve_port()
    finally:
        holder.communicate("", timeout=30)


def test_a_machine_whose_ephemeral_range_covers_ours_still_gets_ports(monkeypatch):
    monkeypatch.setattr(ports, "_ephemeral_range", lambda: (1024, 65535))
    port = ports.reserve_port()
    assert ports.FIRST <= port < ports.LAST


def test_lock_files_go_with_their_holder_and_stale_ones_are_swept(tmp_path):
    stale = tmp_path / f"{ports.FIRST}.lock"
    stale.touch()  # left by a process that died
    script = ("import sys, pathlib, ports\nports.LOCKS = pathlib.Path(sys.argv[1])\n"
              "port = ports.reserve_port()\nprint(port, (ports.LOCKS / f'{port}.lock').exists(), flush=True)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=60)
    port, existed = done.stdout.split()
    assert existed == "True"  # held while the process ran
    assert not stale.exists() and list(tmp_path.iterdir()) == []  # swept, and its own removed at exit
