"""One settings value for Kafka, turned into kafka-python, aiokafka and Faust keyword arguments.

Embedded/test mode shortens the consumer-group timeouts: the embedded Tansu broker holds a
JoinGroup for about half the session timeout (kafka-python's 45 s default = a 23 s join), so
a 3 s session gives a ~2 s join (~3 s for Faust, which waits 1 s before it subscribes).
Production keeps the client libraries' defaults.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from services.topics import DEFAULT_PARTITIONS

#: Group timeouts (seconds) in embedded/test mode: join ~ session/2 on Tansu.
EMBEDDED_SESSION_TIMEOUT = 3.0
EMBEDDED_HEARTBEAT_INTERVAL = 0.5
EMBEDDED_REBALANCE_TIMEOUT = 3.0
EMBEDDED_COMMIT_INTERVAL = 1.0
#: How long a produced record may wait for others to share its batch: Apache Kafka's producer
#: default since 4.0 (KIP-1030; 0 before, and still 0 in aiokafka and Faust). At a steady load
#: a stage's batch holds one or two records, and with no linger each became a produce request
#: of its own: 1.8 produce requests a request through the pipeline, half as many or fewer with
#: 5 ms, and about a sixth less of the embedded broker's CPU at that load (docs/performance.md,
#: round 11).
PRODUCER_LINGER_MS = 5


@dataclass(frozen=True)
class KafkaSettings:
    """Where the Kafka cluster is and how to authenticate to it.

    `bootstrap` is "host:port[,host:port...]". `security_protocol` is one of PLAINTEXT, SSL,
    SASL_PLAINTEXT, SASL_SSL; `sasl_mechanism` one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    """

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    embedded: bool = False

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers as a list of "host:port"."""
        return [server.strip() for server in self.bootstrap.split(",") if server.strip()]

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.upper().startswith("SASL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.upper().endswith("SSL")


def kafka_python_client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security kwargs shared by kafka-python clients (also `KafkaAdminClient`)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.servers,
        "security_protocol": settings.security_protocol.upper(),
    }
    if settings.uses_sasl:
        kwargs |= _sasl_kwargs(settings)
    if settings.uses_ssl and settings.ssl_cafile:
        kwargs["ssl_cafile"] = settings.ssl_cafile
    return kwargs


def kafka_python_producer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """kwargs for `kafka.KafkaProducer`: acks from all in-sync replicas."""
    return kafka_python_client_kwargs(settings) | {"acks": "all"}


def kafka_python_consumer_kwargs(settings: KafkaSettings, group_id: str | None) -> dict[str, Any]:
    """kwargs for `kafka.KafkaConsumer`: manual commits, start from the earliest offset."""
    kwargs = kafka_python_client_kwargs(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    if settings.embedded:
        kwargs |= {
            "session_timeout_ms": _ms(EMBEDDED_SESSION_TIMEOUT),
            "heartbeat_interval_ms": _ms(EMBEDDED_HEARTBEAT_INTERVAL),
        }
    return kwargs


def aiokafka_client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security kwargs for aiokafka producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.servers,
        "security_protocol": settings.security_protocol.upper(),
    }
    if settings.uses_sasl:
        kwargs |= _sasl_kwargs(settings)
    if settings.uses_ssl:
        kwargs["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    return kwargs


def aiokafka_producer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """kwargs for `aiokafka.AIOKafkaProducer`: acks from all in-sync replicas, a 5 ms linger."""
    return aiokafka_client_kwargs(settings) | {"acks": "all", "linger_ms": PRODUCER_LINGER_MS}


def aiokafka_consumer_kwargs(settings: KafkaSettings, group_id: str | None) -> dict[str, Any]:
    """kwargs for `aiokafka.AIOKafkaConsumer`: manual commits, start from the earliest offset."""
    kwargs = aiokafka_client_kwargs(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    if settings.embedded:
        kwargs |= {
            "session_timeout_ms": _ms(EMBEDDED_SESSION_TIMEOUT),
            "heartbeat_interval_ms": _ms(EMBEDDED_HEARTBEAT_INTERVAL),
            "rebalance_timeout_ms": _ms(EMBEDDED_REBALANCE_TIMEOUT),
        }
    return kwargs


def faust_app_kwargs(
    settings: KafkaSettings,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    datadir: str | Path | None = None,
    web_port: int | None = None,
) -> dict[str, Any]:
    """Settings for `faust.App(id, **kwargs)`.

    Faust's worker consumer never auto-commits: it commits the highest contiguous *acked*
    offset every `broker_commit_interval` seconds, and an event is acked when the agent's
    `async for` body moves on to the next event. The leader-election topic is disabled
    (nothing here uses `on_leader=True`) and so is Faust's web server unless `web_port` is given.
    """
    kwargs: dict[str, Any] = {
        # The embedded broker needs a short fetch wait (consumers/fast_fetch.py).
        "broker": ";".join(f"{'fasttrack-embedded' if settings.embedded else 'kafka'}://{server}"
                           for server in settings.servers),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": PRODUCER_LINGER_MS / 1000,
        "stream_wait_empty": True,
        "topic_partitions": partitions,
        "topic_disable_leader": True,
        "web_enabled": web_port is not None,
    }
    if web_port is not None:
        kwargs |= {"web_port": web_port, "web_bind": "127.0.0.1"}
    if datadir is not None:
        kwargs["datadir"] = str(datadir)
    credentials = _faust_credentials(settings)
    if credentials is not None:
        kwargs["broker_credentials"] = credentials
    if settings.embedded:
        kwargs |= {
            "broker_session_timeout": EMBEDDED_SESSION_TIMEOUT,
            "broker_heartbeat_interval": EMBEDDED_HEARTBEAT_INTERVAL,
            "broker_rebalance_timeout": EMBEDDED_REBALANCE_TIMEOUT,
            "broker_commit_interval": EMBEDDED_COMMIT_INTERVAL,
        }
    return kwargs


def _faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    context = _ssl_context(settings) if settings.uses_ssl else None
    if settings.uses_sasl:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile)


def _sasl_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "sasl_mechanism": settings.sasl_mechanism or "PLAIN",
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
    }


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
