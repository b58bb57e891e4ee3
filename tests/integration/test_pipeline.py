"""The pipeline on the real embedded broker: requests in over Kafka, invites out, nothing lost,
nothing doubled — through duplicates, replays, poison records, SIGKILL and a second worker.

Workers are real ``fasttrack worker`` processes; portals are played by kafka-python.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from caldav.collection import Calendar as DavCalendar
from caldav.collection import CalendarSet
from caldav.davclient import DAVClient
from icalendar import Calendar, Event
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import func, select

from scheduler.caldav_delivery import CalDavDelivery
from scheduler.db import create_engine_for, deadletters, held_commands, invite_deliveries, meetings
from scheduler.directory import default_directory_path
from scheduler.request_store import RequestStore
from services.broker import EmbeddedBroker
from services.ops_deadletters import DeadLetterDesk, KafkaRecordSink
from services.sample_requests import sample_requests
from services.topics import TopicNames
from tests.integration.delivery_servers import (
    SERVICE_PASSWORD,
    SERVICE_USER,
    running_mail_sink,
    running_radicale,
)
from tests.integration.waiting import wait_for

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
FINAL = {"invited", "escalated", "rejected", "deadlettered", "cancelled"}
PARTITIONS = 6




@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The worker's structlog records of ``event``, oldest first."""
        return [json.loads(line[line.index("{"):])
                for line in self.log.read_text(errors="replace").splitlines()
                if f'"{event}"' in line]

    def assignment(self) -> list[int] | None:
        """The partitions of requests.submitted this worker last announced it owns."""
        found = self.logged("partitions_assigned")
        return found[-1]["partitions"] if found else None

    def frozen_at_start(self) -> int | None:
        """How many objects the worker left out of later garbage collections, as it logged."""
        found = self.logged("startup_heap_frozen")
        return int(found[0]["objects"]) if found else None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Pipeline:
    broker: EmbeddedBroker
    topics: TopicNames
    var: Path
    database_url: str
    workers: list[Worker] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = create_engine_for(self.database_url)
        self.store = RequestStore(self.engine)
        self.producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FASTTRACK_KAFKA_BOOTSTRAP": self.broker.bootstrap,
                "FASTTRACK_KAFKA_EMBEDDED": "1", "FASTTRACK_VAR_DIR": str(self.var),
                "FASTTRACK_TOPIC_PREFIX": self.topics.prefix,
                "FASTTRACK_DATABASE_URL": self.database_url, **self.extra_env}

    def spawn(self, name: str) -> Worker:
        log = self.var / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "services.cli", "worker"],
                                       cwd=REPO_ROOT, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT)
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker

    def ready(self, worker: Worker, timeout: float = 45) -> list[int]:
        def assigned() -> list[int] | None:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker exited {worker.process.returncode}:\n"
                                     f"{worker.tail()}")
            return worker.assignment() or None
        return wait_for(assigned, timeout, "the worker's partition assignment")

    def requests(self, count: int, tag: str, **changes: Any) -> list[dict[str, Any]]:
        """Sample requests submitted a minute ago; ``changes`` are set on every one."""
        start = datetime.now(UTC) - timedelta(minutes=1)
        return [{**r, **changes} for r in sample_requests(
            count, start, per_hour=3600, seed=len(tag), prefix=f"{self.topics.prefix}-{tag}")]

    def use_directory(self, edit: Callable[[dict[str, Any]], None]) -> None:
        """Run the workers on the sample directory as changed by ``edit``."""
        data = yaml.safe_load(default_directory_path().read_text(encoding="utf-8"))
        edit(data)
        path = self.var / "directory.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        self.extra_env["FASTTRACK_DIRECTORY"] = str(path)

    def submit(self, *records: tuple[bytes | None, bytes], partition: int | None = None) -> None:
        for key, value in records:
            self.producer.send(self.topics.requests_submitted, key=key, value=value,
                               partition=partition)
        self.producer.flush()

    def submit_requests(self, requests: list[dict[str, Any]]) -> None:
        self.submit(*((r["request_id"].encode(), json.dumps(r).encode()) for r in requests))

    def statuses(self, ids: list[str]) -> Counter[str]:
        return Counter(str(s.status) if (s := self.store.status(i)) else "unknown" for i in ids)

    def wait_final(self, ids: list[str], timeout: float = 90) -> Counter[str]:
        def done() -> Counter[str] | None:
            counts = self.statuses(ids)
            return counts if set(counts) <= FINAL else None
        try:
            return wait_for(done, timeout, f"{len(ids)} requests to finish")
        except AssertionError as exc:
            logs = "\n".join(w.tail() for w in self.workers)
            raise AssertionError(f"{exc}: {self.statuses(ids)}\n{logs}") from None

    def count(self, table: Any, **where: Any) -> int:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def invites(self) -> int:
        """Invitations sent (not reminders, which the timed work logs in the same table)."""
        return self.count(invite_deliveries, method="REQUEST")

    def read(self, topic: str, expected: int, timeout: float = 30) -> list[Any]:
        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=500)
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
        consumer.close()
        return records

    def drained(self, *topics: str) -> bool:
        """The pipeline's group has committed every record of ``topics``."""
        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap)
        try:
            parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            ends = consumer.end_offsets(parts)
            group = f"{self.topics.prefix}-pipeline"
            committed = admin.list_group_offsets({group: None}).get(group, {})
            return all(committed.get(tp) is not None and committed[tp].offset >= ends[tp]
                       for tp in parts if ends[tp] > 0)
        finally:
            admin.close()
            consumer.close()

    def outbox(self, suffix: str) -> list[Path]:
        return sorted((self.var / "outbox").glob(f"*{suffix}"))

    def no_specialist_overlaps(self) -> bool:
        with self.engine.connect() as conn:
            rows = conn.execute(select(meetings.c.specialist_id, meetings.c.start_utc,
                                       meetings.c.end_utc)
                                .where(meetings.c.status == "active")
                                .order_by(meetings.c.specialist_id, meetings.c.start_utc)).all()
        return all(a.end_utc <= b.start_utc for a, b in itertools.pairwise(rows)
                   if a.specialist_id == b.specialist_id)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.producer.close()
        self.engine.dispose()


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topics: TopicNames, tmp_path: Path,
             new_database: Callable[[str], str], request: pytest.FixtureRequest,
             ) -> Iterator[Pipeline]:
    dialect = getattr(request, "param", "sqlite")
    running = Pipeline(broker, topics, tmp_path, new_database(dialect))
    yield running
    running.stop()


@pytest.mark.parametrize("pipeline", DIALECTS, indirect=True)
def test_requests_published_to_kafka_end_invited(pipeline: Pipeline) -> None:
    worker = pipeline.spawn("worker")
    pipeline.ready(worker)
    requests = pipeline.requests(30, "kafka")
    pipeline.submit_requests(requests)
    ids = [r["request_id"] for r in requests]

    assert pipeline.wait_final(ids) == {"invited": 30}
    assert pipeline.count(meetings, status="active") == 30
    assert pipeline.invites() == 30
    assert len(pipeline.outbox(".ics")) == len(pipeline.outbox(".eml")) == 30
    assert len(pipeline.read(pipeline.topics.invites_delivered, 30)) == 30
    assert pipeline.no_specialist_overlaps()
    status = pipeline.store.status(ids[0])
    assert status is not None and status.meeting is not None
    assert [str(e.status) for e in status.timeline] == ["accepted", "routed", "booked", "invited"]
    assert status.meeting.join_url and status.meeting.uid
    # the libraries, the directory and the app: out of every collection from the first record
    assert (worker.frozen_at_start() or 0) > 100_000


def test_duplicates_and_replays_change_nothing(pipeline: Pipeline) -> None:
    pipeline.ready(pipeline.spawn("worker"))
    requests = pipeline.requests(12, "replay")
    ids = [r["request_id"] for r in requests]
    pipeline.submit_requests(requests)
    assert pipeline.wait_final(ids) == {"invited": 12}
    files = {p.name: p.stat().st_mtime_ns for p in pipeline.outbox("")}
    timeline = sum(len(pipeline.store.status(i).timeline) for i in ids)  # type: ignore[union-attr]

    pipeline.submit_requests(requests)  # a portal retrying
    topics = pipeline.topics
    for topic in (topics.requests_routed, topics.meetings_booked):  # ops replaying a topic
        for record in pipeline.read(topic, 12):
            pipeline.producer.send(topic, key=record.key, value=record.value)
    pipeline.producer.flush()
    wait_for(lambda: pipeline.drained(topics.requests_submitted, topics.requests_routed,
                                      topics.meetings_booked), 60, "the replays to be consumed")

    assert pipeline.statuses(ids) == {"invited": 12}
    assert pipeline.count(meetings) == 12
    assert pipeline.invites() == 12
    assert {p.name: p.stat().st_mtime_ns for p in pipeline.outbox("")} == files
    assert sum(len(pipeline.store.status(i).timeline) for i in ids) == timeline  # type: ignore[union-attr]
    assert pipeline.read(topics.requests_deadletter, 1, timeout=2) == []


def test_poison_and_oversized_records_are_dead_lettered_and_the_stream_flows(
        pipeline: Pipeline) -> None:
    pipeline.ready(pipeline.spawn("worker"))
    good = pipeline.requests(2, "poison")
    invalid = {**good[0], "request_id": "poison-invalid", "tenant": {"id": "x"}}
    oversized = {**good[0], "request_id": "poison-big", "notes": "x" * 70_000}
    poison = [(b"poison-garbage", b"\xff\xfe not json"),
              (b"poison-invalid", json.dumps(invalid).encode()),
              (b"poison-big", json.dumps(oversized).encode())]
    records = [(good[0]["request_id"].encode(), json.dumps(good[0]).encode()), *poison,
               (good[1]["request_id"].encode(), json.dumps(good[1]).encode())]
    pipeline.submit(*records, partition=0)  # one partition: the good ones wait behind poison

    assert pipeline.wait_final([r["request_id"] for r in good]) == {"invited": 2}
    dead = pipeline.read(pipeline.topics.requests_deadletter, 3)
    assert sorted(r.key for r in dead) == sorted(k for k, _ in poison)
    for record in dead:
        headers = dict(record.headers)
        assert headers["error_class"] == b"Unprocessable"
        assert headers["origin_topic"] == pipeline.topics.requests_submitted.encode()
        assert headers["origin_partition"] == b"0"
        assert headers["attempts"] == b"1"
        assert record.value == dict(poison)[record.key]
    invalid_header = dict(next(r for r in dead if r.key == b"poison-invalid").headers)
    assert b"tenant.name" in invalid_header["error_message"]
    offsets = sorted(int(dict(r.headers)["origin_offset"]) for r in dead)
    assert offsets == [offsets[0], offsets[0] + 1, offsets[0] + 2]
    stored = pipeline.store.list_deadletters()
    assert sorted(d.request_id or "" for d in stored) == sorted(k.decode() for k, _ in poison)


def test_sigkilled_worker_loses_nothing_and_doubles_nothing(pipeline: Pipeline) -> None:
    # Small batches, so the kill lands with most of the requests still in flight (a whole
    # default batch of invites can be written at once) and in the middle of batches.
    pipeline.extra_env["FASTTRACK_BATCH_MAX_RECORDS"] = "8"
    first = pipeline.spawn("first")
    pipeline.ready(first)
    requests = pipeline.requests(120, "kill")
    ids = [r["request_id"] for r in requests]
    pipeline.submit_requests(requests)
    wait_for(lambda: pipeline.invites() >= 15, 60, "some invites before the kill")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert pipeline.invites() < 120, "killed too late to prove anything"

    pipeline.ready(pipeline.spawn("second"))
    assert pipeline.wait_final(ids) == {"invited": 120}
    assert pipeline.count(meetings) == 120
    assert pipeline.invites() == 120
    assert len(pipeline.outbox(".ics")) == 120
    assert pipeline.no_specialist_overlaps()


def test_two_workers_share_the_partitions_and_finish_everything(pipeline: Pipeline) -> None:
    first, second = pipeline.spawn("first"), pipeline.spawn("second")

    def split() -> bool:
        a, b = set(first.assignment() or ()), set(second.assignment() or ())
        return bool(a and b and not a & b and a | b == set(range(PARTITIONS)))

    wait_for(split, 60, "the two workers to split the partitions")
    requests = pipeline.requests(60, "scale")
    pipeline.submit_requests(requests)
    assert pipeline.wait_final([r["request_id"] for r in requests]) == {"invited": 60}
    assert pipeline.count(meetings) == 60
    assert pipeline.no_specialist_overlaps()


TAIWAN = {"tenant": {"id": "t-tw", "name": "Contoso Taiwan", "country": "TW"},
          "requester": {"name": "Lin", "email": "it@contoso.example.com", "language": "zh-TW"},
          "source": "admin_center"}


def set_delivery(center_id: str, delivery: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        next(c for c in data["centers"] if c["id"] == center_id)["delivery"] = delivery
    return edit


def test_a_center_delivering_by_smtp_sends_imip_mail(pipeline: Pipeline) -> None:
    with running_mail_sink() as sink:
        pipeline.use_directory(set_delivery("taipei", {
            "backend": "smtp", "host": sink.host, "port": sink.port, "starttls": False}))
        pipeline.ready(pipeline.spawn("worker"))
        requests = pipeline.requests(3, "smtp", **TAIWAN)  # zh-Hant: only Taipei speaks it
        pipeline.submit_requests(requests)
        assert pipeline.wait_final([r["request_id"] for r in requests]) == {"invited": 3}
        wait_for(lambda: len(sink.received) == 3, 10, "three messages at the SMTP server")

    for received in sink.received:
        message = received.message
        assert message["From"].addresses[0].addr_spec == "fasttrack.taipei@example.com"
        calendars = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
        assert calendars and calendars[0].get_param("method") == "REQUEST"
        assert "it@contoso.example.com" in received.recipients
    assert pipeline.outbox(".ics") == []


def test_specialists_calendar_events_in_caldav_push_the_booking_later(
        pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "radicale").mkdir()
    with running_radicale(tmp_path / "radicale") as radicale:
        taipei = next(c for c in yaml.safe_load(default_directory_path().read_text())["centers"]
                      if c["id"] == "taipei")
        busy_until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        service = CalDavDelivery(radicale.url, SERVICE_USER, SERVICE_PASSWORD)
        for person in taipei["specialists"]:  # each has a two-day offsite in their calendar
            offsite(radicale.url, service.calendar_path(person["email"]), person["id"],
                    datetime.now(UTC) - timedelta(hours=1), busy_until)
        pipeline.use_directory(set_delivery("taipei", {
            "backend": "caldav", "url": radicale.url, "username": SERVICE_USER,
            "password_env": "TEST_CALDAV_PASSWORD", "auth_type": "basic"}))
        pipeline.extra_env["TEST_CALDAV_PASSWORD"] = SERVICE_PASSWORD
        pipeline.ready(pipeline.spawn("worker"))
        requests = pipeline.requests(2, "caldav", **TAIWAN)
        pipeline.submit_requests(requests)
        assert pipeline.wait_final([r["request_id"] for r in requests]) == {"invited": 2}

        for request in requests:
            status = pipeline.store.status(request["request_id"])
            assert status is not None and status.meeting is not None
            assert status.meeting.start >= busy_until
            email = next(p["email"] for p in taipei["specialists"]
                         if p["id"] == status.meeting.specialist_id)
            assert status.meeting.uid in event_uids(radicale.url, service.calendar_path(email))


def offsite(url: str, path: str, person: str, start: datetime, end: datetime) -> None:
    """An event a specialist put in their own calendar, which booking must work around."""
    event = Event()
    for name, value in (("uid", f"offsite-{person}"), ("dtstamp", start), ("dtstart", start),
                        ("dtend", end), ("summary", "Team offsite")):
        event.add(name, value)
    calendar = Calendar()
    calendar.add("prodid", "-//Specialist//Phone//EN")
    calendar.add("version", "2.0")
    calendar.add_component(event)
    home, _, name = path.rstrip("/").rpartition("/")
    with DAVClient(url=url, username=SERVICE_USER, password=SERVICE_PASSWORD) as client:
        client.mkcol(str(client.url.join(home + "/")), "")  # the specialist's calendar home
        target = DavCalendar(client=client, parent=CalendarSet(client=client, url=home + "/"),
                             id=name).save()
        target.add_event(calendar.to_ical().decode(), increase_seqno=False)


def event_uids(url: str, path: str) -> set[str]:
    with DAVClient(url=url, username=SERVICE_USER, password=SERVICE_PASSWORD) as client:
        return {str(Calendar.from_ical(e.data).events[0]["UID"])
                for e in client.calendar(url=path).get_events()}


def test_a_delivery_that_keeps_failing_is_dead_lettered_and_visible(pipeline: Pipeline) -> None:
    with running_mail_sink() as sink:
        sink.data_reply = "550 5.7.1 relaying denied"
        pipeline.use_directory(set_delivery("taipei", {
            "backend": "smtp", "host": sink.host, "port": sink.port, "starttls": False}))
        pipeline.ready(pipeline.spawn("worker"))
        requests = pipeline.requests(1, "refused", **TAIWAN)
        pipeline.submit_requests(requests)
        request_id = requests[0]["request_id"]
        assert pipeline.wait_final([request_id]) == {"deadlettered": 1}

    (dead,) = pipeline.read(pipeline.topics.requests_deadletter, 1)
    headers = dict(dead.headers)
    assert headers["error_class"] == b"DeliveryFailed"
    assert headers["origin_topic"] == pipeline.topics.meetings_booked.encode()
    assert headers["attempts"] == b"1"  # permanent: no pointless retries
    assert b"550" in headers["error_message"]
    assert pipeline.count(invite_deliveries, status="failed") == 1
    assert pipeline.count(invite_deliveries, status="delivered") == 0


def test_after_a_fix_a_redriven_delivery_ends_invited(pipeline: Pipeline) -> None:
    with running_mail_sink() as sink:
        sink.data_reply = "550 5.7.1 relaying denied"
        pipeline.use_directory(set_delivery("taipei", {
            "backend": "smtp", "host": sink.host, "port": sink.port, "starttls": False}))
        pipeline.ready(pipeline.spawn("worker"))
        (request,) = pipeline.requests(1, "redrive", **TAIWAN)
        pipeline.submit_requests([request])
        request_id = request["request_id"]
        assert pipeline.wait_final([request_id]) == {"deadlettered": 1}

        sink.data_reply = None  # the mail admin allows the relay
        (letter,) = pipeline.store.list_deadletters()
        desk = DeadLetterDesk(pipeline.engine, KafkaRecordSink(
            {"bootstrap_servers": pipeline.broker.bootstrap}), lambda: datetime.now(UTC))
        desk.redrive(letter.id, "ops-oncall")
        assert pipeline.wait_final([request_id]) == {"invited": 1}
        wait_for(lambda: len(sink.received) == 1, 10, "the invite at the SMTP server")

    status = pipeline.store.status(request_id)
    assert status is not None
    assert [str(e.status) for e in status.timeline][-3:] == ["deadlettered", "booked", "invited"]
    assert pipeline.count(meetings, status="active") == 1


def test_cancel_and_reschedule_commands_published_to_kafka(pipeline: Pipeline) -> None:
    pipeline.ready(pipeline.spawn("worker"))
    keep, drop = pipeline.requests(2, "commands")
    pipeline.submit_requests([keep, drop])
    ids = [keep["request_id"], drop["request_id"]]
    assert pipeline.wait_final(ids) == {"invited": 2}
    before = pipeline.store.status(keep["request_id"])
    assert before is not None and before.meeting is not None
    earliest = before.meeting.start + timedelta(days=7)
    now = datetime.now(UTC).isoformat()
    commands = [
        {"command": "cancel", "request_id": drop["request_id"], "command_id": "c-1",
         "issued_at": now},
        {"command": "reschedule", "request_id": keep["request_id"], "command_id": "c-2",
         "issued_at": now, "preferred_window": {
             "earliest": earliest.isoformat(),
             "latest": (earliest + timedelta(days=5)).isoformat()}},
    ]
    for command in commands:
        pipeline.producer.send(pipeline.topics.requests_commands,
                               key=command["request_id"].encode(),
                               value=json.dumps(command).encode())
    pipeline.producer.flush()

    def moved() -> bool:
        status = pipeline.store.status(keep["request_id"])
        return bool(status and status.meeting and status.meeting.start >= earliest)

    wait_for(lambda: pipeline.statuses([drop["request_id"]]) == {"cancelled": 1}, 30,
             "the cancel command")
    wait_for(moved, 30, "the reschedule command")
    after = pipeline.store.status(keep["request_id"])
    assert after is not None and after.meeting is not None
    assert (after.meeting.uid, after.meeting.sequence) == (before.meeting.uid, 1)  # the update
    assert pipeline.count(meetings, status="active") == 1


def test_a_cancel_published_before_its_request_cancels_it(pipeline: Pipeline) -> None:
    """The commands agent reads the cancel first (the request is not yet published): it holds
    it, and the intake cancels the request as it accepts it, so nobody is invited."""
    pipeline.ready(pipeline.spawn("worker"))
    early, other = pipeline.requests(2, "early-cancel")
    cancel = {"command": "cancel", "request_id": early["request_id"], "command_id": "c-early",
              "issued_at": datetime.now(UTC).isoformat()}
    pipeline.producer.send(pipeline.topics.requests_commands,
                           key=cancel["request_id"].encode(), value=json.dumps(cancel).encode())
    pipeline.producer.flush()
    wait_for(lambda: pipeline.count(held_commands) == 1, 30, "the cancel to be held")

    pipeline.submit_requests([early, other])

    assert pipeline.wait_final([early["request_id"], other["request_id"]]) == {
        "cancelled": 1, "invited": 1}
    assert pipeline.count(held_commands) == 0 and pipeline.count(deadletters) == 0
    assert pipeline.count(meetings, request_id=early["request_id"]) == 0
    assert len(pipeline.outbox(".ics")) == 1  # the other request's invite alone
