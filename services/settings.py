"""Settings from the environment (prefix ``FASTTRACK_``), built once and passed down."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.directory import CenterDirectory, default_directory, load_directory
from services.kafka_config import KafkaSettings
from services.topics import TopicNames


class Settings(BaseSettings):
    """Everything the service reads from its environment. No bootstrap servers = embedded broker."""

    model_config = SettingsConfigDict(env_prefix="FASTTRACK_", extra="ignore", frozen=True)

    kafka_bootstrap: str | None = None
    kafka_embedded: bool = False  # set by `fasttrack up` for the processes it starts
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    topic_prefix: str = "fasttrack"
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    var_dir: Path = Path("var")
    database_url: str | None = None
    directory: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    outbox_dir: Path | None = None
    api_keys: str | None = None
    workers: int = Field(default=1, ge=1, le=32)
    booking_sla_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # A command its request cannot take yet (scheduler.held_commands) is held this long.
    hold_commands_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    reminders: str = "24h=1440,1h=60"  # name=minutes before the meeting, comma-separated
    # A stage takes up to this many records at once (one transaction for the lot) ...
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    # ... waiting at most this long for a batch to fill when records trickle in.
    batch_window_ms: int = Field(default=20, ge=1, le=10_000)  # 0 would mean "until full"

    @property
    def embedded(self) -> bool:
        """No cluster configured (start one), or told by `up` it talks to the embedded one."""
        return self.kafka_embedded or not self.kafka_bootstrap

    def kafka(self, bootstrap: str | None = None) -> KafkaSettings:
        """Client settings; ``bootstrap`` is the embedded broker's address when one was started."""
        address = bootstrap or self.kafka_bootstrap
        if not address:
            raise ValueError("no Kafka bootstrap servers: set FASTTRACK_KAFKA_BOOTSTRAP "
                             "or start the embedded broker with `fasttrack up`")
        return KafkaSettings(
            bootstrap=address, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password, ssl_cafile=self.kafka_ssl_cafile,
            embedded=self.embedded,
        )

    @property
    def topics(self) -> TopicNames:
        return TopicNames(prefix=self.topic_prefix)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'fasttrack.db'}"

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir or self.var_dir / "outbox"

    def reminder_offsets(self) -> dict[str, timedelta]:
        """``FASTTRACK_REMINDERS`` as {name: time before the meeting}; errors name the entry."""
        offsets: dict[str, timedelta] = {}
        for entry in filter(None, (e.strip() for e in self.reminders.split(","))):
            name, _, minutes = entry.partition("=")
            if not name.strip() or not minutes.strip().isdigit() or int(minutes) <= 0:
                raise ValueError(f"FASTTRACK_REMINDERS: {entry!r} is not name=minutes, "
                                 "e.g. 24h=1440")
            offsets[name.strip()] = timedelta(minutes=int(minutes))
        return offsets

    def load_directory(self) -> CenterDirectory:
        """The configured directory, or the sample one shipped in the package."""
        return load_directory(self.directory) if self.directory else default_directory()
