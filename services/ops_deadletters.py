"""Dead letters for ops: browse them, redrive them to their origin topic, discard them with a
reason; every redrive and discard is written to the ``ops_audit`` trail (who, when, what).

A redrive produces the original key and value with the original headers, minus the error
headers the pipeline added, plus ``redriven_from``; it is produced first and marked after, so a
crash in between means the record may be produced twice (at-least-once; the pipeline is
idempotent), never lost.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Engine,
    insert,
    select,
    update,
)

from scheduler.db import deadletters, ops_audit, read_connection
from scheduler.request_store import RequestStore
from schemas.events import utc_z

#: Headers the pipeline adds when it dead-letters a record (consumers.envelope.deadletter).
ERROR_HEADERS = frozenset({"error_class", "error_message", "origin_topic", "origin_partition",
                           "origin_offset", "attempts"})
REDRIVEN_FROM = "redriven_from"
MAX_REASON_CHARS = 1000
MAX_BULK = 1000



class DeadLetterNotFound(LookupError):
    def __init__(self, deadletter_id: int) -> None:
        super().__init__(f"no dead letter {deadletter_id}")


class DeadLetterNotOpen(ValueError):
    def __init__(self, deadletter_id: int, state: str) -> None:
        super().__init__(f"dead letter {deadletter_id} is {state}, not open")


class RedriveFailed(RuntimeError):
    """The origin topic did not take the redriven record."""


class RecordSink(Protocol):
    """Where redriven records go: a Kafka producer in production."""

    def produce(self, topic: str, partition: int | None, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Produce one record and wait for the broker; return (partition, offset)."""


class KafkaRecordSink:
    """A :class:`RecordSink` over a kafka-python producer, created on first use."""

    def __init__(self, producer_kwargs: Mapping[str, Any], timeout: float = 10.0) -> None:
        self._kwargs = dict(producer_kwargs)
        self._timeout = timeout
        self._producer: Any = None

    def produce(self, topic: str, partition: int | None, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                self._producer = KafkaProducer(**self._kwargs)
            future = self._producer.send(topic, key=key, value=value, headers=headers,
                                         partition=partition)
            meta = future.get(timeout=self._timeout)
        except (KafkaError, OSError) as exc:
            raise RedriveFailed(f"could not produce to {topic}: {exc!r}") from exc
        return int(meta.partition), int(meta.offset)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One dead letter as ops see it: its origin, error and the record itself."""

    id: int
    request_id: str | None
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    error_class: str
    message: str
    attempts: int
    at: datetime
    state: str
    updated_at: datetime
    headers: dict[str, str]
    key: bytes | None
    payload: bytes

    def to_json_dict(self) -> dict[str, Any]:
        text = _text(self.payload)
        return {"id": self.id, "request_id": self.request_id, "origin_topic": self.origin_topic,
                "origin_partition": self.origin_partition, "origin_offset": self.origin_offset,
                "error_class": self.error_class, "error_message": self.message,
                "attempts": self.attempts, "at": utc_z(self.at), "state": self.state,
                "updated_at": utc_z(self.updated_at), "headers": self.headers,
                "key": None if self.key is None else _text(self.key),
                "payload_bytes": len(self.payload),
                "payload_text": text, "payload_base64": None if text is not None
                else base64.b64encode(self.payload).decode()}


class DeadLetterDesk:
    """Browse, redrive and discard dead letters; every change audited."""

    def __init__(self, engine: Engine, sink: RecordSink, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._sink = sink
        self._clock = clock

    def browse(self, state: str | None = "open", error_class: str | None = None,
               limit: int = 100) -> list[DeadLetterView]:
        """Dead letters, newest first, filtered by state and error class."""
        query = (select(deadletters)
                 .order_by(deadletters.c.at.desc(), deadletters.c.id.desc()))
        if state is not None:
            query = query.where(deadletters.c.state == state)
        if error_class is not None:
            query = query.where(deadletters.c.error_class == error_class)
        with read_connection(self._engine) as conn:
            return [_view(row) for row in conn.execute(query.limit(limit))]

    def get(self, deadletter_id: int) -> DeadLetterView:
        with read_connection(self._engine) as conn:
            row = conn.execute(select(deadletters)
                               .where(deadletters.c.id == deadletter_id)).first()
        if row is None:
            raise DeadLetterNotFound(deadletter_id)
        return _view(row)

    def redrive(self, deadletter_id: int, actor: str) -> dict[str, Any]:
        """Produce the record back to its origin topic, mark it redriven, audit it."""
        letter = self.get(deadletter_id)
        if letter.state != "open":
            raise DeadLetterNotOpen(deadletter_id, letter.state)
        if letter.origin_topic is None:
            raise RedriveFailed(f"dead letter {deadletter_id} has no origin topic")
        origin = {"deadletter_id": letter.id, "topic": letter.origin_topic,
                  "partition": letter.origin_partition, "offset": letter.origin_offset,
                  "error_class": letter.error_class}
        headers = [(k, v.encode()) for k, v in letter.headers.items()
                   if k not in ERROR_HEADERS and k != REDRIVEN_FROM]
        headers.append((REDRIVEN_FROM, json.dumps(origin, separators=(",", ":")).encode()))
        if letter.request_id is not None:  # a stage's dead letter made the request final
            RequestStore(self._engine).reopen(letter.request_id, self._clock(),
                                              {"redrive_of": letter.id, "by": actor[:100]})
        partition, offset = self._sink.produce(
            letter.origin_topic, letter.origin_partition, letter.key, letter.payload, headers)
        outcome = {"id": letter.id, "state": "redriven", "topic": letter.origin_topic,
                   "partition": partition, "offset": offset}
        self._change(letter, "redriven", actor, "redrive", json.dumps(outcome))
        return outcome

    def redrive_class(self, error_class: str, actor: str) -> list[dict[str, Any]]:
        """Redrive every open dead letter of ``error_class`` (oldest first, at most 1000)."""
        letters = sorted(self.browse("open", error_class, MAX_BULK), key=lambda d: d.id)
        return [self.redrive(letter.id, actor) for letter in letters]

    def discard(self, deadletter_id: int, actor: str, reason: str) -> dict[str, Any]:
        """Mark a dead letter discarded, with the reason in the audit trail."""
        reason = reason.strip()[:MAX_REASON_CHARS]
        if not reason:
            raise ValueError("reason: say why the dead letter is discarded")
        letter = self.get(deadletter_id)
        if letter.state != "open":
            raise DeadLetterNotOpen(deadletter_id, letter.state)
        self._change(letter, "discarded", actor, "discard", reason)
        return {"id": letter.id, "state": "discarded", "reason": reason}

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        query = select(ops_audit).order_by(ops_audit.c.id.desc()).limit(limit)
        with read_connection(self._engine) as conn:
            return [{"id": r.id, "at": utc_z(r.at), "actor": r.actor, "action": r.action,
                     "deadletter_id": r.deadletter_id, "error_class": r.error_class,
                     "target": r.target, "detail": r.detail} for r in conn.execute(query)]

    def _change(self, letter: DeadLetterView, state: str, actor: str, action: str,
                detail: str) -> None:
        now = self._clock()
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(deadletters)
                .where(deadletters.c.id == letter.id, deadletters.c.state == "open")
                .values(state=state, updated_at=now)).rowcount
            if changed != 1:
                raise DeadLetterNotOpen(letter.id, "no longer open")
            conn.execute(insert(ops_audit).values(
                at=now, actor=actor[:100], action=action, deadletter_id=letter.id,
                error_class=letter.error_class, target=letter.origin_topic, detail=detail))


def _view(row: Any) -> DeadLetterView:
    headers: dict[str, str] = json.loads(row.headers)
    return DeadLetterView(
        id=row.id, request_id=row.request_id, origin_topic=row.origin_topic,
        origin_partition=row.origin_partition, origin_offset=row.origin_offset,
        error_class=row.error_class, message=row.message, attempts=row.attempts, at=row.at,
        state=row.state, updated_at=row.updated_at, headers=headers,
        key=_original_key(row), payload=bytes(row.payload))


def _original_key(row: Any) -> bytes | None:
    """The stored key; for dead letters recorded without it, the key the topic contract gives
    (DESIGN §3): the center id on ``requests.routed``, the request id everywhere else."""
    if row.record_key is not None:
        return bytes(row.record_key)
    if (row.origin_topic or "").endswith(".requests.routed"):
        try:
            center = json.loads(row.payload)["decision"]["center_id"]
        except (ValueError, KeyError, TypeError):
            center = None
        return center.encode() if isinstance(center, str) else None
    return None if row.request_id is None else row.request_id.encode()


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
