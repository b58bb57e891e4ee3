"""Commands that came before their request could take them, held until it can.

A portal publishes a HelpRequest to ``requests.submitted`` and, say, a cancel to
``requests.commands`` a moment later. Different agents read the two topics, and in a burst the
intake runs behind while the commands agent does not, so the cancel can be read first. A
reschedule can likewise be read while its request is still being routed, with no meeting to
move yet. Such a command is held here (with everything a dead letter would keep) instead of
being refused:

- a cancel waits until the request is accepted: the intake takes the held cancels of the
  requests it accepts, in the same transaction (:func:`take_cancels`), and ends those requests
  ``cancelled`` before they are routed, so nobody is booked or invited;
- a reschedule waits until the request is booked (or has ended), and is then applied by the
  timed work's reconciliation, which also applies any command a race left held;
- a command whose request is still not there, or not booked, after
  ``TimedWorkPolicy.hold_commands_for`` is dead-lettered (:meth:`HeldCommands.expire`).

Holding and accepting exclude each other per request: both take the request's lock
(:func:`scheduler.db.lock_requests` on PostgreSQL; SQLite has one writer), and the hold reads
the request's status under it. So a command is either held before the intake's transaction
reads the held commands, or sees the request that transaction accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, bindparam, delete, insert, or_, select

from scheduler.db import held_commands, lock_requests, read_connection, requests
from scheduler.request_store import RequestState

__all__ = ["CommandIdReused", "HeldCommand", "HeldCommands", "Hold", "ready_for",
           "take_cancels"]

#: The statuses in which a reschedule has no meeting to move yet, but will.
_BEFORE_BOOKING = (RequestState.ACCEPTED.value, RequestState.ROUTED.value)


def ready_for(command: str, status: RequestState | None) -> bool:
    """Whether a command can be applied to a request in ``status`` (None: not accepted):
    a cancel once the request is accepted, a reschedule once it is booked or has ended."""
    if status is None:
        return False
    return command != "reschedule" or status.value not in _BEFORE_BOOKING


class Hold(StrEnum):
    HELD = "held"
    ALREADY_HELD = "already_held"  # a redelivery
    READY = "ready"  # not held: the request can take it now


class CommandIdReused(ValueError):
    """A command_id already held for another request or another kind of command."""


@dataclass(frozen=True)
class HeldCommand:
    command_id: str
    request_id: str
    command: str  # "cancel" or "reschedule"
    payload: bytes  # the record's value, as it came
    key: bytes | None
    headers: dict[str, str]
    origin_topic: str
    origin_partition: int
    origin_offset: int
    held_at: datetime


class HeldCommands:
    """The held commands in SQL; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def hold(self, command: HeldCommand) -> Hold:
        """Hold ``command`` unless its request can take it now (:data:`Hold.READY`: the
        caller applies it), under the request's lock."""
        with self._engine.begin() as conn:
            lock_requests(conn, [command.request_id])
            status = conn.execute(select(requests.c.status).where(
                requests.c.request_id == command.request_id)).scalar_one_or_none()
            if ready_for(command.command, None if status is None else RequestState(status)):
                return Hold.READY
            earlier = conn.execute(select(held_commands.c.request_id, held_commands.c.command)
                                   .where(held_commands.c.command_id == command.command_id)
                                   ).first()
            if earlier is not None:
                if tuple(earlier) != (command.request_id, command.command):
                    raise CommandIdReused(
                        f"command_id {command.command_id!r} is already held for the "
                        f"{earlier.command} of request {earlier.request_id!r}")
                return Hold.ALREADY_HELD
            conn.execute(insert(held_commands).values(
                command_id=command.command_id, request_id=command.request_id,
                command=command.command, payload=command.payload, record_key=command.key,
                headers=json.dumps(command.headers, sort_keys=True),
                origin_topic=command.origin_topic, origin_partition=command.origin_partition,
                origin_offset=command.origin_offset, held_at=command.held_at))
        return Hold.HELD

    def release(self, command_id: str) -> bool:
        """Stop holding the command; True if this call took it."""
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(held_commands).where(
                held_commands.c.command_id == command_id)).rowcount)

    def ready(self, before: datetime, limit: int = 100) -> list[HeldCommand]:
        """Commands held since before ``before`` whose request can take them now (a race
        left them held, or a reschedule waited for its booking), oldest first."""
        ready = or_(held_commands.c.command != "reschedule",
                    requests.c.status.not_in(_BEFORE_BOOKING))
        return self._select(held_commands.join(
            requests, requests.c.request_id == held_commands.c.request_id), and_(
            held_commands.c.held_at < before, ready), limit)

    def waiting(self, before: datetime, limit: int = 100) -> list[HeldCommand]:
        """Commands held since ``before`` or earlier whose request still cannot take them
        (not accepted, or a reschedule's request not booked), oldest first."""
        waits = or_(requests.c.request_id.is_(None),
                    and_(held_commands.c.command == "reschedule",
                         requests.c.status.in_(_BEFORE_BOOKING)))
        return self._select(held_commands.outerjoin(
            requests, requests.c.request_id == held_commands.c.request_id), and_(
            held_commands.c.held_at <= before, waits), limit)

    def expire(self, command_id: str, record: Callable[[Connection], object]) -> bool:
        """Stop holding the command and ``record`` its dead letter, in one transaction;
        False (nothing recorded) if it was taken meanwhile."""
        with self._engine.begin() as conn:
            if not conn.execute(delete(held_commands).where(
                    held_commands.c.command_id == command_id)).rowcount:
                return False
            record(conn)
        return True

    def _select(self, source: Any, where: Any, limit: int) -> list[HeldCommand]:
        query = (select(*held_commands.c).select_from(source).where(where)
                 .order_by(held_commands.c.held_at, held_commands.c.command_id).limit(limit))
        with read_connection(self._engine) as conn:
            return [_held(row) for row in conn.execute(query)]


_TAKE = (delete(held_commands)
         .where(held_commands.c.request_id.in_(bindparam("ids", expanding=True)),
                held_commands.c.command == "cancel")
         .returning(*held_commands.c))


def take_cancels(conn: Connection, request_ids: Collection[str]) -> list[HeldCommand]:
    """The cancels held for ``request_ids``, oldest first, no longer held once the caller's
    transaction commits; the caller holds the requests' locks (:func:`lock_requests`). One
    statement (a DELETE ... RETURNING: of two transactions that take the same command, only
    one gets it)."""
    if not request_ids:
        return []
    taken = [_held(row) for row in conn.execute(_TAKE, {"ids": list(request_ids)})]
    return sorted(taken, key=lambda c: (c.held_at, c.command_id))


def _held(row: Row[Any]) -> HeldCommand:
    return HeldCommand(
        command_id=row.command_id, request_id=row.request_id, command=row.command,
        payload=bytes(row.payload),
        key=bytes(row.record_key) if row.record_key is not None else None,
        headers=json.loads(row.headers), origin_topic=row.origin_topic,
        origin_partition=row.origin_partition, origin_offset=row.origin_offset,
        held_at=row.held_at)
