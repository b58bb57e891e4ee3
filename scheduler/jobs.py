"""The timed work's job bodies: reminders, the booking SLA, reconciliation, directory changes.

Each job takes only ids, reads the time from the injected clock, re-checks the database before
acting and claims what it sends, so running it twice (two schedulers, a retry, a restart) does
it once. The APScheduler wiring lives in ``services.timed_work``; nothing here imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from scheduler.delivery import DeliveryFailed
from scheduler.directory import CenterDirectory
from scheduler.directory_check import InvalidMeeting, invalid_meetings
from scheduler.held_commands import HeldCommand, HeldCommands
from scheduler.invites import HANDOVER
from scheduler.ledger import BookingLedger
from scheduler.lifecycle import (
    ChangeResult,
    Lifecycle,
    apply_command,
    backend_named,
    release_orphan,
    reschedule,
    resend,
    send_update,
)
from scheduler.lifecycle_records import (
    ANNOUNCE,
    MOVED_AWAY,
    REMINDER_PREFIX,
    RETRYING,
    LifecycleRecords,
    escalation_key,
)
from scheduler.reminders import (
    DEFAULT_OFFSETS,
    MAX_KIND_LENGTH,
    Reminder,
    ReminderSender,
    build_reminder,
    due_reminders,
    reminder_times,
)
from scheduler.request_store import RequestState, RequestStore, canonical_json
from schemas.commands import parse_request_command
from schemas.events import MeetingBooked, RequestEscalated, RequestRouted, RoutingDecision
from schemas.help_request import PreferredWindow

#: ``publish(topic, key, value[, headers])``: ``topic`` is a TopicNames attribute, e.g.
#: ``requests_routed``.
Publish = Callable[..., None]
log = structlog.get_logger("fasttrack.timed_work")
REVALIDATE_AHEAD = timedelta(days=400)  # past any horizon_days (<= 366) plus a window
#: How far before the previous revalidation's start the next one looks for changed meetings:
#: a transaction stamps its rows before it commits, and the workers' clocks may differ.
REVALIDATE_OVERLAP = timedelta(minutes=1)


@dataclass(frozen=True)
class TimedWorkPolicy:
    """How the timed work behaves; the defaults are the product's."""

    reminders: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_OFFSETS))
    booking_sla: timedelta = timedelta(minutes=15)
    stale_after: timedelta = timedelta(minutes=2)  # in flight this long: re-drive it
    #: A command its request could not take this long (not accepted; a reschedule's not
    #: booked) is dead-lettered.
    hold_commands_for: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        for kind, offset in self.reminders.items():
            if not kind or len(kind) > MAX_KIND_LENGTH or offset <= timedelta(0):
                raise ValueError(f"reminders: {kind!r}: a name of 1-{MAX_KIND_LENGTH} "
                                 "characters and a positive offset")


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A one-off job to have in the job store: its id says what it is, so adding it twice
    replaces it and a moved meeting (new revision) gets new ids."""

    id: str
    run_at: datetime
    args: tuple[str, str, int]


def reminder_job_id(request_id: str, kind: str, revision: int) -> str:
    return f"reminder:{request_id}:{kind}:r{revision}"


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class TimedWork:
    """The job bodies over the ports; one per process that may lead."""

    store: RequestStore
    ledger: BookingLedger
    records: LifecycleRecords
    lifecycle: Lifecycle
    directory: Callable[[], CenterDirectory]
    reminders: ReminderSender
    publish: Publish
    clock: Callable[[], datetime]
    held: HeldCommands
    policy: TimedWorkPolicy = field(default_factory=TimedWorkPolicy)
    _redriven: dict[str, datetime] = field(default_factory=dict)
    #: The directory the last complete revalidation checked every meeting against, and when
    #: it started.
    _revalidated: tuple[CenterDirectory, datetime] | None = None

    # --- reminders -------------------------------------------------------------------------

    def plan_reminders(self) -> list[PlannedJob]:
        """Reminder jobs for invited meetings starting within the longest offset (and a
        margin), except those already claimed; a missed one is planned for now."""
        now = self.clock()
        horizon = max(self.policy.reminders.values()) + timedelta(hours=1)
        meetings = self.records.meetings_starting(now, now + horizon)
        claimed = self.records.claimed([m.uid for m in meetings])
        planned = []
        for meeting in meetings:
            for kind, at in reminder_times(meeting.start, self.policy.reminders).items():
                if (meeting.uid, meeting.revision, REMINDER_PREFIX + kind) in claimed:
                    continue
                planned.append(PlannedJob(
                    reminder_job_id(meeting.request_id, kind, meeting.revision), max(at, now),
                    (meeting.request_id, kind, meeting.revision)))
        return planned

    def send_reminder(self, request_id: str, kind: str, revision: int) -> str:
        """Send one reminder if the meeting is still invited at ``revision`` and it is due.

        A transient failure (the mail server down, a 4xx reply) is settled ``retrying``, and
        the next planning (each minute) sends it again while it is due; any other failure is
        settled ``failed`` and raised."""
        meeting = self.ledger.meeting_for(request_id)
        if meeting is None or meeting.revision != revision:
            return "moved or cancelled"
        status = self.store.status(request_id)
        if status is None or status.status is not RequestState.INVITED:
            return "not invited"
        now = self.clock()
        plan = due_reminders(meeting.start, self.policy.reminders, now)
        method = REMINDER_PREFIX + kind
        if kind in plan.skip:
            self.records.claim(meeting.uid, request_id, revision, method, "none", now)
            self.records.settle(meeting.uid, revision, method, "skipped", now)
            return "overtaken by a later reminder"
        if plan.send != kind:
            return "not due"
        center = self.directory().center(meeting.center_id)
        if not self.records.claim(meeting.uid, request_id, revision, method,
                                  self.reminders.backend_for(center), now, again_if=RETRYING):
            return "already sent"
        request = self.records.request(request_id)
        assert request is not None
        email = build_reminder(meeting, request, center, kind, now=now)
        try:
            where = self.reminders.send(Reminder(meeting, request, center, kind, email))
        except Exception as exc:
            retry = isinstance(exc, DeliveryFailed) and exc.transient
            self.records.settle(meeting.uid, revision, method, RETRYING if retry else "failed",
                                now, str(exc)[:2000])
            if not retry:
                raise
            log.warning("reminder_retrying", request_id=request_id, kind=kind,
                        error=str(exc)[:500])
            return "retrying"
        self.records.settle(meeting.uid, revision, method, "delivered", now, where)
        return "sent"

    # --- booking SLA -----------------------------------------------------------------------

    def sla_sweep(self) -> list[str]:
        """Escalate every request not booked within the SLA; return their ids."""
        now = self.clock()
        due = self.records.unbooked_since(now - self.policy.booking_sla)
        return [d.request_id for d in due if self.sla_check(d.request_id)]

    def sla_check(self, request_id: str) -> bool:
        """Escalate the request if it is still not booked ``booking_sla`` after acceptance."""
        now = self.clock()
        status = self.store.status(request_id)
        if status is None or status.status not in (RequestState.ACCEPTED, RequestState.ROUTED):
            return False
        accepted_at = status.timeline[0].at
        if now < accepted_at + self.policy.booking_sla:
            return False
        minutes = int(self.policy.booking_sla.total_seconds() // 60)
        detail = f"not booked within {minutes} minutes of acceptance (still {status.status})"
        if self._escalate(request_id, now, {"stage": "sla", "reasons": ["sla_breached"],
                                            "detail": detail}) is not RequestState.ESCALATED:
            return False
        log.warning("sla_escalated", request_id=request_id, detail=detail)
        return True

    def _escalate(self, request_id: str, now: datetime, detail: dict[str, Any]) -> RequestState:
        """Record the escalation and announce it on ``requests.escalated``; the request's
        status after (not escalated when it had ended otherwise). The announcement is claimed
        first: one whose publish fails (or is cut short) is published by reconciliation,
        once."""
        key = escalation_key(request_id)
        claimed = self.records.claim(key, request_id, 0, ANNOUNCE, "kafka", now)
        state = self.store.advance(request_id, RequestState.ESCALATED, now, detail)
        if claimed and state is not RequestState.ESCALATED:
            self.records.settle(key, 0, ANNOUNCE, "moot", now, str(state))
        elif claimed:
            self._announce(request_id, now)
        return state

    def _announce(self, request_id: str, now: datetime) -> bool:
        """Publish the request's escalation from what its timeline recorded, and settle the
        claim; a failure is settled ``failed`` and logged, for reconciliation."""
        key = escalation_key(request_id)
        status = self.store.status(request_id)
        entries = [] if status is None else [e for e in status.timeline
                                             if e.status is RequestState.ESCALATED]
        if status is None or status.status is not RequestState.ESCALATED or not entries:
            self.records.settle(key, 0, ANNOUNCE, "moot", now)
            return False
        recorded = entries[-1].detail or {}
        # "directory" (revalidation) is announced as "booking": the event's enum has no other.
        stage: Literal["sla", "booking"] = "sla" if recorded.get("stage") == "sla" else "booking"
        event = RequestEscalated(request_id=request_id, stage=stage, reasons=[],
                                 detail=str(recorded.get("detail", "")),
                                 request=self.records.request(request_id),
                                 escalated_at=entries[-1].at)
        try:
            self.publish("requests_escalated", request_id.encode(),
                         _encode(event.to_json_dict()))
        except Exception as exc:
            self.records.settle(key, 0, ANNOUNCE, "failed", now, f"{type(exc).__name__}: {exc}"
                                [:500])
            log.error("escalation_unannounced", request_id=request_id,
                      error=f"{type(exc).__name__}: {exc}"[:500])
            return False
        self.records.settle(key, 0, ANNOUNCE, "delivered", now)
        return True

    # --- directory changes ----------------------------------------------------------------

    def revalidate_bookings(self) -> dict[str, int]:
        """Move each booked or invited future meeting the current directory no longer allows
        (closure, holiday, changed hours, specialist or center gone) under the same policy,
        with an updated invite (same UID, higher SEQUENCE); escalate those no slot can take.

        Every meeting is checked when the directory is not the one the last complete run
        checked against (or on a first run); otherwise only those booked, moved or invited
        since that run started (less :data:`REVALIDATE_OVERLAP`): a worker that had not yet
        read the new directory may have booked against the old one. A meeting the directory
        allowed stays allowed until the directory changes, so the run costs what changed,
        not every future meeting (a soak's leader walked 110,000 of them a minute).
        """
        now = self.clock()
        counts = {"rescheduled": 0, "escalated": 0}
        directory = self.directory()
        since = None
        if self._revalidated is not None and self._revalidated[0] == directory:
            since = self._revalidated[1] - REVALIDATE_OVERLAP
        for page in self.records.meeting_pages(now, now + REVALIDATE_AHEAD,
                                               changed_since=since):
            for invalid in invalid_meetings(directory, page, now):
                result = self._revalidate(invalid, now)
                if result in counts:
                    counts[result] += 1
        self._revalidated = (directory, now)
        if any(counts.values()):
            log.info("bookings_revalidated", **counts)
        return counts

    def _revalidate(self, invalid: InvalidMeeting, now: datetime) -> str:
        meeting, reason = invalid
        request = self.records.request(meeting.request_id)
        if request is None:
            return "unknown"
        window = request.preferred_window or PreferredWindow(earliest=now)
        outcome = reschedule(meeting.request_id, window, self.lifecycle, now,
                             expected_revision=meeting.revision)
        log.info("booking_revalidated", request_id=meeting.request_id, uid=meeting.uid,
                 reason=str(reason), result=str(outcome.result), detail=outcome.detail)
        if outcome.result is ChangeResult.RESCHEDULED:
            return "rescheduled"
        if outcome.result is not ChangeResult.UNAVAILABLE:
            return str(outcome.result)  # changed or ended meanwhile: the next run re-checks
        detail = (f"the directory no longer allows the meeting at {meeting.start.isoformat()} "
                  f"({reason}) and no other slot is free: {outcome.detail}")
        state = self._escalate(meeting.request_id, now, {
            "stage": "directory", "reasons": [str(reason), *outcome.reasons], "detail": detail})
        if state is not RequestState.ESCALATED:
            return str(state)
        log.warning("booking_escalated", request_id=meeting.request_id, detail=detail)
        try:
            release_orphan(meeting, self.lifecycle, now)  # frees the slot, sends the CANCEL
        except LookupError as exc:  # the center is gone, so its CANCEL cannot be rendered
            log.error("cancel_unsendable", request_id=meeting.request_id, uid=meeting.uid,
                      error=str(exc))
        return "escalated"

    # --- reconciliation --------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Drive on what is stuck: re-publish in-flight requests from the database, free
        meetings of ended requests, send updates and cancels that a crash left unsent, apply
        or give up on commands held for requests that had not arrived."""
        now = self.clock()
        counts = {"redriven": 0, "orphans": 0, "updates": 0, "resent": 0,
                  "commands_applied": 0, "commands_expired": 0}
        counts["commands_applied"] = self._each_held(
            self.held.ready(now - self.policy.stale_after), self._apply_held, now)
        counts["commands_expired"] = self._each_held(
            self.held.waiting(now - self.policy.hold_commands_for), self._expire_held, now)
        self._redriven = {request_id: at for request_id, at in self._redriven.items()
                          if now - at < self.policy.stale_after}  # the rest may go again
        for pending in self.store.non_final(now - self.policy.stale_after):
            last = self._redriven.get(pending.request_id)
            if last is not None and now - last < self.policy.stale_after:
                continue
            if self._redrive(pending.request_id, pending.status):
                self._redriven[pending.request_id] = now
                counts["redriven"] += 1
        for meeting in self.records.orphaned_meetings():
            release_orphan(meeting, self.lifecycle, now)
            counts["orphans"] += 1
        for meeting in self.records.uninvited_moves():
            counts["updates"] += send_update(meeting, self.lifecycle, now)
        counts["resent"] = self._resend_stale_claims(now)
        if any(counts.values()):
            log.info("reconciled", **counts)
        return counts

    @staticmethod
    def _each_held(commands: list[HeldCommand],
                   settle: Callable[[HeldCommand, datetime], bool], now: datetime) -> int:
        """``settle`` each command; one that fails is logged and left held, and the others
        (and the rest of reconciliation) go on."""
        settled = 0
        for command in commands:
            try:
                settled += settle(command, now)
            except Exception as exc:
                log.error("held_command_failed", request_id=command.request_id,
                          command_id=command.command_id,
                          error=f"{type(exc).__name__}: {exc}"[:500])
        return settled

    def _apply_held(self, command: HeldCommand, now: datetime) -> bool:
        """Apply a held command its request can take by now (a race left it held, or a
        reschedule waited for the booking), then release it: a command is harmless twice
        (its command_id), so a crash in between only applies it again."""
        outcome = apply_command(parse_request_command(command.payload), self.lifecycle, now)
        self.held.release(command.command_id)
        log.info("held_command_applied", request_id=command.request_id,
                 command_id=command.command_id, command=command.command,
                 result=str(outcome.result))
        return True

    def _expire_held(self, command: HeldCommand, now: datetime) -> bool:
        """Dead-letter a command that waited ``hold_commands_for`` in vain: in the table in
        the transaction that stops holding it, then on the topic (if that fails, ops still
        see it in the table, and can redrive it from there)."""
        minutes = int(self.policy.hold_commands_for.total_seconds() // 60)
        known = self.store.status(command.request_id) is not None
        error_class = "RequestNotBooked" if known else "UnknownRequest"
        message = (f"request {command.request_id} was not "
                   f"{'booked' if known else 'accepted'} within {minutes} minutes of its "
                   f"{command.command} command {command.command_id}")
        headers = {**command.headers, "error_class": error_class, "error_message": message,
                   "origin_topic": command.origin_topic,
                   "origin_partition": str(command.origin_partition),
                   "origin_offset": str(command.origin_offset), "attempts": "1"}
        if not self.held.expire(command.command_id, lambda conn: self.store.add_deadletter(
                conn, request_id=command.request_id, origin_topic=command.origin_topic,
                origin_partition=command.origin_partition, origin_offset=command.origin_offset,
                error_class=error_class, message=message, payload=command.payload,
                headers=headers, now=now, key=command.key)):
            return False  # the intake took it meanwhile
        log.error("dead_lettered", topic=command.origin_topic,
                  partition=command.origin_partition, offset=command.origin_offset,
                  request_id=command.request_id, error=error_class)
        try:
            self.publish("requests_deadletter", command.key or command.request_id.encode(),
                         command.payload, {k: v.encode() for k, v in headers.items()})
        except Exception as exc:
            log.error("deadletter_unpublished", request_id=command.request_id,
                      command_id=command.command_id, error=f"{type(exc).__name__}: {exc}"[:500])
        return True

    def _redrive(self, request_id: str, status: RequestState) -> bool:
        body = self.records.body(request_id)
        if body is None:
            return False
        key = request_id.encode()
        if status is RequestState.ACCEPTED:
            self.publish("requests_submitted", key, canonical_json(body).encode())
            return True
        request = self.records.request(request_id)
        stored = self.store.status(request_id)
        assert request is not None and stored is not None
        if status is RequestState.ROUTED:
            decisions = [e.detail["decision"] for e in stored.timeline
                         if e.status is RequestState.ROUTED and e.detail
                         and "decision" in e.detail]
            if not decisions:
                return False
            decision = RoutingDecision.model_validate(decisions[-1])
            routed = RequestRouted(request=request, decision=decision)
            self.publish("requests_routed", str(decision.center_id).encode(),
                         _encode(routed.to_json_dict()))
            return True
        meeting = self.ledger.meeting_for(request_id)
        if meeting is None:
            return False
        booked_at = next((e.at for e in reversed(stored.timeline)
                          if e.status is RequestState.BOOKED), self.clock())
        booked = MeetingBooked(request=request, meeting=meeting, booked_at=booked_at)
        self.publish("meetings_booked", key, _encode(booked.to_json_dict()))
        return True

    def _resend_stale_claims(self, now: datetime) -> int:
        resent = 0
        for claim in self.records.stale_claims(now - self.policy.stale_after):
            if claim.method == ANNOUNCE:
                resent += self._announce(claim.request_id, now)
                continue
            request = self.records.request(claim.request_id)
            if claim.method in (HANDOVER, MOVED_AWAY):  # the revision a move left behind
                left = self.records.meeting_revision(claim.request_id, claim.sequence)
                if left is None or request is None:
                    continue
                resend(self.lifecycle, left, request, "CANCEL", claim.sequence,
                       backend_named(self.lifecycle, left.center_id, claim.backend), now,
                       recorded_as=claim.method)
                resent += 1
                continue
            latest = self.lifecycle.changes.latest(claim.request_id)
            if latest is None or request is None:
                continue
            meeting, active = latest
            if claim.method == "REQUEST" and not (active and meeting.revision == claim.sequence
                                                  + 1):
                continue  # that revision was replaced; its update is moot
            # Where it was claimed for, also when the center's backend changed since: a
            # CANCEL must reach the calendar its meeting's REQUEST reached.
            backend = backend_named(self.lifecycle, meeting.center_id, claim.backend)
            resend(self.lifecycle, meeting, request, claim.method,  # type: ignore[arg-type]
                   claim.sequence, backend, now)
            resent += 1
        return resent
