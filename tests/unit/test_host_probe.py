"""The host probe that ``fasttrack bench`` prints before a run (services/host_probe.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services import host_probe
from services.host_probe import HostSpeed, probe_host


def test_the_probe_measures_both_costs_and_leaves_its_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    speed = probe_host(tmp_path / "probe", files=12)
    assert speed.python_ms > 0
    assert speed.file_cpu_us > 0 and speed.file_wall_us > 0
    assert len(fsynced) == 12  # each file's contents reach the disk, as the outbox's do
    written = sorted(p.name for p in (tmp_path / "probe").iterdir())
    assert written == [f"{n:04d}.probe" for n in range(12)]  # no temporary left
    assert all(p.stat().st_size == host_probe.FILE_BYTES for p in (tmp_path / "probe").iterdir())


def test_the_python_loop_reports_its_fastest_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([0.0, 0.050, 1.0, 1.020, 2.0, 2.035, 3.0, 3.040, 4.0, 4.060])
    monkeypatch.setattr(host_probe.time, "process_time", lambda: next(readings))
    monkeypatch.setattr(host_probe, "PYTHON_ROUND_TRIPS", 1)
    assert host_probe._python_ms() == pytest.approx(20.0)


def test_the_description_names_both_costs() -> None:
    text = HostSpeed(python_ms=30.62, file_cpu_us=187.4, file_wall_us=512.6).describe()
    assert text == ("a fixed Python loop 30.6 ms of CPU; a durable file (create, write, fsync, "
                    "rename) 187 µs of CPU, 513 µs in all")
