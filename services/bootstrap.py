"""The composition root: settings in, the wired pipeline out. Nothing else builds clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from consumers.app import Stages
from consumers.stages import Booking, Invitation, Submission
from scheduler.db import create_engine_for
from scheduler.delivery import InviteDelivery
from scheduler.directory import Center, CenterDirectory
from scheduler.invite_log import InviteLog
from scheduler.outbox import OutboxDelivery
from scheduler.request_store import RequestStore
from scheduler.sql_ledger import SqlBookingLedger
from services.database import upgrade_database
from services.settings import Settings

DEFAULT_JOIN_URL = "https://meet.example.com/fasttrack/{meeting_id}"


class DeliveryUnavailable(LookupError):
    """A center's directory entry names a delivery backend this service cannot use."""


def utc_now() -> datetime:
    """The service's clock; the core never calls it, it is handed the time."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Everything a worker or the gateway shares, built once from the settings."""

    settings: Settings
    engine: Engine
    directory: CenterDirectory
    store: RequestStore
    clock: Callable[[], datetime]

    def stages(self) -> Stages:
        outbox = OutboxDelivery(self.settings.resolved_outbox_dir)

        def delivery_for(center_id: str) -> InviteDelivery:
            backend = self.directory.center(center_id).delivery.backend
            if backend != "outbox":
                raise DeliveryUnavailable(
                    f"center {center_id} uses delivery backend {backend!r}; this build "
                    "delivers to the outbox only")
            return outbox

        return Stages(
            submission=Submission(self.store, self.directory, self.clock),
            booking=Booking(self.store, self.directory, SqlBookingLedger(self.engine),
                            self.clock, join_url),
            invitation=Invitation(self.store, self.directory, delivery_for,
                                  InviteLog(self.engine), self.clock),
        )


def join_url(center: Center, uid: str) -> str:
    """The online meeting link: the center's ``delivery.join_url_template``, or the default."""
    template = str(center.delivery.settings.get("join_url_template", DEFAULT_JOIN_URL))
    return template.format(meeting_id=uid.split("@", 1)[0], center_id=center.id)


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Load the directory, migrate the database when asked, and build the stores."""
    directory = settings.load_directory()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if migrate:
        upgrade_database(url)
    engine = create_engine_for(url)
    return Runtime(settings, engine, directory, RequestStore(engine), utc_now)
