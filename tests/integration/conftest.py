"""Fixtures for tests that talk to real components: the embedded Kafka broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.broker import EmbeddedBroker
from services.kafka_config import KafkaSettings
from services.topics import TopicNames, ensure_topics

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `integration`."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole test session (memory storage)."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    """Client settings for the embedded broker, with the short embedded-mode group timeouts."""
    return KafkaSettings(bootstrap=broker.bootstrap, embedded=True)


@pytest.fixture
def topics(broker: EmbeddedBroker) -> TopicNames:
    """The FastTrack topics under a prefix unique to this test, created with 6 partitions."""
    names = TopicNames(prefix=f"t{uuid.uuid4().hex[:12]}")
    ensure_topics(broker.bootstrap, names)
    return names
