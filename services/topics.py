"""Topic names (DESIGN §3) under a configurable prefix, and idempotent topic creation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

DEFAULT_PREFIX = "fasttrack"
DEFAULT_PARTITIONS = 6

REQUESTS_SUBMITTED = "requests.submitted"
REQUESTS_ROUTED = "requests.routed"
MEETINGS_BOOKED = "meetings.booked"
INVITES_DELIVERED = "invites.delivered"
REQUESTS_ESCALATED = "requests.escalated"
REQUESTS_DEADLETTER = "requests.deadletter"
REQUESTS_COMMANDS = "requests.commands"


@dataclass(frozen=True)
class TopicNames:
    """The full topic names under one prefix.

    `TopicNames().requests_submitted` is "fasttrack.requests.submitted".
    """

    prefix: str = DEFAULT_PREFIX

    @property
    def requests_submitted(self) -> str:
        return self._full(REQUESTS_SUBMITTED)

    @property
    def requests_routed(self) -> str:
        return self._full(REQUESTS_ROUTED)

    @property
    def meetings_booked(self) -> str:
        return self._full(MEETINGS_BOOKED)

    @property
    def invites_delivered(self) -> str:
        return self._full(INVITES_DELIVERED)

    @property
    def requests_escalated(self) -> str:
        return self._full(REQUESTS_ESCALATED)

    @property
    def requests_deadletter(self) -> str:
        return self._full(REQUESTS_DEADLETTER)

    @property
    def requests_commands(self) -> str:
        """Cancel and reschedule commands from portals (schemas/request_command.v1.json)."""
        return self._full(REQUESTS_COMMANDS)

    def all(self) -> tuple[str, ...]:
        """Every topic name, in pipeline order."""
        return (
            self.requests_submitted,
            self.requests_routed,
            self.meetings_booked,
            self.invites_delivered,
            self.requests_escalated,
            self.requests_deadletter,
            self.requests_commands,
        )

    def _full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


def ensure_topics(
    bootstrap: str,
    names: TopicNames | Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    *,
    replication_factor: int = 1,
    timeout: float = 15.0,
    **client_kwargs: Any,
) -> list[str]:
    """Create the topics that do not exist yet and wait until metadata shows all of them.

    Idempotent: existing topics are left as they are (their partition count is not
    changed). `client_kwargs` go to `KafkaAdminClient` (security settings from
    `services.kafka_config`). Returns the topic names.
    """
    topics = list(names.all() if isinstance(names, TopicNames) else names)
    admin = KafkaAdminClient(**{"bootstrap_servers": bootstrap, **client_kwargs})
    try:
        existing = set(admin.list_topics())
        for name in (name for name in topics if name not in existing):
            new_topic = NewTopic(name, partitions, replication_factor)
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([new_topic], timeout_ms=int(timeout * 1000))
        admin.wait_for_topics(topics, timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
    return topics
