"""``fasttrack up``: the whole service on embedded defaults in one command, for a newcomer.

Migrates the database, starts the embedded broker (unless bootstrap servers are configured),
spawns the workers and the gateway as child processes with their output in ``var/logs/``, waits
until the gateway answers, then feeds it sample requests and prints how each one moves through
the pipeline. Ctrl-C (or SIGTERM) stops everything in order: demo feed, gateway, workers, broker.

The children run in their own sessions, so a Ctrl-C in the terminal reaches only this process and
the shutdown order stays ours.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack

import httpx

from services.child_process import ChildProcess, fasttrack_command, stop_children
from services.demo_feed import DemoFeed
from services.settings import Settings
from services.stop_request import StopRequest
from services.up_banner import Console, ready_banner
from services.up_setup import (
    UpFailed,
    child_environment,
    choose_http_port,
    gateway_api_keys,
    prepare_state,
    start_kafka,
)
from services.up_status import StatusReport

HEALTH_TIMEOUT = 60.0
EXIT_CRASHED = 1


def wait_until_healthy(base_url: str, gateway: ChildProcess, children: Sequence[ChildProcess],
                       stop: StopRequest, timeout: float = HEALTH_TIMEOUT) -> bool:
    """True once GET /healthz answers 200; False if a stop was requested first.

    Raises `UpFailed` with the end of its log when a child exits, or when time runs out.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while not stop.requested:
            dead = next((child for child in children if child.exit_code is not None), None)
            if dead is not None:
                raise UpFailed(dead.exit_report())
            try:
                if client.get("/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise UpFailed(
                    f"the gateway did not answer {base_url}/healthz within {timeout:.0f} s; "
                    f"end of {gateway.log_path}:\n{gateway.log_tail()}"
                )
            stop.wait(0.25)
    return False


def run_up(settings: Settings, *, demo: bool = True, demo_rate_per_minute: float = 6,
           workers: int | None = None) -> int:
    """Run everything until Ctrl-C/SIGTERM: 0 after a clean stop, 1 if a child crashed."""
    console = Console()
    stop = StopRequest()
    settings = settings.model_copy(update={
        "var_dir": settings.var_dir.resolve(),
        "outbox_dir": settings.outbox_dir.resolve() if settings.outbox_dir else None,
    })
    children: list[ChildProcess] = []
    with stop.installed(), ExitStack() as stack:
        try:
            code = _bring_up_and_supervise(settings, demo, demo_rate_per_minute,
                                           workers or settings.workers, stop, stack, children,
                                           console)
        except UpFailed as exc:
            print(f"fasttrack up: {exc}", file=sys.stderr)
            code = EXIT_CRASHED
        finally:
            if children:
                console.line("stopping: " + ", ".join(child.name for child in children[::-1]))
    crashed = [child for child in children if child.crashed]
    for child in crashed:
        how = "was killed after not stopping in time" if child.killed else (
            f"exited with code {child.exit_code}")
        print(f"fasttrack up: {child.name} {how}; see {child.log_path}", file=sys.stderr)
    if crashed:
        return EXIT_CRASHED
    if code == 0:
        console.line("stopped cleanly")
    return code


def _bring_up_and_supervise(settings: Settings, demo: bool, demo_rate: float, worker_count: int,
                            stop: StopRequest, stack: ExitStack, children: list[ChildProcess],
                            console: Console) -> int:
    http_port = choose_http_port(settings)
    console.line(f"preparing {settings.var_dir} and the database")
    prepare_state(settings)
    bootstrap = start_kafka(settings, stack, console)
    if stop.requested:
        return 0
    api_keys, dev_key, ops_key = gateway_api_keys(settings)
    env = child_environment(settings, bootstrap, http_port)
    logs = settings.var_dir / "logs"

    workers = [ChildProcess(f"worker-{n}", fasttrack_command("worker"), env,
                            logs / f"worker-{n}.log") for n in range(1, worker_count + 1)]
    gateway = ChildProcess("gateway", fasttrack_command("gateway"),
                           env | {"FASTTRACK_API_KEYS": api_keys}, logs / "gateway.log")
    children += [*workers, gateway]
    stack.callback(stop_children, workers)  # unwinds after the gateway, before the broker
    stack.callback(stop_children, [gateway])
    for child in children:
        child.start()
    console.line(f"started {worker_count} worker(s) and the gateway; waiting for "
                 f"http://{settings.http_host}:{http_port}/healthz")

    base_url = f"http://{settings.http_host}:{http_port}"
    if not wait_until_healthy(base_url, gateway, children, stop):
        return 0
    console.block(ready_banner(settings, base_url, bootstrap, dev_key, worker_count, ops_key))

    feed = _start_demo(settings, base_url, dev_key, demo_rate, console, stack) if demo else None
    status = StatusReport(settings, children, console, feed)
    stack.callback(status.close)
    return _supervise(children, stop, status, console)


def _start_demo(settings: Settings, base_url: str, dev_key: str | None, per_minute: float,
                console: Console, stack: ExitStack) -> DemoFeed | None:
    if dev_key is None:
        console.line("demo feed off: FASTTRACK_API_KEYS is configured, so there is no "
                     "development key for it to use")
        return None
    client = stack.enter_context(httpx.Client(
        base_url=base_url, timeout=5.0, headers={"Authorization": f"Bearer {dev_key}"}))
    zones = {center.id: center.timezone for center in settings.load_directory().centers}
    feed = DemoFeed(client, console, per_minute=per_minute, center_zones=zones).start()
    stack.callback(feed.stop)
    return feed


def _supervise(children: Sequence[ChildProcess], stop: StopRequest, status: StatusReport,
               console: Console) -> int:
    while not stop.wait(1.0):
        dead = next((child for child in children if child.exit_code is not None), None)
        if dead is not None:
            print(f"fasttrack up: {dead.exit_report()}", file=sys.stderr)
            return EXIT_CRASHED
        status.maybe_report()
    console.line(f"{stop.signal_name or 'stop'} received")
    return 0
