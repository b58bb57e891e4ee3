"""Commands that arrived before their request, held until the intake accepts the request.

A portal publishes a HelpRequest to ``requests.submitted`` and, say, a cancel to
``requests.commands`` a moment later. Different agents read the two topics, and in a burst the
intake runs behind while the commands agent does not, so the cancel can be read first. Such a
command is held here (with everything a dead letter would keep) instead of being refused:

- the intake takes the held commands of the requests it accepts, in the same transaction
  (:func:`take`): a held cancel ends the request ``cancelled`` before it is routed, so nobody
  is booked or invited; a held reschedule is applied as if it had arrived then, when the
  request is not booked yet, which leaves nothing to move (as for any reschedule of a request
  that is not booked);
- the commands stage applies a command itself when the request was accepted while it held it;
- the timed work's reconciliation applies a held command whose request is known by then (a
  race the two above can leave), and dead-letters one whose request has not arrived within
  ``TimedWorkPolicy.hold_commands_for``, as an ``UnknownRequest``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from scheduler.db import held_commands, read_connection

__all__ = ["HeldCommand", "HeldCommands", "take"]


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

    def hold(self, command: HeldCommand) -> bool:
        """Keep ``command`` until its request is accepted; False if it is held already (a
        redelivery)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(held_commands).values(
                    command_id=command.command_id, request_id=command.request_id,
                    command=command.command, payload=command.payload,
                    record_key=command.key, headers=json.dumps(command.headers, sort_keys=True),
                    origin_topic=command.origin_topic,
                    origin_partition=command.origin_partition,
                    origin_offset=command.origin_offset, held_at=command.held_at))
        except IntegrityError:
            return False
        return True

    def release(self, command_id: str) -> bool:
        """Stop holding the command; True if this call took it (so it is this caller's to
        apply or dead-letter)."""
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(held_commands).where(
                held_commands.c.command_id == command_id)).rowcount)

    def held_since(self, before: datetime, limit: int = 100) -> list[HeldCommand]:
        """Commands held since before ``before``, oldest first."""
        with read_connection(self._engine) as conn:
            rows = conn.execute(select(held_commands).where(held_commands.c.held_at < before)
                                .order_by(held_commands.c.held_at).limit(limit)).all()
        return [_held(row) for row in rows]


_TAKE = (delete(held_commands)
         .where(held_commands.c.request_id.in_(bindparam("ids", expanding=True)))
         .returning(*held_commands.c))


def take(conn: Connection, request_ids: Collection[str]) -> list[HeldCommand]:
    """The commands held for ``request_ids``, oldest first, no longer held once the caller's
    transaction commits. One statement (a DELETE ... RETURNING: of two transactions that
    take the same command, only one gets it)."""
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
