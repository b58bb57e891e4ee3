"""The request ledger: what was accepted, where each request stands and how it got there.

Every request has one row in ``requests`` (its body and current status) and a timeline in
``request_events``. Status only moves forward through the stages accepted < routed < booked <
invited; escalated, cancelled, rejected and deadlettered are final and stay. An event that arrives
late (``routed`` after ``invited``) still joins the timeline, ordered by when it happened, but does
not move the status back. Dead letters are recorded here too, for ops to inspect and redrive.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Update,
    and_,
    bindparam,
    insert,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from scheduler.db import (
    deadletters,
    held_commands,
    meetings,
    read_connection,
    request_events,
    requests,
)
from schemas.events import utc_z
from schemas.help_request import HelpRequest


class RequestState(StrEnum):
    """Where a request stands. The first four are stages in order; the rest are final."""

    ACCEPTED = "accepted"
    ROUTED = "routed"
    BOOKED = "booked"
    INVITED = "invited"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    DEADLETTERED = "deadlettered"

    @property
    def is_final(self) -> bool:
        return self not in _STAGES


_STAGES = (RequestState.ACCEPTED, RequestState.ROUTED, RequestState.BOOKED, RequestState.INVITED)
# In flight: reconciliation looks at these. An invited request can still be cancelled or
# escalated, but nothing is pending for it.
IN_FLIGHT = (RequestState.ACCEPTED, RequestState.ROUTED, RequestState.BOOKED)


class UnknownRequest(LookupError):
    """No request with this id was accepted."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no request {request_id!r} was accepted")


class Acceptance(StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"  # same id, same body: answer as before, store nothing
    CONFLICT = "conflict"  # same id, different body: refuse (HTTP 409)


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    kind: Acceptance
    request_id: str
    status: RequestState  # the stored request's current status


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    status: RequestState
    at: datetime
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class MeetingSummary:
    start: datetime
    end: datetime
    specialist_id: str
    join_url: str | None
    uid: str
    sequence: int


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """A request's status with its meeting and timeline (DESIGN §11, ``GET /v1/requests/{id}``)."""

    request_id: str
    status: RequestState
    center_id: str | None
    meeting: MeetingSummary | None
    timeline: list[TimelineEntry]

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready, timestamps as UTC ``...Z``."""
        meeting = self.meeting
        return {
            "request_id": self.request_id,
            "status": self.status.value,
            "center_id": self.center_id,
            "meeting": None if meeting is None else {
                "start": utc_z(meeting.start), "end": utc_z(meeting.end),
                "specialist_id": meeting.specialist_id, "join_url": meeting.join_url,
                "uid": meeting.uid, "sequence": meeting.sequence,
            },
            "timeline": [
                {"status": e.status.value, "at": utc_z(e.at), "detail": e.detail}
                for e in self.timeline
            ],
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    request_id: str | None
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    error_class: str
    message: str
    payload: bytes
    headers: dict[str, str]
    attempts: int
    at: datetime
    state: str


@dataclass(frozen=True, slots=True)
class RequestOwner:
    """Who a stored request belongs to: enough to decide who may read it."""

    source: str
    partner_id: str | None
    tenant_id: str


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request_id: str
    status: RequestState
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Advance:
    """One status change for :meth:`RequestStore.advance_many` (the arguments of ``advance``)."""

    request_id: str
    status: RequestState
    now: datetime
    detail: Mapping[str, Any] | None = None
    center_id: str | None = None


def canonical_json(data: Any) -> str:
    """One text per JSON value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_body_hash(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a request body: equal bodies, equal hashes."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def _supersedes(new: RequestState, current: RequestState) -> bool:
    if current.is_final:
        return False
    return new.is_final or _STAGES.index(new) >= _STAGES.index(current)


# The statements a stage's batch runs, built once. Built for each call (a new ``select`` with
# ``in_(list)``), each was constructed, coerced and keyed for the compiled cache again: at the
# batches of one or two records a steady load brings, that was most of a statement's cost
# (docs/performance.md, round 8). The lists are expanding bind parameters.
# The stored requests and, marked by a NULL body hash, the requests with a cancel held for
# them (scheduler.held_commands): what the intake reads before accepting, in one statement.
_STORED_OR_HELD = union_all(
    select(requests.c.request_id, requests.c.body_hash, requests.c.status)
    .where(requests.c.request_id.in_(bindparam("ids", expanding=True))),
    select(held_commands.c.request_id, null().label("body_hash"), null().label("status"))
    .where(held_commands.c.request_id.in_(bindparam("ids", expanding=True)),
           held_commands.c.command == "cancel"))
_STATUSES = (select(requests.c.request_id, requests.c.status)
             .where(requests.c.request_id.in_(bindparam("ids", expanding=True))))
_STATUSES_FOR_UPDATE = _STATUSES.with_for_update()
_ACTIVE_REVISIONS = (select(meetings.c.request_id, meetings.c.revision)
                     .where(meetings.c.request_id.in_(bindparam("ids", expanding=True)),
                            meetings.c.status == "active"))
_SEEN = (select(request_events.c.request_id, request_events.c.fingerprint)
         .where(request_events.c.request_id.in_(bindparam("ids", expanding=True)),
                request_events.c.fingerprint.in_(bindparam("fingerprints", expanding=True))))
_INSERT_REQUESTS = insert(requests)
_INSERT_EVENTS = insert(request_events)


@cache
def _move(keys: tuple[str, ...]) -> Update:
    """The UPDATE of one shape of status move: ``rid`` and ``v_<column>`` bind names (a bind
    name must not be a column name)."""
    return (update(requests).where(requests.c.request_id == bindparam("rid"))
            .values({k[2:]: bindparam(k) for k in keys if k != "rid"}))


class RequestStore:
    """Requests, their status timelines and dead letters in SQL; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def accept(self, request: HelpRequest, body_hash: str, now: datetime,
               body: Mapping[str, Any] | None = None) -> AcceptOutcome:
        """Store a new request as ``accepted``, or say it is a duplicate or a conflicting reuse.

        ``body`` is the request as received, stored so that republishing it reproduces
        ``body_hash``; without it the model's wire form is stored.
        """
        try:
            with self._engine.begin() as conn:
                self.insert_accepted(conn, [(request, body_hash, body)], now)
        except IntegrityError:
            with read_connection(self._engine) as conn:
                row = conn.execute(
                    select(requests.c.body_hash, requests.c.status)
                    .where(requests.c.request_id == request.request_id)
                ).first()
            if row is None:
                raise
            kind = Acceptance.DUPLICATE if row.body_hash == body_hash else Acceptance.CONFLICT
            return AcceptOutcome(kind, request.request_id, RequestState(row.status))
        return AcceptOutcome(Acceptance.CREATED, request.request_id, RequestState.ACCEPTED)

    def advance(self, request_id: str, status: str, now: datetime,
                detail: Mapping[str, Any] | None = None,
                center_id: str | None = None) -> RequestState:
        """Add ``status`` at ``now`` to the timeline and move the status forward if it is later.

        The same status with the same detail is recorded once. Returns the status after the
        call, so a caller can see that the request was, say, cancelled in the meantime.
        """
        with self._engine.begin() as conn:
            after = self.advance_many(
                conn, [Advance(request_id, RequestState(status), now, detail, center_id)])
        if request_id not in after:
            raise UnknownRequest(request_id)
        return after[request_id]

    # Batches: the same operations on a caller's transaction, a few statements per batch
    # instead of a transaction per request. A stage opens one with :meth:`transaction`.

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite) for the ``conn`` methods below."""
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection (on SQLite it does not queue for the write lock)."""
        with read_connection(self._engine) as conn:
            yield conn

    def stored(self, conn: Connection, request_ids: Collection[str],
               ) -> tuple[dict[str, tuple[str, RequestState]], set[str]]:
        """(body hash, status) of the requests among ``request_ids`` that are stored, and
        those with a cancel held for them (:mod:`scheduler.held_commands`; the caller holds
        their locks: :func:`scheduler.db.lock_requests`)."""
        if not request_ids:
            return {}, set()
        stored: dict[str, tuple[str, RequestState]] = {}
        held: set[str] = set()
        for r in conn.execute(_STORED_OR_HELD, {"ids": list(request_ids)}):
            if r.body_hash is None:
                held.add(r.request_id)
            else:
                stored[r.request_id] = (r.body_hash, RequestState(r.status))
        return stored, held

    def insert_accepted(self, conn: Connection,
                        items: Sequence[tuple[HelpRequest, str, Mapping[str, Any] | None]],
                        now: datetime) -> None:
        """Store new requests as ``accepted``: (request, body hash, body as received) each.

        Raises IntegrityError if one is stored already; :meth:`accept` is the checked way.
        """
        if not items:
            return
        conn.execute(_INSERT_REQUESTS, [{
            "request_id": request.request_id, "body_hash": body_hash,
            "body": canonical_json(dict(body) if body is not None else request.to_json_dict()),
            "status": RequestState.ACCEPTED.value, "center_id": None,
            "source": request.source.value,
            "partner_id": request.partner.id if request.partner else None,
            "tenant_id": request.tenant.id, "submitted_at": request.submitted_at,
            "accepted_at": now, "updated_at": now,
        } for request, body_hash, body in items])
        conn.execute(_INSERT_EVENTS, [
            _event(request.request_id, RequestState.ACCEPTED, now, None)
            for request, _, _ in items])

    def statuses(self, conn: Connection, request_ids: Collection[str], *,
                 lock: bool = False) -> dict[str, RequestState]:
        """The status of each stored request among ``request_ids``; ``lock``: FOR UPDATE."""
        if not request_ids:
            return {}
        query = _STATUSES_FOR_UPDATE if lock else _STATUSES
        return {r.request_id: RequestState(r.status)
                for r in conn.execute(query, {"ids": list(request_ids)})}

    def active_revisions(self, conn: Connection, request_ids: Collection[str]) -> dict[str, int]:
        """The revision of each request's active meeting, for those among ``request_ids``
        that have one."""
        if not request_ids:
            return {}
        return {r.request_id: r.revision
                for r in conn.execute(_ACTIVE_REVISIONS, {"ids": list(request_ids)})}

    def advance_many(self, conn: Connection, changes: Sequence[Advance], *,
                     locked: Mapping[str, RequestState] | None = None,
                     ) -> dict[str, RequestState]:
        """:meth:`advance` for each change, in order, in the caller's transaction.

        ``locked``: statuses the caller read or wrote earlier in this same transaction, with the
        rows locked (``statuses(..., lock=True)``, or the requests it inserted); those are not
        read again. Returns each known request's status after its changes; unknown requests
        are left out.
        """
        if not changes:
            return {}
        # FOR UPDATE serializes advances of one request on PostgreSQL; SQLite already has
        # the write lock (BEGIN IMMEDIATE).
        ids = {c.request_id for c in changes}
        known = locked or {}
        current = {rid: known[rid] for rid in ids if rid in known}
        if len(current) < len(ids):
            current.update(self.statuses(conn, ids - current.keys(), lock=True))
        events = [_event(c.request_id, c.status, c.now, c.detail) for c in changes]
        seen = {(r.request_id, r.fingerprint) for r in conn.execute(_SEEN, {
            "ids": list(current), "fingerprints": list({e["fingerprint"] for e in events})})}
        new_events: list[dict[str, Any]] = []
        moves: dict[str, dict[str, Any]] = {}
        for change, event in zip(changes, events, strict=True):
            status = current.get(change.request_id)
            if status is None:
                continue
            key = (change.request_id, event["fingerprint"])
            if key not in seen:
                seen.add(key)
                new_events.append(event)
            # A change recorded before still moves the status forward: only a redrive's
            # reopen takes a status back, and the request then reaches that stage again.
            if not _supersedes(change.status, status):
                continue
            current[change.request_id] = change.status
            move = moves.setdefault(change.request_id, {"rid": change.request_id})
            move.update(v_status=change.status.value, v_updated_at=change.now)
            if change.center_id is not None:
                move["v_center_id"] = change.center_id
        if new_events:
            conn.execute(_INSERT_EVENTS, new_events)
        # One executemany per shape (with or without a new center).
        for keys in {tuple(sorted(m)) for m in moves.values()}:
            conn.execute(_move(keys), [m for m in moves.values() if tuple(sorted(m)) == keys])
        return current

    def reopen(self, request_id: str, now: datetime,
               detail: Mapping[str, Any] | None = None) -> RequestState | None:
        """Take a dead-lettered request back to the last stage it reached, for a redrive.

        Dead-lettered is final for the pipeline's forward-only ``advance``; ops redriving the
        record after a fix is the one way back. Returns the stage, or None when the request is
        unknown or not dead-lettered (nothing to reopen).
        """
        with self._engine.begin() as conn:
            current = conn.execute(
                select(requests.c.status).where(requests.c.request_id == request_id)
                .with_for_update()).scalar_one_or_none()
            if current != RequestState.DEADLETTERED.value:
                return None
            reached = [RequestState(s) for s in conn.execute(
                select(request_events.c.status).where(
                    request_events.c.request_id == request_id,
                    request_events.c.status.in_([s.value for s in _STAGES])))
                .scalars()]
            stage = max(reached, key=_STAGES.index, default=RequestState.ACCEPTED)
            if stage in (RequestState.BOOKED, RequestState.INVITED) and not self.active_revisions(
                    conn, [request_id]):
                # Its meeting was freed while it was dead-lettered: it must be booked again.
                stage = RequestState.ROUTED
            conn.execute(insert(request_events).values(_event(
                request_id, stage, now, {"reopened": True, **dict(detail or {})})))
            conn.execute(update(requests).where(requests.c.request_id == request_id)
                         .values(status=stage.value, updated_at=now))
        return stage

    def status(self, request_id: str) -> RequestStatus | None:
        """The request's status, center, active meeting and timeline (oldest first)."""
        active = and_(meetings.c.request_id == requests.c.request_id,
                      meetings.c.status == "active")
        query = (
            select(requests.c.status, requests.c.center_id, meetings.c.start_utc,
                   meetings.c.end_utc, meetings.c.specialist_id, meetings.c.join_url,
                   meetings.c.uid, meetings.c.revision)
            .select_from(requests.outerjoin(meetings, active))
            .where(requests.c.request_id == request_id)
        )
        timeline_query = (
            select(request_events.c.status, request_events.c.at, request_events.c.detail)
            .where(request_events.c.request_id == request_id)
            .order_by(request_events.c.at, request_events.c.id)
        )
        with read_connection(self._engine) as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            timeline = [
                TimelineEntry(RequestState(e.status), e.at,
                              None if e.detail is None else json.loads(e.detail))
                for e in conn.execute(timeline_query)
            ]
        meeting = None if row.uid is None else MeetingSummary(
            start=row.start_utc, end=row.end_utc, specialist_id=row.specialist_id,
            # The SEQUENCE of the meeting's invite (revision 1 is invited at SEQUENCE 0), as
            # in its .ics and its invites.delivered record.
            join_url=row.join_url, uid=row.uid, sequence=row.revision - 1,
        )
        return RequestStatus(request_id, RequestState(row.status), row.center_id, meeting,
                             timeline)

    def owner(self, request_id: str) -> RequestOwner | None:
        """The stored request's source, partner and tenant (for access checks), or None."""
        query = (select(requests.c.source, requests.c.partner_id, requests.c.tenant_id)
                 .where(requests.c.request_id == request_id))
        with read_connection(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else RequestOwner(row.source, row.partner_id, row.tenant_id)

    def reachable(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            with read_connection(self._engine) as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def non_final(self, older_than: datetime, limit: int = 500) -> list[PendingRequest]:
        """Requests still in flight (accepted, routed, booked) whose status last moved before
        ``older_than``, oldest first: candidates for reconciliation."""
        query = (
            select(requests.c.request_id, requests.c.status, requests.c.updated_at)
            .where(requests.c.status.in_([s.value for s in IN_FLIGHT]),
                   requests.c.updated_at < older_than)
            .order_by(requests.c.updated_at, requests.c.request_id)
            .limit(limit)
        )
        with read_connection(self._engine) as conn:
            return [PendingRequest(r.request_id, RequestState(r.status), r.updated_at)
                    for r in conn.execute(query)]

    def record_deadletter(
        self, *, request_id: str | None, origin_topic: str | None,
        origin_partition: int | None, origin_offset: int | None, error_class: str,
        message: str, payload: bytes, headers: Mapping[str, str], now: datetime,
        attempts: int = 1, key: bytes | None = None,
    ) -> int:
        """Record what was sent to the dead-letter topic; return its id.

        A record from the same topic/partition/offset (a redelivery) is stored once.
        """
        try:
            with self._engine.begin() as conn:
                result = conn.execute(insert(deadletters).values(
                    request_id=request_id, origin_topic=origin_topic,
                    origin_partition=origin_partition, origin_offset=origin_offset,
                    error_class=error_class, message=message, payload=payload,
                    headers=canonical_json(dict(headers)), attempts=attempts, at=now,
                    state="open", updated_at=now, record_key=key,
                ).returning(deadletters.c.id))
                return int(result.scalar_one())
        except IntegrityError:
            if origin_topic is None:
                raise
            with read_connection(self._engine) as conn:
                existing = conn.execute(select(deadletters.c.id).where(
                    deadletters.c.origin_topic == origin_topic,
                    deadletters.c.origin_partition == origin_partition,
                    deadletters.c.origin_offset == origin_offset,
                )).scalar_one_or_none()
            if existing is None:
                raise
            return int(existing)

    def add_deadletter(
        self, conn: Connection, *, request_id: str | None, origin_topic: str,
        origin_partition: int, origin_offset: int, error_class: str, message: str,
        payload: bytes, headers: Mapping[str, str], now: datetime, attempts: int = 1,
        key: bytes | None = None,
    ) -> int:
        """:meth:`record_deadletter` in the caller's transaction: the one from the same
        origin is found first, so a repeat never aborts that transaction."""
        existing = conn.execute(select(deadletters.c.id).where(
            deadletters.c.origin_topic == origin_topic,
            deadletters.c.origin_partition == origin_partition,
            deadletters.c.origin_offset == origin_offset)).scalar_one_or_none()
        if existing is not None:
            return int(existing)
        return int(conn.execute(insert(deadletters).values(
            request_id=request_id, origin_topic=origin_topic,
            origin_partition=origin_partition, origin_offset=origin_offset,
            error_class=error_class, message=message, payload=payload,
            headers=canonical_json(dict(headers)), attempts=attempts, at=now,
            state="open", updated_at=now, record_key=key,
        ).returning(deadletters.c.id)).scalar_one())

    def list_deadletters(self, state: str | None = "open", request_id: str | None = None,
                         limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first; ``state=None`` lists every state."""
        query = select(deadletters).order_by(deadletters.c.at, deadletters.c.id).limit(limit)
        if state is not None:
            query = query.where(deadletters.c.state == state)
        if request_id is not None:
            query = query.where(deadletters.c.request_id == request_id)
        with read_connection(self._engine) as conn:
            return [
                DeadLetter(
                    id=r.id, request_id=r.request_id, origin_topic=r.origin_topic,
                    origin_partition=r.origin_partition, origin_offset=r.origin_offset,
                    error_class=r.error_class, message=r.message, payload=bytes(r.payload),
                    headers=json.loads(r.headers), attempts=r.attempts, at=r.at, state=r.state,
                )
                for r in conn.execute(query)
            ]

    def set_deadletter_state(self, deadletter_id: int, state: str, now: datetime) -> bool:
        """Mark a dead letter ``redriven`` or ``discarded`` (or ``open`` again); False if absent."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(deadletters).where(deadletters.c.id == deadletter_id)
                .values(state=state, updated_at=now)
            )
        return result.rowcount == 1


def _event(request_id: str, status: RequestState, at: datetime,
           detail: Mapping[str, Any] | None) -> dict[str, Any]:
    detail_json = None if detail is None else canonical_json(dict(detail))
    fingerprint = hashlib.sha256(f"{status.value}\n{detail_json}".encode()).hexdigest()
    return {"request_id": request_id, "at": at, "status": status.value, "detail": detail_json,
            "fingerprint": fingerprint}
