"""The steps of ``fasttrack up`` before any child starts: state, Kafka, keys, environment, port.

Each raises `UpFailed` with what went wrong and what to do about it.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.broker import EmbeddedBroker
from services.settings import Settings
from services.up_banner import Console


class UpFailed(RuntimeError):
    """`fasttrack up` could not bring the service up; the message says why and what to do."""


def prepare_state(settings: Settings) -> None:
    """var/, its logs and the outbox exist; the database schema is current."""
    from services.database import upgrade_database

    for directory in (settings.var_dir, settings.var_dir / "logs", settings.resolved_outbox_dir):
        directory.mkdir(parents=True, exist_ok=True)
    try:
        upgrade_database(settings.resolved_database_url)
    except SQLAlchemyError as exc:
        shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        raise UpFailed(f"cannot migrate the database {shown}: {exc}") from exc


def start_kafka(settings: Settings, stack: ExitStack, console: Console) -> str:
    """The bootstrap address: the configured cluster, else an embedded broker stopped at exit.

    Either way the topics exist afterwards (idempotent).
    """
    from kafka.errors import KafkaError

    from services.broker import BrokerUnavailable
    from services.kafka_config import kafka_python_client_kwargs
    from services.topics import ensure_topics

    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        broker = EmbeddedBroker(log_path=settings.var_dir / "logs" / "broker.log")
        stack.callback(_stop_broker, broker, console)
        try:
            bootstrap = broker.start().bootstrap
        except BrokerUnavailable as exc:
            raise UpFailed(str(exc)) from exc
        console.line(f"embedded Kafka broker on {bootstrap} (memory only)")
    client_kwargs = kafka_python_client_kwargs(settings.kafka(bootstrap))
    client_kwargs.pop("bootstrap_servers")
    try:
        ensure_topics(bootstrap, settings.topics, settings.topic_partitions, **client_kwargs)
    except KafkaError as exc:
        raise UpFailed(
            f"cannot create the topics on Kafka at {bootstrap}: {exc!r}; check "
            "FASTTRACK_KAFKA_BOOTSTRAP (unset it for the embedded broker)") from exc
    return bootstrap


def _stop_broker(broker: EmbeddedBroker, console: Console) -> None:
    if broker.running:
        console.line("stopping the embedded broker")
    broker.stop()


def gateway_api_keys(settings: Settings) -> tuple[str, str | None, str | None]:
    """FASTTRACK_API_KEYS for the gateway, and the development portal and ops keys when they
    had to be made.

    With nothing configured, new keys are written to ``var/dev-api-key`` (portal) and
    ``var/dev-ops-key`` (dashboard), both 0600.
    """
    if settings.api_keys:
        return settings.api_keys, None, None
    from services.api_keys import ApiKey, KeyKind, dump_api_keys, generate_dev_key

    portal = generate_dev_key()
    ops = ApiKey(name="dev-ops", key=generate_dev_key().key, kind=KeyKind.OPS)
    for name, key in (("dev-api-key", portal.key), ("dev-ops-key", ops.key)):
        descriptor = os.open(settings.var_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # it may have existed with wider permissions
            handle.write(key + "\n")
    return dump_api_keys([portal, ops]), portal.key, ops.key


def child_environment(settings: Settings, bootstrap: str, http_port: int) -> dict[str, str]:
    """Our environment with the settings the children must share spelled out explicitly."""
    env = dict(os.environ)
    env.pop("FASTTRACK_API_KEYS", None)  # only the gateway gets keys
    env.update({
        "FASTTRACK_KAFKA_BOOTSTRAP": bootstrap,
        "FASTTRACK_VAR_DIR": str(settings.var_dir),
        "FASTTRACK_DATABASE_URL": settings.resolved_database_url,
        "FASTTRACK_OUTBOX_DIR": str(settings.resolved_outbox_dir),
        "FASTTRACK_HTTP_HOST": settings.http_host,
        "FASTTRACK_HTTP_PORT": str(http_port),
        "FASTTRACK_TOPIC_PREFIX": settings.topic_prefix,
        "FASTTRACK_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "PYTHONUNBUFFERED": "1",
    })
    if settings.directory:
        env["FASTTRACK_DIRECTORY"] = str(settings.directory.resolve())
    if settings.embedded:
        env["FASTTRACK_KAFKA_EMBEDDED"] = "1"
    else:
        env.pop("FASTTRACK_KAFKA_EMBEDDED", None)
    return env


def choose_http_port(settings: Settings) -> int:
    """The configured port if it is free (0 = any free port); fail early and clearly if not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.http_host, settings.http_port))
        except OSError as exc:
            raise UpFailed(
                f"cannot listen on {settings.http_host}:{settings.http_port} ({exc.strerror}); "
                "stop what uses it or set FASTTRACK_HTTP_PORT to another port (0 = any free one)"
            ) from exc
        return int(probe.getsockname()[1])
