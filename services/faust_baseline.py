"""The pipeline's Faust app with stages that do no work: what the framework itself costs.

``fasttrack bench --faust-baseline`` runs this in place of ``fasttrack worker``: the same app
(:func:`consumers.app.create_app`: the same agents, ``take_events`` batches, runner, producer
and consumer settings), whose stages emit, for each record, the very bytes the real stage
emits at that hop (``services.bench.stage_payloads``), looked up by request id. Between the
plumbing limit (plain aiokafka hops) and the pipeline it measures the framework's share of
the gap, apart from validation, routing, booking, the database, rendering and the outbox.

``python -m services.faust_baseline TABLE.json``; settings from the environment, as a worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faust

from consumers.app import BatchSettings, Stages, create_app
from consumers.envelope import Emit, Origin
from consumers.stages import Outcome, Record
from scheduler.db import create_engine_for
from scheduler.request_store import RequestStore
from services.logs import configure_logging
from services.settings import Settings

#: What the intake, the booker and the notifier emit, by their index in a row of the table.
EMITS = ("requests_routed", "meetings_booked", "invites_delivered")

#: request id -> the (key, value) emitted at each hop, as in ``stage_payloads``.
Table = Mapping[str, Sequence[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class PassThrough:
    """A stage that emits the table's bytes for the record's request at its hop, and no more."""

    hop: int
    emits: str
    table: Table

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        body = json.loads(value)
        request_id = body.get("request_id") or body["request"]["request_id"]
        key, emitted = self.table[request_id][self.hop]
        return [Emit(self.emits, key, emitted)]

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        return [self.handle(value, origin) for value, origin in records]


class NoCommands:
    """The commands agent's stage: the baseline sends no commands."""

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        return []

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        return [[] for _ in records]


def write_table(table: Table, path: Path) -> None:
    """The table as JSON (keys and values are UTF-8 JSON or ids) for :func:`read_table`."""
    path.write_text(json.dumps({rid: [[key.decode(), value.decode()] for key, value in hops]
                                for rid, hops in table.items()}), encoding="utf-8")


def read_table(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return {rid: [(key.encode(), value.encode()) for key, value in hops]
            for rid, hops in rows.items()}


def build_app(settings: Settings, table: Table) -> faust.App:
    """The worker's app (:func:`consumers.app.create_app`) with pass-through stages."""
    stages = Stages(*(PassThrough(hop, emits, table) for hop, emits in enumerate(EMITS)),
                    commands=NoCommands())
    # The runner records dead letters in this store; with nothing to fail it is never written.
    store = RequestStore(create_engine_for(settings.resolved_database_url))
    return create_app(stages, store, lambda: datetime.now(UTC), settings.kafka(),
                      settings.topics, partitions=settings.topic_partitions,
                      datadir=settings.var_dir / "faust",
                      batches=BatchSettings(settings.batch_max_records,
                                            settings.batch_window_ms / 1000))


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.faust_baseline TABLE.json", file=sys.stderr)
        return 2
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    configure_logging("INFO")
    app = build_app(settings, read_table(Path(argv[0])))
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
