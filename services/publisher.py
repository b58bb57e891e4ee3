"""Publishing accepted HelpRequests to ``fasttrack.requests.submitted`` (DESIGN §3).

The value is the canonical JSON of the body exactly as the caller sent it, so the intake computes
the same ``canonical_body_hash`` as the gateway stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from scheduler.request_store import canonical_json
from services.kafka_config import KafkaSettings, aiokafka_producer_kwargs
from services.topics import TopicNames

PUBLISH_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 3.0


class PublishFailed(RuntimeError):
    """The broker did not take the record (unreachable, timed out, refused)."""


class RequestPublisher(Protocol):
    """Where the gateway sends accepted requests."""

    async def start(self) -> None:
        """Connect; raise :class:`PublishFailed` when the broker cannot be reached."""

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""

    async def publish(self, request_id: str, body: Mapping[str, Any]) -> None:
        """Send one request; return once the broker acknowledged it, else raise PublishFailed."""

    async def reachable(self) -> bool:
        """Whether the broker answers now (for ``/healthz``)."""


def encode_request(request_id: str, body: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The (key, value) bytes of a submitted request: its id and its canonical JSON."""
    return request_id.encode("utf-8"), canonical_json(body).encode("utf-8")


class KafkaRequestPublisher:
    """A :class:`RequestPublisher` over an aiokafka producer (acks from all in-sync replicas)."""

    def __init__(self, kafka_settings: KafkaSettings, topics: TopicNames,
                 timeout: float = PUBLISH_TIMEOUT_SECONDS) -> None:
        self._settings = kafka_settings
        self._topic = topics.requests_submitted
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer; raise PublishFailed naming the bootstrap servers if it cannot."""
        producer = AIOKafkaProducer(
            **aiokafka_producer_kwargs(self._settings),
            request_timeout_ms=int(self._timeout * 1000),
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishFailed(
                f"cannot connect to Kafka at {self._settings.bootstrap}: {exc}") from exc
        self._producer = producer

    async def stop(self) -> None:
        """Flush and stop the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, request_id: str, body: Mapping[str, Any]) -> None:
        """Send the request keyed by its id and wait for the broker's acknowledgement."""
        if self._producer is None:
            raise PublishFailed("the publisher is not started")
        key, value = encode_request(request_id, body)
        try:
            async with asyncio.timeout(self._timeout):
                await self._producer.send_and_wait(self._topic, value=value, key=key)
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(
                f"could not publish request {request_id!r} to {self._topic}: {exc!r}") from exc

    async def reachable(self) -> bool:
        """Fetch cluster metadata from any broker within the timeout."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError, OSError):
            return False
        return True
