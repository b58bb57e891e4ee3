"""The client settings the pipeline's producers and consumers are built with (no broker needed:
nothing here connects)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest

from consumers.fast_fetch import FETCH_MAX_WAIT_MS, ShortFetchConsumerThread
from services.kafka_config import (
    PRODUCER_LINGER_MS,
    KafkaSettings,
    aiokafka_producer_kwargs,
    faust_app_kwargs,
)


def _app(tmp_path: Path, embedded: bool) -> faust.App:
    settings = KafkaSettings("127.0.0.1:9", embedded=embedded)
    return faust.App(f"settings-{embedded}", **faust_app_kwargs(settings, datadir=tmp_path))


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "external"])
def test_the_pipelines_producer_lingers_5_ms_and_waits_for_every_replica(
        tmp_path: Path, embedded: bool) -> None:
    handed_to_aiokafka = _app(tmp_path, embedded).producer._settings_default()

    assert PRODUCER_LINGER_MS == 5
    assert handed_to_aiokafka["linger_ms"] == PRODUCER_LINGER_MS
    assert handed_to_aiokafka["acks"] == -1


def test_plain_aiokafka_producers_linger_as_the_pipelines_do() -> None:
    """The plumbing baseline and the publisher produce with the pipeline's settings."""
    kwargs = aiokafka_producer_kwargs(KafkaSettings("127.0.0.1:9"))

    assert kwargs["linger_ms"] == PRODUCER_LINGER_MS and kwargs["acks"] == "all"


@pytest.mark.parametrize(("embedded", "thread", "wait_ms"), [
    (True, ShortFetchConsumerThread, FETCH_MAX_WAIT_MS),
    (False, None, 1500),  # Faust's own, which a broker that answers early never waits out
], ids=["embedded", "external"])
def test_only_the_embedded_broker_gets_the_short_fetch_wait(
        tmp_path: Path, embedded: bool, thread: type | None, wait_ms: int) -> None:
    async def built() -> tuple[type, int, int]:
        app = _app(tmp_path, embedded)
        consumer_thread = app.consumer._thread
        consumer = consumer_thread._create_worker_consumer(app.transport)
        try:
            return type(consumer_thread), consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()

    kind, max_wait_ms, min_bytes = asyncio.run(built())

    assert (kind is thread) if thread else (kind is not ShortFetchConsumerThread)
    assert max_wait_ms == wait_ms and FETCH_MAX_WAIT_MS == 50
    assert min_bytes == 1  # a fetch returns what is there; min bytes cost latency (round 11)
