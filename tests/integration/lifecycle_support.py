"""A booked and invited request on a real database, for the lifecycle and timed-work tests.

The request goes through the pipeline's own stages (intake, booker, notifier) without a broker;
every invite is kept by :class:`RecordingDelivery` and can be parsed back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from icalendar import Calendar
from sqlalchemy import Engine

from consumers.envelope import Origin
from consumers.routing import route
from consumers.stages import Booking, Invitation, Submission
from scheduler.delivery import DeliveryReceipt, Invite
from scheduler.directory import CenterDirectory
from scheduler.directory_source import DirectorySource
from scheduler.held_commands import HeldCommands
from scheduler.invite_log import InviteLog
from scheduler.jobs import TimedWork, TimedWorkPolicy
from scheduler.lifecycle import Lifecycle
from scheduler.lifecycle_records import LifecycleRecords
from scheduler.meeting_changes import SqlMeetingChanges
from scheduler.reminders import OutboxReminders, ReminderSender
from scheduler.request_store import RequestStore
from scheduler.sql_ledger import SqlBookingLedger
from services.bootstrap import join_url

ORIGIN = Origin("test", 0, 0)
_OUTPUTS = ("requests_routed", "meetings_booked", "invites_delivered")


@dataclass(frozen=True)
class Parsed:
    """The facts of one emitted iTIP message, read back with icalendar."""

    method: str
    uid: str
    sequence: int
    status: str
    start: datetime


def parse(ics: bytes) -> Parsed:
    calendar = Calendar.from_ical(ics)
    (event,) = calendar.events
    return Parsed(str(calendar["METHOD"]), str(event["UID"]), event.sequence,
                  str(event["STATUS"]), event.decoded("DTSTART"))


@dataclass
class RecordingDelivery:
    """A delivery backend that keeps every invite it is given."""

    name: str = "recording"
    tells_removed_attendees: bool = False
    invites: list[Invite] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, invite: Invite) -> DeliveryReceipt:
        with self._lock:
            self.invites.append(invite)
        return DeliveryReceipt(location=f"memory:{invite.meeting.uid}")

    def parsed(self, request_id: str | None = None) -> list[Parsed]:
        with self._lock:
            return [parse(i.ics) for i in self.invites
                    if request_id is None or i.meeting.request_id == request_id]


@dataclass
class World:
    """Stores, stages and the lifecycle ports over one engine, with a settable clock."""

    engine: Engine
    directory: CenterDirectory
    now: datetime
    delivery: RecordingDelivery = field(default_factory=RecordingDelivery)

    def __post_init__(self) -> None:
        self.store = RequestStore(self.engine)
        self.ledger = SqlBookingLedger(self.engine)
        self.records = LifecycleRecords(self.engine)
        feed = DirectorySource.constant(self.directory)
        self.stages = (
            Submission(self.store, feed, self.clock),
            Booking(self.store, feed, self.ledger, self.clock, join_url),
            Invitation(self.store, feed, lambda _center: self.delivery,
                       InviteLog(self.engine), self.ledger, self.clock),
        )

    def clock(self) -> datetime:
        return self.now

    def lifecycle(self, engine: Engine | None = None) -> Lifecycle:
        """The lifecycle ports; pass another engine to act like another process."""
        engine = engine or self.engine
        return Lifecycle(
            store=RequestStore(engine), ledger=SqlBookingLedger(engine),
            changes=SqlMeetingChanges(engine), records=LifecycleRecords(engine),
            directory=lambda: self.directory, deliveries=lambda _center: self.delivery,
            router=route, join_url=join_url)

    def timed_work(self, folder: Path,
                   publish: Callable[..., None] = lambda *_: None,
                   reminders: ReminderSender | None = None, **policy: Any) -> TimedWork:
        """The leader's timed work over this world, on its clock (reminders to the outbox
        ``folder`` unless ``reminders`` says otherwise; ``policy``: TimedWorkPolicy's)."""
        return TimedWork(store=self.store, ledger=self.ledger, records=self.records,
                         lifecycle=self.lifecycle(), directory=lambda: self.directory,
                         reminders=reminders or OutboxReminders(folder), publish=publish,
                         clock=self.clock, held=HeldCommands(self.engine),
                         policy=TimedWorkPolicy(**policy))

    def submit(self, body: dict[str, Any], *, until: int = 3) -> None:
        """Run the body through the first ``until`` stages (3 = booked and invited)."""
        values = [json.dumps(body).encode()]
        for stage, output in zip(self.stages[:until], _OUTPUTS, strict=False):
            values = [emit.value for value in values for emit in stage.handle(value, ORIGIN)
                      if emit.topic == output]
