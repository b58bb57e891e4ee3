"""The Faust app: one agent per stage, each a thin loop that hands records to its stage.

Faust acks a record when the agent's loop moves on, and commits acked offsets after flushing
the producer; since a stage commits its database work before returning and the loop awaits
every send, an offset is committed only after the database work and the emits (DESIGN §9).
An agent that raises would still ack its record, so failures are caught here, per record:
retried with backoff when they may pass, dead-lettered with the reason when they cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog

from consumers.envelope import Emit, Origin, Unprocessable, deadletter, request_id_of
from scheduler.request_store import RequestState, RequestStore, UnknownRequest
from services.kafka_config import KafkaSettings, faust_app_kwargs
from services.topics import TopicNames

log = structlog.get_logger("fasttrack.pipeline")

#: Tries per record before a failure that is not obviously permanent is dead-lettered.
MAX_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.5


class Stage(Protocol):
    def handle(self, value: bytes, origin: Origin) -> list[Emit]: ...


@dataclass(frozen=True)
class Stages:
    submission: Stage
    booking: Stage
    invitation: Stage
    commands: Stage


def create_app(stages: Stages, store: RequestStore, clock: Callable[[], datetime],
               kafka: KafkaSettings, topics: TopicNames, *, partitions: int,
               datadir: Path) -> faust.App:
    """The pipeline's Faust app; nothing connects until a worker starts it."""
    app = faust.App(f"{topics.prefix}-pipeline",
                    **faust_app_kwargs(kafka, partitions=partitions, datadir=datadir))
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    out = {name: app.topic(getattr(topics, name), **raw) for name in (
        "requests_routed", "meetings_booked", "invites_delivered", "requests_escalated",
        "requests_deadletter")}
    runner = _Runner(out, store, clock)

    @app.on_partitions_assigned.connect
    async def announce(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned
                            if tp.topic == topics.requests_submitted)
        log.info("partitions_assigned", topic=topics.requests_submitted, partitions=partitions)

    @app.agent(app.topic(topics.requests_submitted, **raw), name="intake")
    async def intake(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await runner.process(stages.submission, event)

    @app.agent(out["requests_routed"], name="booker")
    async def booker(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await runner.process(stages.booking, event)

    @app.agent(out["meetings_booked"], name="notifier")
    async def notifier(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await runner.process(stages.invitation, event)

    @app.agent(app.topic(topics.requests_commands, **raw), name="commands")
    async def commands(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await runner.process(stages.commands, event)

    return app


@dataclass
class _Runner:
    out: Mapping[str, faust.TopicT]
    store: RequestStore
    clock: Callable[[], datetime]

    async def process(self, stage: Stage, event: faust.EventT) -> None:
        message = event.message
        origin = Origin(message.topic, message.partition, message.offset, message.key,
                        _headers(event.headers))
        value = message.value or b""
        emits = await self._handle(stage, value, origin)
        for emit in emits:
            await self.out[emit.topic].send(key=emit.key, value=emit.value,
                                            headers=dict(emit.headers))

    async def _handle(self, stage: Stage, value: bytes, origin: Origin) -> list[Emit]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await asyncio.to_thread(stage.handle, value, origin)
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
        await asyncio.to_thread(self._record, emit, value, origin, error, attempts, request_id)
        return [emit]

    def _record(self, emit: Emit, value: bytes, origin: Origin, error: BaseException,
                attempts: int, request_id: str | None) -> None:
        now = self.clock()
        self.store.record_deadletter(
            request_id=request_id, origin_topic=origin.topic, origin_partition=origin.partition,
            origin_offset=origin.offset, error_class=type(error).__name__,
            message=str(error)[:2000], payload=value, attempts=attempts, now=now, key=origin.key,
            headers={k: v.decode("utf-8", "replace") for k, v in emit.headers.items()},
        )
        if request_id is not None and getattr(error, "marks_request", True):
            # UnknownRequest: never accepted, so the dead letter is the only record.
            with contextlib.suppress(UnknownRequest):
                self.store.advance(request_id, RequestState.DEADLETTERED, now,
                                   {"error": type(error).__name__, "topic": origin.topic})


def _headers(raw: Any) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}
