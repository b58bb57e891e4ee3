"""The pipeline's stages: decode, call the core, record in the database, say what to emit.

Each stage commits its database work before returning, and its agent produces the emits after.
A crash in between means redelivery, so every stage is idempotent: on a record it has seen, it
re-emits its output only while the next stage has not finished (nothing lost, nothing doubled).

Stages take records a fetched batch at a time (:meth:`handle_batch`): the usual case, a record
seen for the first time, is done for the whole batch in one transaction; everything else (a
redelivery, the same request twice in one batch, a batch whose transaction fails) goes through
:meth:`handle`, one record and one transaction at a time, exactly as if it came alone. Each
record gets its own outcome (what to emit, or the exception that stopped it), so one bad record
never holds back the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from pydantic import ValidationError

from consumers.envelope import MAX_RECORD_BYTES, Emit, Origin, Unprocessable, encode
from consumers.routing import route
from scheduler.booking import JoinUrl, book, first_choice_specialists
from scheduler.db import lock_requests
from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite, InviteDelivery
from scheduler.delivery_retry import send_with_retry
from scheduler.directory import CenterDirectory
from scheduler.directory_source import DirectoryFeed
from scheduler.held_commands import (
    CommandIdReused,
    HeldCommand,
    HeldCommands,
    Hold,
    ready_for,
    take_cancels,
)
from scheduler.invite_log import InviteLog, InviteLogRow
from scheduler.invites import build_imip_message, build_invite
from scheduler.ledger import BookingLedger, MeetingLinks
from scheduler.lifecycle import Lifecycle, apply_command
from scheduler.request_store import (
    Acceptance,
    Advance,
    RequestState,
    RequestStore,
    UnknownRequest,
    canonical_body_hash,
)
from scheduler.sql_ledger import LockedElsewhere
from schemas.commands import RequestCommand, parse_request_command
from schemas.errors import InvalidMessage
from schemas.events import (
    InviteDelivered,
    MeetingBooked,
    Reason,
    RequestEscalated,
    RequestRouted,
    RoutingDecision,
    utc_z,
)
from schemas.help_request import HelpRequest, parse_help_request

Clock = Callable[[], datetime]
log = structlog.get_logger("fasttrack.pipeline")

_Parsed = TypeVar("_Parsed")

#: A record as a stage gets it, and what became of it: the records to emit, or why not.
Record = tuple[bytes, Origin]
Outcome = list[Emit] | Exception


class Batch:
    """The outcomes of a batch of records, filled in as the stage gets to each."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.outcomes: list[Outcome | None] = [None] * len(records)
        self.one_by_one: list[int] = []

    def settle(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome

    def decode(self, parse: Callable[[bytes], _Parsed], request_id: Callable[[_Parsed], str],
               ) -> tuple[dict[int, _Parsed], dict[str, int]]:
        """Each record parsed (an unprocessable one settled with its error), and the index of
        each request id's first record. Later records of the same id go one by one, after the
        batch commits, so they see what the first one did."""
        decoded: dict[int, _Parsed] = {}
        first: dict[str, int] = {}
        for index, (value, _) in enumerate(self.records):
            try:
                decoded[index] = item = parse(value)
            except Unprocessable as exc:
                self.settle(index, exc)
                continue
            if request_id(item) in first:
                self.one_by_one.append(index)
            else:
                first[request_id(item)] = index
        return decoded, first

    def finish(self, handle: Callable[[bytes, Origin], list[Emit]]) -> list[Outcome]:
        """Run the records set aside (and any left unsettled) through ``handle``, in order."""
        pending = sorted({*self.one_by_one,
                          *(i for i, o in enumerate(self.outcomes) if o is None)})
        for index in pending:
            value, origin = self.records[index]
            try:
                self.outcomes[index] = handle(value, origin)
            except Exception as exc:  # the runner retries or dead-letters it
                self.outcomes[index] = exc
        return [o if o is not None else [] for o in self.outcomes]


@dataclass
class Submission:
    """``requests.submitted`` → validate, de-duplicate, record, route → routed or escalated."""

    store: RequestStore
    directory: DirectoryFeed
    clock: Clock

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        body, request = _parse_submission(value)
        now = self.clock()
        outcome = self.store.accept(request, canonical_body_hash(body), now, body)
        if outcome.kind is Acceptance.CONFLICT:
            raise Unprocessable(f"request_id {request.request_id} was already submitted "
                                "with a different body", request.request_id,
                                marks_request=False)
        if outcome.kind is Acceptance.DUPLICATE and outcome.status is not RequestState.ACCEPTED:
            return self._resend(request) if outcome.status is RequestState.ROUTED else []
        routed = self._route(request, now)  # pure: outside the write transaction
        with self.store.transaction() as conn:
            lock_requests(conn, [request.request_id])
            held = take_cancels(conn, [request.request_id])
            change, emits = self._start(request, held, now, routed)
            self.store.advance_many(conn, [change])
        _log_held(held, change)
        return emits

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        """New requests, and those the gateway stored as accepted before publishing them:
        accept and route the whole batch in one transaction."""
        batch = Batch(records)
        parsed, first = batch.decode(_parse_submission, lambda parsed: parsed[1].request_id)
        now = self.clock()
        # Pure, so before the write transaction: on SQLite every writer of every worker waits
        # while one holds it. A record that turns out to be a duplicate was routed for nothing.
        hashes = {i: canonical_body_hash(parsed[i][0]) for i in first.values()}
        routes = {i: self._route(parsed[i][1], now) for i in first.values()}
        try:
            with self.store.transaction() as conn:
                lock_requests(conn, first)  # against a command held for them meanwhile
                stored, cancelled = self.store.stored(conn, first)
                new = [i for rid, i in first.items() if rid not in stored]
                # Stored by the gateway with this very body, and not yet routed (the same as
                # handle() does for them, without its two transactions a record).
                waiting = [i for rid, i in first.items()
                           if stored.get(rid) == (hashes[i], RequestState.ACCEPTED)]
                self.store.insert_accepted(conn, [
                    (parsed[i][1], hashes[i], parsed[i][0]) for i in new], now)
                held: dict[str, list[HeldCommand]] = {}
                for command in take_cancels(conn, cancelled.intersection(
                        parsed[i][1].request_id for i in new + waiting)):
                    held.setdefault(command.request_id, []).append(command)
                started = {i: self._start(parsed[i][1], held.get(parsed[i][1].request_id, []),
                                          now, routes[i]) for i in new + waiting}
                self.store.advance_many(  # inserted just now: accepted, and locked; the
                    conn, [change for change, _ in started.values()],  # gateway's are read
                    locked={parsed[i][1].request_id: RequestState.ACCEPTED for i in new})
        except Exception as exc:
            log.warning("batch_one_by_one", stage="intake", records=len(records),
                        error=type(exc).__name__)
            batch.one_by_one.extend(first.values())
        else:
            batch.one_by_one.extend(i for rid, i in first.items()
                                    if rid in stored and i not in started)
            for index, (change, emits) in started.items():
                _log_held(held.get(change.request_id, []), change)
                batch.settle(index, emits)
        return batch.finish(self.handle)

    def _start(self, request: HelpRequest, held: Sequence[HeldCommand], now: datetime,
               routed: tuple[Advance, Emit] | None = None) -> tuple[Advance, list[Emit]]:
        """A new request's first step: cancelled, by a cancel that came before it
        (:mod:`scheduler.held_commands`), or routed (``routed``, if already decided)."""
        if held:
            cancel = held[0]
            return Advance(request.request_id, RequestState.CANCELLED, now, {
                "reason": "command", "command_id": cancel.command_id,
                "held_since": utc_z(cancel.held_at)}), []
        change, emit = routed or self._route(request, now)
        return change, [emit]

    def _route(self, request: HelpRequest, now: datetime) -> tuple[Advance, Emit]:
        decision = route(request, self.directory(), now)
        if decision.center_id is None:
            return escalation(request, "routing", decision.reasons, now, decision)
        return (Advance(request.request_id, RequestState.ROUTED, now,
                        {"decision": decision.to_json_dict()}, decision.center_id),
                _routed(request, decision))

    def _resend(self, request: HelpRequest) -> list[Emit]:
        status = self.store.status(request.request_id)
        stored = [e.detail for e in status.timeline if e.status is RequestState.ROUTED] \
            if status else []
        if not stored or not stored[-1]:
            return []
        return [_routed(request, RoutingDecision.model_validate(stored[-1]["decision"]))]


@dataclass
class Booking:
    """``requests.routed`` → book a slot and a specialist → meetings.booked or escalated."""

    store: RequestStore
    directory: DirectoryFeed
    ledger: BookingLedger
    clock: Clock
    join_url: JoinUrl

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        routed = _decode(RequestRouted, value)
        status = self.store.status(routed.request.request_id)
        if status is None or status.status not in (RequestState.ROUTED, RequestState.BOOKED):
            return []  # unknown here, finished, cancelled or escalated: nothing to do
        now = self.clock()
        change, emit = self._book(routed, self.ledger, now, self.directory())
        self.store.advance(change.request_id, change.status, now, change.detail,
                           change.center_id)
        return [emit]

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        """Routed requests: book the batch in one transaction, reading each specialist's
        schedule once. A ledger that cannot join a transaction (one that also asks the
        specialists' calendars, over the network) books one record at a time."""
        batch = Batch(records)
        within = getattr(self.ledger, "within", None)
        if within is None:
            batch.one_by_one.extend(range(len(records)))
            return batch.finish(self.handle)
        decoded, first = batch.decode(lambda value: _decode(RequestRouted, value),
                                      lambda routed: routed.request.request_id)
        now = self.clock()
        directory = self.directory()
        try:
            with self.store.transaction() as conn:
                statuses = self.store.statuses(conn, first, lock=True)
                ledger = within(conn)
                to_book = [index for request_id, index in first.items()
                           if statuses.get(request_id) is RequestState.ROUTED]
                ledger.reserve(first_choice_specialists(
                    (decoded[index].decision for index in to_book), directory))
                ledger.read_meetings(decoded[index].request.request_id for index in to_book)
                booked: dict[int, tuple[Advance, Emit]] = {}
                set_aside = 0
                for request_id, index in first.items():
                    status = statuses.get(request_id)
                    if status is RequestState.ROUTED:
                        try:
                            booked[index] = self._book(decoded[index], ledger, now, directory)
                        except LockedElsewhere:  # overflow to a center another batch holds
                            batch.one_by_one.append(index)  # booked alone, after this commit
                            set_aside += 1
                    elif status is RequestState.BOOKED:
                        batch.one_by_one.append(index)  # a redelivery: re-emit if needed
                self.store.advance_many(conn, [change for change, _ in booked.values()],
                                        locked=statuses)
        except Exception as exc:
            log.warning("batch_one_by_one", stage="booker", records=len(records),
                        error=type(exc).__name__)
            batch.one_by_one.extend(first.values())
        else:
            if set_aside:
                log.info("bookings_set_aside", stage="booker", records=set_aside,
                         reason="locked_elsewhere")
            for index in first.values():
                outcome = booked.get(index)
                if outcome is not None:
                    batch.settle(index, [outcome[1]])
                elif index not in batch.one_by_one:
                    batch.settle(index, [])  # finished, cancelled or escalated already
        return batch.finish(self.handle)

    def _book(self, routed: RequestRouted, ledger: BookingLedger, now: datetime,
              directory: CenterDirectory) -> tuple[Advance, Emit]:
        request, decision = routed.request, routed.decision
        outcome = book(decision, directory, ledger, join_url=self.join_url,
                       earliest=now + timedelta(minutes=directory.policy.min_notice_minutes))
        if outcome.meeting is None:
            return escalation(request, "booking", outcome.reasons, now, decision)
        meeting = outcome.meeting
        booked = MeetingBooked(request=request, meeting=meeting, reasons=outcome.reasons,
                               booked_at=now)
        return (Advance(request.request_id, RequestState.BOOKED, now,
                        {"meeting": meeting.to_json_dict(), "reasons": outcome.reasons},
                        meeting.center_id),
                Emit("meetings_booked", request.request_id.encode(),
                     encode(booked.to_json_dict())))


@dataclass
class Invitation:
    """``meetings.booked`` → render the iTIP REQUEST, deliver it → invites.delivered."""

    store: RequestStore
    directory: DirectoryFeed
    deliveries: Callable[[str], InviteDelivery]
    log: InviteLog
    links: MeetingLinks
    clock: Clock

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        booked = _decode(MeetingBooked, value)
        request_id = booked.request.request_id
        with self.store.reading() as conn:  # what the batch path reads, for one record
            status = self.store.statuses(conn, [request_id]).get(request_id)
            active = self.store.active_revisions(conn, [request_id])
        if status is not RequestState.BOOKED:
            return []  # already invited, or cancelled/escalated since
        if not _still_held(booked, active) or not _placed(booked, self.directory()):
            return []
        now = self.clock()
        invite, backend = self._render(booked, now)
        receipt = self._send(invite, backend, now)
        row, change, emit = self._delivered(invite, backend, receipt, now)
        self.log.record(*row)
        self.store.advance(change.request_id, change.status, now, change.detail)
        return [emit]

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        """Booked meetings: render each invite, hand a backend that can take several at once
        (the outbox: one lock, one directory fsync) the lot, then record the batch in one
        transaction. An invite whose delivery failed is retried on its own, with backoff."""
        batch = Batch(records)
        decoded, first = batch.decode(lambda value: _decode(MeetingBooked, value),
                                      lambda booked: booked.request.request_id)
        try:
            with self.store.reading() as conn:
                statuses = self.store.statuses(conn, first)
                active = self.store.active_revisions(conn, first)
        except Exception as exc:
            log.warning("batch_one_by_one", stage="notifier", records=len(records),
                        error=type(exc).__name__)
            batch.one_by_one.extend(first.values())
            return batch.finish(self.handle)
        now = self.clock()
        directory = self.directory()
        prepared: dict[int, tuple[Invite, InviteDelivery]] = {}
        for request_id, index in first.items():
            if (statuses.get(request_id) is not RequestState.BOOKED
                    or not _still_held(decoded[index], active)
                    or not _placed(decoded[index], directory)):
                batch.settle(index, [])  # already invited, or cancelled/escalated since
                continue
            try:
                prepared[index] = self._render(decoded[index], now)
            except Exception:
                batch.one_by_one.append(index)  # fails again there, and is reported
        receipts = self._send_batch(prepared, batch, now)
        done = {i: self._delivered(*prepared[i], receipt, now) for i, receipt in receipts.items()}
        try:
            with self.store.transaction() as conn:
                self.log.record_many(conn, [row for row, _, _ in done.values()])
                self.store.advance_many(conn, [change for _, change, _ in done.values()])
        except Exception as exc:
            log.warning("batch_record_one_by_one", stage="notifier", records=len(done),
                        error=type(exc).__name__)
            for index, (row, change, emit) in done.items():
                try:
                    self.log.record(*row)
                    self.store.advance(change.request_id, change.status, now, change.detail)
                except Exception as failure:
                    batch.settle(index, failure)
                else:
                    batch.settle(index, [emit])
        else:
            for index, (_, _, emit) in done.items():
                batch.settle(index, [emit])
        return batch.finish(self.handle)

    def _render(self, booked: MeetingBooked, now: datetime) -> tuple[Invite, InviteDelivery]:
        request, meeting = booked.request, booked.meeting
        center = self.directory().center(meeting.center_id)
        backend = self.deliveries(center.id)
        sequence = meeting.revision - 1
        ics = build_invite(meeting, request, center, sequence=sequence, method="REQUEST", now=now)
        message = build_imip_message(ics, meeting, request, center, method="REQUEST", now=now)
        return Invite(meeting, request, center, sequence, "REQUEST", ics, message), backend

    def _send(self, invite: Invite, backend: InviteDelivery, now: datetime) -> DeliveryReceipt:
        try:
            return send_with_retry(backend, invite)
        except DeliveryFailed as exc:
            self.log.record(invite.meeting.uid, invite.request.request_id, invite.sequence,
                            "REQUEST", backend.name, "failed", now, detail=str(exc)[:500])
            raise  # the runner retries the record, then dead-letters it

    def _send_batch(self, prepared: dict[int, tuple[Invite, InviteDelivery]], batch: Batch,
                    now: datetime) -> dict[int, DeliveryReceipt]:
        """Deliver the prepared invites; a failed one is settled with its error, or set aside
        to be retried one by one when it came from a batch send (which does not retry)."""
        by_backend: dict[int, list[int]] = {}
        for index, (_, backend) in prepared.items():
            by_backend.setdefault(id(backend), []).append(index)
        receipts: dict[int, DeliveryReceipt] = {}
        for indexes in by_backend.values():
            backend = prepared[indexes[0]][1]
            send_many = getattr(backend, "send_many", None)
            if send_many is not None:
                results = send_many([prepared[i][0] for i in indexes])
                for index, result in zip(indexes, results, strict=True):
                    if isinstance(result, Exception):
                        batch.one_by_one.append(index)
                    else:
                        receipts[index] = result
                continue
            for index in indexes:
                try:
                    receipts[index] = self._send(prepared[index][0], backend, now)
                except Exception as exc:
                    batch.settle(index, exc)
        return receipts

    def _delivered(self, invite: Invite, backend: InviteDelivery, receipt: DeliveryReceipt,
                   now: datetime) -> tuple[InviteLogRow, Advance, Emit]:
        """What to record and emit for a delivered invite (and its Teams link, if one came)."""
        meeting, request_id, sequence = invite.meeting, invite.request.request_id, invite.sequence
        if receipt.join_url and receipt.join_url != meeting.join_url:
            self.links.set_join_url(request_id, receipt.join_url)
        row: InviteLogRow = (meeting.uid, request_id, sequence, "REQUEST", backend.name,
                             "delivered", now)
        change = Advance(request_id, RequestState.INVITED, now,
                         {"uid": meeting.uid, "sequence": sequence, "backend": backend.name})
        delivered = InviteDelivered(
            request_id=request_id, backend=backend.name, uid=meeting.uid,
            sequence=sequence, method="REQUEST", status="delivered",
            location=receipt.location, delivered_at=now,
        )
        return row, change, Emit("invites_delivered", request_id.encode(),
                                 encode(delivered.to_json_dict()))


def _still_held(booked: MeetingBooked, active: Mapping[str, int]) -> bool:
    """Whether the booked meeting is still the request's active one. A record replayed after
    its meeting was freed (a redrive, a cancel cut short) must not invite anyone to it."""
    held = active.get(booked.request.request_id) == booked.meeting.revision
    if not held:
        log.warning("invite_skipped", request_id=booked.request.request_id,
                    uid=booked.meeting.uid, revision=booked.meeting.revision,
                    active_revision=active.get(booked.request.request_id))
    return held


def _placed(booked: MeetingBooked, directory: CenterDirectory) -> bool:
    """Whether the meeting's center and specialist are still in the directory. One a reload
    removed is not an error of this record: the leader's revalidation moves the meeting under
    the same policy (its first invite then goes out) or escalates it."""
    meeting = booked.meeting
    center = directory.by_id.get(meeting.center_id)
    if center is not None and any(s.id == meeting.specialist_id for s in center.specialists):
        return True
    log.warning("invite_waits_for_revalidation", request_id=meeting.request_id,
                center_id=meeting.center_id, specialist_id=meeting.specialist_id)
    return False


@dataclass
class Commands:
    """``requests.commands`` → cancel or reschedule a request (schemas/request_command.v1.json)."""

    lifecycle: Lifecycle
    clock: Clock
    held: HeldCommands

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        try:
            command = parse_request_command(value)
        except InvalidMessage as exc:
            raise Unprocessable(f"not a valid RequestCommand v1: {exc}",
                                marks_request=False) from exc
        status = self.lifecycle.store.status(command.request_id)
        if not ready_for(command.command.value, status.status if status else None) \
                and self._hold(command, value, origin) is not Hold.READY:
            return []  # held until its request can take it (scheduler.held_commands)
        try:
            outcome = apply_command(command, self.lifecycle, self.clock())
        except UnknownRequest as exc:  # not possible once ready: a request is never removed
            raise Unprocessable(str(exc), command.request_id, marks_request=False) from exc
        log.info("command_applied", request_id=command.request_id, command=command.command,
                 result=str(outcome.result))
        return []

    def _hold(self, command: RequestCommand, value: bytes, origin: Origin) -> Hold:
        """Hold a command its request cannot take yet (not accepted; a reschedule's not
        booked), unless it can by now (:data:`Hold.READY`)."""
        try:
            hold = self.held.hold(HeldCommand(
                command_id=command.command_id, request_id=command.request_id,
                command=command.command.value, payload=value, key=origin.key,
                headers={k: v.decode("utf-8", "replace") for k, v in origin.headers.items()},
                origin_topic=origin.topic, origin_partition=origin.partition,
                origin_offset=origin.offset, held_at=self.clock()))
        except CommandIdReused as exc:
            raise Unprocessable(str(exc), command.request_id, marks_request=False) from exc
        if hold is Hold.HELD:
            log.info("command_held", request_id=command.request_id,
                     command_id=command.command_id, command=command.command)
        return hold

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        """Commands are rare and each is its own transaction: one at a time."""
        batch = Batch(records)
        batch.one_by_one.extend(range(len(records)))
        return batch.finish(self.handle)


def escalate(store: RequestStore, request: HelpRequest, stage: str, reasons: list[Reason],
             now: datetime, decision: RoutingDecision | None = None) -> list[Emit]:
    """Record and announce that a request cannot go on without people."""
    change, emit = escalation(request, stage, reasons, now, decision)
    store.advance(change.request_id, change.status, now, change.detail)
    return [emit]


def escalation(request: HelpRequest, stage: str, reasons: list[Reason], now: datetime,
               decision: RoutingDecision | None = None) -> tuple[Advance, Emit]:
    """What to record and announce when a request cannot go on without people."""
    detail = ", ".join(reasons) or "unknown"
    event = RequestEscalated(request_id=request.request_id, stage=stage,  # type: ignore[arg-type]
                             reasons=reasons, detail=detail, request=request,
                             decision=decision, escalated_at=now)
    return (Advance(request.request_id, RequestState.ESCALATED, now,
                    {"stage": stage, "reasons": list(reasons)}),
            Emit("requests_escalated", request.request_id.encode(),
                 encode(event.to_json_dict())))


def _parse_submission(value: bytes) -> tuple[dict[str, Any], HelpRequest]:
    if len(value) > MAX_RECORD_BYTES:
        raise Unprocessable(f"record of {len(value)} bytes is over {MAX_RECORD_BYTES}",
                            marks_request=False)
    try:
        body = json.loads(value)
        return body, parse_help_request(body)
    except (ValueError, InvalidMessage) as exc:
        raise Unprocessable(f"not a valid HelpRequest v1: {exc}", marks_request=False) from exc
    except Exception as exc:  # a check that fails on input it did not expect: still this record's
        raise Unprocessable(f"not a valid HelpRequest v1 ({type(exc).__name__}: {exc})",
                            marks_request=False) from exc


def _routed(request: HelpRequest, decision: RoutingDecision) -> Emit:
    assert decision.center_id is not None
    routed = RequestRouted(request=request, decision=decision)
    return Emit("requests_routed", decision.center_id.encode(), encode(routed.to_json_dict()))


def _log_held(held: Sequence[HeldCommand], change: Advance) -> None:
    """Say what became of the cancels held for a request the intake has just accepted."""
    for command in held:
        applied = (change.detail or {}).get("command_id") == command.command_id
        log.info("held_command_applied", request_id=command.request_id,
                 command_id=command.command_id, command=command.command,
                 result="cancelled" if applied else "already_cancelled")


_Event = TypeVar("_Event", RequestRouted, MeetingBooked)


def _decode(model: type[_Event], value: bytes) -> _Event:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise Unprocessable(f"not a valid {model.__name__}: {exc}") from exc
