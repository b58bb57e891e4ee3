"""The Faust app: one agent per stage, each a thin loop that hands batches of records to its stage.

An agent takes what has arrived (up to ``BatchSettings.max_records``, waiting at most
``window_seconds`` for more) with ``stream.take_events``, which acks the batch's records only
when the loop body is done with them. Faust commits acked offsets after flushing the producer;
since a stage commits its database work before returning and the loop awaits every send, an
offset is committed only after the database work and the emits (DESIGN §9). An agent that
raises would still ack its records, so failures are caught here, per record: retried with
backoff when they may pass, dead-lettered with the reason when they cannot. The stages' blocking
work runs on the stage threads (:mod:`consumers.threads`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog

from consumers.envelope import Emit, Origin, Unprocessable, deadletter, request_id_of
from consumers.stages import Outcome, Record
from consumers.threads import in_stage_thread
from scheduler.request_store import RequestState, RequestStore, UnknownRequest
from services.kafka_config import KafkaSettings, faust_app_kwargs
from services.topics import TopicNames

log = structlog.get_logger("fasttrack.pipeline")

#: Tries per record before a failure that is not obviously permanent is dead-lettered.
MAX_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.5


class Stage(Protocol):
    def handle(self, value: bytes, origin: Origin) -> list[Emit]: ...

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]: ...


@dataclass(frozen=True)
class BatchSettings:
    """How many records a stage takes at once, and how long it waits to fill a batch.

    Faust's ``take_events`` waits up to the window before each batch unless ``max_records``
    arrive first, so a batch holds what came during the previous one and the window, and the
    window is paid once per hop. At a fixed 100 requests/s on SQLite (docs/performance.md),
    p99 end to end was 642 ms with 50 ms, 393-423 ms with 10-20 ms, 494 ms with 5 ms (more,
    smaller transactions).
    """

    max_records: int = 500
    window_seconds: float = 0.02


@dataclass(frozen=True)
class Stages:
    submission: Stage
    booking: Stage
    invitation: Stage
    commands: Stage


def create_app(stages: Stages, store: RequestStore, clock: Callable[[], datetime],
               kafka: KafkaSettings, topics: TopicNames, *, partitions: int,
               datadir: Path, batches: BatchSettings = BatchSettings()) -> faust.App:
    """The pipeline's Faust app; nothing connects until a worker starts it."""
    app = faust.App(f"{topics.prefix}-pipeline",
                    **faust_app_kwargs(kafka, partitions=partitions, datadir=datadir))
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    out = {name: app.topic(getattr(topics, name), **raw) for name in (
        "requests_routed", "meetings_booked", "invites_delivered", "requests_escalated",
        "requests_deadletter")}
    runner = _Runner(out, store, clock)
    # A command changes a request that already stands (booked, invited): its failure is the
    # command's, in the dead-letter table, never the request's status.
    commands_runner = _Runner(out, store, clock, marks_requests=False)

    @app.on_partitions_assigned.connect
    async def announce(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned
                            if tp.topic == topics.requests_submitted)
        log.info("partitions_assigned", topic=topics.requests_submitted, partitions=partitions)

    @app.agent(app.topic(topics.requests_submitted, **raw), name="intake")
    async def intake(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batches.max_records, batches.window_seconds):
            await runner.process(stages.submission, events)

    @app.agent(out["requests_routed"], name="booker")
    async def booker(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batches.max_records, batches.window_seconds):
            await runner.process(stages.booking, events)

    @app.agent(out["meetings_booked"], name="notifier")
    async def notifier(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batches.max_records, batches.window_seconds):
            await runner.process(stages.invitation, events)

    @app.agent(app.topic(topics.requests_commands, **raw), name="commands")
    async def commands(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batches.max_records, batches.window_seconds):
            await commands_runner.process(stages.commands, events)

    return app


@dataclass
class _Runner:
    out: Mapping[str, faust.TopicT]
    store: RequestStore
    clock: Callable[[], datetime]
    marks_requests: bool = True  # a dead letter marks its request dead-lettered

    async def process(self, stage: Stage, events: Sequence[faust.EventT]) -> None:
        """One batch: the stage's outcomes, failed records retried or dead-lettered, then every
        emit sent in record order."""
        records: list[Record] = [(event.message.value or b"", _origin(event)) for event in events]
        try:
            outcomes = await in_stage_thread(stage.handle_batch, records)
        except Exception as exc:  # a batch's records are acked when this body ends: never lose them
            log.warning("batch_failed", records=len(records), error=type(exc).__name__)
            outcomes = [exc] * len(records)
        for (value, origin), outcome in zip(records, outcomes, strict=True):
            emits = outcome if not isinstance(outcome, Exception) else \
                await self._after_failure(stage, value, origin, outcome)
            for emit in emits:
                await self.out[emit.topic].send(key=emit.key, value=emit.value,
                                                headers=dict(emit.headers))

    async def _after_failure(self, stage: Stage, value: bytes, origin: Origin,
                             error: Exception) -> list[Emit]:
        """A record that failed in its batch (its first attempt): dead-letter it, or retry it
        on its own."""
        if isinstance(error, Unprocessable):
            return await self._deadletter(value, origin, error, 1)
        log.warning("stage_failed", topic=origin.topic, offset=origin.offset, attempt=1,
                    error=type(error).__name__)
        if MAX_ATTEMPTS == 1 or getattr(error, "transient", True) is False:
            return await self._deadletter(value, origin, error, 1)
        await asyncio.sleep(RETRY_BACKOFF_SECONDS)
        return await self._handle(stage, value, origin, first_attempt=2)

    async def _handle(self, stage: Stage, value: bytes, origin: Origin, *,
                      first_attempt: int = 1) -> list[Emit]:
        for attempt in range(first_attempt, MAX_ATTEMPTS + 1):
            try:
                return await in_stage_thread(stage.handle, value, origin)
            except Unprocessable as exc:
                return await self._deadletter(value, origin, exc, attempt)
            except Exception as exc:
                log.warning("stage_failed", topic=origin.topic, offset=origin.offset,
                            attempt=attempt, error=type(exc).__name__)
                # A failure its raiser calls permanent (a 550 from SMTP) will not pass.
                if attempt == MAX_ATTEMPTS or getattr(exc, "transient", True) is False:
                    return await self._deadletter(value, origin, exc, attempt)
                await asyncio.sleep(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _deadletter(self, value: bytes, origin: Origin, error: BaseException,
                          attempts: int) -> list[Emit]:
        emit = deadletter(value, origin, error, attempts)
        request_id = getattr(error, "request_id", None) or request_id_of(value, origin)
        log.error("dead_lettered", topic=origin.topic, partition=origin.partition,
                  offset=origin.offset, request_id=request_id, error=type(error).__name__)
        try:
            await in_stage_thread(self._record, emit, value, origin, error, attempts,
                                  request_id)
        except Exception as exc:
            # The dead-letter topic still gets the record (returned below), and the batch's
            # other records still run: an agent body that raises has its batch acked anyway.
            log.error("deadletter_unrecorded", topic=origin.topic, partition=origin.partition,
                      offset=origin.offset, request_id=request_id,
                      error=f"{type(exc).__name__}: {exc}"[:500])
        return [emit]

    def _record(self, emit: Emit, value: bytes, origin: Origin, error: BaseException,
                attempts: int, request_id: str | None) -> None:
        now = self.clock()
        request_id = _text(request_id) if request_id is not None else None
        self.store.record_deadletter(
            request_id=request_id, origin_topic=origin.topic, origin_partition=origin.partition,
            origin_offset=origin.offset, error_class=type(error).__name__,
            message=_text(str(error)[:2000]), payload=value, attempts=attempts, now=now,
            key=origin.key,
            headers={k: _text(v.decode("utf-8", "replace")) for k, v in emit.headers.items()},
        )
        if (request_id is not None and self.marks_requests
                and getattr(error, "marks_request", True)):
            # UnknownRequest: never accepted, so the dead letter is the only record.
            with contextlib.suppress(UnknownRequest):
                self.store.advance(request_id, RequestState.DEADLETTERED, now,
                                   {"error": type(error).__name__, "topic": origin.topic})


def _text(value: str) -> str:
    """``value`` as any database's text column takes it: PostgreSQL refuses NUL, which a
    record's key or its error can hold."""
    return value.replace("\x00", "\ufffd")


def _origin(event: faust.EventT) -> Origin:
    message = event.message
    return Origin(message.topic, message.partition, message.offset, message.key,
                  _headers(event.headers))


def _headers(raw: Any) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}
