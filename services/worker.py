"""``fasttrack worker``: one stream-processing worker; run more to share the partitions.

Each worker also competes for the timed work's leader lock (reminders, the booking SLA,
reconciliation); one of them runs it at a time, and another takes over when it stops.
"""

from __future__ import annotations

import faust

from consumers.app import BatchSettings, create_app
from services.bootstrap import build_runtime
from services.logs import configure_logging
from services.settings import Settings
from services.timed_work import KafkaRecordPublisher, TimedWorkService


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> int:
    """Run the Faust worker in the foreground until SIGTERM/SIGINT; returns its exit code."""
    configure_logging(loglevel)
    runtime = build_runtime(settings)
    app = create_app(runtime.stages(), runtime.store, runtime.clock, settings.kafka(),
                     settings.topics, partitions=settings.topic_partitions,
                     datadir=settings.var_dir / "faust",
                     batches=BatchSettings(settings.batch_max_records,
                                           settings.batch_window_ms / 1000))
    publisher = KafkaRecordPublisher(settings.kafka(), settings.topics)
    timed = TimedWorkService(runtime.timed_work(publisher), runtime.engine)
    timed.start()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        timed.stop()
        publisher.close()
    return 0
