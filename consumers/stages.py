"""The pipeline's stages: decode, call the core, record in the database, say what to emit.

Each stage commits its database work before returning, and its agent produces the emits after.
A crash in between means redelivery, so every stage is idempotent: on a record it has seen, it
re-emits its output only while the next stage has not finished (nothing lost, nothing doubled).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog
from pydantic import ValidationError

from consumers.envelope import MAX_RECORD_BYTES, Emit, Origin, Unprocessable, encode
from consumers.routing import route
from scheduler.booking import JoinUrl, book
from scheduler.delivery import DeliveryFailed, Invite, InviteDelivery
from scheduler.delivery_retry import send_with_retry
from scheduler.directory_source import DirectoryFeed
from scheduler.invite_log import InviteLog
from scheduler.invites import build_imip_message, build_invite
from scheduler.ledger import BookingLedger, MeetingLinks
from scheduler.lifecycle import Lifecycle, apply_command
from scheduler.request_store import (
    Acceptance,
    RequestState,
    RequestStore,
    UnknownRequest,
    canonical_body_hash,
)
from schemas.commands import parse_request_command
from schemas.errors import InvalidMessage
from schemas.events import (
    InviteDelivered,
    MeetingBooked,
    Reason,
    RequestEscalated,
    RequestRouted,
    RoutingDecision,
)
from schemas.help_request import HelpRequest, parse_help_request

Clock = Callable[[], datetime]
log = structlog.get_logger("fasttrack.pipeline")


@dataclass
class Submission:
    """``requests.submitted`` → validate, de-duplicate, record, route → routed or escalated."""

    store: RequestStore
    directory: DirectoryFeed
    clock: Clock

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        if len(value) > MAX_RECORD_BYTES:
            raise Unprocessable(f"record of {len(value)} bytes is over {MAX_RECORD_BYTES}",
                                marks_request=False)
        try:
            body = json.loads(value)
            request = parse_help_request(body)
        except (ValueError, InvalidMessage) as exc:
            raise Unprocessable(f"not a valid HelpRequest v1: {exc}",
                                marks_request=False) from exc
        now = self.clock()
        outcome = self.store.accept(request, canonical_body_hash(body), now, body)
        if outcome.kind is Acceptance.CONFLICT:
            raise Unprocessable(f"request_id {request.request_id} was already submitted "
                                "with a different body", request.request_id,
                                marks_request=False)
        if outcome.kind is Acceptance.DUPLICATE and outcome.status is not RequestState.ACCEPTED:
            return self._resend(request) if outcome.status is RequestState.ROUTED else []
        decision = route(request, self.directory(), now)
        if decision.center_id is None:
            return escalate(self.store, request, "routing", decision.reasons, now, decision)
        self.store.advance(request.request_id, RequestState.ROUTED, now,
                           {"decision": decision.to_json_dict()}, decision.center_id)
        return [_routed(request, decision)]

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
        request, decision = routed.request, routed.decision
        status = self.store.status(request.request_id)
        if status is None or status.status not in (RequestState.ROUTED, RequestState.BOOKED):
            return []  # unknown here, finished, cancelled or escalated: nothing to do
        now = self.clock()
        outcome = book(decision, self.directory(), self.ledger,
                       join_url=self.join_url)
        if outcome.meeting is None:
            return escalate(self.store, request, "booking", outcome.reasons, now, decision)
        meeting = outcome.meeting
        self.store.advance(request.request_id, RequestState.BOOKED, now,
                           {"meeting": meeting.to_json_dict(), "reasons": outcome.reasons},
                           meeting.center_id)
        booked = MeetingBooked(request=request, meeting=meeting, reasons=outcome.reasons,
                               booked_at=now)
        return [Emit("meetings_booked", request.request_id.encode(),
                     encode(booked.to_json_dict()))]


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
        request, meeting = booked.request, booked.meeting
        status = self.store.status(request.request_id)
        if status is None or status.status is not RequestState.BOOKED:
            return []  # already invited, or cancelled/escalated since
        now = self.clock()
        center = self.directory().center(meeting.center_id)
        backend = self.deliveries(center.id)
        sequence = meeting.revision - 1
        ics = build_invite(meeting, request, center, sequence=sequence, method="REQUEST", now=now)
        message = build_imip_message(ics, meeting, request, center, method="REQUEST", now=now)
        try:
            receipt = send_with_retry(backend, Invite(meeting, request, center, sequence,
                                                      "REQUEST", ics, message))
        except DeliveryFailed as exc:
            self.log.record(meeting.uid, request.request_id, sequence, "REQUEST", backend.name,
                            "failed", now, detail=str(exc)[:500])
            raise  # the runner retries the record, then dead-letters it
        location = receipt.location
        if receipt.join_url and receipt.join_url != meeting.join_url:
            self.links.set_join_url(request.request_id, receipt.join_url)
        self.log.record(meeting.uid, request.request_id, sequence, "REQUEST", backend.name,
                        "delivered", now)
        self.store.advance(request.request_id, RequestState.INVITED, now,
                           {"uid": meeting.uid, "sequence": sequence, "backend": backend.name})
        delivered = InviteDelivered(
            request_id=request.request_id, backend=backend.name, uid=meeting.uid,
            sequence=sequence, method="REQUEST", status="delivered", location=location,
            delivered_at=now,
        )
        return [Emit("invites_delivered", request.request_id.encode(),
                     encode(delivered.to_json_dict()))]


@dataclass
class Commands:
    """``requests.commands`` → cancel or reschedule a request (schemas/request_command.v1.json)."""

    lifecycle: Lifecycle
    clock: Clock

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        try:
            command = parse_request_command(value)
        except InvalidMessage as exc:
            raise Unprocessable(f"not a valid RequestCommand v1: {exc}",
                                marks_request=False) from exc
        try:
            outcome = apply_command(command, self.lifecycle, self.clock())
        except UnknownRequest as exc:
            raise Unprocessable(str(exc), command.request_id, marks_request=False) from exc
        log.info("command_applied", request_id=command.request_id, command=command.command,
                 result=str(outcome.result))
        return []


def escalate(store: RequestStore, request: HelpRequest, stage: str, reasons: list[Reason],
             now: datetime, decision: RoutingDecision | None = None) -> list[Emit]:
    """Record and announce that a request cannot go on without people."""
    detail = ", ".join(reasons) or "unknown"
    store.advance(request.request_id, RequestState.ESCALATED, now,
                  {"stage": stage, "reasons": list(reasons)})
    event = RequestEscalated(request_id=request.request_id, stage=stage,  # type: ignore[arg-type]
                             reasons=reasons, detail=detail, request=request,
                             decision=decision, escalated_at=now)
    return [Emit("requests_escalated", request.request_id.encode(),
                 encode(event.to_json_dict()))]


def _routed(request: HelpRequest, decision: RoutingDecision) -> Emit:
    assert decision.center_id is not None
    routed = RequestRouted(request=request, decision=decision)
    return Emit("requests_routed", decision.center_id.encode(), encode(routed.to_json_dict()))


_Event = TypeVar("_Event", RequestRouted, MeetingBooked)


def _decode(model: type[_Event], value: bytes) -> _Event:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise Unprocessable(f"not a valid {model.__name__}: {exc}") from exc
