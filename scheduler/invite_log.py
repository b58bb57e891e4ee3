"""Which invite messages went out: one row per (UID, SEQUENCE, METHOD), whatever is redelivered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from scheduler.db import invite_deliveries


class InviteLog:
    """The delivery record in SQL; the unique (uid, sequence, method) makes a resend a no-op."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, uid: str, request_id: str, sequence: int, method: str, backend: str,
               status: str, now: datetime, detail: str | None = None) -> None:
        """Record a delivery attempt's outcome; a repeat counts as another attempt."""
        key = (invite_deliveries.c.uid == uid, invite_deliveries.c.sequence == sequence,
               invite_deliveries.c.method == method)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(invite_deliveries).values(
                    uid=uid, request_id=request_id, sequence=sequence, method=method,
                    backend=backend, status=status, detail=detail, attempts=1, at=now))
        except IntegrityError:
            with self._engine.begin() as conn:
                conn.execute(update(invite_deliveries).where(*key).values(
                    status=status, detail=detail, at=now,
                    attempts=invite_deliveries.c.attempts + 1))

    def delivered(self, request_id: str) -> list[tuple[str, int, str, str]]:
        """(uid, sequence, method, status) of the request's messages, in sending order."""
        query = (select(invite_deliveries.c.uid, invite_deliveries.c.sequence,
                        invite_deliveries.c.method, invite_deliveries.c.status)
                 .where(invite_deliveries.c.request_id == request_id)
                 .order_by(invite_deliveries.c.id))
        with self._engine.connect() as conn:
            return [(r.uid, r.sequence, r.method, r.status) for r in conn.execute(query)]
