"""The composition root: settings in, the wired pipeline out. Nothing else builds clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from consumers.app import Stages
from consumers.routing import route
from consumers.stages import Booking, Commands, Invitation, Submission
from scheduler.caldav_delivery import CalDavDelivery
from scheduler.calendar_ledger import CalendarAwareLedger
from scheduler.db import create_engine_for
from scheduler.delivery import BusyCalendar, InviteDelivery
from scheduler.delivery_settings import parse_settings
from scheduler.directory import Center, CenterDirectory, default_directory
from scheduler.directory_source import DirectorySource
from scheduler.ews_delivery import EwsDelivery
from scheduler.graph_delivery import GraphDelivery
from scheduler.invite_log import InviteLog
from scheduler.jobs import Publish, TimedWork, TimedWorkPolicy
from scheduler.lifecycle import Lifecycle
from scheduler.lifecycle_records import LifecycleRecords
from scheduler.meeting_changes import SqlMeetingChanges
from scheduler.outbox import OutboxDelivery, OutboxSettings
from scheduler.reminders import OutboxReminders
from scheduler.request_store import RequestStore
from scheduler.smtp_delivery import SmtpDelivery
from scheduler.sql_ledger import SqlBookingLedger
from services.database import upgrade_database
from services.settings import Settings

DEFAULT_JOIN_URL = "https://meet.example.com/fasttrack/{meeting_id}"
DIRECTORY_CHECK_SECONDS = 5.0


class DeliveryUnavailable(ValueError):
    """A center's ``delivery`` block cannot be used (bad settings, missing secret)."""


def utc_now() -> datetime:
    """The service's clock; the core never calls it, it is handed the time."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Everything a worker or the gateway shares, built once from the settings."""

    settings: Settings
    engine: Engine
    directory_source: DirectorySource
    store: RequestStore
    clock: Callable[[], datetime]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> CenterDirectory:
        """The directory as it is now (the file is re-read when it changes)."""
        return self.directory_source()

    @cached_property
    def backends(self) -> dict[str, InviteDelivery]:
        return build_deliveries(self.directory, self.settings.resolved_outbox_dir, self.env)

    def lifecycle(self) -> Lifecycle:
        """Cancel and reschedule over the same ledgers and backends as the pipeline."""
        return Lifecycle(
            store=self.store, ledger=SqlBookingLedger(self.engine, self.clock),
            changes=SqlMeetingChanges(self.engine, self.clock),
            records=LifecycleRecords(self.engine),
            directory=self.directory_source, deliveries=self.backends.__getitem__,
            router=route, join_url=join_url,
            backends={b.name: b for b in self.backends.values()})

    def timed_work(self, publish: Publish) -> TimedWork:
        """Reminders, the booking SLA and reconciliation; ``publish`` re-drives stuck requests."""
        policy = TimedWorkPolicy(reminders=self.settings.reminder_offsets(),
                                 booking_sla=timedelta(minutes=self.settings.booking_sla_minutes))
        return TimedWork(
            store=self.store, ledger=SqlBookingLedger(self.engine, self.clock),
            records=LifecycleRecords(self.engine), lifecycle=self.lifecycle(),
            directory=self.directory_source,
            reminders=OutboxReminders(self.settings.resolved_outbox_dir), publish=publish,
            clock=self.clock, policy=policy)

    def stages(self) -> Stages:
        backends = self.backends
        calendars = {cid: b for cid, b in backends.items() if isinstance(b, BusyCalendar)}
        ledger = SqlBookingLedger(self.engine, self.clock)
        booking_ledger = CalendarAwareLedger.for_directory(ledger, self.directory, calendars)
        return Stages(
            submission=Submission(self.store, self.directory_source, self.clock),
            booking=Booking(self.store, self.directory_source, booking_ledger, self.clock,
                            join_url),
            invitation=Invitation(self.store, self.directory_source, backends.__getitem__,
                                  InviteLog(self.engine), ledger, self.clock),
            commands=Commands(self.lifecycle(), self.clock),
        )


def build_deliveries(directory: CenterDirectory, outbox_dir: Path,
                     env: Mapping[str, str]) -> dict[str, InviteDelivery]:
    """One delivery backend per center, built once so a bad ``delivery`` block fails at start."""
    outbox = OutboxDelivery(outbox_dir)
    backends: dict[str, InviteDelivery] = {}
    for center in directory.centers:
        settings = center.delivery.settings
        try:
            match center.delivery.backend:
                case "outbox":
                    parse_settings(OutboxSettings, settings, "outbox")
                    backends[center.id] = outbox
                case "smtp":
                    backends[center.id] = SmtpDelivery.from_settings(settings, env)
                case "caldav":
                    backends[center.id] = CalDavDelivery.from_settings(settings, env)
                case "ews":
                    backends[center.id] = EwsDelivery.from_settings(
                        settings, env, organizer=str(center.mailbox))
                case "graph":
                    backends[center.id] = GraphDelivery.from_settings(
                        settings, env, organizer=str(center.mailbox))
        except ValueError as exc:
            raise DeliveryUnavailable(f"center {center.id}: {exc}") from exc
    return backends


def join_url(center: Center, uid: str) -> str | None:
    """The online meeting link: the center's ``delivery.join_url_template``, or the default.

    None for Graph centers: Teams makes the link, and the notifier records it from the receipt.
    """
    if center.delivery.backend == "graph":
        return None
    template = str(center.delivery.settings.get("join_url_template", DEFAULT_JOIN_URL))
    return template.format(meeting_id=uid.split("@", 1)[0], center_id=center.id)


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Load the directory, migrate the database when asked, and build the stores."""
    directory = (DirectorySource.watching(settings.directory,
                                          check_seconds=DIRECTORY_CHECK_SECONDS)
                 if settings.directory else DirectorySource.constant(default_directory()))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if migrate:
        upgrade_database(url)
    engine = create_engine_for(url)
    return Runtime(settings, engine, directory, RequestStore(engine), utc_now,
                   dict(os.environ))
