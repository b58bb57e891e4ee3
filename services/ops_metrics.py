"""Prometheus metrics read at scrape time from the database and Kafka (a custom Collector).

The numbers are the ledger's and the broker's own, so every gateway replica reports the same
values and nothing is lost on restart. Labels are low-cardinality (status, 3 regions, 12
languages, stage, reason, error class, backend, topic, group); no request ids, names or emails.
``fasttrack_ops_source_up{source}`` says whether the database and Kafka answered this scrape.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from scheduler.db import invite_deliveries, read_connection
from services.ops_kafka import KafkaObserver, KafkaUnavailable, total_lag
from services.ops_queries import (
    deadletter_counts,
    escalations_by_reason,
    held_commands_summary,
    oldest_open_deadletter,
    request_counts,
    stage_durations,
)

LATENCY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0,
                   24 * 3600.0)
_log = structlog.get_logger("fasttrack.ops_metrics")


class OpsCollector(Collector):
    """Register with ``registry.register(OpsCollector(engine, observer, clock))``."""

    def __init__(self, engine: Engine, observer: KafkaObserver | None,
                 clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._observer = observer
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; registration must not touch the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fasttrack_ops_source_up",
                               "Whether the source answered this scrape", labels=["source"])
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except SQLAlchemyError as exc:
            _log.warning("ops_metrics_database_unavailable", error=type(exc).__name__)
            up.add_metric(["database"], 0)
        if self._observer is not None:
            try:
                yield from self._kafka(self._observer)
                up.add_metric(["kafka"], 1)
            except KafkaUnavailable as exc:
                _log.warning("ops_metrics_kafka_unavailable", error=str(exc))
                up.add_metric(["kafka"], 0)
        yield up

    def _database(self) -> Iterator[Metric]:
        # Read everything first, so that a failure yields no half-filled families.
        requests = request_counts(self._engine)
        durations = stage_durations(self._engine)
        escalations = escalations_by_reason(self._engine)
        dead = deadletter_counts(self._engine)
        oldest = oldest_open_deadletter(self._engine)
        held, held_since = held_commands_summary(self._engine)
        deliveries = _deliveries(self._engine)

        gauge = GaugeMetricFamily("fasttrack_requests", "Stored requests by current status, "
                                  "tenant region and resolved language",
                                  labels=["status", "region", "language"])
        for labels, n in sorted(requests.items()):
            gauge.add_metric(list(labels), n)
        yield gauge
        histogram = HistogramMetricFamily(
            "fasttrack_stage_latency_seconds", "Seconds from acceptance to the first time a "
            "request reached the stage", labels=["stage"])
        for stage, values in durations.items():
            histogram.add_metric([stage], _buckets(values), sum_value=sum(values))
        yield histogram
        counter = CounterMetricFamily("fasttrack_escalations", "Escalations by stage and reason",
                                      labels=["stage", "reason"])
        for (stage, reason), n in sorted(escalations.items()):
            counter.add_metric([stage, reason], n)
        yield counter
        gauge = GaugeMetricFamily("fasttrack_deadletters", "Dead letters by error class and "
                                  "state (open, redriven, discarded)",
                                  labels=["error_class", "state"])
        for (error_class, state), n in sorted(dead.items()):
            gauge.add_metric([error_class, state], n)
        yield gauge
        age = (self._clock() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily("fasttrack_deadletter_oldest_open_age_seconds",
                                "Age of the oldest open dead letter (0 when none)",
                                value=max(0.0, age))
        yield GaugeMetricFamily("fasttrack_commands_held", "Commands waiting for their "
                                "request to be accepted (dead-lettered after an hour)", value=held)
        waited = (self._clock() - held_since).total_seconds() if held_since is not None else 0.0
        yield GaugeMetricFamily("fasttrack_commands_held_oldest_age_seconds",
                                "How long the oldest held command has waited (0 when none)",
                                value=max(0.0, waited))
        attempts = CounterMetricFamily("fasttrack_invite_delivery_attempts",
                                       "Invite delivery attempts by backend", labels=["backend"])
        failures = CounterMetricFamily("fasttrack_invite_delivery_failures",
                                       "Invite messages whose last attempt failed, by backend",
                                       labels=["backend"])
        for backend, (tried, failed) in sorted(deliveries.items()):
            attempts.add_metric([backend], tried)
            failures.add_metric([backend], failed)
        yield attempts
        yield failures

    def _kafka(self, observer: KafkaObserver) -> Iterator[Metric]:
        sample = observer.sample()
        ends = GaugeMetricFamily("fasttrack_topic_end_offset", "Sum of the end offsets of the "
                                 "topic's partitions", labels=["topic"])
        per_topic: Counter[str] = Counter()
        for (topic, _), offset in sample.ends.items():
            per_topic[topic] += offset
        for topic, offset in sorted(per_topic.items()):
            ends.add_metric([topic], offset)
        lag = GaugeMetricFamily("fasttrack_consumer_lag", "Records not yet committed by the "
                                "consumer group, summed over the topic's partitions",
                                labels=["group", "topic"])
        for group in observer.groups:
            topics = sorted({topic for topic, _ in sample.committed.get(group, {})})
            for topic in topics:
                lag.add_metric([group, topic], total_lag(sample, group, topic))
        yield ends
        yield lag


def _buckets(values: list[float]) -> list[tuple[str, float]]:
    ordered = sorted(values)
    buckets = [(_bound(b), float(bisect.bisect_right(ordered, b))) for b in LATENCY_BUCKETS]
    return [*buckets, ("+Inf", float(len(ordered)))]


def _bound(value: float) -> str:
    return repr(float(value))


def _deliveries(engine: Engine) -> dict[str, tuple[int, int]]:
    failed = func.sum(case((invite_deliveries.c.status != "delivered", 1), else_=0))
    query = (select(invite_deliveries.c.backend, func.sum(invite_deliveries.c.attempts), failed)
             .group_by(invite_deliveries.c.backend))
    with read_connection(engine) as conn:
        return {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in conn.execute(query)}
