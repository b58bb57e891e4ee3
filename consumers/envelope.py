"""What flows between a stage and its agent: where a record came from, what to emit, why not."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Records bigger than this are dead-lettered unread (the embedded broker enforces no limit).
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """The topic, partition and offset a record was read from, with its key and headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Emit:
    """One record to produce: ``topic`` is a TopicNames attribute, e.g. ``requests_routed``."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes] = field(default_factory=dict)


class Unprocessable(ValueError):
    """A record no retry can fix (undecodable, invalid, oversized, conflicting): dead-letter it.

    ``marks_request``: whether the request it names ends ``deadlettered``. Not so at intake,
    where a bad record must never change the status of a good request that has the same id.
    """

    def __init__(self, message: str, request_id: str | None = None, *,
                 marks_request: bool = True) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.marks_request = marks_request


def encode(payload: Mapping[str, Any]) -> bytes:
    """The JSON bytes of a topic value: UTF-8, no framework metadata."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def deadletter(value: bytes, origin: Origin, error: BaseException, attempts: int) -> Emit:
    """The original bytes and key, with headers that say what failed and where it came from."""
    headers = dict(origin.headers)
    headers.update({
        "error_class": type(error).__name__.encode(),
        "error_message": str(error)[:2000].encode(),
        "origin_topic": origin.topic.encode(),
        "origin_partition": str(origin.partition).encode(),
        "origin_offset": str(origin.offset).encode(),
        "attempts": str(attempts).encode(),
    })
    return Emit("requests_deadletter", origin.key, value, headers)


def request_id_of(value: bytes, origin: Origin) -> str | None:
    """Best effort: the request id of a record that may not even be JSON."""
    if origin.key:
        try:
            return origin.key.decode()[:64]
        except UnicodeDecodeError:
            pass
    try:
        found = json.loads(value).get("request_id")
    except (ValueError, AttributeError):
        return None
    return found[:64] if isinstance(found, str) else None
