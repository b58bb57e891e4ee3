"""``fasttrack``: the command line of the FastTrack scheduling service."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from scheduler.directory import CenterDirectory, DirectoryInvalid
from schemas.help_request import RFC3339_PATTERN
from services.ops_cli import add_ops_commands
from services.ops_kafka import KafkaUnavailable
from services.request_files import BadLine, read_requests
from services.settings import Settings

EXIT_INVALID = 2


class UsageError(Exception):
    """Bad input named on stderr; exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        return int(args.handler(args, Settings()))
    except (UsageError, DirectoryInvalid, KafkaUnavailable, ValueError) as exc:
        print(f"fasttrack {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasttrack",
        description="Route FastTrack help requests to a FastTrack Center and book the meeting.",
        epilog="Settings come from FASTTRACK_* environment variables; see README.md.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    route = _command(commands, "route", cmd_route,
                     "print the routing decision for each request (no broker, no booking)")
    route.add_argument("requests", metavar="REQUEST.json|REQUESTS.jsonl",
                       help="one HelpRequest as JSON, or JSON Lines; '-' for standard input")
    _directory_option(route)
    route.add_argument("--at", metavar="RFC3339", type=_timestamp,
                       help="decision time (default: each request's submitted_at)")

    simulate = _command(commands, "simulate", cmd_simulate,
                        "route and book a demand file offline against an empty ledger "
                        "(what-if capacity planning); one booking per line, summary on stderr")
    simulate.add_argument("requests", metavar="REQUESTS.jsonl",
                          help="HelpRequests as JSON Lines (in submission order); '-' for stdin")
    _directory_option(simulate)
    simulate.add_argument("--progress", action="store_true",
                          help="show progress on stderr every 10,000 requests")

    up = _command(commands, "up", cmd_up,
                  "start everything on embedded defaults: broker, workers, gateway, demo feed")
    up.add_argument("--no-demo", dest="demo", action="store_false", help="skip the demo feed")
    up.add_argument("--demo-rate", type=float, default=6.0, metavar="PER_MINUTE",
                    help="demo requests per minute (default 6)")
    up.add_argument("--workers", type=int, default=None,
                    help="worker processes (default $FASTTRACK_WORKERS or 1)")

    worker = _command(commands, "worker", cmd_worker,
                      "run one stream-processing worker (intake, router, booker, notifier); "
                      "run several to share the partitions")
    worker.add_argument("--loglevel", default="INFO", help="Faust/worker log level")

    _command(commands, "gateway", cmd_gateway,
             "run the HTTP API for portals and partners (needs FASTTRACK_API_KEYS and "
             "FASTTRACK_KAFKA_BOOTSTRAP; OpenAPI at /openapi.json)")

    _command(commands, "migrate", cmd_migrate,
             "create or upgrade the database schema ($FASTTRACK_DATABASE_URL)")

    samples = _command(commands, "sample-requests", cmd_sample_requests,
                       "write realistic sample HelpRequests as JSON Lines (for simulate, demos)")
    samples.add_argument("--count", type=int, default=1000, help="how many (default 1000)")
    samples.add_argument("--start", type=_timestamp, default=None, metavar="RFC3339",
                         help="first submission time (default: 2026-11-23T00:00:00Z)")
    samples.add_argument("--per-hour", type=float, default=120.0,
                         help="average submissions per hour (default 120)")
    samples.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    bench = _command(commands, "bench", cmd_bench,
                     "measure the pipeline against the broker's own limit: plumbing baseline, "
                     "max sustained rate, latency at 50%%, stage breakdown (--core-only: the core)")
    bench.add_argument("--requests", type=int, default=1000, metavar="N",
                       help="requests per pipeline phase (default 1000)")
    bench.add_argument("--workers", type=int, default=2, metavar="N",
                       help="worker processes, and baseline processes (default 2)")
    bench.add_argument("--database-url", metavar="URL",
                       help="PostgreSQL database to run against (migrated; give an empty one); "
                            "default: a fresh SQLite file")
    bench.add_argument("--json", action="store_true", help="print only the JSON result")
    bench.add_argument("--core-only", action="store_true",
                       help="only the routing / slot-search micro-benchmark")
    bench.add_argument("--ledger-only", action="store_true",
                       help="only the booking search on the SQL ledger at 1,000 to 1,000,000 "
                            "meetings (a fresh SQLite file, or --database-url, which must hold "
                            "no meetings)")
    bench.add_argument("--stages-only", action="store_true",
                       help="only the CPU a request costs in each stage at batches of 1, 10 "
                            "and 50 records: the stages in this process, a fresh SQLite file "
                            "and outbox, no broker (--requests per batch size)")
    bench.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                       help="add a run of SECONDS at a quarter of the flood's rate, sampling "
                            "worker RSS every 10 s")
    bench.add_argument("--soak-rate", type=float, metavar="PER_S",
                       help="run the soak at PER_S requests/s instead of a quarter of the "
                            "flood's rate, to compare memory across machines at one load")
    bench.add_argument("--paced-rate", type=float, metavar="PER_S",
                       help="run the open-loop phase at PER_S requests/s instead of half the "
                            "flood's rate, to compare configurations at one load")
    bench.add_argument("--faust-baseline", action="store_true",
                       help="also run the pipeline's Faust app with stages that do no work, "
                            "after the plumbing limit: what the framework alone reaches")
    bench.add_argument("--profile", type=Path, metavar="PATH",
                       help="py-spy record worker 1 during the flood to PATH and during "
                            "the paced run to PATH.paced (collapsed stacks)")

    add_ops_commands(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str,  # type: ignore[type-arg]
             handler: Callable[[argparse.Namespace, Settings], int], text: str,
             ) -> argparse.ArgumentParser:
    # argparse %-formats a command's help in the list of commands, not its description.
    sub = commands.add_parser(name, help=text, description=text.replace("%%", "%"))
    sub.set_defaults(handler=handler)
    return sub


def _directory_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--directory", metavar="PATH", type=Path,
                        help="center directory YAML (default: $FASTTRACK_DIRECTORY, "
                             "else the sample directory shipped with the package)")


def _timestamp(text: str) -> datetime:
    if not RFC3339_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 date-time with offset, e.g. 2026-03-02T09:30:00+08:00")
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:  # shaped right, but no such date or time (2026-02-30)
        raise argparse.ArgumentTypeError(f"{text!r} is not a real date-time: {exc}") from exc


def _directory(args: argparse.Namespace, settings: Settings) -> CenterDirectory:
    if args.directory:
        settings = settings.model_copy(update={"directory": args.directory})
    return settings.load_directory()


def _write(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


def cmd_route(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.routing import route

    directory = _directory(args, settings)
    bad = 0
    for item in _requests(args.requests):
        if isinstance(item, BadLine):
            _complain("route", item)
            bad += 1
            continue
        _write(route(item, directory, args.at or item.submitted_at).contract_dict())
    return EXIT_INVALID if bad else 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from services.simulation import SimulationSummary, simulate

    directory = _directory(args, settings)
    summary = SimulationSummary()
    started = time.perf_counter()

    seen: dict[str, str] = {}  # request_id -> the request, as JSON

    def valid_requests():  # type: ignore[no-untyped-def]
        for item in _requests(args.requests):
            if isinstance(item, BadLine):
                _complain("simulate", item)
                summary.invalid += 1
                continue
            # As the pipeline does: the same request again is booked once; the same
            # request_id with another body is refused.
            body = item.model_dump_json()
            earlier = seen.get(item.request_id)
            if earlier is None:
                seen[item.request_id] = body
                yield item
            elif earlier == body:
                summary.duplicates += 1
                print(f"fasttrack simulate: request_id {item.request_id!r} repeats an earlier "
                      "request; booked once", file=sys.stderr)
            else:
                summary.invalid += 1
                print(f"fasttrack simulate: request_id {item.request_id!r} was given earlier "
                      "with a different body", file=sys.stderr)

    for count, line in enumerate(simulate(valid_requests(), directory, summary), start=1):
        _write(line)
        if args.progress and count % 10_000 == 0:
            print(f"fasttrack simulate: {count} requests, {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
    sys.stdout.flush()
    result = summary.as_dict(directory)
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result, ensure_ascii=False, indent=2), file=sys.stderr)
    return EXIT_INVALID if summary.invalid else 0


def _complain(command: str, bad: BadLine) -> None:
    for line in str(bad).splitlines():
        print(f"fasttrack {command}: {line}", file=sys.stderr)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from services.up import run_up

    return run_up(settings, demo=args.demo, demo_rate_per_minute=args.demo_rate,
                  workers=args.workers)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from services.worker import run_worker

    if not settings.kafka_bootstrap:
        raise UsageError("set FASTTRACK_KAFKA_BOOTSTRAP, or use `fasttrack up`, which starts "
                         "the embedded broker and the workers together")
    return run_worker(settings, loglevel=args.loglevel)


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from services.gateway import run_gateway

    if not settings.kafka_bootstrap:
        raise UsageError("set FASTTRACK_KAFKA_BOOTSTRAP, or use `fasttrack up`, which starts "
                         "the embedded broker and the gateway together")
    return run_gateway(settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import make_url

    from services.database import upgrade_database

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.resolved_database_url)
    shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    print(f"fasttrack migrate: {shown} is at the latest schema")
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from services.bench import run_bench

    if args.requests < 10 or args.workers < 1 or args.soak < 0:
        raise UsageError("--requests must be >= 10, --workers >= 1, --soak >= 0")
    for option, rate in (("--paced-rate", args.paced_rate), ("--soak-rate", args.soak_rate)):
        if rate is not None and not rate > 0:
            raise UsageError(f"{option}: {rate} is not a positive rate")
    if args.soak_rate is not None and not args.soak > 0:
        raise UsageError("--soak-rate needs --soak SECONDS")
    if sum((args.core_only, args.ledger_only, args.stages_only)) > 1:
        raise UsageError("--core-only, --ledger-only and --stages-only: choose one")
    if args.faust_baseline and (args.core_only or args.ledger_only or args.stages_only):
        raise UsageError("--faust-baseline runs beside the pipeline, not with --core-only, "
                         "--ledger-only or --stages-only")
    if args.stages_only and args.database_url:
        raise UsageError("--stages-only runs on a fresh SQLite file; --database-url is for "
                         "the pipeline and --ledger-only")
    # SIGTERM would end the process without unwinding, leaving the embedded broker and the
    # workers it started running; as an exception it stops them on the way out, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run_bench(settings, requests=args.requests, database_url=args.database_url,
                         json_output=args.json, core_only=args.core_only,
                         ledger_only=args.ledger_only, stages_only=args.stages_only,
                         workers=args.workers,
                         soak_seconds=args.soak, profile=args.profile,
                         paced_rate=args.paced_rate, soak_rate=args.soak_rate,
                         faust_baseline=args.faust_baseline)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_sample_requests(args: argparse.Namespace, settings: Settings) -> int:
    from services.sample_requests import sample_requests

    if args.count < 0 or args.per_hour <= 0:
        raise UsageError("--count must be >= 0 and --per-hour > 0")
    start = args.start or datetime.fromisoformat("2026-11-23T00:00:00+00:00")
    for request in sample_requests(args.count, start, per_hour=args.per_hour, seed=args.seed):
        _write(request)
    return 0


def _requests(path: str):  # type: ignore[no-untyped-def]
    if path != "-" and not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    if path != "-" and Path(path).is_dir():
        raise UsageError(f"{path}: is a directory; give a JSON or JSON Lines file")
    return read_requests(path)


if __name__ == "__main__":
    raise SystemExit(main())
