"""What ops see of Kafka: end offsets per topic partition, committed offsets and lag per consumer
group, and rates and lag trends from a small in-memory ring of samples.

Samples are taken when someone asks (the dashboard polls every 2 s, Prometheus scrapes), at most
one per ``min_interval`` seconds; the ring keeps the last ``RING_SIZE`` of them, so the rates and
trends cover the last minutes of watching. Clients are created on first use, never at import.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from services.kafka_config import KafkaSettings, kafka_python_client_kwargs
from services.topics import TopicNames

RING_SIZE = 300  # 10 minutes at the dashboard's 2 s poll
MIN_INTERVAL_SECONDS = 1.0
CLIENT_TIMEOUT_MS = 5000


class KafkaUnavailable(RuntimeError):
    """The broker did not answer an ops query."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the cluster: end offsets and each group's committed offsets."""

    at: float  # wall-clock seconds since the epoch
    ends: dict[tuple[str, int], int]
    committed: dict[str, dict[tuple[str, int], int]]  # group -> (topic, partition) -> offset


@dataclass
class KafkaObserver:
    """Samples the pipeline's topics and consumer groups; thread-safe."""

    kafka: KafkaSettings
    topics: TopicNames
    groups: Sequence[str] = ()
    clock: Callable[[], float] = time.time
    min_interval: float = MIN_INTERVAL_SECONDS
    _ring: deque[Sample] = field(default_factory=lambda: deque(maxlen=RING_SIZE))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _admin: KafkaAdminClient | None = None
    _consumer: KafkaConsumer | None = None

    @classmethod
    def for_pipeline(cls, kafka: KafkaSettings, topics: TopicNames) -> KafkaObserver:
        """An observer of every FastTrack topic and the pipeline's consumer group."""
        return cls(kafka, topics, groups=(f"{topics.prefix}-pipeline",))

    def sample(self) -> Sample:
        """The latest sample, taking a new one when the last is older than ``min_interval``."""
        with self._lock:
            if self._ring and self.clock() - self._ring[-1].at < self.min_interval:
                return self._ring[-1]
            try:
                taken = self._take()
            except (KafkaError, OSError, AssertionError) as exc:
                self._close_clients()
                raise KafkaUnavailable(f"Kafka at {self.kafka.bootstrap} did not answer: "
                                       f"{exc!r}") from exc
            self._ring.append(taken)
            return taken

    def history(self) -> list[Sample]:
        with self._lock:
            return list(self._ring)

    def close(self) -> None:
        with self._lock:
            self._close_clients()

    # --- read models ----------------------------------------------------------------------------

    def topics_view(self) -> dict[str, Any]:
        """Per topic: end offsets per partition, and in/out messages per second over time.

        "In" is records appended (end offsets), "out" records committed by the groups."""
        latest = self.sample()
        history = self.history()
        views = []
        for topic in self.topics.all():
            parts = sorted(p for t, p in latest.ends if t == topic)
            series = [{"at": b.at, "in_per_second": _rate(a, b, topic, _ends),
                       "out_per_second": _rate(a, b, topic, _committed)}
                      for a, b in itertools.pairwise(history)]
            views.append({
                "topic": topic,
                "partitions": [{"partition": p, "end_offset": latest.ends[(topic, p)]}
                               for p in parts],
                "end_offset_total": sum(latest.ends[(topic, p)] for p in parts),
                "in_per_second": series[-1]["in_per_second"] if series else 0.0,
                "out_per_second": series[-1]["out_per_second"] if series else 0.0,
                "series": series,
            })
        return {"sampled_at": latest.at, "topics": views}

    def lag_view(self) -> dict[str, Any]:
        """Per consumer group: committed offset and lag per partition, total lag and its trend."""
        latest = self.sample()
        history = self.history()
        groups = []
        for group in self.groups:
            committed = latest.committed.get(group, {})
            partitions = []
            for (topic, partition), offset in sorted(committed.items()):
                end = latest.ends.get((topic, partition), offset)
                partitions.append({"topic": topic, "partition": partition, "committed": offset,
                                   "end_offset": end, "lag": max(0, end - offset)})
            by_topic: dict[str, int] = {}
            for row in partitions:
                by_topic[row["topic"]] = by_topic.get(row["topic"], 0) + row["lag"]
            groups.append({"group": group, "partitions": partitions, "lag_by_topic": by_topic,
                           "total_lag": sum(by_topic.values()),
                           "trend": [{"at": s.at, "lag": total_lag(s, group)} for s in history]})
        return {"sampled_at": latest.at, "groups": groups}

    # --- clients --------------------------------------------------------------------------------

    def _take(self) -> Sample:
        admin, consumer = self._clients()
        parts = []
        for topic in self.topics.all():
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                parts.append(TopicPartition(topic, partition))
        ends = {(tp.topic, tp.partition): int(o)
                for tp, o in consumer.end_offsets(parts).items()} if parts else {}
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in self.groups:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            committed[group] = {(tp.topic, tp.partition): int(meta.offset)
                                for tp, meta in offsets.items()
                                if meta is not None and meta.offset >= 0}
        return Sample(self.clock(), ends, committed)

    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        if self._admin is None or self._consumer is None:
            kwargs = kafka_python_client_kwargs(self.kafka) | {
                "request_timeout_ms": CLIENT_TIMEOUT_MS}
            self._admin = KafkaAdminClient(**kwargs)
            self._consumer = KafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
        else:
            self._consumer.topics()  # refresh metadata: partitions of topics created since
        return self._admin, self._consumer

    def _close_clients(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):  # broken already: nothing to save
                    client.close()
        self._admin = self._consumer = None


def total_lag(sample: Sample, group: str, topic: str | None = None) -> int:
    """The group's lag in ``sample``, over one topic or all it has committed on."""
    return sum(max(0, sample.ends.get(tp, offset) - offset)
               for tp, offset in sample.committed.get(group, {}).items()
               if topic is None or tp[0] == topic)


def _ends(sample: Sample, topic: str) -> int:
    return sum(offset for (t, _), offset in sample.ends.items() if t == topic)


def _committed(sample: Sample, topic: str) -> int:
    return sum(offset for group in sample.committed.values()
               for (t, _), offset in group.items() if t == topic)


def _rate(before: Sample, after: Sample, topic: str, measure: Callable[[Sample, str], int],
          ) -> float:
    elapsed = after.at - before.at
    if elapsed <= 0:
        return 0.0
    return round(max(0, measure(after, topic) - measure(before, topic)) / elapsed, 3)
