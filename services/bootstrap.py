"""The composition root: settings in, the wired pipeline out. Nothing else builds clients."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from scheduler.directory import Center, CenterDirectory, Delivery, default_directory
from scheduler.directory_source import DirectorySource
from scheduler.ews_delivery import EwsDelivery
from scheduler.graph_delivery import GraphDelivery
from scheduler.held_commands import HeldCommands
from scheduler.invite_log import InviteLog
from scheduler.jobs import Publish, TimedWork, TimedWorkPolicy
from scheduler.lifecycle import Lifecycle
from scheduler.lifecycle_records import LifecycleRecords
from scheduler.meeting_changes import SqlMeetingChanges
from scheduler.outbox import OutboxDelivery, OutboxSettings
from scheduler.reminders import CenterReminders, OutboxReminders
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

    deliveries: CenterDeliveries = field(init=False)

    def __post_init__(self) -> None:
        """Build every center's backend now (DeliveryUnavailable: a ``delivery`` block that
        cannot be used), and a reloaded directory's before it is served."""
        self.deliveries = CenterDeliveries(self.directory_source,
                                           self.settings.resolved_outbox_dir, self.env)
        self.directory_source.add_check(self.deliveries.prepare)

    def lifecycle(self) -> Lifecycle:
        """Cancel and reschedule over the same ledgers and backends as the pipeline."""
        return Lifecycle(
            store=self.store, ledger=SqlBookingLedger(self.engine, self.clock),
            changes=SqlMeetingChanges(self.engine, self.clock),
            records=LifecycleRecords(self.engine),
            directory=self.directory_source, deliveries=self.deliveries,
            router=route, join_url=join_url, earlier_backend=self.deliveries.earlier)

    def timed_work(self, publish: Publish) -> TimedWork:
        """Reminders, the booking SLA and reconciliation; ``publish`` re-drives stuck requests."""
        policy = TimedWorkPolicy(reminders=self.settings.reminder_offsets(),
                                 booking_sla=timedelta(minutes=self.settings.booking_sla_minutes),
                                 hold_commands_for=timedelta(
                                     minutes=self.settings.hold_commands_minutes))
        return TimedWork(
            store=self.store, ledger=SqlBookingLedger(self.engine, self.clock),
            records=LifecycleRecords(self.engine), lifecycle=self.lifecycle(),
            directory=self.directory_source,
            reminders=CenterReminders(OutboxReminders(self.settings.resolved_outbox_dir),
                                      self.deliveries),
            publish=publish, clock=self.clock, held=HeldCommands(self.engine), policy=policy)

    def stages(self) -> Stages:
        ledger = SqlBookingLedger(self.engine, self.clock)
        booking_ledger = CalendarAwareLedger(ledger, self.directory_source,
                                             self.deliveries.calendar)
        return Stages(
            submission=Submission(self.store, self.directory_source, self.clock),
            booking=Booking(self.store, self.directory_source, booking_ledger, self.clock,
                            join_url),
            invitation=Invitation(self.store, self.directory_source, self.deliveries,
                                  InviteLog(self.engine), ledger, self.clock),
            commands=Commands(self.lifecycle(), self.clock, HeldCommands(self.engine)),
        )


class CenterDeliveries:
    """Each center's invite backend, for the directory as it is re-read.

    :meth:`prepare` builds the backends of a directory's new or changed ``delivery`` blocks:
    as a check of the directory source (``DirectorySource.add_check``), for the directory at
    start, so a bad block stops the worker there, and for each reloaded one before it is
    served, so a bad edit is refused like an invalid file. A center that a reload removed
    keeps its backend, and a center given another kind of backend keeps its earlier one
    (:meth:`earlier`): what they delivered can still be moved or cancelled where it was sent.
    """

    def __init__(self, directory: Callable[[], CenterDirectory], outbox_dir: Path,
                 env: Mapping[str, str]) -> None:
        """``directory``: the directory as it is now; reading it lets a changed file be
        loaded (and :meth:`prepare` called) before a backend is looked up. Nothing is built
        until :meth:`prepare`."""
        self._directory = directory
        self._outbox = OutboxDelivery(outbox_dir)
        self._env = env
        self._lock = threading.Lock()
        self._built: dict[str, tuple[Delivery, InviteDelivery]] = {}
        self._earlier: dict[tuple[str, str], InviteDelivery] = {}

    def prepare(self, directory: CenterDirectory) -> None:
        """Build the backends of ``directory``'s new or changed ``delivery`` blocks; raises
        :class:`DeliveryUnavailable`, changing nothing, when one cannot be built."""
        with self._lock:
            built, earlier = dict(self._built), dict(self._earlier)
            for center in directory.centers:
                known = built.get(center.id)
                if known is None or known[0] != center.delivery:  # backend and settings
                    built[center.id] = (center.delivery, self._build(center))
                    if known is not None:
                        earlier[(center.id, known[1].name)] = known[1]
            self._built, self._earlier = built, earlier

    def __call__(self, center_id: str) -> InviteDelivery:
        """The backend of ``center_id`` (KeyError for a center no directory ever had)."""
        self._directory()
        return self._built[center_id][1]

    def calendar(self, center_id: str) -> BusyCalendar | None:
        """The center's backend when it reads specialists' calendars, else None."""
        self._directory()
        known = self._built.get(center_id)
        return known[1] if known is not None and isinstance(known[1], BusyCalendar) else None

    def earlier(self, center_id: str, name: str) -> InviteDelivery | None:
        """The backend named ``name`` (``smtp``, ``graph``...) that the center had before a
        reload gave it another kind; None if it never had one here."""
        self._directory()
        return self._earlier.get((center_id, name))

    def _build(self, center: Center) -> InviteDelivery:
        settings, env = center.delivery.settings, self._env
        try:
            match center.delivery.backend:
                case "outbox":
                    parse_settings(OutboxSettings, settings, "outbox")
                    return self._outbox
                case "smtp":
                    return SmtpDelivery.from_settings(settings, env)
                case "caldav":
                    return CalDavDelivery.from_settings(settings, env)
                case "ews":
                    return EwsDelivery.from_settings(settings, env, organizer=str(center.mailbox))
                case "graph":
                    return GraphDelivery.from_settings(settings, env,
                                                       organizer=str(center.mailbox))
        except ValueError as exc:
            raise DeliveryUnavailable(f"center {center.id}: {exc}") from exc
        raise DeliveryUnavailable(f"center {center.id}: no backend {center.delivery.backend!r}")


def build_deliveries(directory: CenterDirectory, outbox_dir: Path,
                     env: Mapping[str, str]) -> dict[str, InviteDelivery]:
    """One delivery backend per center of ``directory``; DeliveryUnavailable names the first
    center whose ``delivery`` block cannot be used."""
    deliveries = CenterDeliveries(lambda: directory, outbox_dir, env)
    deliveries.prepare(directory)
    return {center.id: deliveries(center.id) for center in directory.centers}


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
