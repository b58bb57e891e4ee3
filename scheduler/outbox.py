"""The file outbox, the default invite delivery (DESIGN §11): ``<uid>.ics`` and ``<uid>.eml``.

Each file is written atomically (temporary file in the same directory, fsync, ``os.replace``,
fsync of the directory). The ``.eml`` is replaced first and the ``.ics`` last, so the ``.ics``
is the record of what was delivered: its SEQUENCE and METHOD decide whether a later delivery
replaces it. The same (UID, SEQUENCE, METHOD) again changes nothing; a lower SEQUENCE never
replaces a higher one; at equal SEQUENCE a CANCEL replaces a REQUEST, never the reverse.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

from icalendar import Calendar

from scheduler.delivery import DeliveryReceipt, Invite

_SAFE_UID = re.compile(r"[A-Za-z0-9@._+:=-]{1,200}")
_METHOD_RANK = {"REQUEST": 0, "CANCEL": 1}


class UnsafeUid(ValueError):
    """A UID that cannot name a file in the outbox."""

    def __init__(self, uid: str) -> None:
        super().__init__(f"uid {uid!r} cannot name an outbox file: use 1-200 of "
                         f"[A-Za-z0-9@._+:=-], not starting with '.'")


class OutboxDelivery:
    """Delivers invites as files under ``directory`` (created on first delivery)."""

    name = "outbox"

    def send(self, invite: Invite) -> DeliveryReceipt:
        """The delivery port: write the invite's ``.eml`` and ``.ics`` (see :meth:`deliver`)."""
        path = self.deliver(invite.ics, invite.email, invite.meeting.uid, invite.sequence,
                            invite.method)
        return DeliveryReceipt(location=str(path))

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def deliver(self, ics: bytes, message: EmailMessage, uid: str, sequence: int,
                method: str) -> Path:
        """Write ``<uid>.eml`` then ``<uid>.ics`` unless the outbox already holds this message
        or a later one; return the path of ``<uid>.ics`` either way."""
        if not _SAFE_UID.fullmatch(uid) or uid.startswith("."):
            raise UnsafeUid(uid)
        if method not in _METHOD_RANK:
            raise ValueError(f"method {method!r} is not REQUEST or CANCEL")
        self.directory.mkdir(parents=True, exist_ok=True)
        ics_path = self.directory / f"{uid}.ics"
        with self._locked():
            held = delivered_version(ics_path)
            if held is None or (sequence, _METHOD_RANK[method]) > held:
                _write_atomically(self.directory / f"{uid}.eml", message.as_bytes())
                _write_atomically(ics_path, ics)
        return ics_path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One delivery at a time per outbox, across processes (the check, then the writes)."""
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def delivered_version(ics_path: Path) -> tuple[int, int] | None:
    """(SEQUENCE, METHOD rank) of the invite at ``ics_path``; None when there is none yet."""
    try:
        calendar = Calendar.from_ical(ics_path.read_bytes())
    except FileNotFoundError:
        return None
    (event,) = calendar.events
    return event.sequence, _METHOD_RANK[str(calendar["METHOD"])]


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
