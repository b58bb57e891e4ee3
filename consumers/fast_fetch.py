"""A Faust transport for brokers that do not answer a waiting fetch when records arrive.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting changes it.
Apache Kafka answers a waiting fetch as soon as records arrive, so the wait costs nothing
there; the embedded Tansu broker lets it run out, so every hop of the pipeline waited up to
1.5 s (p99 end to end 2.6 s; with 50 ms: 224 ms, docs/performance.md). This transport is the
aiokafka one with a short fetch wait, registered as ``fasttrack-embedded://`` through the
``faust.transports`` entry point and used only for the embedded broker.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 50


class ShortFetchConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, so set before start.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class ShortFetchConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = ShortFetchConsumer
