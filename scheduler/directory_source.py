"""Where the running service gets its center directory: a file it re-reads when it changes.

The file is stat-ed at most every ``check_seconds``; when its size, mtime or inode changed it is
loaded and validated as a whole, then handed to each check added with
:meth:`DirectorySource.add_check` (the delivery backends are built there). A file that does not
validate, or that a check refuses, is logged and the last good directory is served on, so a
bad edit never stops a worker; fixing the file takes effect at the next check. Each loaded
directory is a new frozen object, so caches keyed on its centers are fresh.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from scheduler.directory import CenterDirectory, load_directory

#: Anything that returns the directory to use now (a :class:`DirectorySource`, a lambda).
DirectoryFeed = Callable[[], CenterDirectory]
Fingerprint = tuple[int, int, int]

log = structlog.get_logger("fasttrack.directory")


class DirectorySource:
    """The current directory; constant, or re-read from ``path`` when the file changes."""

    def __init__(self, directory: CenterDirectory, path: Path | None = None, *,
                 check_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.last_error: str | None = None
        self._directory = directory
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen = _fingerprint(path) if path is not None else None
        self._checked_at = monotonic()
        self._checks: list[Callable[[CenterDirectory], None]] = []

    @classmethod
    def constant(cls, directory: CenterDirectory) -> DirectorySource:
        """A source that always returns ``directory`` (the packaged default, tests)."""
        return cls(directory)

    @classmethod
    def watching(cls, path: str | Path, *, check_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> DirectorySource:
        """Load ``path`` now (raising :class:`DirectoryInvalid` if it is unusable at start)
        and re-read it whenever it changes."""
        path = Path(path)
        return cls(load_directory(path), path, check_seconds=check_seconds, monotonic=monotonic)

    def add_check(self, check: Callable[[CenterDirectory], None]) -> None:
        """Have ``check`` see the directory served now (its ``ValueError`` propagates: the
        caller cannot start with it) and then each reloaded one before it is served (its
        ``ValueError`` keeps the last good directory, as an invalid file does)."""
        with self._lock:
            check(self._directory)
            self._checks.append(check)

    def __call__(self) -> CenterDirectory:
        if self.path is None or self._monotonic() - self._checked_at < self.check_seconds:
            return self._directory
        with self._lock:
            now = self._monotonic()
            if now - self._checked_at >= self.check_seconds:
                self._checked_at = now
                self._refresh(self.path)
            return self._directory

    def _refresh(self, path: Path) -> None:
        seen = _fingerprint(path)
        if seen == self._seen:
            return
        self._seen = seen
        if seen is None:  # often only for a moment, while the file is being replaced
            log.warning("directory_unreadable", path=str(path),
                        action="serving the last good directory")
            return
        try:
            directory = load_directory(path)
            for check in self._checks:
                check(directory)
        except ValueError as exc:  # DirectoryInvalid, or a check's refusal
            self.last_error = str(exc)
            log.error("directory_invalid", path=str(path), error=str(exc),
                      action="serving the last good directory")
            return
        self._directory, self.last_error = directory, None
        log.info("directory_reloaded", path=str(path), centers=len(directory.centers))


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
