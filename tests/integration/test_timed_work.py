"""The timed work: reminders with a controlled clock across DST changes, the booking SLA,
reconciliation (also after the broker lost its topics) and two schedulers on one job store."""

from __future__ import annotations

import email
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from sqlalchemy import Engine, select, text

from consumers.routing import route
from scheduler.booking import book
from scheduler.db import create_engine_for, invite_deliveries
from scheduler.delivery import DeliveryFailed
from scheduler.jobs import TimedWork
from scheduler.lifecycle import cancel, reschedule
from scheduler.reminders import CenterReminders, OutboxReminders, ReminderSender
from scheduler.request_store import RequestState, canonical_body_hash
from scheduler.smtp_delivery import SmtpDelivery
from schemas.help_request import PreferredWindow, parse_help_request
from services.kafka_config import KafkaSettings
from services.timed_work import KafkaRecordPublisher, TimedWorkService
from services.topics import TopicNames
from tests.integration.delivery_servers import MailSink, running_mail_sink
from tests.integration.lifecycle_support import ORIGIN, World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


class Published:
    """A fake publisher that keeps what the timed work publishes."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))


def timed_work(world: World, outbox: Path, publish: Callable[[str, bytes, bytes], None],
               reminders: ReminderSender | None = None, **policy: object) -> TimedWork:
    return world.timed_work(outbox, publish, reminders, **policy)


def drive(world: World, work: TimedWork, start: datetime, end: datetime,
          step: timedelta = timedelta(minutes=10)) -> None:
    """Play the scheduler with a controlled clock: at each step, plan and run what is due."""
    now = start
    while now <= end:
        world.now = now
        for job in work.plan_reminders():
            if job.run_at <= now:
                work.send_reminder(*job.args)
        now += step


def sent_reminders(outbox: Path) -> list[email.message.EmailMessage]:
    files = sorted((outbox / "reminders").glob("*.eml")) if (outbox / "reminders").exists() \
        else []
    return [email.message_from_bytes(f.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for f in files]


# --- reminders across DST ------------------------------------------------------------------

DST_CASES = [
    # center, language, submitted (local Friday afternoon before the change), expected subject
    pytest.param("munich", "de", "2026-03-27T15:00:00+01:00", "Tag", id="berlin-spring-forward"),
    pytest.param("munich", "de", "2026-10-23T15:00:00+02:00", "Tag", id="berlin-fall-back"),
    pytest.param("redmond", "es", "2026-03-06T15:00:00-08:00", "día", id="los-angeles-spring"),
    pytest.param("redmond", "es", "2026-10-30T15:00:00-07:00", "día", id="los-angeles-fall"),
]


@pytest.mark.parametrize(("center", "language", "submitted", "day_word"), DST_CASES)
def test_reminders_fire_once_each_24h_and_1h_before_across_the_dst_change(
        engine: Engine, tmp_path: Path, center: str, language: str, submitted: str,
        day_word: str) -> None:
    submitted_at = datetime.fromisoformat(submitted)
    world = World(engine, make_directory((center,)), submitted_at.astimezone(UTC))
    country = "DE" if center == "munich" else "US"
    world.submit(help_request("r-dst", submitted, language=language, country=country))
    meeting = world.ledger.meeting_for("r-dst")
    assert meeting is not None
    work = timed_work(world, tmp_path, Published())

    drive(world, work, world.now, meeting.start + timedelta(hours=1))

    reminders = sent_reminders(tmp_path)
    assert len(reminders) == 2
    assert {r["Content-Language"] for r in reminders} == {language}
    assert any(day_word in str(r["Subject"]) for r in reminders)
    query = select(invite_deliveries.c.at).where(invite_deliveries.c.method.like("REMIND-%"),
                                                 invite_deliveries.c.status == "delivered")
    with engine.connect() as conn:
        sent_at = sorted(conn.scalars(query))
    # The clock steps every 10 minutes from a round hour, so "on time" is exact here.
    assert sent_at == [meeting.start - timedelta(hours=24), meeting.start - timedelta(hours=1)]


@pytest.fixture
def invited(engine: Engine) -> World:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    world.submit(help_request("r-1"))
    return world


def by_smtp(world: World, outbox: Path, sink: MailSink) -> TimedWork:
    """Timed work whose reminders go by email through ``sink``."""
    smtp = SmtpDelivery(sink.host, sink.port, starttls=False)
    reminders = CenterReminders(OutboxReminders(outbox), lambda center_id: smtp)
    return timed_work(world, outbox, Published(), reminders)


def test_a_center_that_sends_email_sends_its_reminders_by_smtp(
        invited: World, engine: Engine, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    with running_mail_sink() as sink:
        drive(invited, by_smtp(invited, tmp_path, sink), meeting.start - timedelta(hours=25),
              meeting.start)

    assert sent_reminders(tmp_path) == []  # nothing went to the outbox
    assert len(sink.received) == 2
    request = invited.records.request("r-1")
    assert request is not None
    specialist = next(s for s in invited.directory.center("taipei").specialists
                      if s.id == meeting.specialist_id)
    for received in sink.received:
        assert received.sender == str(invited.directory.center("taipei").mailbox)
        assert str(request.requester.email) in received.recipients
        assert str(specialist.email) in received.recipients
        assert "r-1" in received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    query = select(invite_deliveries.c.method, invite_deliveries.c.backend,
                   invite_deliveries.c.status, invite_deliveries.c.detail).where(
        invite_deliveries.c.method.like("REMIND-%")).order_by(invite_deliveries.c.method)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    assert [(m, b, s) for m, b, s, _ in rows] == [("REMIND-1h", "smtp", "delivered"),
                                                 ("REMIND-24h", "smtp", "delivered")]
    assert all(detail.startswith(f"smtp://{sink.host}:{sink.port} <") for *_, detail in rows)


def reminder_rows(engine: Engine) -> list[tuple[str, str, int]]:
    c = invite_deliveries.c
    query = select(c.method, c.status, c.attempts).where(c.method.like("REMIND-%")) \
        .order_by(c.method)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def test_a_reminder_the_mail_server_defers_is_sent_at_a_later_planning(
        invited: World, engine: Engine, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    with running_mail_sink() as sink:
        sink.data_reply = "451 4.3.0 Try again later"
        work = by_smtp(invited, tmp_path, sink)
        day_before = meeting.start - timedelta(hours=24)

        drive(invited, work, day_before, day_before + timedelta(minutes=30))  # 4 plannings
        assert reminder_rows(engine) == [("REMIND-24h", "retrying", 4)]
        sink.data_reply = None
        drive(invited, work, day_before + timedelta(minutes=40), day_before + timedelta(hours=1))

    assert reminder_rows(engine) == [("REMIND-24h", "delivered", 5)]
    assert len(sink.received) == 1


def test_a_reminder_the_mail_server_refuses_is_not_sent_again(
        invited: World, engine: Engine, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    with running_mail_sink() as sink:
        sink.data_reply = "550 5.7.1 Relaying denied"
        work = by_smtp(invited, tmp_path, sink)
        invited.now = meeting.start - timedelta(hours=24)
        job = next(job for job in work.plan_reminders() if job.args[1] == "24h")

        with pytest.raises(DeliveryFailed, match="550"):
            work.send_reminder(*job.args)

        assert [j for j in work.plan_reminders() if j.args == job.args] == []
    assert reminder_rows(engine) == [("REMIND-24h", "failed", 1)]


def test_centers_without_an_email_backend_keep_their_reminders_in_the_outbox(
        invited: World, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    outbox = OutboxReminders(tmp_path)
    reminders = CenterReminders(outbox, lambda center_id: invited.delivery)  # the invite outbox
    work = timed_work(invited, tmp_path, Published(), reminders)

    drive(invited, work, meeting.start - timedelta(hours=25), meeting.start)

    assert len(sent_reminders(tmp_path)) == 2


def test_no_reminder_twice_across_a_restart(invited: World, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    first = timed_work(invited, tmp_path, Published())
    drive(invited, first, meeting.start - timedelta(hours=25), meeting.start - timedelta(hours=2))
    restarted = timed_work(invited, tmp_path, Published())  # a new process, same database
    drive(invited, restarted, meeting.start - timedelta(hours=23), meeting.start)
    drive(invited, first, meeting.start - timedelta(hours=23), meeting.start)

    assert len(sent_reminders(tmp_path)) == 2


def test_no_reminder_for_a_cancelled_meeting(invited: World, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    work = timed_work(invited, tmp_path, Published())
    drive(invited, work, meeting.start - timedelta(hours=25), meeting.start - timedelta(hours=3))
    planned = work.plan_reminders()
    cancel("r-1", invited.lifecycle(), invited.now)

    for job in planned:  # jobs already in the store still fire
        assert work.send_reminder(*job.args) == "moved or cancelled"
    drive(invited, work, invited.now, meeting.start)
    assert len(sent_reminders(tmp_path)) == 1  # only the 24 h one, sent before cancelling


def test_a_moved_meeting_is_reminded_at_its_new_time_only(invited: World, tmp_path: Path) -> None:
    before = invited.ledger.meeting_for("r-1")
    assert before is not None
    work = timed_work(invited, tmp_path, Published())
    invited.now = before.start - timedelta(hours=30)
    stale = work.plan_reminders()
    outcome = reschedule("r-1", PreferredWindow(earliest=before.start + timedelta(days=7)),
                         invited.lifecycle(), invited.now)
    after = invited.ledger.meeting_for("r-1")
    assert after is not None and after.revision == 2, outcome

    for job in stale:
        assert work.send_reminder(*job.args) == "moved or cancelled"
    drive(invited, work, before.start - timedelta(hours=25), after.start, timedelta(minutes=30))
    assert len(sent_reminders(tmp_path)) == 2
    assert all("-r2-" in p.name for p in (tmp_path / "reminders").glob("*.eml"))


def test_a_late_scheduler_sends_only_the_closest_reminder(invited: World, tmp_path: Path) -> None:
    meeting = invited.ledger.meeting_for("r-1")
    assert meeting is not None
    work = timed_work(invited, tmp_path, Published())
    drive(invited, work, meeting.start - timedelta(minutes=50), meeting.start)
    (only,) = sent_reminders(tmp_path)
    assert "in 50 minutes" in str(only["Subject"])
    (path,) = (tmp_path / "reminders").glob("*.eml")
    assert path.name.endswith("-1h.eml")  # the 24 h one was overtaken, not sent late


# --- the booking SLA -----------------------------------------------------------------------


def test_a_request_not_booked_within_the_sla_is_escalated_with_the_reason(
        engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    world.submit(help_request("r-slow"), until=1)  # routed, the booker never ran
    world.submit(help_request("r-fast"))  # invited
    published = Published()
    work = timed_work(world, tmp_path, published)

    world.now += timedelta(minutes=14)
    assert work.sla_sweep() == []
    world.now += timedelta(minutes=2)
    assert work.sla_sweep() == ["r-slow"]
    assert work.sla_sweep() == []  # once

    status = world.store.status("r-slow")
    assert status is not None and status.status is RequestState.ESCALATED
    assert status.timeline[-1].detail is not None
    assert status.timeline[-1].detail["stage"] == "sla"
    assert [(t, k) for t, k, _ in published.records] == [("requests_escalated", b"r-slow")]


class Unreachable(Published):
    """A broker that refuses the first ``refusals`` publishes."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        if self.refusals:
            self.refusals -= 1
            raise OSError("broker unavailable")
        super().__call__(topic, key, value)


def test_an_escalation_whose_publish_failed_is_announced_by_reconciliation(
        engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    world.submit(help_request("r-slow"), until=1)
    published = Unreachable(refusals=1)
    work = timed_work(world, tmp_path, published)

    world.now += timedelta(minutes=16)
    assert work.sla_sweep() == ["r-slow"]  # escalated; its announcement failed

    status = world.store.status("r-slow")
    assert status is not None and status.status is RequestState.ESCALATED
    assert published.records == []
    assert work.reconcile()["resent"] == 0  # not stale yet
    world.now += timedelta(minutes=5)
    assert work.reconcile()["resent"] == 1
    assert work.reconcile()["resent"] == 0  # once
    ((topic, key, value),) = published.records
    event = json.loads(value)
    assert (topic, key, event["stage"]) == ("requests_escalated", b"r-slow", "sla")
    assert event["escalated_at"] == "2026-11-23T01:46:00Z"  # when it was escalated
    assert "not booked within 15 minutes" in event["detail"]


def test_a_custom_sla(engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    body = help_request("r-slow")
    world.store.accept(parse_help_request(body), canonical_body_hash(body), world.now, body)
    work = timed_work(world, tmp_path, Published(), booking_sla=timedelta(minutes=5))
    world.now += timedelta(minutes=5)
    assert work.sla_sweep() == ["r-slow"]


# --- reconciliation ------------------------------------------------------------------------


def test_reconciliation_re_emits_each_stuck_stage_from_the_database(
        engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    accepted = help_request("r-accepted")
    world.store.accept(parse_help_request(accepted), canonical_body_hash(accepted), world.now,
                       accepted)
    world.submit(help_request("r-routed"), until=1)
    world.submit(help_request("r-booked"), until=2)
    published = Published()
    work = timed_work(world, tmp_path, published, booking_sla=timedelta(days=1))

    assert work.reconcile()["redriven"] == 0  # not stale yet
    world.now += timedelta(minutes=3)
    assert work.reconcile()["redriven"] == 3
    assert work.reconcile()["redriven"] == 0  # not again right away
    world.now += timedelta(minutes=3)
    assert work.reconcile()["redriven"] == 3  # still stuck: again, once stale_after has passed

    topics = {key.decode(): topic for topic, key, _ in published.records}
    assert topics == {"r-accepted": "requests_submitted", "taipei": "requests_routed",
                      "r-booked": "meetings_booked"}
    # Fed back into the stages, each one moves on.
    stages = dict(zip(("requests_submitted", "requests_routed", "meetings_booked"),
                      world.stages, strict=True))
    for topic, _, value in published.records:
        stages[topic].handle(value, ORIGIN)
    statuses = {r: world.store.status(r).status  # type: ignore[union-attr]
                for r in ("r-accepted", "r-routed", "r-booked")}
    assert statuses == {"r-accepted": RequestState.ROUTED, "r-routed": RequestState.BOOKED,
                        "r-booked": RequestState.INVITED}


def test_reconciliation_frees_a_meeting_booked_for_a_cancelled_request(
        engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    world.submit(help_request("r-1"), until=1)
    routed = [e for e in world.store.status("r-1").timeline  # type: ignore[union-attr]
              if e.status is RequestState.ROUTED]
    assert routed
    cancel("r-1", world.lifecycle(), world.now)
    # The booker had read "routed" just before the cancel, and books anyway.
    book(route(parse_help_request(help_request("r-1")), world.directory, world.now),
         world.directory, world.ledger)
    assert world.ledger.meeting_for("r-1") is not None

    work = timed_work(world, tmp_path, Published())
    assert work.reconcile()["orphans"] == 1
    assert world.ledger.meeting_for("r-1") is None


@pytest.mark.slow
def test_reconciliation_re_drives_an_accepted_request_after_the_broker_lost_its_topics(
        engine: Engine, tmp_path: Path, kafka_settings: KafkaSettings,
        topics: TopicNames) -> None:
    """A fresh topic prefix plays the restarted embedded broker: what was published before is
    gone, and only the database remembers the accepted request."""
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    body = help_request("r-lost")
    world.store.accept(parse_help_request(body), canonical_body_hash(body), world.now, body)
    publisher = KafkaRecordPublisher(kafka_settings, topics)
    try:
        work = timed_work(world, tmp_path, publisher)
        world.now += timedelta(minutes=5)
        assert work.reconcile()["redriven"] == 1
    finally:
        publisher.close()

    consumer = KafkaConsumer(topics.requests_submitted, bootstrap_servers=kafka_settings.servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=15_000,
                             group_id=None)
    try:
        records = [r for r in consumer if r.key == b"r-lost"][:1]
    finally:
        consumer.close()
    (record,) = records
    world.stages[0].handle(record.value, ORIGIN)
    status = world.store.status("r-lost")
    assert status is not None and status.status is RequestState.ROUTED
    assert canonical_body_hash(json.loads(record.value)) == canonical_body_hash(body)


# --- two schedulers on one job store -------------------------------------------------------

_fired: Counter[str] = Counter()
_fired_lock = threading.Lock()


def record_firing(job_key: str) -> None:
    """A stored job: count how often each key fired, across both schedulers."""
    with _fired_lock:
        _fired[job_key] += 1


@pytest.fixture
def job_table(engine: Engine) -> Iterator[str]:
    table = f"jobs_{uuid.uuid4().hex[:10]}"
    yield table
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_schedulers_on_one_job_store_fire_each_job_exactly_once(
        engine: Engine, tmp_path: Path, job_table: str, database_url: str) -> None:
    world = World(engine, make_directory(("taipei",)), datetime.now(UTC))
    other_engine = create_engine_for(database_url)  # the second process
    services = [TimedWorkService(timed_work(world, tmp_path, Published()), e, table=job_table,
                                 poll_seconds=0.1, recurring={})
                for e in (engine, other_engine)]
    _fired.clear()
    try:
        for service in services:
            service.start()
        wait_until(lambda: any(s.leading for s in services), 10, "a leader")
        time.sleep(0.5)
        assert sum(s.leading for s in services) == 1
        leader = next(s for s in services if s.leading)
        standby = next(s for s in services if not s.leading)
        assert leader.scheduler is not None
        soon = datetime.now(UTC) + timedelta(seconds=1)
        later = datetime.now(UTC) + timedelta(seconds=3)
        for n in range(5):
            leader.scheduler.add_job(record_firing, "date", run_date=soon, args=[f"early-{n}"],
                                     id=f"early-{n}")
            leader.scheduler.add_job(record_firing, "date", run_date=later, args=[f"late-{n}"],
                                     id=f"late-{n}")
        wait_until(lambda: sum(_fired.values()) >= 5, 10, "the early jobs")
        leader.stop()  # fail over before the late jobs are due
        wait_until(lambda: standby.leading, 10, "the standby to take over")
        wait_until(lambda: sum(_fired.values()) >= 10, 15, "the late jobs")
        time.sleep(1.0)
        assert _fired == Counter({f"{kind}-{n}": 1 for kind in ("early", "late")
                                  for n in range(5)})
    finally:
        for service in services:
            service.stop()
        other_engine.dispose()
