"""``fasttrack bench``: the pipeline measured against the broker's own limit, in one run.

1. **Plumbing limit.** The same three hops as the pipeline (submitted → routed → booked →
   delivered), each a plain aiokafka consume → JSON decode → produce of the very payloads the
   pipeline emits (keys too, so the routed topic is as skewed by center), in as many processes
   as there are workers. Rate = records on the last topic per second over the steady part.
2. **Pipeline.** Real ``fasttrack worker`` processes on a fresh, migrated SQLite file (or the
   given PostgreSQL database), invites to the file outbox. A flood of the realistic request mix
   gives the maximum sustained rate (requests finished per second over the steady part, a
   request being finished when its invite file is written, or when it is escalated); an
   open-loop paced run at half that rate gives the latency submitted → invite written (producer
   send time → ``.ics`` mtime) and, from the request timelines, where the time goes.
3. Both, their ratio and the breakdown, for people or (``--json``) for programs.

Progress goes to stderr; the run's logs and outbox stay under ``$FASTTRACK_VAR_DIR/bench/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import Engine, select

from consumers.envelope import encode
from consumers.routing import route
from consumers.threads import STAGE_THREAD_NAME
from scheduler.booking import FullDays, book, meeting_uid
from scheduler.db import create_engine_for, read_connection, request_events, requests
from scheduler.directory import CenterDirectory
from scheduler.ledger import InMemoryLedger
from schemas.events import InviteDelivered, MeetingBooked, RequestRouted
from schemas.help_request import parse_help_request
from services.bootstrap import join_url
from services.broker import EmbeddedBroker
from services.child_process import end_with, ending_with_this_process
from services.core_bench import DEFAULT_SIZES, format_core_report, percentile, run_core_bench
from services.database import upgrade_database
from services.faust_baseline import write_table
from services.host_probe import HostSpeed, probe_host
from services.kafka_config import (
    KafkaSettings,
    aiokafka_consumer_kwargs,
    aiokafka_producer_kwargs,
    kafka_python_client_kwargs,
    kafka_python_producer_kwargs,
)
from services.ledger_bench import LedgerNotEmpty, print_ledger_report, run_ledger_bench
from services.sample_requests import sample_requests
from services.settings import Settings
from services.stage_bench import format_stage_report, run_stage_bench
from services.topics import TopicNames, ensure_topics

DEFAULT_REQUESTS = 1000
DEFAULT_WORKERS = 2
PACED_FRACTION = 0.5
READY_TIMEOUT = 90.0
#: The baseline runs at ~1,000 records/s here: fewer records would measure start-up, not flow.
PLUMBING_MIN_RECORDS = 5000
RSS_EVERY_SECONDS = 10.0
JSON_KEYS = ("baseline_per_s", "pipeline_per_s", "ratio", "p50_ms", "p95_ms", "p99_ms",
             "database", "requests")
#: Sample demand per hour of ``submitted_at`` in the soak run: low enough that the ledger
#: does not fill up (every request would escalate), so the worker does the same work throughout
#: (about what the default directory can book: ~16 an hour around the clock).
SOAK_DEMAND_PER_HOUR = 16.0
#: The soak's rate, as a fraction of the flood's: one the pipeline sustains, so that the soak
#: measures the workers' memory, not a backlog growing in their buffers (at the paced 50 %,
#: measured: 12,000 requests waiting for the booker after 10 minutes).
SOAK_FRACTION = 0.25
#: Where each phase's requests start asking for meetings, from now. Phases that shared the
#: calendar would not do the same work: the paced run would find the weeks the flood filled
#: and escalate most of its requests after searching every center to the horizon (measured:
#: 830 of 2,000 escalated, the pipeline overloaded at "50 %"). Each phase gets calendar
#: weeks of its own, further apart than the booking horizon (21 days by default).
PHASE_CALENDAR_START = {"flood": timedelta(0), "paced": timedelta(weeks=8),
                        "soak": timedelta(weeks=16)}
_REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_COMMAND = (sys.executable, "-m", "services.cli", "worker")


class BenchFailed(RuntimeError):
    """The benchmark could not measure: a worker died, or nothing finished in time."""


def say(text: str) -> None:
    print(f"fasttrack bench: {text}", file=sys.stderr, flush=True)


@dataclass
class PipelineRun:
    """What the pipeline phase measured."""

    max_per_s: float
    paced_per_s: float
    latencies_ms: list[float]
    stages_ms: dict[str, list[float]]
    outcomes: dict[str, Counter[str]]
    cpu_ms_per_request: float = 0.0  # in the flood
    rss_kib: list[tuple[float, list[int]]] = field(default_factory=list)
    paced_offered_per_s: float = 0.0  # what the open-loop run offered
    paced_fixed: bool = False  # offered at --paced-rate, not at half of max_per_s
    fallbacks: Counter[str] = field(default_factory=Counter)  # see fallback_counts
    paced_cpu_ms_per_request: float = 0.0
    soak_cpu_ms_per_request: float | None = None  # None: no soak
    soak_offered_per_s: float = 0.0
    #: each invited soak request: (seconds from the soak's first submission, latency ms)
    soak_latencies: list[tuple[float, float]] = field(default_factory=list)
    #: the soak's CPU by minute: (minute, workers' % of a core, the broker's or None)
    soak_cpu_by_minute: list[tuple[int, float, float | None]] = field(default_factory=list)
    #: the embedded broker's CPU per request by phase ("flood", "paced", "soak"); empty when
    #: the broker is not the benchmark's own
    broker_cpu_ms: dict[str, float] = field(default_factory=dict)
    #: the workers' CPU per request by phase ("flood", "paced") and thread (THREAD_ROLES)
    thread_cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class FaustBaseline:
    """The pipeline's Faust app with pass-through stages (``services.faust_baseline``)."""

    per_s: float
    worker_cpu_ms: float  # per request, all workers
    broker_cpu_ms: float | None  # per request; None when the broker is not the bench's own


@dataclass
class BenchReport:
    baseline_per_s: float
    pipeline: PipelineRun
    database: str
    requests: int
    workers: int
    partitions: int
    load: tuple[str, str]
    host: HostSpeed | None = None  # measured just before the run
    faust: FaustBaseline | None = None  # with --faust-baseline

    @property
    def ratio(self) -> float:
        return self.pipeline.max_per_s / self.baseline_per_s if self.baseline_per_s else 0.0

    def latency(self, fraction: float) -> float | None:
        samples = self.pipeline.latencies_ms
        return round(percentile(samples, fraction), 1) if samples else None

    def to_json_dict(self) -> dict[str, Any]:
        values = {
            "baseline_per_s": round(self.baseline_per_s, 1),
            "pipeline_per_s": round(self.pipeline.max_per_s, 1),
            "ratio": round(self.ratio, 5),
            "p50_ms": self.latency(0.50), "p95_ms": self.latency(0.95),
            "p99_ms": self.latency(0.99),
            "database": self.database, "requests": self.requests,
        }
        return {key: values[key] for key in JSON_KEYS}


# ------------------------------------------------------------------------- entry point


def run_bench(settings: Settings, *, requests: int = DEFAULT_REQUESTS,
              database_url: str | None = None, json_output: bool = False,
              core_only: bool = False, ledger_only: bool = False, stages_only: bool = False,
              workers: int = DEFAULT_WORKERS,
              soak_seconds: float = 0.0, profile: Path | None = None,
              paced_rate: float | None = None, soak_rate: float | None = None,
              core_sizes: tuple[int, ...] = DEFAULT_SIZES, faust_baseline: bool = False) -> int:
    """Run the benchmark and print its report; 0 when it measured, 1 when it could not.

    ``soak_seconds`` adds a run of that length at a quarter of the flood's rate (or at
    ``soak_rate``), sampling the workers' RSS every 10 s;
    ``profile`` records the first worker with py-spy during the flood (collapsed stacks), and
    during the paced run to the same path with ``.paced`` added;
    ``paced_rate`` runs the open-loop phase at that rate instead of half the flood's, to compare
    configurations at one load (the report then gives no verdict on the latency target);
    ``stages_only`` times the stages in this process by batch size (``services.stage_bench``);
    ``faust_baseline`` adds, after the plumbing limit, the pipeline's Faust app with stages
    that do no work (``services.faust_baseline``): the framework's share of the gap.
    """
    directory = settings.load_directory()
    if core_only:
        report = run_core_bench(directory, sizes=core_sizes, progress=say)
        print(json.dumps(report.to_json_dict()) if json_output else format_core_report(report))
        return 0
    if ledger_only:
        try:
            ledger = run_ledger_bench(directory, database_url, sizes=core_sizes, progress=say)
        except LedgerNotEmpty as exc:
            say(f"failed: {exc}")
            return 1
        print_ledger_report(ledger, json_output)
        return 0
    if requests < 10:
        raise ValueError("--requests must be at least 10")
    if stages_only:
        stages = run_stage_bench(settings, datetime.now(UTC), requests=requests, progress=say)
        print(json.dumps(stages.to_json_dict()) if json_output else format_stage_report(stages))
        return 0
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    folder = (settings.var_dir / "bench" / run).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    host = probe_host(folder / "host-probe")
    say(f"host: {host.describe()}")
    try:
        with _broker(settings, folder) as (kafka, broker_pid):
            say(f"broker {kafka.bootstrap}; run folder {folder}")
            baseline = measure_plumbing(kafka, directory, max(requests, PLUMBING_MIN_RECORDS),
                                        workers,
                                        settings.topic_partitions, TopicNames(f"bench{run[-6:]}p"))
            faust = measure_faust_baseline(
                kafka, settings, directory, folder / "faust-baseline",
                max(requests, PLUMBING_MIN_RECORDS), workers, TopicNames(f"bench{run[-6:]}f"),
                broker_pid) if faust_baseline else None
            pipeline = measure_pipeline(kafka, settings, directory, folder, requests, workers,
                                        database_url, TopicNames(f"bench{run[-6:]}w"),
                                        soak_seconds, profile, paced_rate, soak_rate,
                                        broker_pid)
    except BenchFailed as exc:
        say(f"failed: {exc}")
        return 1
    report = BenchReport(baseline, pipeline, _dialect(database_url), requests, workers,
                         settings.topic_partitions, (load_before, _load()), host, faust)
    print(json.dumps(report.to_json_dict()) if json_output else format_report(report))
    return 0


@contextlib.contextmanager
def _broker(settings: Settings, folder: Path) -> Iterator[tuple[KafkaSettings, int | None]]:
    """The configured cluster, or an embedded broker of the run's own and its pid."""
    if settings.kafka_bootstrap:
        yield settings.kafka(), None
        return
    with EmbeddedBroker(log_path=folder / "broker.log") as broker:
        yield settings.kafka(broker.bootstrap), broker.pid  # embedded: no bootstrap configured


# ---------------------------------------------------------------- the request mix


def request_mix(count: int, tag: str, *, per_hour: float = 120.0,
                start: datetime | None = None, later: timedelta = timedelta(0),
                ) -> list[dict[str, Any]]:
    """``count`` realistic HelpRequests (all 12 languages, every region) submitted from now
    (or ``start``) plus ``later``."""
    begin = (start or datetime.now(UTC).replace(microsecond=0)) + later
    return list(sample_requests(count, begin, per_hour=per_hour, seed=11, prefix=tag))


def stage_payloads(mix: Sequence[dict[str, Any]], directory: CenterDirectory,
                   now: datetime) -> dict[str, list[tuple[bytes, bytes]]]:
    """request_id → the (key, value) the pipeline emits at each hop: routed, booked, delivered.

    Computed offline with the real core (route, book on an in-memory ledger), so the plumbing
    baseline moves exactly the bytes the pipeline moves.
    """
    ledger, full_days = InMemoryLedger(), FullDays()
    table = {}
    for body in mix:
        request = parse_help_request(body)
        rid = request.request_id
        decision = route(request, directory, now)
        routed = ((decision.center_id or "none").encode(),
                  encode(RequestRouted(request=request, decision=decision).to_json_dict()))
        meeting = book(decision, directory, ledger, full_days, join_url).meeting
        booked = routed if meeting is None else (rid.encode(), encode(MeetingBooked(
            request=request, meeting=meeting, booked_at=now).to_json_dict()))
        delivered = InviteDelivered(request_id=rid, backend="outbox", uid=meeting_uid(rid),
                                    sequence=0, method="REQUEST", status="delivered",
                                    location=f"var/outbox/{meeting_uid(rid)}.ics",
                                    delivered_at=now)
        table[rid] = [routed, booked, (rid.encode(), encode(delivered.to_json_dict()))]
    return table


def sustained_rate(started_ns: int, finish_times_ns: Sequence[int]) -> float:
    """Records per second end to end: all of them over the time from the first submission to
    the last finish, filling and draining the stages included.

    This is the rate the open-loop run's "50 %" is taken of. :func:`drain_rate` is higher when
    a stage finishes its records in bursts: with batches, the last stage can drain the flood
    faster than the stages before it could feed a steady load.
    """
    if not finish_times_ns:
        return 0.0
    span = (max(finish_times_ns) - started_ns) / 1e9
    return len(finish_times_ns) / span if span > 0 else 0.0


def drain_rate(finish_times_ns: Sequence[int]) -> float:
    """Completions per second between the 10th and the 90th percentile of finish times: how
    fast the last stage drained the middle of the flood (round 1 and 2 reported this one).

    Leaves out the ramp-up (first fetches, group joins) and the tail (the last partition).
    """
    times = sorted(finish_times_ns)
    if len(times) < 2:
        return 0.0
    low, high = (int(0.1 * len(times)), int(0.9 * len(times))) if len(times) >= 20 \
        else (0, len(times) - 1)
    span = (times[high] - times[low]) / 1e9
    return (high - low) / span if span > 0 else 0.0


# ------------------------------------------------------------ phase 1: the plumbing


def measure_plumbing(kafka: KafkaSettings, directory: CenterDirectory, count: int,
                     processes: int, partitions: int, topics: TopicNames) -> float:
    """Records per second through three plain aiokafka hops in ``processes`` processes."""
    chain = [topics.requests_submitted, topics.requests_routed, topics.meetings_booked,
             topics.invites_delivered]
    ensure_topics(kafka.bootstrap, chain, partitions, **_admin_kwargs(kafka))
    mix = request_mix(count, f"{topics.prefix}-r")
    table = stage_payloads(mix, directory, datetime.now(UTC))
    context = multiprocessing.get_context("spawn")
    reports, stop = context.Queue(), context.Event()
    hops = list(itertools.pairwise(chain))
    members = [context.Process(target=plumbing_process, daemon=True,
                               args=(kafka, hops, topics.prefix, table, reports, stop))
               for _ in range(processes)]
    say(f"plumbing: {processes} process(es) × {len(hops)} aiokafka hops, {count} records")
    for member in members:
        member.start()
    try:
        _wait_plumbing_assigned(reports, members, len(hops), partitions)
        started = time.time_ns()
        _produce_all(kafka, chain[0], [(b["request_id"].encode(), encode(b)) for b in mix])
        finished = _read_timestamps(kafka, chain[-1], partitions, count)
    finally:
        stop.set()
        for member in members:
            member.join(10)
            if member.is_alive():
                member.kill()
    rate = sustained_rate(started, finished)
    say(f"plumbing: {len(finished)} records through, {rate:.1f}/s "
        f"(drain rate {drain_rate(finished):.1f}/s)")
    return rate


def plumbing_process(kafka: KafkaSettings, hops: list[tuple[str, str]], group: str,
                     table: dict[str, list[tuple[bytes, bytes]]], reports: Any,
                     stop: Any) -> None:
    """One baseline process: every hop's consumer loop, one shared producer (like a worker)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        end_with(parent.pid)  # not left consuming if the benchmark is killed
    asyncio.run(_plumb(kafka, hops, group, table, reports, stop))


async def _plumb(kafka: KafkaSettings, hops: list[tuple[str, str]], group: str,
                 table: dict[str, list[tuple[bytes, bytes]]], reports: Any, stop: Any) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(kafka))
    await producer.start()
    loops = [asyncio.create_task(_hop(index, source, target, producer, kafka,
                                      f"{group}-hop{index}", table, reports))
             for index, (source, target) in enumerate(hops)]
    try:
        while not stop.is_set() and not any(loop.done() for loop in loops):
            await asyncio.sleep(0.1)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await producer.stop()


async def _hop(index: int, source: str, target: str, producer: Any, kafka: KafkaSettings,
               group: str, table: dict[str, list[tuple[bytes, bytes]]], reports: Any) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener

    class Announce(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            reports.put((os.getpid(), index, sorted(tp.partition for tp in assigned)))

    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(kafka, group))
    consumer.subscribe([source], listener=Announce())
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            sent = []
            for records in batch.values():
                for record in records:
                    body = json.loads(record.value)
                    key, value = table[body.get("request_id") or body["request"]["request_id"]
                                       ][index]
                    sent.append(await producer.send(target, value=value, key=key))
            if sent:
                await asyncio.gather(*sent)
                await consumer.commit()
    finally:
        await consumer.stop()


def _wait_plumbing_assigned(reports: Any, members: list[Any], hops: int,
                            partitions: int) -> None:
    latest: dict[tuple[int, int], list[int]] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    pids = {member.pid for member in members}
    while time.monotonic() < deadline:
        if any(not member.is_alive() for member in members):
            raise BenchFailed("a plumbing process exited during start-up")
        with contextlib.suppress(queue.Empty):
            pid, hop, assigned = reports.get(timeout=0.5)
            latest[(pid, hop)] = assigned
        if all(_split({pid: latest.get((pid, hop)) for pid in pids}, partitions)
               for hop in range(hops)):
            return
    raise BenchFailed(f"plumbing consumers did not split the partitions in {READY_TIMEOUT} s")


def _split(assignments: dict[int, list[int] | None], partitions: int) -> bool:
    """Every member has announced, and together they own each partition exactly once."""
    if any(parts is None for parts in assignments.values()):
        return False
    owned = [p for parts in assignments.values() for p in parts or ()]
    return sorted(owned) == list(range(partitions))


def _read_timestamps(kafka: KafkaSettings, topic: str, partitions: int, count: int,
                     timeout: float = 300.0) -> list[int]:
    """Producer timestamps (ns) of the first ``count`` records of ``topic``."""
    consumer = KafkaConsumer(**kafka_python_client_kwargs(kafka), group_id=None,
                             enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5
    try:
        while len(stamps) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                stamps.extend(record.timestamp * 1_000_000 for record in records)
            if time.monotonic() > next_note:
                say(f"plumbing: {len(stamps)}/{count} through")
                next_note += 5
    finally:
        consumer.close()
    if len(stamps) < count:
        raise BenchFailed(f"only {len(stamps)} of {count} records reached {topic}")
    return stamps


def measure_faust_baseline(kafka: KafkaSettings, settings: Settings,
                           directory: CenterDirectory, folder: Path, count: int, workers: int,
                           topics: TopicNames, broker_pid: int | None) -> FaustBaseline:
    """Records per second, and CPU per record, through the pipeline's Faust app with
    pass-through stages in ``workers`` processes: the plumbing's hops and bytes, the
    pipeline's framework."""
    folder.mkdir(parents=True, exist_ok=True)
    ensure_topics(kafka.bootstrap, topics, settings.topic_partitions, **_admin_kwargs(kafka))
    mix = request_mix(count, f"{topics.prefix}-r")
    table = folder / "payloads.json"
    write_table(stage_payloads(mix, directory, datetime.now(UTC)), table)
    apps = _Pipeline(kafka, settings, folder, f"sqlite:///{folder / 'deadletters.db'}", topics,
                     settings.topic_partitions, broker_pid)
    say(f"faust baseline: {workers} process(es) of the pipeline's app, no stage work, "
        f"{count} records")
    apps.spawn(workers, (sys.executable, "-m", "services.faust_baseline", str(table)))
    try:
        apps.wait_ready()
        before = apps.cpu_now()
        started = time.time_ns()
        _produce_all(kafka, topics.requests_submitted,
                     [(b["request_id"].encode(), encode(b)) for b in mix])
        finished = _read_timestamps(kafka, topics.invites_delivered, settings.topic_partitions,
                                    count)
        worker_ms, broker_ms = apps.cpu_ms_per_request(before, count)
    finally:
        apps.stop()
    rate = sustained_rate(started, finished)
    say(f"faust baseline: {len(finished)} records through, {rate:.1f}/s, workers "
        f"{worker_ms:.2f} ms of CPU a record")
    return FaustBaseline(rate, worker_ms, broker_ms)


# ------------------------------------------------------------ phase 2: the pipeline


@dataclass
class _Phase:
    name: str
    ids: list[str]
    submitted_ns: dict[str, int] = field(default_factory=dict)


#: Worker log events that mean a record left the batch's fast path (consumers/stages.py).
_FALLBACK_EVENTS = {"batch_one_by_one": "batches one by one",
                    "batch_record_one_by_one": "batches recorded one by one",
                    "bookings_set_aside": "bookings set aside (another batch's lock)"}


class _Pipeline:
    """Worker processes against one database and outbox, and how to watch them finish."""

    def __init__(self, kafka: KafkaSettings, settings: Settings, folder: Path,
                 database_url: str, topics: TopicNames, partitions: int,
                 broker_pid: int | None = None) -> None:
        self.kafka, self.topics, self.partitions = kafka, topics, partitions
        self.folder = folder
        self.outbox = folder / "outbox"
        self.engine: Engine = create_engine_for(database_url)
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.broker_pid = broker_pid  # the embedded broker's, to count its CPU; None otherwise
        self.env = {**os.environ,
                    "FASTTRACK_KAFKA_BOOTSTRAP": kafka.bootstrap,
                    "FASTTRACK_VAR_DIR": str(folder / "var"),
                    "FASTTRACK_OUTBOX_DIR": str(self.outbox),
                    "FASTTRACK_DATABASE_URL": database_url,
                    "FASTTRACK_TOPIC_PREFIX": topics.prefix,
                    "FASTTRACK_TOPIC_PARTITIONS": str(partitions)}
        if kafka.embedded:
            self.env["FASTTRACK_KAFKA_EMBEDDED"] = "1"
        if settings.directory:
            self.env["FASTTRACK_DIRECTORY"] = str(settings.directory.resolve())

    def spawn(self, count: int, command: Sequence[str] = WORKER_COMMAND) -> None:
        for n in range(count):
            log = self.folder / f"worker-{n + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(list(command),
                                           cwd=_REPO_ROOT, env=self.env, stdout=out,
                                           stderr=subprocess.STDOUT,
                                           preexec_fn=ending_with_this_process())
            self.processes.append((process, log))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.processes]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            if _split({p.pid: _announced(log) for p, log in self.processes}, self.partitions):
                return
            time.sleep(0.3)
        raise BenchFailed(f"workers did not split the partitions in {READY_TIMEOUT} s; "
                          f"logs in {self.folder}")

    def check_alive(self) -> None:
        for process, log in self.processes:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise BenchFailed(f"worker {process.pid} exited {process.returncode}:\n{tail}")

    def finished(self, phase: _Phase) -> dict[str, tuple[str, int]]:
        """request_id → (outcome, finish time ns): invited (invite file mtime) or final status."""
        done: dict[str, tuple[str, int]] = {}
        for rid in phase.ids:
            with contextlib.suppress(FileNotFoundError):
                done[rid] = ("invited", (self.outbox / f"{meeting_uid(rid)}.ics")
                             .stat().st_mtime_ns)
        query = select(requests.c.request_id, requests.c.status, requests.c.updated_at).where(
            requests.c.request_id.like(f"{phase.name}-%"),
            requests.c.status.in_(("escalated", "rejected", "deadlettered", "cancelled")))
        with read_connection(self.engine) as conn:
            for rid, status, updated in conn.execute(query):
                done.setdefault(rid, (status, int(updated.timestamp() * 1e9)))
        return done

    def wait_finished(self, phase: _Phase, timeout: float) -> dict[str, tuple[str, int]]:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            self.check_alive()
            done = self.finished(phase)
            elapsed = time.monotonic() - started
            if len(done) >= len(phase.ids):
                return done
            if time.monotonic() > deadline:
                say(f"{phase.name}: timed out with {len(done)}/{len(phase.ids)} finished")
                return done
            say(f"{phase.name}: {len(done)}/{len(phase.ids)} finished after {elapsed:.0f} s")
            time.sleep(min(5.0, max(0.5, len(phase.ids) / 500)))

    def timelines(self, phase: _Phase) -> dict[str, dict[str, datetime]]:
        """request_id → status → when it was first recorded."""
        query = select(request_events.c.request_id, request_events.c.status,
                       request_events.c.at).where(
            request_events.c.request_id.like(f"{phase.name}-%"))
        result: dict[str, dict[str, datetime]] = defaultdict(dict)
        with read_connection(self.engine) as conn:
            for rid, status, at in conn.execute(query):
                result[rid].setdefault(status, at)
        return result

    def fallbacks(self) -> Counter[str]:
        return fallback_counts(log for _, log in self.processes)

    def cpu_now(self) -> tuple[float, float | None]:
        """User + system CPU seconds so far of all workers, and of the broker when its pid is
        known (None otherwise); Linux ``/proc``, 0 elsewhere."""
        return (sum(_cpu_seconds(pid) for pid in self.pids),
                None if self.broker_pid is None else _cpu_seconds(self.broker_pid))

    def cpu_ms_per_request(self, before: tuple[float, float | None],
                           requests: int) -> tuple[float, float | None]:
        """Worker and broker CPU milliseconds per request since ``before`` (:meth:`cpu_now`)."""
        workers, broker = self.cpu_now()
        n = max(1, requests)
        return (1000 * (workers - before[0]) / n,
                None if broker is None or before[1] is None else 1000 * (broker - before[1]) / n)

    def thread_cpu_now(self) -> Counter[str]:
        """CPU seconds so far of all workers' threads, by role (:func:`thread_role`)."""
        total: Counter[str] = Counter()
        for pid in self.pids:
            total.update(thread_cpu_seconds(pid))
        return total

    def thread_cpu_ms_per_request(self, before: Counter[str], requests: int) -> dict[str, float]:
        """Workers' CPU milliseconds per request since ``before``, by thread role."""
        now, n = self.thread_cpu_now(), max(1, requests)
        return {role: 1000 * (now[role] - before[role]) / n for role in THREAD_ROLES}

    def rss_kib(self) -> list[int]:
        return [_rss_kib(pid) for pid in self.pids]

    def stop(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.engine.dispose()


def measure_pipeline(kafka: KafkaSettings, settings: Settings, directory: CenterDirectory,
                     folder: Path, count: int, workers: int, database_url: str | None,
                     topics: TopicNames, soak_seconds: float,
                     profile: Path | None, paced_rate: float | None = None,
                     soak_rate: float | None = None,
                     broker_pid: int | None = None) -> PipelineRun:
    """Flood for the maximum rate, then an open-loop run at half of it for the latencies."""
    url = database_url or f"sqlite:///{folder / 'fasttrack.db'}"
    say(f"pipeline: migrating {_dialect(url)} database")
    upgrade_database(url)
    ensure_topics(kafka.bootstrap, topics, settings.topic_partitions, **_admin_kwargs(kafka))
    pipeline = _Pipeline(kafka, settings, folder, url, topics, settings.topic_partitions,
                         broker_pid)
    pipeline.spawn(workers)
    producer = KafkaProducer(**kafka_python_producer_kwargs(kafka), linger_ms=0)
    try:
        say(f"pipeline: waiting for {workers} worker(s) to share the partitions")
        pipeline.wait_ready()
        rss = [(0.0, pipeline.rss_kib())]
        flood = _Phase(f"{topics.prefix}-flood", [])
        mix = request_mix(count, flood.name)
        flood.ids = [body["request_id"] for body in mix]
        broker_ms: dict[str, float | None] = {}
        cpu_before, threads_before = pipeline.cpu_now(), pipeline.thread_cpu_now()
        with _profiling(profile, pipeline.pids[0]):
            _submit(producer, topics.requests_submitted, mix, flood, rate=None)
            flood_done = pipeline.wait_finished(flood, timeout=max(180.0, count / 2))
        cpu_ms, broker_ms["flood"] = pipeline.cpu_ms_per_request(cpu_before, len(flood_done))
        thread_ms = {"flood": pipeline.thread_cpu_ms_per_request(threads_before,
                                                                 len(flood_done))}
        flood_finishes = [t for _, t in flood_done.values()]
        max_rate = sustained_rate(min(flood.submitted_ns.values()), flood_finishes)
        rss.append((0.0, pipeline.rss_kib()))
        if max_rate <= 0:
            raise BenchFailed("no request finished in the flood")
        say(f"pipeline: max sustained {max_rate:.1f} requests/s (drain rate "
            f"{drain_rate(flood_finishes):.1f}/s)")

        paced = _Phase(f"{topics.prefix}-paced", [])
        mix = request_mix(count, paced.name, later=PHASE_CALENDAR_START["paced"])
        paced.ids = [body["request_id"] for body in mix]
        rate = paced_rate or PACED_FRACTION * max_rate
        cpu_before, threads_before = pipeline.cpu_now(), pipeline.thread_cpu_now()
        with _profiling(_paced_profile(profile), pipeline.pids[0]):
            _submit(producer, topics.requests_submitted, mix, paced, rate=rate)
            paced_done = pipeline.wait_finished(paced, timeout=max(120.0, count / 5))
        paced_cpu_ms, broker_ms["paced"] = pipeline.cpu_ms_per_request(cpu_before,
                                                                        len(paced_done))
        thread_ms["paced"] = pipeline.thread_cpu_ms_per_request(threads_before, len(paced_done))
        rss.append((0.0, pipeline.rss_kib()))
        latencies = [(paced_done[rid][1] - paced.submitted_ns[rid]) / 1e6
                     for rid in paced.ids if paced_done.get(rid, ("", 0))[0] == "invited"]
        stages = _stage_breakdown(pipeline.timelines(paced), paced, paced_done)
        result = PipelineRun(max_rate, sustained_rate(min(paced.submitted_ns.values()),
                                                      [t for _, t in paced_done.values()]),
                             latencies, stages,
                             {"flood": _outcomes(flood, flood_done),
                              "paced": _outcomes(paced, paced_done)}, cpu_ms, rss,
                             rate, paced_rate is not None)
        result.paced_cpu_ms_per_request = paced_cpu_ms
        result.thread_cpu_ms = thread_ms
        if soak_seconds > 0:
            result.soak_offered_per_s = soak_rate or SOAK_FRACTION * max_rate
            (result.rss_kib, result.soak_cpu_ms_per_request, broker_ms["soak"],
             result.soak_latencies, result.soak_cpu_by_minute) = _soak(
                pipeline, producer, topics, result.soak_offered_per_s, soak_seconds)
        result.broker_cpu_ms = {phase: ms for phase, ms in broker_ms.items() if ms is not None}
        result.fallbacks = pipeline.fallbacks()
        return result
    finally:
        producer.close()
        pipeline.stop()


def _submit(producer: KafkaProducer, topic: str, mix: list[dict[str, Any]], phase: _Phase,
            rate: float | None) -> None:
    """Produce the mix: all at once (``rate`` None) or open-loop at ``rate`` per second.

    Open loop: each request is sent at its scheduled time whatever the pipeline is doing, so a
    slow pipeline shows up as latency instead of slowing the load (no coordinated omission).
    """
    say(f"{phase.name}: submitting {len(mix)} requests"
        + (f" at {rate:.1f}/s" if rate else " at once"))
    begin = time.monotonic()
    for n, body in enumerate(mix):
        if rate:
            delay = begin + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        value = encode(body)
        phase.submitted_ns[body["request_id"]] = time.time_ns()
        producer.send(topic, key=body["request_id"].encode(), value=value)
    producer.flush()


def _outcomes(phase: _Phase, done: dict[str, tuple[str, int]]) -> Counter[str]:
    outcomes = Counter(outcome for outcome, _ in done.values())
    missing = len(phase.ids) - len(done)
    if missing:
        outcomes["unfinished"] = missing
    return outcomes


STAGES = (
    ("submitted → intake start (Kafka, queue)", None, "accepted"),
    ("intake start → booker start (validate, dedupe, route, DB, hop)", "accepted", "booked"),
    ("booker start → notifier start (book, DB, hop)", "booked", "invited"),
    ("notifier start → invite written (render, outbox, fsync)", "invited", None),
)


def _stage_breakdown(timelines: dict[str, dict[str, datetime]], phase: _Phase,
                     done: dict[str, tuple[str, int]]) -> dict[str, list[float]]:
    """Per-stage milliseconds of every invited request of the phase.

    Each stage records its timeline entry with the time it started handling the record, so a
    delta spans that stage's own work plus the hop and the wait before the next stage.
    """
    result: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for rid in phase.ids:
        outcome, written_ns = done.get(rid, ("", 0))
        marks = timelines.get(rid, {})
        if outcome != "invited" or not {"accepted", "booked", "invited"} <= set(marks):
            continue
        points = {status: int(at.timestamp() * 1e9) for status, at in marks.items()}
        for name, start, end in STAGES:
            begin = phase.submitted_ns[rid] if start is None else points[start]
            finish = written_ns if end is None else points[end]
            result[name].append((finish - begin) / 1e6)
    return result


def _soak(pipeline: _Pipeline, producer: KafkaProducer, topics: TopicNames, rate: float,
          seconds: float) -> tuple[list[tuple[float, list[int]]], float, float | None,
                                   list[tuple[float, float]],
                                   list[tuple[int, float, float | None]]]:
    """Paced load for ``seconds``; the workers' RSS every 10 s, their CPU per request, the
    broker's (None when its pid is not known), each invited request's latency (ms) by when it
    was sent (seconds into the soak), and the CPU by minute (:func:`cpu_by_minute`)."""
    count = int(rate * seconds)
    soak = _Phase(f"{topics.prefix}-soak", [])
    mix = request_mix(count, soak.name, per_hour=SOAK_DEMAND_PER_HOUR,
                      later=PHASE_CALENDAR_START["soak"])
    soak.ids = [body["request_id"] for body in mix]
    samples: list[tuple[float, list[int]]] = []
    cpu_samples: list[tuple[float, float, float | None]] = []
    stop = threading.Event()
    begin = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            cpu_samples.append((time.monotonic() - begin, *pipeline.cpu_now()))
            samples.append((time.monotonic() - begin, pipeline.rss_kib()))
            say(f"soak: {samples[-1][0]:.0f} s, worker RSS "
                f"{', '.join(f'{kib / 1024:.1f}' for kib in samples[-1][1])} MiB")
            stop.wait(RSS_EVERY_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = pipeline.cpu_now()
    try:
        say(f"soak: {count} requests at {rate:.1f}/s for {seconds:.0f} s")
        _submit(producer, topics.requests_submitted, mix, soak, rate=rate)
        done = pipeline.wait_finished(soak, timeout=120.0)
        cpu_ms, broker_ms = pipeline.cpu_ms_per_request(cpu_before, len(done))
        say(f"soak: {len(done)}/{count} finished within 120 s of the last submission; "
            f"worker CPU {cpu_ms:.1f} ms per request")
    finally:
        stop.set()
        sampler.join()
    samples.append((time.monotonic() - begin, pipeline.rss_kib()))
    first = min(soak.submitted_ns.values())
    latencies = sorted(((soak.submitted_ns[rid] - first) / 1e9,
                        (done[rid][1] - soak.submitted_ns[rid]) / 1e6)
                       for rid in soak.ids if done.get(rid, ("", 0))[0] == "invited")
    cpu_samples.append((time.monotonic() - begin, *pipeline.cpu_now()))
    return samples, cpu_ms, broker_ms, latencies, cpu_by_minute(cpu_samples)


def cpu_by_minute(samples: Sequence[tuple[float, float, float | None]],
                  ) -> list[tuple[int, float, float | None]]:
    """(minute, workers' CPU in % of a core, the broker's or None) from cumulative CPU samples
    ``(seconds, workers' CPU seconds, broker's or None)``: for each minute, from its first
    sample to the first of the next minute (or its own last)."""
    by_minute: dict[int, list[tuple[float, float, float | None]]] = {}
    for sample in samples:
        by_minute.setdefault(int(sample[0] // 60), []).append(sample)
    minutes = sorted(by_minute)
    result: list[tuple[int, float, float | None]] = []
    for n, minute in enumerate(minutes):
        first = by_minute[minute][0]
        last = by_minute[minutes[n + 1]][0] if n + 1 < len(minutes) else by_minute[minute][-1]
        elapsed = last[0] - first[0]
        if elapsed <= 0:
            continue
        broker = (None if first[2] is None or last[2] is None
                  else 100 * (last[2] - first[2]) / elapsed)
        result.append((minute, 100 * (last[1] - first[1]) / elapsed, broker))
    return result


def latency_by_minute(latencies: Sequence[tuple[float, float]]) -> list[tuple[int, float, int]]:
    """(minute, p99 ms, requests) for each whole or partial minute of sends."""
    minutes: dict[int, list[float]] = {}
    for sent_s, ms in latencies:
        minutes.setdefault(int(sent_s // 60), []).append(ms)
    return [(minute, percentile(values, 0.99), len(values))
            for minute, values in sorted(minutes.items())]


def _paced_profile(profile: Path | None) -> Path | None:
    return None if profile is None else profile.with_name(profile.name + ".paced")


@contextlib.contextmanager
def _profiling(output: Path | None, pid: int) -> Iterator[None]:
    """py-spy record of ``pid`` (collapsed stacks to ``output``) while the block runs."""
    if output is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--output",
               str(output), "--rate", "200", "--nonblocking"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
        say(f"profile of worker {pid} written to {output}")


def summarize_profile(collapsed: str, top: int = 25) -> str:
    """The functions with the most samples, inclusive and own, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("own (leaf):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- reporting


_PHASE_NAMES = {"flood": "flood", "paced": "paced run", "soak": "soak"}


def format_report(report: BenchReport) -> str:
    """The human-readable report: both rates, their ratio, latencies, where the time goes."""
    run = report.pipeline
    lines = [
        f"FastTrack bench: {report.requests} requests per phase, {report.workers} worker(s), "
        f"{report.partitions} partitions, {report.database}",
        f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; load average before {report.load[0]}, "
        f"after {report.load[1]}",
        *([f"host, before the run: {report.host.describe()}"] if report.host else []),
        "",
        f"plumbing limit (aiokafka, 3 hops)      {report.baseline_per_s:9.1f} requests/s",
        *_faust_lines(report),
        f"pipeline, max sustained                {run.max_per_s:9.1f} requests/s",
        f"ratio                                  {100 * report.ratio:9.1f} %   "
        f"(target >= 40 %: {'met' if report.ratio >= 0.4 else 'MISSED'})",
        "",
        f"latency submitted → invite written, open loop at {run.paced_offered_per_s:.1f}/s"
        + (" (fixed by --paced-rate)" if run.paced_fixed else " (half of max)")
        + f", finished {run.paced_per_s:.1f}/s:",
    ]
    if run.latencies_ms:
        p99 = report.latency(0.99) or 0.0
        verdict = ("no verdict: not at half of max" if run.paced_fixed
                   else "met" if p99 < 500 else "MISSED")
        lines.append(f"  p50 {report.latency(0.5):8.1f} ms   p95 {report.latency(0.95):8.1f} ms"
                     f"   p99 {p99:8.1f} ms   (target p99 < 500 ms: {verdict})")
    else:
        lines.append("  no invite was written")
    lines += ["", "where the time goes (paced run, per request):",
              f"  {'stage':<66} {'p50 ms':>8} {'p95 ms':>8}"]
    for name, values in run.stages_ms.items():
        if values:
            lines.append(f"  {name:<66} {percentile(values, 0.5):8.1f} "
                         f"{percentile(values, 0.95):8.1f}")
    soak = "" if run.soak_cpu_ms_per_request is None else \
        f", soak {run.soak_cpu_ms_per_request:.1f} ms"
    by_phase = ", ".join(f"{_PHASE_NAMES[phase]} {ms:.1f} ms"
                         for phase, ms in run.broker_cpu_ms.items())
    broker = [f"broker CPU per request: {by_phase} (the embedded broker)"] if by_phase else []
    by_thread = "; ".join(
        f"{_PHASE_NAMES[phase]} " + ", ".join(f"{role} {ms:.1f}" for role, ms in roles.items())
        + " ms" for phase, roles in run.thread_cpu_ms.items())
    threads = [f"  by thread: {by_thread}"] if by_thread else []
    lines += ["", f"worker CPU per request: flood {run.cpu_ms_per_request:.1f} ms, paced run "
              f"{run.paced_cpu_ms_per_request:.1f} ms{soak} (all stages, all workers)",
              *threads,
              *broker,
              "outcomes: " + "; ".join(
        f"{phase} " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        for phase, counts in run.outcomes.items())]
    lines.append("left the batch path: " + ("; ".join(
        f"{what} {n}" for what, n in sorted(run.fallbacks.items())) or "never"))
    if run.soak_latencies:
        values = [ms for _, ms in run.soak_latencies]
        minutes = latency_by_minute(run.soak_latencies)
        lines.append(f"soak latency at {run.soak_offered_per_s:.1f}/s, {len(values)} invited: "
                     f"p50 {percentile(values, 0.5):.1f} ms, p95 {percentile(values, 0.95):.1f} "
                     f"ms, p99 {percentile(values, 0.99):.1f} ms; p99 by minute of sending: "
                     + ", ".join(f"{p99:.0f}" for _, p99, _ in minutes) + " ms")
    if run.soak_cpu_by_minute:
        lines.append("soak CPU by minute, % of a core (workers/broker): " + ", ".join(
            f"{workers:.0f}/{'-' if broker is None else f'{broker:.0f}'}"
            for _, workers, broker in run.soak_cpu_by_minute))
    if run.rss_kib:
        lines.append("worker RSS (MiB): " + " → ".join(
            "/".join(f"{kib / 1024:.0f}" for kib in sample) for _, sample in run.rss_kib))
    return "\n".join(lines)


def _faust_lines(report: BenchReport) -> list[str]:
    faust = report.faust
    if faust is None:
        return []
    share = 100 * faust.per_s / report.baseline_per_s if report.baseline_per_s else 0.0
    broker = "" if faust.broker_cpu_ms is None else f", broker {faust.broker_cpu_ms:.2f} ms"
    return [f"faust limit (the pipeline's app, no stage work) {faust.per_s:9.1f} requests/s "
            f"({share:.1f} % of plumbing; CPU a request: workers {faust.worker_cpu_ms:.2f} ms"
            f"{broker})"]


# ------------------------------------------------------------------------ helpers


def fallback_counts(logs: Iterable[Path]) -> Counter[str]:
    """How often the workers left the batch path, from their logs: batches (or a batch's
    records) done one by one after a failed transaction, by stage, and bookings set aside
    because another worker's batch held a specialist they needed (one event per batch)."""
    found: Counter[str] = Counter()
    for log in logs:
        with contextlib.suppress(FileNotFoundError), log.open(errors="replace") as lines:
            for line in lines:
                if "{" not in line or not any(name in line for name in _FALLBACK_EVENTS):
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line[line.index("{"):])
                    name = event.get("event")
                    if name in _FALLBACK_EVENTS:
                        found[f"{event.get('stage', '?')}: {_FALLBACK_EVENTS[name]}"] += \
                            event.get("records", 1) if name == "bookings_set_aside" else 1
    return found


def _announced(log: Path) -> list[int] | None:
    """The partitions of requests.submitted a worker last announced it owns."""
    found = None
    with contextlib.suppress(FileNotFoundError):
        for line in log.read_text(errors="replace").splitlines():
            if '"partitions_assigned"' in line:
                with contextlib.suppress(ValueError):
                    found = json.loads(line[line.index("{"):])["partitions"]
    return found


def _produce_all(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(**kafka_python_producer_kwargs(kafka))
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def _admin_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    kwargs = kafka_python_client_kwargs(kafka)
    kwargs.pop("bootstrap_servers")
    return kwargs


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


#: What a worker's threads do: the stages' blocking work (SQL, rendering, delivery); Faust's
#: event loop, with the agents, the producer and the fetched records' dispatch (the main
#: thread); everything else, mostly aiokafka's consumer thread, which fetches.
THREAD_ROLES = ("stages", "faust loop", "other threads")


def thread_role(pid: int, tid: int, name: str) -> str:
    """The role (:data:`THREAD_ROLES`) of thread ``tid`` of worker ``pid``, native name ``name``."""
    if name.startswith(STAGE_THREAD_NAME):
        return "stages"
    return "faust loop" if tid == pid else "other threads"


def thread_cpu_seconds(pid: int) -> Counter[str]:
    """User + system CPU seconds of the live threads of ``pid``, by :func:`thread_role`
    (Linux ``/proc``; empty elsewhere). A thread that has ended takes its seconds with it."""
    seconds: Counter[str] = Counter()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return seconds
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        seconds[thread_role(pid, int(task.name), name)] += _stat_cpu_seconds(task / "stat")
    return seconds


def _cpu_seconds(pid: int) -> float:
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a process's or a thread's ``stat``; 0 once it ended."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _dialect(url: str | None) -> str:
    return "postgresql" if url and url.startswith("postgres") else "sqlite"

