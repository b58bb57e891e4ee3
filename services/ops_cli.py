"""``fasttrack topics``, ``fasttrack lag``, ``fasttrack deadletters list|redrive|discard``: the ops
API's reads and actions from a shell, straight against Kafka and the database. ``--json`` prints
what the HTTP ops API returns, for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from services.settings import Settings


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    """End offsets per topic and partition."""
    observer = _observer(settings)
    try:
        view = observer.topics_view()
    finally:
        observer.close()
    if args.json:
        return _json(view)
    print(f"{'TOPIC':<45} {'END OFFSET':>12}  PER PARTITION")
    for topic in view["topics"]:
        parts = " ".join(str(p["end_offset"]) for p in topic["partitions"])
        print(f"{topic['topic']:<45} {topic['end_offset_total']:>12}  {parts}")
    return 0


def cmd_lag(args: argparse.Namespace, settings: Settings) -> int:
    """Committed offset and lag of the pipeline's consumer group per partition."""
    observer = _observer(settings)
    try:
        view = observer.lag_view()
    finally:
        observer.close()
    if args.json:
        return _json(view)
    print(f"{'GROUP':<28} {'TOPIC':<40} {'PART':>4} {'COMMITTED':>10} {'END':>10} {'LAG':>8}")
    for group in view["groups"]:
        for p in group["partitions"]:
            print(f"{group['group']:<28} {p['topic']:<40} {p['partition']:>4} "
                  f"{p['committed']:>10} {p['end_offset']:>10} {p['lag']:>8}")
        print(f"{group['group']}: total lag {group['total_lag']}")
    return 0


def cmd_deadletters(args: argparse.Namespace, settings: Settings) -> int:
    """``list``, ``redrive`` (one id or ``--class``) and ``discard`` of dead letters."""
    from services.ops_deadletters import DeadLetterNotFound, DeadLetterNotOpen, RedriveFailed

    desk, close = _desk(settings, producer=args.action == "redrive")
    actor = f"cli:{args.actor or getpass.getuser()}"
    try:
        if args.action == "list":
            letters = desk.browse(None if args.state == "all" else args.state, args.error_class,
                                  args.limit)
            if args.json:
                return _json({"deadletters": [d.to_json_dict() for d in letters]})
            for d in letters:
                print(f"#{d.id:<6} {d.state:<9} {d.error_class:<24} {d.origin_topic}/"
                      f"{d.origin_partition}/{d.origin_offset} attempts={d.attempts} "
                      f"{d.at:%Y-%m-%dT%H:%M:%SZ}  {d.message[:80]}")
            return 0
        if args.action == "redrive":
            if (args.id is None) == (args.error_class is None):
                print("fasttrack deadletters redrive: give one ID or --class ERROR_CLASS",
                      file=sys.stderr)
                return 2
            outcome: Any = (desk.redrive(args.id, actor) if args.id is not None
                            else desk.redrive_class(args.error_class, actor))
        else:
            outcome = desk.discard(args.id, actor, args.reason)
    except (DeadLetterNotFound, DeadLetterNotOpen, RedriveFailed, ValueError) as exc:
        print(f"fasttrack deadletters {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    return _json(outcome)


def add_ops_commands(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
                     ) -> None:
    """Add ``topics``, ``lag`` and ``deadletters`` to the ``fasttrack`` subcommands."""
    topics = commands.add_parser("topics", help="end offsets of every FastTrack topic",
                                 description=cmd_topics.__doc__)
    topics.set_defaults(handler=cmd_topics)
    lag = commands.add_parser("lag", help="consumer lag of the pipeline per partition",
                              description=cmd_lag.__doc__)
    lag.set_defaults(handler=cmd_lag)
    for parser in (topics, lag):
        parser.add_argument("--json", action="store_true", help="print JSON (as the ops API)")
    dead = commands.add_parser("deadletters", help="list, redrive or discard dead letters",
                               description=cmd_deadletters.__doc__)
    dead.set_defaults(handler=cmd_deadletters)
    actions = dead.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="dead letters, newest first")
    listing.add_argument("--state", choices=("open", "redriven", "discarded", "all"),
                         default="open")
    listing.add_argument("--class", dest="error_class", metavar="ERROR_CLASS")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    redrive = actions.add_parser("redrive", help="produce one (ID) or all of a class "
                                 "(--class) back to their origin topic")
    redrive.add_argument("id", type=int, nargs="?")
    redrive.add_argument("--class", dest="error_class", metavar="ERROR_CLASS")
    discard = actions.add_parser("discard", help="mark one dead letter discarded")
    discard.add_argument("id", type=int)
    discard.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    for parser in (redrive, discard):
        parser.add_argument("--actor", help="who, for the audit trail (default: $USER)")


def _observer(settings: Settings) -> Any:
    from services.ops_kafka import KafkaObserver

    return KafkaObserver.for_pipeline(settings.kafka(), settings.topics)


def _desk(settings: Settings, *, producer: bool) -> tuple[Any, Any]:
    from scheduler.db import create_engine_for
    from services.bootstrap import utc_now
    from services.kafka_config import kafka_python_producer_kwargs
    from services.ops_deadletters import DeadLetterDesk, KafkaRecordSink

    engine = create_engine_for(settings.resolved_database_url)
    sink = KafkaRecordSink(kafka_python_producer_kwargs(settings.kafka()) if producer else {})

    def close() -> None:
        sink.close()
        engine.dispose()

    return DeadLetterDesk(engine, sink, utc_now), close


def _json(data: Any) -> int:
    print(json.dumps(data, ensure_ascii=False, indent=2))
    return 0
