"""The file outbox, the default invite delivery (DESIGN §11): ``<uid>.ics`` and ``<uid>.eml``.

The CANCEL to a specialist whose meeting was handed over to another (``Invite.only_specialist``)
is not the meeting's state, so it does not replace ``<uid>.ics``: it goes to
``handovers/<uid>-s<SEQUENCE>.ics`` and ``.eml``, written the same way.

Each file is written atomically: a temporary file in the same directory, fsync, ``os.replace``.
The ``.eml`` is replaced first and the ``.ics`` last, so the ``.ics`` is the record of what was
delivered: its SEQUENCE and METHOD decide whether a later delivery replaces it. The same (UID,
SEQUENCE, METHOD) again changes nothing; a lower SEQUENCE never replaces a higher one; at equal
SEQUENCE a CANCEL replaces a REQUEST, never the reverse.

Each file's contents are fsynced before its rename, so neither is ever torn (a batch's files are
all written and fsynced before the first of their renames, which the file system commits more
cheaply than one file at a time). The directory is
fsynced once, after both renames (after all of a batch's, :meth:`OutboxDelivery.send_many`) and
before the outbox lock is released: a delivery is durable when it returns, and no other delivery
can find it "already held" while it is still in flight. A crash before that fsync can lose the
renames; that it cannot keep the ``.ics`` rename and lose the earlier ``.eml`` one relies on the
file system committing one directory's renames in order, as journaling file systems (ext4, XFS)
do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

from icalendar import Calendar

from scheduler.delivery import DeliveryReceipt, Invite
from scheduler.delivery_settings import BackendSettings

_SAFE_UID = re.compile(r"[A-Za-z0-9@._+:=-]{1,200}")
#: How many invites' files :meth:`OutboxDelivery.send_many` writes before their renames: the
#: files stay open until they are fsynced, and file descriptors are a limited resource.
STAGED_INVITES = 64
_METHOD_RANK = {"REQUEST": 0, "CANCEL": 1}


class UnsafeUid(ValueError):
    """A UID that cannot name a file in the outbox."""

    def __init__(self, uid: str) -> None:
        super().__init__(f"uid {uid!r} cannot name an outbox file: use 1-200 of "
                         f"[A-Za-z0-9@._+:=-], not starting with '.'")


class OutboxSettings(BackendSettings):
    """A center's ``delivery`` entry for ``backend: outbox``: no keys of its own, since every
    center's invites go to the one folder (``FASTTRACK_OUTBOX_DIR``)."""


class OutboxDelivery:
    """Delivers invites as files under ``directory`` (created on first delivery)."""

    name = "outbox"
    tells_removed_attendees = False

    def send(self, invite: Invite) -> DeliveryReceipt:
        """The delivery port: write the invite's ``.eml`` and ``.ics`` (see :meth:`deliver`);
        a handover's under ``handovers/``."""
        if invite.only_specialist:
            return DeliveryReceipt(location=str(self._hand_over(invite)))
        path = self.deliver(invite.ics, invite.email, invite.meeting.uid, invite.sequence,
                            invite.method)
        return DeliveryReceipt(location=str(path))

    def send_many(self, invites: Sequence[Invite]) -> list[DeliveryReceipt | Exception]:
        """:meth:`send` for each invite, in order, under one lock and with one directory fsync.

        Returns one result per invite, in order: its receipt, or the exception that kept it
        from being delivered (:class:`UnsafeUid`, ``ValueError`` for an unknown method,
        ``OSError`` from the disk...). A failed invite does not stop the others. On disk the
        batch is the same as sending the invites one by one in this order: each is checked
        against what the outbox holds by then, earlier invites of the batch included. When the
        outbox itself fails (its directory, its lock, the final directory fsync), every invite
        the batch could have written gets that error; the refused ones keep theirs. Never
        raises for one invite or for the outbox (only ``BaseException``s that are not
        ``Exception``s propagate).
        """
        results: list[DeliveryReceipt | Exception] = []
        valid: list[int] = []
        for index, invite in enumerate(invites):
            if invite.only_specialist:  # not the meeting's state: its own files, at once
                try:
                    results.append(self.send(invite))
                except Exception as exc:
                    results.append(exc)
                continue
            try:
                _check(invite.meeting.uid, invite.method)
            except Exception as exc:  # UnsafeUid, an unknown method
                results.append(exc)
            else:
                results.append(DeliveryReceipt(location=str(self._ics_path(invite.meeting.uid))))
                valid.append(index)
        if not valid:
            return results
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._locked():
                if self._write_later_ones([(index, invites[index]) for index in valid],
                                          results):
                    fsync_directory(self.directory)
        except Exception as exc:  # the outbox itself (directory, lock, fsync): every invite
            for index in valid:
                if not isinstance(results[index], Exception):
                    results[index] = exc
        return results

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def deliver(self, ics: bytes, message: Message, uid: str, sequence: int,
                method: str) -> Path:
        """Write ``<uid>.eml`` then ``<uid>.ics`` unless the outbox already holds this message
        or a later one; return the path of ``<uid>.ics`` either way."""
        _check(uid, method)
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self._write_if_later(ics, message, uid, sequence, method):
                fsync_directory(self.directory)
        return self._ics_path(uid)

    def _hand_over(self, invite: Invite) -> Path:
        """Write a handover CANCEL's ``.eml`` then ``.ics``; the same message again writes
        the same bytes."""
        _check(invite.meeting.uid, invite.method)
        folder = self.directory / "handovers"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{invite.meeting.uid}-s{invite.sequence}"
        _replace_in_order([(folder / f"{stem}.eml", invite.email.as_bytes()),
                           (folder / f"{stem}.ics", invite.ics)])
        fsync_directory(folder)
        return folder / f"{stem}.ics"

    def _write_later_ones(self, invites: Sequence[tuple[int, Invite]],
                          results: list[DeliveryReceipt | Exception]) -> bool:
        """Under the lock: :meth:`_write_if_later` for each invite, in order, their files
        written :data:`STAGED_INVITES` at a time by :func:`replace_files`; a failure goes to
        ``results`` at the invite's index. True when any was written.

        An invite is checked against the outbox as the invites before it left it: a UID met
        twice is checked only once the writes of the first are done."""
        wrote = False
        staged: list[tuple[int, list[tuple[Path, bytes]]]] = []
        uids: set[str] = set()

        def flush() -> None:
            nonlocal wrote
            for (index, _), error in zip(staged, replace_files([f for _, f in staged]),
                                         strict=True):
                if error is None:
                    wrote = True
                else:
                    results[index] = error
            staged.clear()
            uids.clear()

        for index, invite in invites:
            uid = invite.meeting.uid
            if uid in uids or len(staged) == STAGED_INVITES:
                flush()
            try:
                if not self._later(uid, invite.sequence, invite.method):
                    continue
                files = [(self.directory / f"{uid}.eml", invite.email.as_bytes()),
                         (self._ics_path(uid), invite.ics)]
            except Exception as exc:  # reported for this invite alone
                results[index] = exc
                continue
            staged.append((index, files))
            uids.add(uid)
        flush()
        return wrote

    def _later(self, uid: str, sequence: int, method: str) -> bool:
        """Whether (``sequence``, ``method``) is later than the message the outbox holds."""
        held = delivered_version(self._ics_path(uid))
        return held is None or (sequence, _METHOD_RANK[method]) > held

    def _ics_path(self, uid: str) -> Path:
        return self.directory / f"{uid}.ics"

    def _write_if_later(self, ics: bytes, message: Message, uid: str, sequence: int,
                        method: str) -> bool:
        """Under the lock: replace ``<uid>.eml`` then ``<uid>.ics`` if this message is later
        than the one held; True when it was. The caller fsyncs the directory."""
        if not self._later(uid, sequence, method):
            return False
        _replace_in_order([(self.directory / f"{uid}.eml", message.as_bytes()),
                           (self._ics_path(uid), ics)])
        return True

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


def _check(uid: str, method: str) -> None:
    if not _SAFE_UID.fullmatch(uid) or uid.startswith("."):
        raise UnsafeUid(uid)
    if method not in _METHOD_RANK:
        raise ValueError(f"method {method!r} is not REQUEST or CANCEL")


def replace_file(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` atomically, contents on disk before the rename; the rename is
    durable once the directory is fsynced (:func:`fsync_directory`)."""
    _replace_in_order([(path, data)])


def _replace_in_order(files: Sequence[tuple[Path, bytes]]) -> None:
    """:func:`replace_files` for one group: raise what stopped it."""
    (error,) = replace_files([files])
    if error is not None:
        raise error


def replace_files(groups: Sequence[Sequence[tuple[Path, bytes]]]) -> list[Exception | None]:
    """:func:`replace_file` for every ``(path, data)`` of every group, in order, with every
    file's contents written and fsynced before the first rename: the file system then commits
    the files' data together instead of once per file (a quarter less CPU and wall time per
    file here, docs/performance.md round 15).

    A group is one invite's files: they are renamed in their order, and a group stops at its
    first failure (its later files keep what they held). Returns, per group, None or the
    error that stopped it. No temporary file is left behind, whatever fails.
    """
    errors: list[Exception | None] = [None] * len(groups)
    staged: list[list[tuple[int, str, Path]]] = [[] for _ in groups]  # open, not yet renamed
    try:
        for index, group in enumerate(groups):
            try:
                for path, data in group:
                    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                     suffix=".tmp")
                    staged[index].append((fd, temporary, path))
                    _write_all(fd, data)
            except Exception as exc:
                errors[index] = exc
        for index, files in enumerate(staged):
            try:
                for fd, _, _ in files if errors[index] is None else ():
                    os.fsync(fd)
            except Exception as exc:
                errors[index] = exc
        for index, files in enumerate(staged):
            while files:
                fd, temporary, path = files.pop(0)
                os.close(fd)
                try:
                    if errors[index] is None:
                        os.replace(temporary, path)
                        continue
                except Exception as exc:
                    errors[index] = exc
                Path(temporary).unlink(missing_ok=True)
    finally:  # an interruption (BaseException) leaves no open file and no temporary
        for files in staged:
            for fd, temporary, _ in files:
                with contextlib.suppress(OSError):
                    os.close(fd)
                Path(temporary).unlink(missing_ok=True)
    return errors


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_directory(directory: Path) -> None:
    """Make the renames into ``directory`` durable (those :func:`replace_file` did)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
