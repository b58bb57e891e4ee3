"""Which invite messages went out: one row per (UID, SEQUENCE, METHOD), whatever is redelivered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from scheduler.db import invite_deliveries

#: The arguments of :meth:`InviteLog.record` without ``detail``:
#: (uid, request_id, sequence, method, backend, status, now).
InviteLogRow = tuple[str, str, int, str, str, str, datetime]

# What :meth:`InviteLog.record_many` runs for every batch, built once (see request_store).
_c = invite_deliveries.c
_HELD = select(_c.uid, _c.sequence, _c.method).where(_c.uid.in_(bindparam("uids", expanding=True)))
_INSERT = insert(invite_deliveries)
_COUNT_AGAIN = (
    update(invite_deliveries)
    .where(_c.uid == bindparam("k_uid"), _c.sequence == bindparam("k_sequence"),
           _c.method == bindparam("k_method"))
    .values(status=bindparam("v_status"), detail=None, at=bindparam("v_at"),
            attempts=_c.attempts + 1))


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

    def record_many(self, conn: Connection, rows: Sequence[InviteLogRow]) -> None:
        """:meth:`record` for each row, in the caller's transaction: new messages inserted in
        one statement, repeats counted in another."""
        if not rows:
            return
        held = {(r.uid, r.sequence, r.method)
                for r in conn.execute(_HELD, {"uids": list({row[0] for row in rows})})}
        fresh: list[dict[str, object]] = []
        again: list[dict[str, object]] = []
        for uid, request_id, sequence, method, backend, status, now in rows:
            if (uid, sequence, method) in held:
                again.append({"k_uid": uid, "k_sequence": sequence, "k_method": method,
                              "v_status": status, "v_at": now})
                continue
            held.add((uid, sequence, method))
            fresh.append({"uid": uid, "request_id": request_id, "sequence": sequence,
                          "method": method, "backend": backend, "status": status,
                          "detail": None, "attempts": 1, "at": now})
        if fresh:
            conn.execute(_INSERT, fresh)
        if again:
            conn.execute(_COUNT_AGAIN, again)

    def delivered(self, request_id: str) -> list[tuple[str, int, str, str]]:
        """(uid, sequence, method, status) of the request's messages, in sending order."""
        query = (select(invite_deliveries.c.uid, invite_deliveries.c.sequence,
                        invite_deliveries.c.method, invite_deliveries.c.status)
                 .where(invite_deliveries.c.request_id == request_id)
                 .order_by(invite_deliveries.c.id))
        with self._engine.connect() as conn:
            return [(r.uid, r.sequence, r.method, r.status) for r in conn.execute(query)]
