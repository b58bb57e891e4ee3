"""Cancelling and rescheduling a booked meeting (plain functions over the ports, time passed in).

``cancel`` releases the active meeting (the database decides a race), records the request as
cancelled, and sends METHOD:CANCEL with the booking's UID and the next SEQUENCE through the
backend that delivered the invite. ``reschedule`` routes the request again with a new preferred
window, books under the same policy while the old slot counts as free, swaps the two meetings
in one transaction (revision + 1, same UID) and sends METHOD:REQUEST with SEQUENCE = revision - 1.

A moved meeting's previous place is told when the REQUEST does not tell it (:func:`send_update`,
for the waitlist's moves too): a specialist it was handed over to another specialist from gets a
CANCEL of their own (RFC 5546 §3.2.5), unless the backend is Exchange's, which tells an attendee
an update removed; a meeting that leaves an Exchange organizer's calendar (another center's,
another backend's) is cancelled there.

Both are idempotent. Of two changes based on the same revision exactly one wins; the other gets
``conflict`` (or ``already_cancelled`` when both were cancels). Every message is claimed in the
delivery record before it is sent, so a repeated call never sends it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog

from scheduler.booking import JoinUrl, book, no_join_url
from scheduler.delivery import Invite, InviteDelivery, Method
from scheduler.directory import CenterDirectory
from scheduler.invite_addressing import meeting_specialist
from scheduler.invite_values import InvalidInvite
from scheduler.invites import HANDOVER, build_imip_message, build_invite
from scheduler.ledger import BookingLedger, Span
from scheduler.lifecycle_records import MOVED_AWAY, LifecycleRecords
from scheduler.meeting_changes import MeetingChanged, MeetingChanges, next_revision
from scheduler.request_store import Advance, RequestState, RequestStore, UnknownRequest
from schemas.commands import CommandKind, RequestCommand
from schemas.events import Meeting, RoutingDecision, utc_z
from schemas.help_request import HelpRequest, PreferredWindow

log = structlog.get_logger("fasttrack.lifecycle")

Router = Callable[[HelpRequest, CenterDirectory, datetime], RoutingDecision]


class ChangeResult(StrEnum):
    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    RESCHEDULED = "rescheduled"
    ALREADY_DONE = "already_done"  # the same command_id was applied before
    CONFLICT = "conflict"  # the meeting changed since the revision the caller acted on
    NOT_CHANGEABLE = "not_changeable"  # not booked yet, or ended (escalated, rejected)
    UNAVAILABLE = "unavailable"  # no slot under the policy for the new window


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a cancel or reschedule did, and why."""

    result: ChangeResult
    request_id: str
    detail: str
    meeting: Meeting | None = None  # the freed meeting (cancel) or the new one (reschedule)
    sequence: int | None = None  # SEQUENCE of the message sent, if one was sent
    reasons: list[str] = field(default_factory=list)


def no_earlier_backend(center_id: str, name: str) -> InviteDelivery | None:
    """No center ever had another backend (a directory that does not change)."""
    return None


@dataclass
class Lifecycle:
    """The ports cancel and reschedule work over. ``deliveries(center_id)`` is the center's
    invite backend; ``earlier_backend(center_id, name)`` is the backend of that name the
    center had before the directory gave it another kind, which cancels what it delivered
    (None when this process never had it: the center's current backend is used)."""

    store: RequestStore
    ledger: BookingLedger
    changes: MeetingChanges
    records: LifecycleRecords
    directory: Callable[[], CenterDirectory]
    deliveries: Callable[[str], InviteDelivery]
    router: Router
    join_url: JoinUrl = no_join_url
    earlier_backend: Callable[[str, str], InviteDelivery | None] = no_earlier_backend


def cancel(request_id: str, lc: Lifecycle, now: datetime, *, reason: str = "requested",
           expected_revision: int | None = None, command_id: str | None = None,
           ) -> ChangeOutcome:
    """Cancel the request and its meeting; harmless when it is already cancelled."""
    status = _status(lc, request_id)
    if command_id is not None and _applied(status.timeline, command_id):
        return ChangeOutcome(ChangeResult.ALREADY_DONE, request_id, f"command {command_id} "
                             "was applied before")
    if status.status is RequestState.CANCELLED:
        return _send_cancel(request_id, lc, now, ChangeResult.ALREADY_CANCELLED)
    if status.status.is_final:
        return ChangeOutcome(ChangeResult.NOT_CHANGEABLE, request_id,
                             f"request is {status.status.value}; there is nothing to cancel")
    active = lc.ledger.meeting_for(request_id)
    if expected_revision is not None and (active is None or active.revision != expected_revision):
        return _conflict(request_id, expected_revision, active)
    detail: dict[str, Any] = {"reason": reason}
    if active is not None:
        detail["revision"] = active.revision
    if command_id is not None:
        detail["command_id"] = command_id
    cancelled = Advance(request_id, RequestState.CANCELLED, now, detail)
    if active is None:
        lc.store.advance(request_id, RequestState.CANCELLED, now, detail)
    elif lc.changes.cancel(request_id, active.revision,  # freed and recorded in one transaction
                           also=lambda conn: lc.store.advance_many(conn, [cancelled])) is None:
        return _lost_race(request_id, lc, active.revision)
    outcome = _after_commit(lambda: _send_cancel(request_id, lc, now, ChangeResult.CANCELLED),
                            ChangeOutcome(ChangeResult.CANCELLED, request_id, "cancelled",
                                          active), "cancel")
    if active is not None:
        from scheduler.waitlist import offer_freed_slot  # waitlist builds on this module

        offer_freed_slot(active, lc, now)  # the freed slot goes to whoever waits longest
    return outcome


def reschedule(request_id: str, window: PreferredWindow, lc: Lifecycle, now: datetime, *,
               expected_revision: int | None = None, command_id: str | None = None,
               ) -> ChangeOutcome:
    """Move the booked meeting into ``window`` under the routing and booking policy."""
    status = _status(lc, request_id)
    if command_id is not None and _applied(status.timeline, command_id):
        return ChangeOutcome(ChangeResult.ALREADY_DONE, request_id, f"command {command_id} "
                             "was applied before")
    if status.status not in (RequestState.BOOKED, RequestState.INVITED):
        return ChangeOutcome(ChangeResult.NOT_CHANGEABLE, request_id,
                             f"request is {status.status.value}; only a booked meeting can "
                             "be rescheduled")
    current = lc.ledger.meeting_for(request_id)
    if current is None or (expected_revision is not None
                           and current.revision != expected_revision):
        return _conflict(request_id, expected_revision or 0, current)
    request = lc.records.request(request_id)
    if request is None:
        raise UnknownRequest(request_id)
    directory = lc.directory()
    decision = lc.router(request.model_copy(update={"preferred_window": window}), directory, now)
    if decision.center_id is None:
        return ChangeOutcome(ChangeResult.UNAVAILABLE, request_id, "no center can take the "
                             "request in that window", reasons=list(decision.reasons))
    try:
        outcome = book(decision, directory, _MovingLedger(lc.ledger, lc.changes, current),
                       join_url=lc.join_url)
    except MeetingChanged:
        return _lost_race(request_id, lc, current.revision)
    if outcome.meeting is None or outcome.meeting.revision == current.revision:
        return ChangeOutcome(ChangeResult.UNAVAILABLE, request_id, "no slot is free for the "
                             "new window; the meeting stays as it was",
                             reasons=list(outcome.reasons))
    moved = outcome.meeting
    sequence = moved.revision - 1
    detail: dict[str, Any] = {
        "rescheduled": {"from": utc_z(current.start), "to": utc_z(moved.start),
                        "center_id": moved.center_id, "specialist_id": moved.specialist_id,
                        "revision": moved.revision, "uid": moved.uid, "sequence": sequence,
                        "window": window.model_dump(mode="json", exclude_none=True)},
    }
    if command_id is not None:
        detail["command_id"] = command_id
    lc.store.advance(request_id, RequestState.INVITED, now, detail, moved.center_id)
    done = ChangeOutcome(ChangeResult.RESCHEDULED, request_id, f"moved to {utc_z(moved.start)}",
                         moved, sequence, [str(r) for r in outcome.reasons])

    def announce() -> ChangeOutcome:
        _announce_move(current, moved, request, lc, now)
        return done

    return _after_commit(announce, done, "update")


def _after_commit(send: Callable[[], ChangeOutcome], done: ChangeOutcome,
                  message: str) -> ChangeOutcome:
    """Send what a committed change tells the calendars. A failure does not undo the change:
    the message's claim is settled ``failed``, reconciliation sends it again, and the outcome
    says so."""
    try:
        return send()
    except Exception as exc:
        log.warning("change_message_failed", request_id=done.request_id, message=message,
                    result=str(done.result), error=f"{type(exc).__name__}: {exc}"[:500])
        return replace(done, detail=f"{done.detail}; sending the {message} failed ({exc}) and "
                                    "will be retried")


def send_update(meeting: Meeting, lc: Lifecycle, now: datetime) -> bool:
    """Send the REQUEST of a moved meeting's revision if it was never sent, and tell the
    previous place what the REQUEST does not (for the waitlist's moves, and reconciliation
    after a crash between a move and its update); True if the REQUEST was sent now."""
    request = lc.records.request(meeting.request_id)
    if request is None:
        return False
    previous = lc.records.meeting_revision(meeting.request_id, meeting.revision - 1)
    if previous is None:
        return _deliver(lc, meeting, request, "REQUEST", meeting.revision - 1,
                        lc.deliveries(meeting.center_id), now)
    return _announce_move(previous, meeting, request, lc, now)


def _announce_move(previous: Meeting, moved: Meeting, request: HelpRequest, lc: Lifecycle,
                   now: datetime) -> bool:
    """The REQUEST of ``moved`` to its attendees, and the CANCEL its previous place needs
    (claimed first, sent after the REQUEST even when that fails); True if the REQUEST was
    sent now. A CANCEL that fails is logged, not raised: the move stands, and the claim,
    settled ``failed``, is sent again by reconciliation."""
    told = _claim_moved_away(previous, moved, lc, now)
    try:
        return _deliver(lc, moved, request, "REQUEST", moved.revision - 1,
                        lc.deliveries(moved.center_id), now)
    finally:
        if told is not None:
            recorded_as, backend = told
            try:
                resend(lc, previous, request, "CANCEL", previous.revision, backend, now,
                       recorded_as=recorded_as)
            except Exception as exc:
                log.warning("move_untold", request_id=previous.request_id, uid=previous.uid,
                            revision=previous.revision, message=recorded_as,
                            backend=backend.name, error=str(exc)[:500])


def _claim_moved_away(previous: Meeting, moved: Meeting, lc: Lifecycle,
                      now: datetime) -> tuple[str, InviteDelivery] | None:
    """Claim the CANCEL that tells ``previous``'s place of the move, if it needs one: (how it
    is recorded, the backend that delivered the previous invite). None when that place never
    got an invite, the REQUEST tells it, or the message was claimed before."""
    invites = [s for s in lc.records.sent(previous.uid)
               if s.method == "REQUEST" and s.sequence < moved.revision - 1]
    if not invites:
        return None
    try:
        before = backend_named(lc, previous.center_id, invites[-1].backend)
        directory = lc.directory()
        left, joined = directory.center(previous.center_id), directory.center(moved.center_id)
        if before.tells_removed_attendees:
            same_calendar = (before.name == lc.deliveries(moved.center_id).name
                             and left.mailbox.lower() == joined.mailbox.lower())
            recorded_as = None if same_calendar else MOVED_AWAY
        else:
            handed_over = (meeting_specialist(previous, left).email.lower()
                           != meeting_specialist(moved, joined).email.lower())
            recorded_as = HANDOVER if handed_over else None
    except (LookupError, InvalidInvite) as exc:  # the center or specialist left the directory
        log.warning("move_untold", request_id=previous.request_id, uid=previous.uid,
                    revision=previous.revision, error=str(exc))
        return None
    if recorded_as is None or not lc.records.claim(previous.uid, previous.request_id,
                                                   previous.revision, recorded_as, before.name,
                                                   now):
        return None
    return recorded_as, before


def backend_named(lc: Lifecycle, center_id: str, name: str) -> InviteDelivery:
    """The center's backend called ``name``: its current one, or the one it had before the
    directory gave it another kind (the current one when this process never had that)."""
    backend = lc.deliveries(center_id)
    if backend.name != name:
        backend = lc.earlier_backend(center_id, name) or backend
    return backend


def release_orphan(meeting: Meeting, lc: Lifecycle, now: datetime) -> ChangeOutcome:
    """Free an active meeting whose request already ended (booked while it was being
    cancelled or escalated) and cancel its invite if one went out."""
    if lc.changes.cancel(meeting.request_id, meeting.revision) is None:
        return _lost_race(meeting.request_id, lc, meeting.revision)
    return _send_cancel(meeting.request_id, lc, now, ChangeResult.CANCELLED)


def cancel_sequence(meeting: Meeting, sent_request_sequences: Iterable[int]) -> int:
    """SEQUENCE for the CANCEL of ``meeting``: above every REQUEST sent for its UID.

    Derived from what was sent, not from a counter, so a retried cancel sends the same message.
    """
    return max([meeting.revision, *(s + 1 for s in sent_request_sequences)])


def _send_cancel(request_id: str, lc: Lifecycle, now: datetime,
                 result: ChangeResult) -> ChangeOutcome:
    latest = lc.changes.latest(request_id)
    if latest is None:
        return ChangeOutcome(result, request_id, "cancelled before any meeting was booked")
    meeting, active = latest
    # Booked after the cancel was recorded: free it too.
    if active and lc.changes.cancel(request_id, meeting.revision) is None:
        return _send_cancel(request_id, lc, now, result)
    sent = lc.records.sent(meeting.uid)
    invites = [s for s in sent if s.method == "REQUEST"]
    if not invites:
        return ChangeOutcome(result, request_id, "no invite had been sent; nothing to cancel "
                             "in calendars", meeting)
    sequence = cancel_sequence(meeting, (s.sequence for s in invites))
    request = lc.records.request(request_id)
    if request is None:
        raise UnknownRequest(request_id)
    # The backend that invited, also when the center's backend changed since.
    backend = backend_named(lc, meeting.center_id, invites[-1].backend)
    sent_now = _deliver(lc, meeting, request, "CANCEL", sequence, backend, now)
    return ChangeOutcome(result, request_id, "cancelled" if sent_now else
                         "cancelled; the cancellation had already been sent", meeting, sequence)


def _deliver(lc: Lifecycle, meeting: Meeting, request: HelpRequest, method: Method,
             sequence: int, backend: InviteDelivery, now: datetime) -> bool:
    """Claim, render, send and settle one iTIP message; False if it was claimed before."""
    if not lc.records.claim(meeting.uid, meeting.request_id, sequence, method, backend.name,
                            now):
        return False
    resend(lc, meeting, request, method, sequence, backend, now)
    return True


def resend(lc: Lifecycle, meeting: Meeting, request: HelpRequest, method: Method,
           sequence: int, backend: InviteDelivery, now: datetime, *,
           recorded_as: str | None = None) -> None:
    """Render and send a claimed message and record the outcome (also for retries).
    ``recorded_as``: the claim's method when it is not ``method`` (:data:`HANDOVER`, the
    CANCEL to the specialist alone; :data:`MOVED_AWAY`)."""
    kind = recorded_as or method
    alone = kind == HANDOVER
    center = lc.directory().center(meeting.center_id)
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=now,
                       only_specialist=alone)
    email = build_imip_message(ics, meeting, request, center, method=method, now=now,
                               only_specialist=alone)
    try:
        backend.send(Invite(meeting, request, center, sequence, method, ics, email, alone))
    except Exception as exc:
        lc.records.settle(meeting.uid, sequence, kind, "failed", now, str(exc)[:2000])
        raise
    lc.records.settle(meeting.uid, sequence, kind, "delivered", now)


def _status(lc: Lifecycle, request_id: str) -> Any:
    status = lc.store.status(request_id)
    if status is None:
        raise UnknownRequest(request_id)
    return status


def _applied(timeline: Iterable[Any], command_id: str) -> bool:
    return any((e.detail or {}).get("command_id") == command_id for e in timeline)


def _conflict(request_id: str, expected: int, active: Meeting | None) -> ChangeOutcome:
    now_at = "no active meeting" if active is None else f"revision {active.revision}"
    return ChangeOutcome(ChangeResult.CONFLICT, request_id,
                         f"the meeting is at {now_at}, not revision {expected}", active)


def _lost_race(request_id: str, lc: Lifecycle, revision: int) -> ChangeOutcome:
    latest = lc.changes.latest(request_id)
    if latest is not None and not latest[1] and latest[0].revision == revision:
        return ChangeOutcome(ChangeResult.ALREADY_CANCELLED, request_id,
                             "another call cancelled the meeting at the same time", latest[0])
    return ChangeOutcome(ChangeResult.CONFLICT, request_id, f"revision {revision} was changed "
                         "by another call at the same time",
                         latest[0] if latest is not None else None)


class _MovingLedger:
    """The ledger as ``book`` sees it during a reschedule: the current meeting's slot is free,
    and recording a meeting moves the current one there (revision + 1, same UID)."""

    def __init__(self, ledger: BookingLedger, changes: MeetingChanges, current: Meeting) -> None:
        self._ledger = ledger
        self._changes = changes
        self._current = current

    def meeting_for(self, request_id: str) -> Meeting | None:
        return None

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> Mapping[str, list[Span]]:
        current = self._current
        own = (current.start, current.end)
        return {sid: [s for s in spans if not (sid == current.specialist_id and s == own)]
                for sid, spans in self._ledger.schedules(specialist_ids, start, end).items()}

    def record(self, meeting: Meeting) -> Meeting:
        return self._changes.move(self._current, next_revision(self._current, meeting))

    def release(self, request_id: str) -> Meeting | None:
        raise NotImplementedError("a reschedule never releases through the booking policy")


def apply_command(command: RequestCommand, lc: Lifecycle, now: datetime) -> ChangeOutcome:
    """Carry out a portal's command from the commands topic (redeliveries are harmless)."""
    if command.command is CommandKind.CANCEL:
        return cancel(command.request_id, lc, now, reason="command",
                      command_id=command.command_id)
    assert command.preferred_window is not None  # the model requires it for reschedule
    return reschedule(command.request_id, command.preferred_window, lc, now,
                      command_id=command.command_id)
