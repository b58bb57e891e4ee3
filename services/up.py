"""``fasttrack up``: the whole service on embedded defaults in one command, for a newcomer.

Migrates the database, starts the embedded broker (unless bootstrap servers are configured),
spawns the workers and the gateway as child processes with their output in ``var/logs/``, waits
until the gateway answers, then feeds it sample requests and prints how each one moves through
the pipeline. Ctrl-C (or SIGTERM) stops everything in order: demo feed, gateway, workers, broker.

The children run in their own sessions, so a Ctrl-C in the terminal reaches only this process and
the shutdown order stays ours.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.broker import EmbeddedBroker
from services.settings import Settings

HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
STATUS_EVERY = 30.0
DEMO_GIVE_UP_AFTER = 300.0
FINAL_STATUSES = frozenset({"invited", "escalated", "cancelled", "rejected", "deadlettered"})
EXIT_CRASHED = 1

_PROBLEM_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^Traceback ")


class UpFailed(RuntimeError):
    """`fasttrack up` could not bring the service up; the message says why and what to do."""


# --- output ------------------------------------------------------------------------------------


class Console:
    """Timestamped lines on stdout, safe to use from the demo thread and the main thread."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def line(self, text: str = "", *, stamp: bool = True) -> None:
        prefix = f"{datetime.now().astimezone():%H:%M:%S}  " if stamp and text else ""
        with self._lock:
            self._stream.write(prefix + text + "\n")
            self._stream.flush()

    def block(self, text: str) -> None:
        for line in text.splitlines():
            self.line(line, stamp=False)


# --- child processes ---------------------------------------------------------------------------


class ChildProcess:
    """One `fasttrack` subcommand in a child process of its own session, output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.killed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return self._process.poll() if self._process else None

    @property
    def crashed(self) -> bool:
        """It exited when not asked to, or did not stop cleanly when asked."""
        code = self.exit_code
        if code is None:
            return False
        return self.killed or not (self._stopping and code in (0, -signal.SIGTERM, 143))

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {self.name}: "
                      f"{' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group); `wait` collects it."""
        self._stopping = True
        if self.exit_code is None:
            self._signal_group(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic), then SIGKILL whatever of its group is left."""
        if self._process is None:
            return
        try:
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.killed = True
            self._signal_group(signal.SIGKILL)
            self._process.wait()
        self._signal_group(signal.SIGKILL)  # grandchildren it left behind, if any

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_bytes()[-16_000:].decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name} pid={self.pid} exit={self.exit_code}>"


def stop_children(children: Sequence[ChildProcess], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM all of them at once, then wait for each; SIGKILL those still running at timeout."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(deadline)


def fasttrack_command(subcommand: str) -> list[str]:
    """The argv that runs ``fasttrack SUBCOMMAND`` with this interpreter."""
    return [sys.executable, "-m", "services.cli", subcommand]


# --- signals -----------------------------------------------------------------------------------


class StopRequest:
    """SIGINT and SIGTERM set an event instead of raising, so that shutdown runs in order."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers belong to the main thread; the caller stops us
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._handle) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()


# --- the steps of `up` -------------------------------------------------------------------------


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
                raise UpFailed(_died_message(dead))
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


def _died_message(child: ChildProcess) -> str:
    return (f"{child.name} exited with code {child.exit_code}; end of {child.log_path}:\n"
            f"{child.log_tail()}")


# --- what the newcomer sees --------------------------------------------------------------------


def example_request(now: datetime) -> dict[str, Any]:
    """A small valid HelpRequest for the curl example."""
    return {
        "request_id": f"my-first-request-{now:%H%M%S}",
        "submitted_at": now.isoformat(timespec="seconds"),
        "source": "admin_center",
        "tenant": {"id": "tenant-contoso", "name": "Contoso", "country": "DE"},
        "requester": {"name": "Alex Wilber", "email": "alex@contoso.example.com",
                      "language": "de-DE"},
        "topic": "core_onboarding",
    }


def ready_banner(settings: Settings, base_url: str, bootstrap: str, dev_key: str | None,
                 workers: int, ops_key: str | None = None) -> str:
    var = settings.var_dir
    key_file = var / "dev-api-key"
    key_line = (f"{dev_key}   (development key, also in {key_file})" if dev_key
                else "from FASTTRACK_API_KEYS (configured)")
    auth = f"$(cat {key_file})" if dev_key else "YOUR_KEY"
    example = example_request(datetime.now(UTC))
    kafka = f"{bootstrap} (embedded, in memory)" if settings.embedded else bootstrap
    return f"""
FastTrack is ready: {base_url}
  API         {base_url}/v1/requests      OpenAPI docs: {base_url}/docs
  Dashboard   {base_url}/dashboard{f"?key={ops_key}" if ops_key else "  (an ops key)"}
  Metrics     {base_url}/metrics
  Kafka       {kafka}, {workers} worker(s)
  Database    {settings.resolved_database_url}
  Logs        {var / "logs"}/  (broker.log, worker-N.log, gateway.log)
  Invites     {settings.resolved_outbox_dir}/  (<uid>.ics and <uid>.eml per invite)
  API key     {key_line}

Submit a request and read its status:
  curl -sS {base_url}/v1/requests -H "Authorization: Bearer {auth}" \\
       -H 'Content-Type: application/json' -d '{json.dumps(example)}'
  curl -sS {base_url}/v1/requests/{example["request_id"]} -H "Authorization: Bearer {auth}"

Ctrl-C stops everything.
"""


class DemoFeed:
    """Posts sample requests to the gateway at a gentle rate and prints each status change.

    Runs in a thread; every request is polled until it reaches a final status (or for
    `DEMO_GIVE_UP_AFTER` seconds). What went wrong is kept in `problems`.
    """

    def __init__(self, client: httpx.Client, console: Console, *, per_minute: float,
                 center_zones: Mapping[str, str], seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        run = uuid.uuid4().hex[:6]
        self._client = client
        self._console = console
        self._interval = 60.0 / per_minute
        self._center_zones = dict(center_zones)
        self._prefix = f"demo-{run}"
        self._seed = seed if seed is not None else int(run, 16)
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-feed", daemon=True)
        self._watching: dict[str, tuple[str, float]] = {}  # request_id -> (status, posted at)
        self.problems: list[str] = []

    def start(self) -> DemoFeed:
        self._console.line(f"demo feed: a sample request every {self._interval:.0f} s "
                           f"(ids {self._prefix}-NNNNNNN); `fasttrack up --no-demo` to skip")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        requests = self._requests()
        next_post = self._clock()
        while not self._stop.is_set():
            if self._clock() >= next_post:
                self._post(next(requests))
                next_post += self._interval
            self._poll()
            self._stop.wait(1.0)

    def _requests(self) -> Iterator[dict[str, Any]]:
        from services.sample_requests import sample_requests

        now = datetime.now(UTC)
        for request in sample_requests(10_000_000, now, per_hour=60 * 60 / self._interval,
                                       seed=self._seed, prefix=self._prefix):
            request["submitted_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            if request.pop("partner", None):  # the development key is a portal key, and a
                request["source"] = "fasttrack_site"  # portal key may not submit for partners
            yield request

    def _post(self, request: dict[str, Any]) -> None:
        request_id = request["request_id"]
        try:
            response = self._client.post("/v1/requests", json=request)
        except httpx.HTTPError as exc:
            self._problem(f"{request_id}: POST failed: {exc!r}")
            return
        if response.status_code != 202:
            self._problem(f"{request_id}: POST answered {response.status_code}: "
                          f"{response.text[:300]}")
            return
        tenant, requester = request["tenant"], request["requester"]
        self._watching[request_id] = ("", self._clock())
        self._show(request_id, response.json().get("status", "accepted"),
                   f"{requester['language']} · {tenant['name']} · {request['source']} · "
                   f"{request['topic']}")

    def _poll(self) -> None:
        for request_id, (shown, posted_at) in list(self._watching.items()):
            try:
                response = self._client.get(f"/v1/requests/{request_id}")
            except httpx.HTTPError:
                continue  # the gateway is restarting or gone; the supervisor notices
            if response.status_code != 200:
                continue
            status = response.json()
            if status.get("status") != shown:
                self._show(request_id, status["status"], self._describe(status))
            if status.get("status") in FINAL_STATUSES:
                del self._watching[request_id]
            elif self._clock() - posted_at > DEMO_GIVE_UP_AFTER:
                self._problem(f"{request_id}: still {status.get('status')} after "
                              f"{DEMO_GIVE_UP_AFTER:.0f} s; no longer watching it")
                del self._watching[request_id]

    def _show(self, request_id: str, status: str, detail: str) -> None:
        if request_id in self._watching:
            self._watching[request_id] = (status, self._watching[request_id][1])
        self._console.line(f"{request_id}  {status:<10} {detail}")

    def _describe(self, status: Mapping[str, Any]) -> str:
        center, meeting = status.get("center_id"), status.get("meeting")
        if meeting:
            return (f"→ {center}, {self._local_start(center, meeting['start'])}, "
                    f"specialist {meeting.get('specialist_id')}")
        if center:
            return f"→ {center}"
        timeline = status.get("timeline") or []
        detail = timeline[-1].get("detail") if timeline else None
        if isinstance(detail, Mapping):
            reason = detail.get("reason") or detail.get("reasons") or detail
            return f"({json.dumps(reason, ensure_ascii=False)[:160]})"
        return ""

    def _local_start(self, center: str | None, start: str) -> str:
        at = datetime.fromisoformat(start.replace("Z", "+00:00"))
        zone = self._center_zones.get(center or "")
        if not zone:
            return f"{at:%a %Y-%m-%d %H:%M} UTC"
        local = at.astimezone(ZoneInfo(zone))
        return f"{local:%a %Y-%m-%d %H:%M} {zone} ({at:%H:%M} UTC)"

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self._console.line(f"demo: {text}")


class LogWatch:
    """New ERROR/CRITICAL/Traceback lines in a child's log since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def new_problems(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # leave a half-written line for next time
        self._offset += end
        lines = chunk[:end].decode("utf-8", errors="replace").splitlines()
        return [f"{self.path.name}: {line.strip()[:200]}" for line in lines
                if _PROBLEM_LINE.search(line)]


class StatusReport:
    """Requests by status (from the request ledger) and the newest problems, now and then."""

    def __init__(self, settings: Settings, children: Sequence[ChildProcess], console: Console,
                 demo: DemoFeed | None, every: float = STATUS_EVERY) -> None:
        from scheduler.db import create_engine_for

        self._engine = create_engine_for(settings.resolved_database_url)
        self._watches = [LogWatch(child.log_path) for child in children]
        self._console = console
        self._demo = demo
        self._every = every
        self._next = time.monotonic() + every
        self._last: str | None = None
        self._demo_problems_seen = 0

    def maybe_report(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        problems = [line for watch in self._watches for line in watch.new_problems()]
        if self._demo is not None:
            problems += self._demo.problems[self._demo_problems_seen:]
            self._demo_problems_seen = len(self._demo.problems)
        line = f"status: {self._requests_by_status()}"
        if line == self._last and not problems:
            return
        self._last = line
        self._console.line(line + (f" | {len(problems)} new problem(s)" if problems else ""))
        for problem in problems[-3:]:
            self._console.line(f"  problem: {problem}")

    def close(self) -> None:
        self._engine.dispose()

    def _requests_by_status(self) -> str:
        from sqlalchemy import func, select

        from scheduler.db import deadletters, read_connection, requests

        try:
            with read_connection(self._engine) as conn:
                rows = conn.execute(
                    select(requests.c.status, func.count()).group_by(requests.c.status))
                counts: dict[str, int] = {status: count for status, count in rows}
                open_letters = conn.execute(select(func.count()).select_from(deadletters)
                                            .where(deadletters.c.state == "open")).scalar_one()
        except SQLAlchemyError as exc:
            return f"(request ledger unreadable: {exc.__class__.__name__})"
        order = ("accepted", "routed", "booked", "invited", "escalated", "cancelled",
                 "rejected", "deadlettered")
        shown = [f"{status} {counts[status]}" for status in order if counts.get(status)]
        total = sum(counts.values())
        return (f"{total} request(s): {', '.join(shown) or 'none yet'}; "
                f"open dead letters {open_letters}")


# --- the command -------------------------------------------------------------------------------


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
            print(f"fasttrack up: {_died_message(dead)}", file=sys.stderr)
            return EXIT_CRASHED
        status.maybe_report()
    console.line(f"{stop.signal_name or 'stop'} received")
    return 0
